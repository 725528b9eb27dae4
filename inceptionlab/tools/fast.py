"""The fast paths: a model prepared for inference, and the settings of a fast training step.

`optimize_for_inference(model)` returns a copy that gives the eager model's outputs (allclose 1e-4)
in less time:

1. batch norm folded into the convolution before it (`fold_batchnorm`): ``w' = w * g / sqrt(v + eps)``,
   ``b' = (b - m) * g / sqrt(v + eps) + beta``; the Inception-ResNet residual scale folded into the
   up-projection the same way (``x + s * (W z + b) = x + (sW) z + sb``);
2. on CPUs with oneDNN, each convolution runs as one oneDNN primitive with its ReLU (and, in
   Inception-ResNet blocks, the residual addition) fused, on weights reordered once into oneDNN's
   blocked layout instead of on every call (`FusedConv`): what PyTorch's own compiler emits for
   convolutions, without compiling. Pooling branches project before they pool
   (`FusedPoolProjection`), pooling fewer channels; Inception-ResNet's 1x1 up-projections add
   themselves into the block's input in place, one GEMM (`FusedResidual`);
3. on CPUs, the stem's large-grid layers (147x147 to 71x71 at 299 px) run one image at a time (`PerImage`),
   so that one image's maps stay in cache from layer to layer, and batches larger than `CPU_CHUNK`
   run in chunks of that many images;
4. channels-last memory format, inference mode (no autograd bookkeeping), auxiliary heads dropped;
5. optionally ``torch.compile`` on top (``compile=True``).

`fold_batchnorm` alone gives the plain, exportable network (ONNX, ``torch.export``).

The training side (`prepare_for_training`, `make_optimizer`, `autocast_context`): channels-last,
fused optimizer steps, bf16 autocast where the CPU has it, optional compile. Channels-last is also
what lets the blocks themselves (`models/layers.py`) take their training-order fast paths on the
CPU: 1x1 convolutions as one matrix product, the 1x1 openers of a module's branches as one,
pooling branches that project before they pool, and Inception-ResNet's up-projection and scaled
addition as one product and one addition.
"""
from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F

from inceptionlab.cpus import pointwise_path
from inceptionlab.errors import UserError
from inceptionlab.models.base import block_output_size
from inceptionlab.models.layers import (ConvBN, PoolProjection, ScaledResidual, channel_rows, is_channels_last,
                                        is_pointwise)


# ------------------------------------------------------------------ batch norm folding
@torch.no_grad()
def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, scale: float = 1.0) -> nn.Conv2d:
    """A biased convolution equal to ``scale * bn(conv(x))`` in eval mode."""
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    weight = conv.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64,
                                                                        device=weight.device)
    if bn is not None:
        gain = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = weight * gain.view(-1, 1, 1, 1)
        bias = (bias - bn.running_mean.double()) * gain + bn.bias.double()
    out.weight.copy_(weight * scale)
    out.bias.copy_(bias * scale)
    return out


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Folds every `ConvBN`'s batch norm into its convolution, in place (eval-mode arithmetic:
    running statistics), and every `ScaledResidual`'s scale into its up-projection. Returns the
    model, in eval mode; its outputs equal the eager model's in eval mode."""
    for module in model.modules():
        if isinstance(module, ConvBN) and module.bn is not None:
            module.conv = _folded_conv(module.conv, module.bn)
            module.bn = None
        elif isinstance(module, ScaledResidual) and module.scale != 1.0:
            module.up_project = _folded_conv(module.up_project, None, module.scale)
            module.scale = 1.0
    return model.eval()


# ------------------------------------------------------------------ oneDNN fused convolutions
def mkldnn_fusion_available() -> bool:
    """Whether this PyTorch has oneDNN's fused convolution ops (CPU builds with mkldnn)."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    except (AttributeError, RuntimeError):
        return False


class FusedConv(nn.Module):
    """conv -> [+ residual] -> [ReLU] as one oneDNN primitive on prepacked weights (CPU, inference).

    Falls back to ``F.conv2d`` (then add, then ReLU) on other devices, under ``torch.compile`` or
    export tracing, and with autograd on.
    """

    def __init__(self, conv: nn.Conv2d, relu: bool, bias: bool = True):
        super().__init__()
        self.register_buffer("weight", conv.weight.detach().clone())
        keep = bias and conv.bias is not None  # bias=False: the caller adds the conv's bias itself
        self.register_buffer("bias", conv.bias.detach().clone() if keep else None)
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.relu = relu
        self._packed: dict = {}  # (device, dtype) -> weight in oneDNN's blocked layout
        self._matrix: dict = {}  # dtype -> a 1x1 weight as an in_chs x out_chs matrix

    def _eager(self, x: torch.Tensor) -> bool:
        # bf16 only where oneDNN computes it: on an AVX2-only CPU its weight reorder raises
        # "bf16 path needs the cpu support avx_ne_convert or avx512bw, avx512vl and avx512dq"
        return (x.device.type == "cpu" and (x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and
                                                                         cpu_has_bf16()))
                and not torch.is_grad_enabled() and not torch.compiler.is_compiling()
                and mkldnn_fusion_available())

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        if key not in self._packed:
            self._packed[key] = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight.to(x.dtype), self.padding, self.stride, self.dilation, self.groups, list(x.shape))
        return self._packed[key]

    def _onednn(self, x: torch.Tensor, relu: bool) -> torch.Tensor:
        """The convolution (+ bias, [+ ReLU]) as one oneDNN primitive on the packed weight."""
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return torch.ops.mkldnn._convolution_pointwise(
            x, self._packed_weight(x), bias, self.padding, self.stride, self.dilation, self.groups,
            "relu" if relu else "none", [], "")

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self._eager(x):
            if residual is None:
                return self._onednn(x, self.relu)
            bias = self.bias.to(x.dtype) if self.bias is not None else None
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual, self._packed_weight(x), bias, self.padding, self.stride, self.dilation, self.groups,
                "add", None, "relu" if self.relu else None, [], "")
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if residual is not None:
            y = y + residual
        return F.relu(y) if self.relu else y

    def accumulate_into(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``out += conv(x)`` (then ReLU) in ``out``'s memory, for a 1x1 convolution of channels-last
        maps. ``out`` is overwritten.

        Where MKL's GEMM is fast (`inceptionlab.cpus.pointwise_path` says "gemm"): one GEMM that adds
        to what ``out`` holds (BLAS beta = 1), which costs about what the plain product costs, where
        oneDNN's fused addition costs 25-50% more (Inception-ResNet-v2's 17x17 and 8x8
        up-projections at batch 8, Xeon). Where it is not ("onednn": MKL ran these at 90 GFLOP/s on
        an AVX-512 EPYC, oneDNN at 200): oneDNN's plain convolution, then an in-place addition;
        Inception-ResNet-v2 at batch 8 took 1189 ms that way, 1260 ms with oneDNN's fused addition
        and 1551 ms with the GEMM (one thread, alternating)."""
        if pointwise_path() == "onednn":
            out.add_(self._onednn(x, relu=False))  # N x C_out x H x W, channels-last like out
            return out.relu_() if self.relu else out
        matrix = self._matrix.get(x.dtype)
        if matrix is None:
            matrix = self._matrix[x.dtype] = self.weight.to(x.dtype).flatten(1).t().contiguous()
        rows = channel_rows(out)  # N x C_out x H x W -> (N*H*W) x C_out, a view
        if self.bias is not None:
            rows.add_(self.bias.to(x.dtype))
        rows.addmm_(channel_rows(x), matrix)  # += (N*H*W) x C_in @ C_in x C_out
        return out.relu_() if self.relu else out

    def __getstate__(self):
        """Copies and pickles leave the packed weights out (oneDNN's opaque tensors have no storage
        to copy); they are packed again on the first call."""
        return {**self.__dict__, "_packed": {}, "_matrix": {}}

    def _apply(self, fn, recurse=True):
        self._packed, self._matrix = {}, {}  # a new device or dtype: pack again on the next call
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        k = tuple(self.weight.shape[2:])
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, kernel_size={k}, "
                f"stride={tuple(self.stride)}, padding={tuple(self.padding)}, relu={self.relu}")


class FusedConvBN(nn.Module):
    """A folded `ConvBN` as one `FusedConv` (conv + bias + ReLU)."""

    def __init__(self, module: ConvBN):
        super().__init__()
        self.conv = FusedConv(module.conv, relu=module.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FusedResidual(nn.Module):
    """A folded `ScaledResidual`: ``relu(x + up_project(branches(x)))`` with the add and the ReLU
    fused into the up-projection's convolution.

    With ``inplace=True`` (what `optimize_for_inference` sets: inside the prepared model a block's
    input is the previous block's output and nothing else holds it) the 1x1 up-projection adds
    itself into ``x``'s memory (`FusedConv.accumulate_into`), and the block returns ``x``, changed.
    """

    def __init__(self, module: ScaledResidual, inplace: bool = False):
        super().__init__()
        self.branches = module.branches
        self.up_project = FusedConv(module.up_project, relu=module.activate)
        self.inplace = inplace and is_pointwise(module.up_project)
        self.writes_into_input = self.inplace  # forward_endpoints keeps a copy of a kept input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.branches(x)  # N x C_branches x H x W
        if self.inplace and self.up_project._eager(x) and is_channels_last(x, z):
            return self.up_project.accumulate_into(x, z)
        return self.up_project(z, residual=x)

    def extra_repr(self) -> str:
        return f"inplace={self.inplace}"


class FusedPoolProjection(nn.Module):
    """A folded `PoolProjection`: the 1x1 projection (without its bias) as one oneDNN primitive,
    then the pooling on its few channels, then bias and ReLU."""

    def __init__(self, module: PoolProjection):
        super().__init__()
        self.pool, projection = module[0], module[1]
        self.project = FusedConv(projection.conv, relu=False, bias=False)
        bias = projection.conv.bias
        self.register_buffer("bias", bias.detach().clone().view(1, -1, 1, 1) if bias is not None else None)
        self.relu = projection.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.project(x))  # N x C_in x H x W -> N x C_out x H x W -> pooled
        if self.bias is not None:
            y = y + self.bias
        return F.relu(y, inplace=True) if self.relu else y


def fuse_convolutions(model: nn.Module, inplace_residuals: bool = False) -> nn.Module:
    """Replaces every folded `ConvBN`, `PoolProjection` and `ScaledResidual` by its fused form, in place.
    ``inplace_residuals``: residual blocks write their output over their input (`FusedResidual`)."""
    for name, child in list(model.named_children()):
        if isinstance(child, ConvBN) and child.bn is None:
            setattr(model, name, FusedConvBN(child))
        elif isinstance(child, PoolProjection) and child[1].bn is None:
            setattr(model, name, FusedPoolProjection(child))
        elif isinstance(child, ScaledResidual) and child.scale == 1.0:
            fuse_convolutions(child.branches)
            setattr(model, name, FusedResidual(child, inplace=inplace_residuals))
        else:
            fuse_convolutions(child, inplace_residuals)
    return model


# ------------------------------------------------------------------ the stem, one image at a time
class PerImage(nn.Module):
    """Runs ``blocks`` one image at a time and concatenates the results.

    The stems' layers work on 147x147 to 71x71 grids: megabytes per image that, batched, oneDNN's
    loops stream through the caches once per layer. Image by image, one image's maps stay cached
    from layer to layer. Measured at batch 8, one thread, alternating: running the stem up to its
    first pooling this way takes 5-6% off Inception-v3's and v4's whole forward pass; going on to
    the last layer before the 35x35 modules (input grids >= 64) takes another 2-3%, and into the
    35x35 modules gives some back; block by block, image by image, gains nothing.
    """

    def __init__(self, blocks: nn.Sequential):
        super().__init__()
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            return self.blocks(x)
        return torch.cat([self.blocks(image) for image in x.split(1)])  # N x C x H x W, as batched


def per_image_stem(model: nn.Module, min_grid: int = 64) -> nn.Module:
    """Groups an `InceptionNet`'s leading blocks whose input grid, at the model's default input
    size, is at least ``min_grid`` pixels on a side into one `PerImage`, in place. The group takes
    the name of its last block (whose output it gives)."""
    blocks = getattr(model, "blocks", None)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    if not isinstance(blocks, nn.ModuleDict) or "input_size" not in cfg:
        return model
    size, lead = tuple(cfg["input_size"][-2:]), []
    for name, block in blocks.items():
        if min(size) < min_grid:
            break
        lead.append(name)
        size = block_output_size(block, size)
    if len(lead) < 2:
        return model
    grouped = nn.ModuleDict({lead[-1]: PerImage(nn.Sequential(OrderedDict((n, blocks[n]) for n in lead)))})
    for name in list(blocks)[len(lead):]:
        grouped[name] = blocks[name]
    model.blocks = grouped
    return model


# ------------------------------------------------------------------ the inference model
# Batches larger than this run in chunks of this many images on the CPU. Measured at 299 px, one
# thread, chunk against whole batch alternating in one process: batch 32 in chunks of 8 is 1.15x
# faster for Inception-ResNet-v2 and 1.01-1.05x (within the noise) for v3 and v4; at batch 8, chunks
# of 4 or 2 are slower for all three. A chunk's maps at the 17x17 and 8x8 stages stay in the caches
# from layer to layer.
CPU_CHUNK = 8


class InferenceModel(nn.Module):
    """What `optimize_for_inference` returns: the prepared network (``.model``), run in inference
    mode on channels-last input, large batches in chunks of ``chunk_size`` images (0: whole).
    Attributes it does not have (``pretrained_cfg``, ``num_classes``, ``forward_features``...) are
    the network's."""

    def __init__(self, model: nn.Module, channels_last: bool = True, compiled=None,
                 dtype: torch.dtype | None = None, chunk_size: int = 0):
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.compiled = compiled
        self.dtype = dtype
        self.chunk_size = chunk_size

    def _prepared(self, x: torch.Tensor) -> torch.Tensor:
        if self.dtype is not None:
            x = x.to(self.dtype)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor):
        if torch.jit.is_tracing():  # (it failed deep in torch: "unsupported input list type: Scalar?")
            raise UserError("an optimize_for_inference model does not trace with torch.jit.trace (its fused oneDNN "
                            "calls have no TorchScript form); trace the model before optimize_for_inference, or "
                            "export it with inceptionlab export")
        with torch.inference_mode():
            if self.compiled is None and 0 < self.chunk_size < x.shape[0]:
                # each chunk cast and laid out channels-last as it goes in: no copy of the whole batch
                return _joined([self.model(self._prepared(part)) for part in x.split(self.chunk_size)])
            x = self._prepared(x)
            if self.compiled is not None:
                return self.compiled(x)
            return self.model(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.forward_features(self._prepared(x))

    def forward_endpoints(self, x: torch.Tensor, names=None) -> dict:
        self._check_not_grouped([names] if isinstance(names, str) else names or [])
        with torch.inference_mode():
            return self.model.forward_endpoints(self._prepared(x), names)

    def _check_not_grouped(self, names) -> None:
        """A one-line error for a stem block that `per_image_stem` ran into a group (it said "has no
        block 'conv2d_2b_3x3'", a name its own feature_info lists)."""
        for group_name, block in getattr(self.model, "blocks", {}).items():
            if not isinstance(block, PerImage):
                continue
            inside = [n for n in block.blocks._modules if n != group_name]
            asked = [n for n in names if n in inside]
            if asked:
                raise UserError(f"optimize_for_inference runs the stem blocks {inside[0]} to {group_name} as one, "
                                f"and keeps only {group_name}'s output; ask the model before optimize_for_inference "
                                f"for {asked[0]}")

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        with torch.inference_mode():
            return self.model.forward_head(x, pre_logits=pre_logits)

    def train(self, mode: bool = True) -> "InferenceModel":
        if mode:
            raise UserError("an optimize_for_inference model is for inference only (batch norm folded, no "
                            "gradients); train the model it was made from")
        return super().train(False)

    def save_pretrained(self, directory, classes=None):
        raise UserError("an optimize_for_inference model has its batch norms folded into other weights, which "
                        "create_model cannot load; save the model you optimized (model.save_pretrained)")

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["model"], name)


def _joined(parts: list):
    """The outputs of a batch's chunks as one: tensors joined along the batch, lists (a
    features_only model's levels) and dicts level by level."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, dict):
        return {key: torch.cat([p[key] for p in parts]) for key in first}
    return type(first)(torch.cat(level) for level in zip(*parts))


DTYPE_NAMES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
               "half": torch.float16, "fp32": torch.float32, "float32": torch.float32}


def optimize_for_inference(model: nn.Module, *, channels_last: bool = True, fuse: bool | None = None,
                           compile: bool = False, dtype: torch.dtype | None = None,
                           chunk_size: int | None = None) -> InferenceModel:
    """A copy of ``model`` prepared for fast inference; ``model`` itself is left as it is.

    Batch norm is folded into the convolutions; on CPUs with oneDNN (``fuse=None`` decides by
    itself) every convolution runs fused with its ReLU on prepacked weights; the model is put in
    channels-last format and eval mode, auxiliary heads are dropped, and the returned module runs
    in ``torch.inference_mode``. ``compile=True`` also wraps it in ``torch.compile`` (Inductor with
    weight freezing; the first call then takes minutes on a small CPU). ``dtype`` (e.g.
    ``torch.bfloat16``) casts the weights; the input is cast to match. ``chunk_size``: batches
    larger than this run that many images at a time (default: `CPU_CHUNK` on the CPU, uncompiled;
    0 runs every batch whole).

    The outputs equal the eager model's in eval mode (allclose at 1e-4 in float32).
    """
    if isinstance(dtype, str) and dtype.lower() in DTYPE_NAMES:
        dtype = DTYPE_NAMES[dtype.lower()]
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point type (torch.bfloat16, torch.float16, or 'bf16', "
                         f"'fp16'), got {dtype!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 0):
        raise ValueError(f"chunk_size must be 0 (whole batches) or a positive number of images, got {chunk_size!r}")
    fast = copy.deepcopy(model).eval()
    fast.requires_grad_(False)
    if hasattr(fast, "drop_aux_heads"):
        fast.drop_aux_heads()
    fold_batchnorm(fast)
    device = next(fast.parameters()).device
    if fuse is None:
        fuse = device.type == "cpu" and mkldnn_fusion_available() and not compile
    if fuse:
        fuse_convolutions(fast, inplace_residuals=True)
    if device.type == "cpu" and not compile:
        per_image_stem(fast)
    if dtype is not None:
        fast.to(dtype)
    if channels_last:
        fast.to(memory_format=torch.channels_last)
    compiled = None
    if compile:
        compiled = _compile_for_inference(fast)
    if chunk_size is None:
        chunk_size = CPU_CHUNK if device.type == "cpu" and not compile else 0
    return InferenceModel(fast, channels_last, compiled, dtype, chunk_size).eval()


def _compile_for_inference(model: nn.Module):
    """``torch.compile`` with Inductor's weight freezing (constant-folds the weights and prepacks
    them for oneDNN), which is what makes compiled CPU inference fast."""
    try:
        import torch._inductor.config as inductor_config
        inductor_config.freezing = True
    except (ImportError, AttributeError):  # pragma: no cover - older or stripped builds
        pass
    return torch.compile(model)


# ------------------------------------------------------------------ training
@functools.lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), so that bf16 autocast pays, and
    oneDNN takes bf16 convolutions at all."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def make_optimizer(params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 4e-5,
                   fused: bool | None = None) -> torch.optim.Optimizer:
    """SGD with momentum, with PyTorch's fused step where it has one (CPU and CUDA since 2.4), else
    the multi-tensor (foreach) step."""
    params = list(params)
    if fused is None:
        fused = True
    try:
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True)


def autocast_context(device_type: str, precision: str):
    """The autocast context for ``precision`` ('fp32', 'bf16', 'fp16') on ``device_type``."""
    if precision == "fp32":
        return nullcontext()
    dtype = DTYPE_NAMES[precision]
    return torch.autocast(device_type=device_type, dtype=dtype)


def prepare_for_training(model: nn.Module, *, channels_last: bool = True, compile: bool = False) -> nn.Module:
    """Channels-last (and optionally ``torch.compile``) for a training step; returns the module to call.

    On the CPU, channels-last input turns on the blocks' training-order paths (one matrix product
    for the 1x1 convolutions, for the 1x1 openers of parallel branches together, and for
    Inception-ResNet's up-projections).
    """
    model.train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile else model
