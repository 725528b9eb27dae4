"""A record of the files a dataset could not decode, so one bad file never stops training.

Each dataset owns a `SkippedFiles` (as `dataset.skipped`). Its `__getitem__` records the path and
the reason and returns None; the loader's collate drops the None and counts it.

DataLoader workers are separate processes holding *copies* of the dataset, so what a worker
records never reaches the parent's object by itself. The loader closes that gap: in a worker,
its collate takes the worker's new records (`take_new`) and sends them along with the batch,
and the parent merges them (`merge`). Paths are kept once each, so the same bad file seen every
epoch, or reported by both a worker and the parent, counts once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator


class SkippedFiles:
    """Files that failed to decode: path -> reason, in the order first seen. Thread-safe."""

    def __init__(self) -> None:
        self._reasons: dict[str, str] = {}
        self._taken = 0  # how many records `take_new` has already handed out
        self._lock = threading.Lock()

    def add(self, path, reason: str) -> bool:
        """Record a file; True if it was not recorded before."""
        with self._lock:
            key = str(path)
            if key in self._reasons:
                return False
            self._reasons[key] = reason
            return True

    def merge(self, records: Iterable[tuple[str, str]]) -> None:
        """Record (path, reason) pairs received from elsewhere (a worker process)."""
        for path, reason in records:
            self.add(path, reason)

    def take_new(self) -> tuple[tuple[str, str], ...]:
        """The records added since the previous call (each handed out once)."""
        with self._lock:
            records = tuple(self._reasons.items())[self._taken:]
            self._taken += len(records)
            return records

    @property
    def paths(self) -> list[str]:
        with self._lock:
            return list(self._reasons)

    def reason(self, path) -> str:
        """Why `path` was skipped (KeyError if it was not)."""
        with self._lock:
            return self._reasons[str(path)]

    def summary(self, limit: int = 3) -> str:
        """One line for a log: how many files were skipped, and the first few with reasons."""
        records = list(self)
        if not records:
            return "no files skipped"
        shown = "; ".join(f"{path} ({reason})" for path, reason in records[:limit])
        more = f"; and {len(records) - limit} more" if len(records) > limit else ""
        noun = "file" if len(records) == 1 else "files"
        return f"skipped {len(records)} unreadable {noun}: {shown}{more}"

    def __len__(self) -> int:
        with self._lock:
            return len(self._reasons)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        with self._lock:
            return iter(list(self._reasons.items()))

    def __contains__(self, path) -> bool:
        with self._lock:
            return str(path) in self._reasons

    def __repr__(self) -> str:
        return f"SkippedFiles({len(self)} files)"

    def __getstate__(self) -> dict:
        """Pickle without the lock; a copy starts with everything it holds marked as taken."""
        with self._lock:
            return {"reasons": dict(self._reasons)}

    def __setstate__(self, state: dict) -> None:
        self._reasons = state["reasons"]
        self._taken = len(self._reasons)
        self._lock = threading.Lock()
