"""Writing a file whole or not at all: a reader, or an interrupted writer, never leaves half of one."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def write_whole(path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` writes the file at a temporary path beside ``path``, which then replaces
    ``path`` in one rename; on any error (Ctrl-C included) the temporary goes and ``path`` is as it
    was (a report interrupted while plotting left half a PNG)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(text: str, path) -> None:
    """``text`` to ``path`` through a temporary file, fsync and rename."""
    def write(tmp: Path) -> None:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    write_whole(path, write)
