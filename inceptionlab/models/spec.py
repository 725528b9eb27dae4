"""Architectures as data: the vocabulary of the stage tables, and the builder that turns a table
into modules while applying the papers' ideas as switches.

A family file writes its network the way the paper draws it, e.g. Inception-v3's Figure 5 module::

    Mixed([Conv(64, 1)],
          [Conv(48, 1), Conv(64, 5)],
          [Conv(64, 1), Factorized5x5(96, mid=96)],
          [Pool("avg"), Conv(32, 1)])

and `Builder` turns it into `Concat`/`ConvBN` modules. The switches are applied here, once, for
every family:

- ``factorize_5x5``   (v3 Sec. 3.1, Fig. 1): True turns every 5x5 into two stacked 3x3, False turns
                      every two-3x3 stack written as `Factorized5x5` back into one 5x5; None keeps
                      the table (which is what the reference weights expect).
- ``factorize_nxn``   (v3 Sec. 3.2, Fig. 3/6): True turns every square n x n (n >= 3, stride 1)
                      inside Inception modules into 1xn then nx1 (the 3x3s of a 5x5 factorized by
                      either switch too), False turns every `FactorizedNxN` back into one n x n;
                      None keeps the table.
                      A split the switches make puts the narrower of its two ends in the middle:
                      the paper's 28% (5x5) and 33% (3x3) savings hold at equal widths, and a
                      widening one (GoogLeNet's 5x5 16 -> 32) split at its output width would cost
                      more than the convolution it replaces. Splits the tables draw keep their widths.
- ``grid_reduction``  (v3 Sec. 4, Fig. 9/10) for `Reduction` modules: "efficient" keeps the parallel
                      stride-2 convolutions and pooling; "conv_then_pool" runs the same branches at
                      stride 1 and pools afterwards (expensive); "pool_then_conv" pools first
                      (cheap, but a representational bottleneck). Every parallel stride-2 module
                      is one, Inception-v4's stem modules (mixed_3a, mixed_5a) included.
- ``stem="low_res"``  after v3 Sec. 8 (less early down-sampling for small inputs; the paper kept
                      a 79x79 receptive field with stride 1 and no pooling after the first layer):
                      here no down-sampling in the stem at all (stride-2 convolutions become
                      stride 1, stand-alone stem pools are dropped), for 32x32 inputs.
- ``depth_multiplier``/``min_depth`` (TF-slim): every width becomes max(int(d * m), min_depth).
- ``norm``            (v2 paper): BN on or off.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from typing import Sequence, Union

import torch.nn as nn

from inceptionlab.models.layers import Concat, ConvBN, PoolProjection, ScaledResidual


# ---------------------------------------------------------------- the vocabulary of the tables
@dataclass(frozen=True)
class Conv:
    """A ConvBN. ``pad=None`` means 'same' at stride 1 and 'valid' (0) at stride 2; ``out=None``
    keeps the input's width (the middle of a split the switches make)."""
    out: Union[int, None]
    kernel: Union[int, tuple] = 1
    stride: int = 1
    pad: Union[int, tuple, None] = None


@dataclass(frozen=True)
class Factorized5x5:
    """A 5x5 receptive field drawn as two stacked 3x3 (first to ``mid``, then to ``out``). At
    stride 2 the second 3x3 has padding ``pad`` (None: 1, BN-Inception's; 0: 'valid', TF-slim's
    reductions); the one 5x5 it stands for pads one more, so both give the same grid."""
    out: int
    mid: int
    stride: int = 1
    pad: Union[int, None] = None

    @property
    def last_pad(self) -> int:
        return 1 if self.stride == 1 or self.pad is None else self.pad


@dataclass(frozen=True)
class FactorizedNxN:
    """An n x n receptive field drawn as 1xn then nx1 (``first="1xn"``) or nx1 then 1xn."""
    out: int
    n: int
    mid: int
    first: str = "1xn"


@dataclass(frozen=True)
class Pool:
    """Max or average pooling. ``pad=None``: 'same' at stride 1, 'valid' at stride 2."""
    kind: str = "max"
    kernel: int = 3
    stride: int = 1
    pad: Union[int, None] = None
    ceil: bool = False


@dataclass(frozen=True)
class Split:
    """Parallel convolutions on one input, concatenated: the expanded filter bank ("Rethinking" Fig. 7)."""
    convs: tuple


Op = Union[Conv, Factorized5x5, FactorizedNxN, Pool, Split]


@dataclass(frozen=True)
class Mixed:
    """An Inception module: parallel branches (each a list of ops), concatenated."""
    branches: tuple

    def __init__(self, *branches: Sequence[Op]):
        object.__setattr__(self, "branches", tuple(tuple(b) for b in branches))


class Reduction(Mixed):
    """A grid-size reduction module: stride-2 branches next to a stride-2 pooling branch."""


@dataclass(frozen=True)
class Residual:
    """An Inception-ResNet block: branches, 1x1 up-projection, scaled residual add, ReLU.

    ``stage`` (0, 1, 2 for the 35x35, 17x17, 8x8 grids) picks the entry of ``residual_scale``;
    ``scale`` overrides it (the unscaled last Block8 of the TF weights).
    """
    branches: tuple
    stage: int = 0
    activate: bool = True
    scale: Union[float, None] = None


Block = Union[Conv, Pool, Mixed, Reduction, Residual]


# ---------------------------------------------------------------- the switches
GRID_REDUCTIONS = ("efficient", "pool_then_conv", "conv_then_pool")
STEMS = ("imagenet", "low_res")


MAX_DEPTH_MULTIPLIER = 1000.0  # past this a width is a typo (1e9 overflowed torch's storage size even on meta)
MAX_MIN_DEPTH = 4096


@dataclass
class Switches:
    """The papers' ideas, as values. Family factories fill in their references' defaults."""
    norm: bool = True
    bn_eps: float = 1e-3
    conv_bias: bool = False
    factorize_5x5: Union[bool, None] = None
    factorize_nxn: Union[bool, None] = None
    grid_reduction: str = "efficient"
    stem: str = "imagenet"
    depth_multiplier: float = 1.0
    min_depth: int = 16
    residual_scale: tuple = (1.0, 1.0, 1.0)
    avg_pool_count_pad: bool = True

    def __post_init__(self):
        from inceptionlab.errors import UserError
        if self.grid_reduction not in GRID_REDUCTIONS:
            raise UserError(f"grid_reduction must be one of {', '.join(GRID_REDUCTIONS)}, got {self.grid_reduction!r}")
        if self.stem not in STEMS:
            raise UserError(f"stem must be one of {', '.join(STEMS)}, got {self.stem!r}")
        # (depth_multiplier=1e9 was a 53-line traceback: a 64e9 x 64e9 weight overflowed torch's storage size)
        if not 0 < self.depth_multiplier <= MAX_DEPTH_MULTIPLIER:
            raise UserError(f"depth_multiplier must be > 0 and <= {MAX_DEPTH_MULTIPLIER:g}, got {self.depth_multiplier}")
        if not 1 <= int(self.min_depth) <= MAX_MIN_DEPTH:
            raise UserError(f"min_depth must be >= 1 and <= {MAX_MIN_DEPTH}, got {self.min_depth}")
        scale = self.residual_scale
        scale = (float(scale),) * 3 if isinstance(scale, numbers.Real) else tuple(float(v) for v in scale)
        if len(scale) != 3:
            raise UserError(f"residual_scale takes one number or three (35x35, 17x17, 8x8 stages), got {self.residual_scale!r}")
        if not all(v > 0 for v in scale):
            raise UserError(f"residual_scale must be > 0 (the paper scales by 0.1-0.3), got {self.residual_scale!r}")
        self.residual_scale = scale

    def depth(self, channels: int) -> int:
        """TF-slim's rule, at every multiplier (1.0 included: ``min_depth=64`` widens the narrow layers)."""
        return max(int(channels * self.depth_multiplier), self.min_depth)


def _same(kernel) -> Union[int, tuple]:
    if isinstance(kernel, tuple):
        return (kernel[0] // 2, kernel[1] // 2)
    return kernel // 2


# ---------------------------------------------------------------- the builder
class Builder:
    """Turns table entries into modules, tracking channels. One instance per model."""

    def __init__(self, switches: Switches):
        self.s = switches

    # -- single ops --------------------------------------------------------------
    def conv(self, op: Conv, in_chs: int, out_chs: Union[int, None] = None) -> tuple[nn.Module, int]:
        out = out_chs if out_chs is not None else in_chs if op.out is None else self.s.depth(op.out)
        pad = op.pad if op.pad is not None else (_same(op.kernel) if op.stride == 1 else 0)
        module = ConvBN(in_chs, out, op.kernel, op.stride, pad, norm=self.s.norm, eps=self.s.bn_eps,
                        conv_bias=self.s.conv_bias)
        return module, out

    def pool(self, op: Pool) -> nn.Module:
        pad = op.pad if op.pad is not None else (op.kernel // 2 if op.stride == 1 else 0)
        if op.kind == "max":
            return nn.MaxPool2d(op.kernel, op.stride, pad, ceil_mode=op.ceil)
        return nn.AvgPool2d(op.kernel, op.stride, pad, ceil_mode=op.ceil,
                            count_include_pad=self.s.avg_pool_count_pad)

    def expand(self, op: Op, in_module: bool, in_chs: int) -> list[Op]:
        """Rewrites one op according to the factorization switches (the pieces of a split are
        rewritten in turn: a 5x5 made two 3x3 is then split into 1x3 and 3x1 by ``factorize_nxn``)."""
        pieces = self._split(op, in_module, in_chs)
        if pieces == [op]:
            return pieces
        out = []
        for piece in pieces:
            out += self.expand(piece, in_module, in_chs)
            if isinstance(piece, Conv) and piece.out is not None:
                in_chs = self.s.depth(piece.out)
        return out

    def _split(self, op: Op, in_module: bool, in_chs: int) -> list[Op]:
        s = self.s
        if isinstance(op, Factorized5x5):
            if s.factorize_5x5 is False:
                return [Conv(op.out, 5, op.stride, op.last_pad + 1)]
            return [Conv(op.mid, 3), Conv(op.out, 3, op.stride, None if op.stride == 1 else op.last_pad)]
        if isinstance(op, FactorizedNxN):
            if s.factorize_nxn is False:
                return [Conv(op.out, op.n)]
            one_by_n, n_by_one = (1, op.n), (op.n, 1)
            first, second = (one_by_n, n_by_one) if op.first == "1xn" else (n_by_one, one_by_n)
            return [Conv(op.mid, first), Conv(op.out, second)]
        if isinstance(op, Conv) and op.stride == 1 and op.pad is None and in_module:
            # the middle takes the narrower end: the input's width where the convolution widens
            mid = None if op.out is None or in_chs < s.depth(op.out) else op.out
            if op.kernel == 5 and s.factorize_5x5:
                return [Conv(mid, 3), Conv(op.out, 3)]
            if isinstance(op.kernel, int) and op.kernel >= 3 and s.factorize_nxn:
                return [Conv(mid, (1, op.kernel)), Conv(op.out, (op.kernel, 1))]
        return [op]

    def branch(self, ops: Sequence[Op], in_chs: int, in_module: bool = True) -> tuple[nn.Module, int]:
        layers, chs = [], in_chs
        for op in ops:
            for piece in self.expand(op, in_module, chs):
                if isinstance(piece, Pool):
                    layers.append(self.pool(piece))
                elif isinstance(piece, Split):
                    parts = [self.conv(c, chs) for c in piece.convs]
                    layers.append(Concat([m for m, _ in parts]))
                    chs = sum(c for _, c in parts)
                else:
                    module, chs = self.conv(piece, chs)
                    layers.append(module)
        if PoolProjection.takes(layers):
            return PoolProjection(*layers), chs  # the same pool -> 1x1 branch, computed project-then-pool
        return (layers[0] if len(layers) == 1 else nn.Sequential(*layers)), chs

    def concat(self, branches, in_chs: int) -> tuple[Concat, int]:
        built = [self.branch(ops, in_chs) for ops in branches]
        return Concat([m for m, _ in built]), sum(c for _, c in built)

    # -- whole blocks --------------------------------------------------------------
    def block(self, spec: Block, in_chs: int, in_stem: bool = False) -> tuple[Union[nn.Module, None], int]:
        """Builds one table entry; returns (module or None if the switches drop it, out channels)."""
        if in_stem and self.s.stem == "low_res":
            spec = _without_downsampling(spec)
            if spec is None:
                return None, in_chs
        if isinstance(spec, Pool):
            return self.pool(spec), in_chs
        if isinstance(spec, Conv):
            return self.conv(spec, in_chs)
        if isinstance(spec, Residual):
            branches, branch_chs = self.concat(spec.branches, in_chs)
            scale = spec.scale if spec.scale is not None else self.s.residual_scale[spec.stage]
            return ScaledResidual(branches, branch_chs, in_chs, scale, spec.activate), in_chs
        if isinstance(spec, Reduction) and self.s.grid_reduction != "efficient":
            return self._reduction_variant(spec, in_chs)
        return self.concat(spec.branches, in_chs)

    def _reduction_variant(self, spec: Reduction, in_chs: int) -> tuple[nn.Module, int]:
        """The same branches at stride 1, with the module's stride-2 pooling before or after."""
        pool = next((op for b in spec.branches for op in b if isinstance(op, Pool) and op.stride == 2), None)
        if pool is None:  # a stem reduction that stem="low_res" took the stride from: nothing to reorder
            return self.concat(spec.branches, in_chs)
        body, out_chs = self.concat([_at_stride_one(b) for b in spec.branches], in_chs)
        if self.s.grid_reduction == "pool_then_conv":
            return nn.Sequential(self.pool(pool), body), out_chs
        return nn.Sequential(body, self.pool(pool)), out_chs


def _at_stride_one(ops: Sequence[Op]) -> list[Op]:
    """A branch with its stride-2 convolutions at stride 1 and 'same' padding. Its stride-2 pool is
    dropped (the pass-through branch becomes the identity): the module's own pool, before or after,
    does that pooling; a 3x3/1 pool left in its place pooled those channels twice."""
    out = []
    for op in ops:
        if isinstance(op, Conv) and op.stride == 2:
            op = replace(op, stride=1, pad=None)
        elif isinstance(op, Factorized5x5) and op.stride == 2:
            op = replace(op, stride=1, pad=None)
        elif isinstance(op, Pool) and op.stride == 2:
            continue
        out.append(op)
    return out


def _without_downsampling(spec: Block) -> Union[Block, None]:
    """The low-resolution stem of "Rethinking" Sec. 8: no stride, no stand-alone pooling."""
    if isinstance(spec, Pool):
        return None
    if isinstance(spec, Conv):
        return replace(spec, stride=1, pad=None)
    if isinstance(spec, Mixed):
        return type(spec)(*[[replace(op, stride=1, pad=None) if isinstance(op, (Conv, Pool)) else op
                             for op in b] for b in spec.branches])
    return spec
