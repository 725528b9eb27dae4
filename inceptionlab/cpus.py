"""CPU threads: how many CPUs this process may use, and setting torch's thread count with a
warning when it asks for more threads than there are CPUs to run them; what the CPU is, where
that decides which kernels are fast on it."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from inceptionlab.errors import UserError


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


# ------------------------------------------------------------------ which kernels are fast here
def cpu_identity(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """(vendor, instruction-set flags) of the first CPU in ``cpuinfo``: ("GenuineIntel", {"avx2", ...});
    ("", set()) where there is no such file (macOS, Windows)."""
    vendor, flags = "", set()
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        return vendor, flags
    for line in lines:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
        if vendor and flags:
            break
    return vendor, flags


def vector_isa() -> str:
    """The CPU's vector instructions as PyTorch's kernels use them ("AVX512", "AVX2", ...), with the
    matrix and bf16 extensions oneDNN uses ("+AMX", "+BF16"); "" where PyTorch does not say."""
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return ""
    flags = cpu_identity()[1]
    return isa + "+AMX" * ("amx_tile" in flags) + "+BF16" * ("avx512_bf16" in flags)


POINTWISE_PATHS = ("gemm", "onednn")


_chosen_path: list[str] = []  # the path, once decided (a plain cache: torch.compile warns of lru_cache)


def pointwise_path() -> str:
    """How training runs a 1x1 convolution of a channels-last CPU map: "gemm" (one BLAS matrix
    product) or "onednn" (oneDNN's convolution, forward and backward).

    PyTorch's BLAS is Intel's MKL, which takes its AVX-512 kernels on Intel CPUs only: on an AVX-512
    AMD EPYC it ran training's 1x1 convolutions (forward and backward) at 63-103 GFLOP/s where
    oneDNN's own kernels ran them at 89-215, 1.1-2.9x faster layer by layer (one thread, batch 8;
    benchmarks/results/pointwise_paths.md). So "onednn" on CPUs with AVX-512
    that are not Intel's, "gemm" elsewhere. ``INCEPTIONLAB_POINTWISE=gemm|onednn`` chooses; it is
    read once (`pointwise_path.cache_clear()` reads it again).
    """
    if not _chosen_path:
        _chosen_path.append(_choose_pointwise_path())
    return _chosen_path[0]


pointwise_path.cache_clear = _chosen_path.clear


def _choose_pointwise_path() -> str:
    chosen = os.environ.get("INCEPTIONLAB_POINTWISE", "").strip().lower()
    if chosen:
        if chosen not in POINTWISE_PATHS:
            raise UserError(f"INCEPTIONLAB_POINTWISE={chosen!r} is not a path for 1x1 convolutions; "
                            f"set it to {' or '.join(POINTWISE_PATHS)}, or unset it to let the CPU decide")
        return chosen
    if not torch.backends.mkldnn.is_available():
        return "gemm"
    vendor, flags = cpu_identity()
    return "onednn" if "avx512f" in flags and vendor and vendor != "GenuineIntel" else "gemm"
