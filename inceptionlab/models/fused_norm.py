"""Training-mode batch norm + ReLU in one native CPU kernel (``csrc/bn_relu.cpp``).

PyTorch runs BN then ReLU as separate memory passes over the map: statistics, normalize, ReLU
forward; ReLU, the BN reduction, the BN elementwise pass backward. The kernel does two passes each
way and recomputes the ReLU's mask from its input, which is about 1.3-1.9x faster on the maps of
an Inception network (``benchmarks/fused_norm.py``). Batch norm and ReLU are 15-20% of a training
step on a CPU, so the whole step gains 5-9%.

The kernel is compiled with the machine's C++ compiler on first use (``torch.utils.cpp_extension``,
about a minute once; cached under ``$INCEPTIONLAB_BUILD_DIR`` or PyTorch's extension cache). Where it
cannot be built, or with ``INCEPTIONLAB_FUSED_NORM=0``, training uses PyTorch's batch norm and ReLU,
with one warning. Either way the arithmetic is that of ``BatchNorm2d`` in training mode: batch
statistics, biased variance for normalizing, unbiased for the running estimate.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import warnings
from pathlib import Path

import torch
import torch.nn as nn

SOURCE = Path(__file__).with_name("csrc") / "bn_relu.cpp"
ENV_SWITCH = "INCEPTIONLAB_FUSED_NORM"
_kernel = None
_tried = False


def enabled() -> bool:
    """Whether the fused kernel may be used (``INCEPTIONLAB_FUSED_NORM`` is not 0/false/off)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "off", "no")


def _build_name() -> str:
    """A name that changes with the source, the torch version and the CPU (built with -march=native)."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    key = "|".join([SOURCE.read_text(), torch.__version__, platform.machine(), flags, sys.version])
    return "inceptionlab_bn_relu_" + hashlib.sha1(key.encode()).hexdigest()[:12]


def kernel():
    """The compiled kernel module, building it on first call; None where it cannot be built."""
    global _kernel, _tried
    if _tried or not enabled():
        return _kernel if enabled() else None
    _tried = True
    try:
        _kernel = _build()
    except Exception as err:  # no compiler, no ninja, a read-only cache: train without it
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        warnings.warn(f"inceptionlab: the fused batch norm kernel could not be built ({reason[:200]}); "
                      f"training uses PyTorch's batch norm and ReLU (set {ENV_SWITCH}=0 to skip the build)",
                      RuntimeWarning, stacklevel=3)
        _kernel = None
    return _kernel


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
        from torch.utils.cpp_extension import load
        build_dir = os.environ.get("INCEPTIONLAB_BUILD_DIR")
        if build_dir:
            os.makedirs(build_dir, exist_ok=True)
        return load(name=_build_name(), sources=[str(SOURCE)], build_directory=build_dir,
                    extra_cflags=["-O3", "-march=native", "-fopenmp-simd"], verbose=False)
    finally:
        logger.setLevel(level)


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


def _map(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N*H*W) x C dense rows -> N x C x H x W stored channels-last."""
    n, c, h, w = like.shape
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


class _BatchNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, relu):
        rows = _rows(x)
        out, mean, invstd = kernel().forward(rows, weight, bias, running_mean, running_var, momentum, eps, relu)
        ctx.save_for_backward(rows, weight, bias, mean, invstd)
        ctx.relu = relu
        ctx.shape = x.shape
        return _map(out, x)

    @staticmethod
    def backward(ctx, grad):
        rows, weight, bias, mean, invstd = ctx.saved_tensors
        dx, dweight, dbias = kernel().backward(_rows(grad), rows, weight, bias, mean, invstd, ctx.relu)
        return _map(dx, grad), dweight, dbias, None, None, None, None, None


def supports(x: torch.Tensor, bn: nn.Module) -> bool:
    """Whether the fused kernel computes ``bn`` (then ReLU) on ``x`` as PyTorch would: a plain affine
    `BatchNorm2d` in training mode with running statistics and a momentum, on a float32 CPU map
    stored channels-last (or a channel slice of one) with more than one value per channel. NCHW
    maps keep PyTorch's kernels, which suit that layout."""
    return (type(bn) is nn.BatchNorm2d and bn.training and bn.affine and bn.track_running_stats
            and bn.momentum is not None and x.dim() == 4 and x.dtype == torch.float32
            and x.device.type == "cpu" and bn.weight.dtype == torch.float32
            and (x.stride(1) == 1 or x.shape[1] == 1)
            and x.numel() > x.shape[1] and kernel() is not None)


def batch_norm_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                    running_var: torch.Tensor, momentum: float, eps: float, relu: bool = True) -> torch.Tensor:
    """Training-mode ``relu(batch_norm(x))`` (or the batch norm alone) through the fused kernel;
    updates the running statistics in place. The caller checks `supports` first.

    N x C x H x W -> N x C x H x W, stored channels-last.
    """
    return _BatchNormReLU.apply(x, weight, bias, running_mean, running_var, float(momentum), float(eps), relu)


def fused_bn_relu(x: torch.Tensor, bn: nn.BatchNorm2d, relu: bool = True) -> torch.Tensor:
    """``bn`` (in training mode) then ReLU through the fused kernel, as ``BatchNorm2d.forward`` would
    update its running statistics and batch count. The caller checks `supports` first."""
    bn.num_batches_tracked.add_(1)
    return batch_norm_relu(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps, relu)
