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


def why_not_writable(folder, exc: OSError) -> str:
    """Why making `folder` failed, in words: "afile is a file, not a folder" where a file stands in
    the way (the OS says only "File exists" or "Not a directory"), else the OS's reason."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        for part in (Path(folder), *Path(folder).parents):
            if part.exists() and not part.is_dir():
                return f"{part} is a file, not a folder"
    return exc.strerror or str(exc)
