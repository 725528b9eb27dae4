"""CPU threads: how many CPUs this process may use, and setting torch's thread count with a
warning when it asks for more threads than there are CPUs to run them."""
from __future__ import annotations

import os
import warnings

import torch


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one: a container or
    ``taskset`` limits it below ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def set_threads(threads: int, processes: int | None = None, warn: bool = True) -> None:
    """``torch.set_num_threads(threads)``; warns (one line) when ``threads`` per process times
    ``processes`` (default: torchrun's processes on this machine, else 1) is more than the usable
    CPUs: the threads then take turns on the cores, which makes every step slower, not faster.
    ``warn=False``: set without the check (torchrun's other processes, where process 0 warns)."""
    torch.set_num_threads(threads)
    if processes is None:
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    cpus = usable_cpus()
    if warn and threads * processes > cpus:
        each = f" in each of {processes} processes" if processes > 1 else ""
        fix = (f"use --threads {cpus // processes}" if cpus >= processes else  # one thread each is still too many
               f"start at most --nproc_per_node={cpus} processes")
        warnings.warn(f"{threads} thread{'s' if threads != 1 else ''}{each} on {cpus} CPUs: they take turns on "
                      f"the cores and run slower, not faster; {fix}", stacklevel=2)
