"""Training-mode batch norm + ReLU in one native CPU kernel (``csrc/bn_relu.cpp``).

PyTorch runs BN then ReLU as separate memory passes over the map: statistics, normalize, ReLU
forward; ReLU, the BN reduction, the BN elementwise pass backward. The kernel does two passes each
way and recomputes the ReLU's mask from its input: forward and backward 1.3-2.5x faster on the
maps of Inception-v3 (``benchmarks/fused_norm.py``). Batch norm and ReLU are 15-20% of a training
step on a CPU; measured on the whole v3 step, 5% at batch 8 and 13% at batch 32.

In training, `layers.Concat` has each branch's last batch norm write straight into the module's
output (`ConcatOutput`), so there is no ``torch.cat`` copy forward and the gradient is read back as
slices. Large outputs come from a cache of the blocks earlier ones freed (at most
``$INCEPTIONLAB_KERNEL_CACHE_MB``, default 1024 MiB; `empty_cache` frees them): a fresh large block
costs a page fault per 4 KiB on first touch, 15 ms for a 44 MB map.

The kernel is compiled with the machine's C++ compiler on first use (``torch.utils.cpp_extension``,
about a minute once; cached under ``$INCEPTIONLAB_BUILD_DIR`` or PyTorch's extension cache, by a name
that hashes the source, torch's version, Python's and the CPU's flags, so another checkout or virtual
environment with the same torch loads the same build instead of compiling again). Where it
cannot be built, or with ``INCEPTIONLAB_FUSED_NORM=0``, training uses PyTorch's batch norm and ReLU,
with one warning. Either way the arithmetic is that of ``BatchNorm2d`` in training mode: batch
statistics, biased variance for normalizing, unbiased for the running estimate.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import platform
import sys
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable

SOURCE = Path(__file__).with_name("csrc") / "bn_relu.cpp"
# -fopenmp: ATen's parallel_for splits the rows over torch's threads only in OpenMP builds (without
# it the kernel runs on one thread); the OpenMP runtime is the libgomp torch has already loaded
CFLAGS = ["-O3", "-march=native", "-fopenmp"]
ENV_SWITCH = "INCEPTIONLAB_FUSED_NORM"
CACHE_SWITCH = "INCEPTIONLAB_KERNEL_CACHE_MB"  # freed output blocks kept for reuse (default 1024 MiB)
_kernel = None
_tried = False


def enabled() -> bool:
    """Whether the fused kernel may be used (``INCEPTIONLAB_FUSED_NORM`` is not 0/false/off/no);
    UserError for another value (``maybe`` had meant on, without a word)."""
    value = os.environ.get(ENV_SWITCH, "1").strip().lower()
    if value not in ("0", "false", "off", "no", "1", "true", "on", "yes", ""):
        from inceptionlab.errors import UserError
        raise UserError(f"{ENV_SWITCH}={value!r} is neither on nor off; set it to 1 (the fused kernel, the default) "
                        f"or 0 (PyTorch's batch norm), or unset it")
    return value not in ("0", "false", "off", "no")


def cache_limit() -> int | None:
    """``INCEPTIONLAB_KERNEL_CACHE_MB`` in bytes (None: the kernel's default); UserError for a value
    that is not a size (``abc`` had turned the built kernel off as "could not be built")."""
    text = os.environ.get(CACHE_SWITCH)
    if text is None or not text.strip():
        return None
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0 or megabytes == float("inf"):
        from inceptionlab.errors import UserError
        raise UserError(f"{CACHE_SWITCH}={text!r} is not a size in MiB; set it to a number >= 0 (default 1024; "
                        f"0 keeps no freed blocks), or unset it")
    return int(megabytes * 2**20)


def usable() -> bool:
    """Whether training can take the kernel now: enabled, built, and not inside ``torch.compile``
    (which fuses batch norm and ReLU itself, and cannot trace into a native kernel)."""
    return not torch.compiler.is_compiling() and kernel() is not None


def _build_name() -> str:
    """A name that changes with the source, the torch version and the CPU (built with -march=native)."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    key = "|".join([SOURCE.read_text(), torch.__version__, platform.machine(), flags, sys.version, *CFLAGS])
    return "inceptionlab_bn_relu_" + hashlib.sha1(key.encode()).hexdigest()[:12]


def kernel():
    """The compiled kernel module, building it on first call; None where it cannot be built."""
    global _kernel, _tried
    if _tried or not enabled():
        return _kernel if enabled() else None
    limit = cache_limit()  # (a bad value is the user's error, not a failed build)
    _tried = True
    try:
        _kernel = _build()
        if limit is not None:
            _kernel.set_cache_limit(limit)
    except Exception as err:  # no compiler, no ninja, a read-only cache: train without it
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        warnings.warn(f"inceptionlab: the fused batch norm kernel could not be built ({reason[:200]}); "
                      f"training uses PyTorch's batch norm and ReLU (set {ENV_SWITCH}=0 to skip the build)",
                      RuntimeWarning, stacklevel=3)
        _kernel = None
    return _kernel


def empty_cache() -> None:
    """Frees the blocks the kernel keeps for reuse (see `BlockCache` in ``csrc/bn_relu.cpp``)."""
    if _kernel is not None:
        _kernel.empty_cache()


def _build():
    try:  # the `ninja` wheel puts its binary beside the venv's python, which need not be on PATH
        import ninja
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)  # it warns that there is no CUDA, which a CPU kernel does not need
    try:
        from torch.utils import cpp_extension
        name = _build_name()
        default_dir = getattr(cpp_extension, "_get_build_directory", None)  # PyTorch's cache, where it says
        build_dir = os.environ.get("INCEPTIONLAB_BUILD_DIR") or (default_dir(name, False) if default_dir else None)
        if build_dir:
            os.makedirs(build_dir, exist_ok=True)
            built = _load_built(name, build_dir)
            if built is not None:
                return built
        if not build_dir or not any(Path(build_dir).glob(f"{name}*.so")):
            print(f"inceptionlab: building the fused batch norm kernel in {build_dir or 'the torch extension cache'} "
                  "(once, about 30 s)",
                  file=sys.stderr, flush=True)
        return cpp_extension.load(name=name, sources=[str(SOURCE)], build_directory=build_dir,
                                  extra_cflags=CFLAGS, extra_ldflags=["-fopenmp"], verbose=False)
    finally:
        logger.setLevel(level)


def _load_built(name: str, build_dir: str):
    """The kernel that an earlier build left in `build_dir`, loaded as it is; None when there is none
    or it does not load (then `cpp_extension.load` builds it again).

    PyTorch's loader runs ninja first, and ninja compiles again whenever the command line changed: the
    include paths name the virtual environment, so every new checkout would rebuild the same source.
    The name already pins what the binary depends on (see `_build_name`)."""
    path = Path(build_dir) / f"{name}.so"
    if not path.is_file():
        return None
    try:
        with _build_lock(build_dir):  # another process may be linking it right now
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        return module
    except Exception:  # a half-written or foreign file: build it again
        return None


@contextlib.contextmanager
def _build_lock(build_dir: str):
    """The advisory lock that PyTorch's builder holds on ``build_dir/lock`` while it builds."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: nothing to wait for
        yield
        return
    with open(os.path.join(build_dir, "lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """N x C x H x W -> (N*H*W) x C rows without a copy when x is channels-last or a channel slice of
    a channels-last map; otherwise a channels-last copy."""
    c = x.shape[1]
    rows = x.permute(0, 2, 3, 1)
    try:
        view = rows.view(-1, c)
        if c == 1 or view.stride(1) == 1:
            return view
    except RuntimeError:  # the pixels are not evenly spaced
        pass
    return rows.contiguous().view(-1, c)


def _dense_rows(x: torch.Tensor) -> torch.Tensor:
    """The rows of a dense channels-last map: a view, which writes go through to x."""
    if not (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        raise ValueError("the map to write into must be a dense channels-last N x C x H x W tensor")
    return x.permute(0, 2, 3, 1).view(-1, x.shape[1])


def _map(rows: torch.Tensor, shape) -> torch.Tensor:
    """(N*H*W) x C dense rows -> N x C x H x W stored channels-last."""
    n, c, h, w = shape
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


class _BatchNormReLU(torch.autograd.Function):
    """relu(batch_norm(y)) (training mode) written where ``layout`` says: one ``(chs, offset)`` per
    group of y's channels, in order; ``offset=None`` is a new dense map (returned), an int puts
    the group at channels [offset, offset + chs) of ``into``, a channels-last map written in place
    (returned first). Backward reads the gradient the same way, so a concatenation costs no copy."""

    @staticmethod
    def forward(ctx, y, weight, bias, running_mean, running_var, momentum, eps, relu, layout, into):
        rows = _rows(y)
        n, _, h, w = y.shape
        into_rows = _dense_rows(into) if into is not None else None
        new = [kernel().empty_map(n, chs, h, w) for chs, offset in layout if offset is None]
        new_rows = iter([_dense_rows(t) for t in new])
        parts = [next(new_rows) if offset is None else into_rows[:, offset:offset + chs] for chs, offset in layout]
        mean, invstd = kernel().forward(rows, weight, bias, running_mean, running_var, momentum, eps, relu, parts)
        ctx.save_for_backward(rows, weight, bias, mean, invstd)
        ctx.relu, ctx.layout, ctx.has_into, ctx.shape = relu, layout, into is not None, y.shape
        outputs = list(new)
        if into is not None:
            ctx.mark_dirty(into)
            outputs.insert(0, into)
        return tuple(outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        rows, weight, bias, mean, invstd = ctx.saved_tensors
        grads = list(grads)
        into_grad = grads.pop(0) if ctx.has_into else None
        into_rows = _rows(into_grad) if into_grad is not None else None
        new_grads = iter(grads)
        parts = [_rows(next(new_grads)) if offset is None else into_rows[:, offset:offset + chs]
                 for chs, offset in ctx.layout]
        dx, dweight, dbias = kernel().backward(parts, rows, weight, bias, mean, invstd, ctx.relu)
        # the rest of ``into`` belongs to other writers, whose backward reads its own channels
        return _map(dx, ctx.shape), dweight, dbias, None, None, None, None, None, None, into_grad


class _CopyInto(torch.autograd.Function):
    """``into[:, offset:offset + C] = t`` in place, for a branch whose output is not a batch norm's."""

    @staticmethod
    def forward(ctx, into, t, offset):
        into.narrow(1, offset, t.shape[1]).copy_(t)
        ctx.offset, ctx.chs = offset, t.shape[1]
        ctx.mark_dirty(into)
        return into

    @staticmethod
    def backward(ctx, grad):
        return grad, grad.narrow(1, ctx.offset, ctx.chs), None


def supports(x: torch.Tensor, bn: nn.Module) -> bool:
    """Whether the fused kernel computes ``bn`` (then ReLU) on ``x`` as PyTorch would: a plain affine
    `BatchNorm2d` in training mode with running statistics and a momentum, on a float32 CPU map
    stored channels-last (or a channel slice of one) with more than one value per channel. NCHW
    maps keep PyTorch's kernels, which suit that layout."""
    return (type(bn) is nn.BatchNorm2d and bn.training and bn.affine and bn.track_running_stats
            and bn.momentum is not None and x.dim() == 4 and x.dtype == torch.float32
            and x.device.type == "cpu" and bn.weight.dtype == torch.float32
            and (x.stride(1) == 1 or x.shape[1] == 1)
            and x.numel() > x.shape[1] and usable())


def batch_norm_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                    running_var: torch.Tensor, momentum: float, eps: float, relu: bool = True,
                    layout=None, into: "ConcatOutput | None" = None) -> tuple[torch.Tensor, ...]:
    """Training-mode ``relu(batch_norm(x))`` (or the batch norm alone) through the fused kernel;
    updates the running statistics in place. The caller checks `supports` first.

    N x C x H x W -> the new maps of ``layout`` (see `_BatchNormReLU`; by default one map of all C
    channels), stored channels-last; groups with an offset go into ``into``.
    """
    layout = tuple(layout) if layout is not None else ((x.shape[1], None),)
    args = (x, weight, bias, running_mean, running_var, float(momentum), float(eps), relu, layout)
    if into is None or all(offset is None for _, offset in layout):
        return _BatchNormReLU.apply(*args, None)
    into.claim(x, sum(chs for chs, offset in layout if offset is not None))
    into.map, *new = _BatchNormReLU.apply(*args, into.map)
    return tuple(new)


def fused_bn_relu(x: torch.Tensor, bn: nn.BatchNorm2d, relu: bool = True,
                  into: "ConcatOutput | None" = None, offset: int | None = None) -> torch.Tensor | None:
    """``bn`` (in training mode) then ReLU through the fused kernel, as ``BatchNorm2d.forward`` would
    update its running statistics and batch count: a new map, or (with ``into``) channels
    [offset, offset + C) of a concatenation's output. The caller checks `supports` first."""
    bn.num_batches_tracked.add_(1)
    new = batch_norm_relu(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps, relu,
                          layout=((x.shape[1], offset if into is not None else None),), into=into)
    return new[0] if new else None


class ConcatOutput:
    """The output of a concatenation on channels, which its branches fill in place: the fused
    kernel writes each batch norm's result straight into its channels, and `copy` the rest.
    The map (N x channels x H x W, channels-last) is allocated by the first write."""

    def __init__(self, channels: int):
        self.channels = channels
        self.map: torch.Tensor | None = None
        self.filled = 0

    def claim(self, like: torch.Tensor, chs: int) -> None:
        """Allocates the map on the first write (N, H, W of ``like``); counts ``chs`` channels filled."""
        if self.map is None:
            n, _, h, w = like.shape
            self.map = kernel().empty_map(n, self.channels, h, w)
        if (like.shape[0],) + tuple(like.shape[2:]) != (self.map.shape[0],) + tuple(self.map.shape[2:]):
            raise ValueError(f"a branch's output {tuple(like.shape)} does not fit the concatenation "
                             f"{tuple(self.map.shape)}: the branches must keep the same size")
        self.filled += chs
        if self.filled > self.channels:
            raise ValueError(f"the branches give more than the concatenation's {self.channels} channels")

    def copy(self, t: torch.Tensor, offset: int) -> None:
        """``map[:, offset:offset + C] = t``, with its gradient."""
        self.claim(t, t.shape[1])
        self.map = _CopyInto.apply(self.map, t, offset)

    def result(self) -> torch.Tensor:
        if self.filled != self.channels:
            raise ValueError(f"the branches filled {self.filled} of the concatenation's {self.channels} channels")
        return self.map
