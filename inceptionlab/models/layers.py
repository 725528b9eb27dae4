"""The building blocks of the Inception family: one small module per idea.

Every architecture in the zoo is a composition of these; none has private copies.

- `ConvBN`        convolution -> batch norm -> ReLU (Ioffe & Szegedy 2015, Sec. 3); `norm=False`
                  gives the pre-BN network (conv with bias, no BN) of that paper's ablation.
- `PoolProjection` an Inception module's pooling branch (average pooling -> 1x1 projection),
                  computed in the cheaper order: project, then pool.
- `Concat`        parallel branches on one input, concatenated on channels: the Inception module
                  (GoogLeNet, Szegedy et al. 2014, Sec. 4, Fig. 2) and the expanded filter bank
                  (Szegedy et al. 2015 "Rethinking", Fig. 7).
- `ScaledResidual` x + scale * up_project(branches(x)), then ReLU: the Inception-ResNet block
                  (Szegedy et al. 2016, Sec. 3.1, Fig. 20 for the scaling).
- `AuxHead`       an auxiliary classifier (GoogLeNet Sec. 5; "Rethinking" Sec. 4 and 7, with the
                  BN-auxiliary as `norm_fc`).
- `ClassifierHead` global average pooling -> dropout -> fully connected.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from inceptionlab.cpus import pointwise_path
from inceptionlab.models import fused_norm


class ConvBN(nn.Module):
    """conv -> BatchNorm -> ReLU. With ``norm=False`` the conv has a bias and there is no BN.

    ``conv_bias=True`` keeps a bias next to BN, as in the Caffe BN-Inception weights.

    In training, a 1x1 convolution on a channels-last CPU map runs as the matrix product it is
    (`pointwise_matmul`): PyTorch sends single-threaded small-batch 1x1 convolutions to its im2col
    path, which takes 15-35% longer for a training step than one GEMM (on AVX-512 CPUs not made by
    Intel, where MKL's GEMM runs at half speed, oneDNN's convolution instead). In eval mode the
    convolution runs as the reference implementations run it, so their weights give their outputs
    bit for bit; `inceptionlab.optimize_for_inference` is the fast path for inference.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel, stride: int = 1, padding=0, *,
                 norm: bool = True, eps: float = 1e-3, conv_bias: bool = False, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, padding, bias=conv_bias or not norm)
        self.bn = nn.BatchNorm2d(out_chs, eps=eps) if norm else None
        self.act = act

    @property
    def pointwise(self) -> bool:
        return is_pointwise(self.conv)

    def convolve(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """The convolution alone (with its bias unless ``bias=False``)."""
        b = self.conv.bias if bias else None
        if (self.training and self.pointwise and x.device.type == "cpu"
                and is_channels_last(x)):
            return pointwise_matmul(x, self.conv.weight, b)
        if b is self.conv.bias:
            return self.conv(x)
        return F.conv2d(x, self.conv.weight, None, self.conv.stride, self.conv.padding, self.conv.dilation,
                        self.conv.groups)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Batch norm and ReLU of a convolution's output (in training on a CPU, through the fused
        kernel of `fused_norm` where it is built)."""
        if self.bn is not None and self.training and fused_norm.supports(x, self.bn):
            return fused_norm.fused_bn_relu(x, self.bn, relu=self.act)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=True) if self.act else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.convolve(x))


def is_pointwise(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is a per-pixel channel mix (1x1, stride 1, no padding, ungrouped): a matrix product."""
    return (conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0)
            and conv.dilation == (1, 1) and conv.groups == 1)


def is_channels_last(*maps: torch.Tensor) -> bool:
    """Whether every one of ``maps`` is a 4-d tensor stored channels-last (N, H, W, C), densely."""
    return all(m.dim() == 4 and m.is_contiguous(memory_format=torch.channels_last) for m in maps)


def channel_rows(x: torch.Tensor) -> torch.Tensor:
    """N x C x H x W -> its (N*H*W) x C matrix; a view of the same memory when ``x`` is channels-last."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def pointwise_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 1x1 convolution of a channels-last map as one matrix product, without copies.

    N x C x H x W (stored N, H, W, C) -> (N*H*W) x C @ C x O -> N x O x H x W (stored N, H, W, O).

    Where MKL's GEMM is the slow kernel (`inceptionlab.cpus.pointwise_path`: AVX-512 CPUs not made
    by Intel), the product runs as oneDNN's convolution instead, forward and backward. PyTorch sends
    a single-threaded 1x1 convolution of fewer than 16 images to its im2col + GEMM path; a 1x1
    kernel is the same at any dilation, and a dilated one goes to oneDNN.
    """
    if x.dtype in (torch.float32, torch.bfloat16) and pointwise_path() == "onednn":
        # same output: a 1x1 kernel has no gaps to dilate. (Through the matrix view the weight's
        # gradient comes back with the weight's own strides, not oneDNN's channels-last ones.)
        return F.conv2d(x, _weight_matrix(weight)[:, :, None, None], bias, dilation=2)
    n, c, h, w = x.shape
    y = F.linear(channel_rows(x), _weight_matrix(weight), bias)
    return y.view(n, h, w, -1).permute(0, 3, 1, 2)


def _weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    """An O x C x 1 x 1 weight as its O x C matrix, a view whose gradient comes back with the weight's
    own strides: channels-last ones (C, 1, C, C) or the default (C, 1, 1, 1). Both lay the matrix out
    alike, but DDP compares a gradient's strides with its bucket's and warns at every run otherwise."""
    o, c = weight.shape[:2]
    if weight.stride() == (c, 1, c, c):
        return weight.permute(0, 2, 3, 1).reshape(o, c)  # O x 1 x 1 x C -> O x C, no copy
    return weight.view(o, c)


class PoolProjection(nn.Sequential):
    """An Inception module's pooling branch: average pooling, then a 1x1 `ConvBN` projection.

    Both steps are linear and commute (``conv(pool(x)) == pool(conv(x))`` once the bias is added
    after pooling), so the projection runs first and the pooling works on its ``out_chs`` channels
    instead of the ``in_chs`` of the module's input: 1/4 to 1/10 of the pooling in Inception-v3/v4.
    That order is taken in training (and by `optimize_for_inference`); eval mode keeps the
    reference order, whose rounding the published weights' outputs were computed with.
    Modules and weights are those of ``nn.Sequential(pool, projection)``.
    """

    def __init__(self, pool: nn.AvgPool2d, projection: ConvBN):
        if not self.takes([pool, projection]):
            raise ValueError("PoolProjection takes average pooling and a 1x1 stride-1 ConvBN")
        super().__init__(pool, projection)

    @staticmethod
    def takes(layers: list[nn.Module]) -> bool:
        """Whether ``layers`` are average pooling then a pointwise `ConvBN`, which commute."""
        return (len(layers) == 2 and isinstance(layers[0], nn.AvgPool2d) and isinstance(layers[1], ConvBN)
                and layers[1].pointwise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool, projection = self[0], self[1]
        if not self.training:
            return projection(pool(x))
        return projection.normalize(self.project_then_pool(x))

    def project_then_pool(self, x: torch.Tensor) -> torch.Tensor:
        """The projection's convolution (with its bias), then the pooling: all but the batch norm."""
        pool, projection = self[0], self[1]
        # N x C_in x H x W -> N x C_out x H x W -> pooled N x C_out x H' x W'
        y = pool(projection.convolve(x, bias=False))
        if projection.conv.bias is not None:
            y = y + projection.conv.bias.view(1, -1, 1, 1)
        return y


class Concat(nn.Module):
    """Runs every branch on the same input and concatenates the results on channels.

    In training on a channels-last CPU map, the branches that open with a 1x1 `ConvBN` open
    together: one matrix product, one batch norm, one ReLU over all their channels
    (`merged_pointwise`), then each branch goes on from its slice. Same arithmetic, fewer and
    larger kernels; measured fwd+bwd at batch 8: 1.33x for an Inception-ResNet-v2 Block35, 1.13x
    for an Inception-v3 Mixed_5 module.
    """

    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x C_in x H x W -> N x sum(C_branch) x H' x W'
        if self.training and x.device.type == "cpu" and is_channels_last(x):
            channels = output_channels(self, x.shape[1])
            if (channels is not None and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
                    and _has_batch_norm(self) and fused_norm.usable()):  # (under autocast the maps are bf16)
                out = fused_norm.ConcatOutput(channels)
                self.forward_into(x, out, 0)
                return out.result()
            openers = _mergeable_openers(self.branches)
            if len(openers) >= 2:
                return self._forward_merged(x, openers)
        return torch.cat([branch(x) for branch in self.branches], dim=1)

    def forward_into(self, x: torch.Tensor, out: fused_norm.ConcatOutput, offset: int) -> None:
        """Training with the fused kernel: each branch writes its result into ``out`` (channels from
        ``offset`` on) as its last batch norm computes it, so there is no concatenation to copy.
        The 1x1 openers run as one (`merged_pointwise_into`); a branch that is only its opener
        writes straight into ``out``, the others go on from a dense map of their own."""
        widths = [output_channels(b, x.shape[1]) for b in self.branches]
        starts = [offset + sum(widths[:i]) for i in range(len(widths))]
        openers = _mergeable_openers(self.branches)
        if not (openers and all(m.bn is not None for m in openers.values())
                and fused_norm.supports(x, next(iter(openers.values())).bn)):
            openers = {}
        rests = {i: _layers(self.branches[i])[1:] for i in openers}
        opened = {}
        if openers:
            targets = [None if rests[i] else starts[i] for i in openers]
            new = iter(merged_pointwise_into(x, list(openers.values()), out, targets))
            opened = {i: next(new) for i, target in zip(openers, targets) if target is None}
        for i, branch in enumerate(self.branches):
            if i in opened:
                _run_into(rests[i], opened[i], out, starts[i])
            elif i not in openers:
                _run_into([branch], x, out, starts[i])

    def _forward_merged(self, x: torch.Tensor, openers: dict) -> torch.Tensor:
        opened = merged_pointwise(x, list(openers.values()))  # N x sum(C_opener) x H x W
        slices = dict(zip(openers, opened.split([m.conv.out_channels for m in openers.values()], dim=1)))
        outs = []
        for i, branch in enumerate(self.branches):
            if i not in slices:
                outs.append(branch(x))
                continue
            y = slices[i]
            if isinstance(branch, nn.Sequential):
                y = y.contiguous(memory_format=torch.channels_last)  # a slice is strided; kernels want it dense
                for layer in list(branch)[1:]:
                    y = layer(y)
            outs.append(y)
        return torch.cat(outs, dim=1)


def _has_batch_norm(module: nn.Module) -> bool:
    """Whether any `ConvBN` in ``module`` has a batch norm the fused kernel can run (a plain one, in
    training): without one there is nothing for the kernel to write, and the merged-opener path is
    the faster one. (Frozen ones, `--freeze-bn`, had the kernel built inside the first timed step,
    then never used.)"""
    return any(isinstance(m, ConvBN) and type(m.bn) is nn.BatchNorm2d and m.bn.training for m in module.modules())


def _layers(branch: nn.Module) -> list[nn.Module]:
    """A branch as its list of layers (a `PoolProjection` is one layer)."""
    if isinstance(branch, nn.Sequential) and not isinstance(branch, PoolProjection):
        return list(branch)
    return [branch]


def output_channels(module: nn.Module, in_chs: int) -> int | None:
    """The channels ``module`` gives for ``in_chs`` in, from its layers; None for a layer it does not know."""
    if isinstance(module, ConvBN):
        return module.conv.out_channels
    if isinstance(module, PoolProjection):
        return module[1].conv.out_channels
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return in_chs
    if isinstance(module, Concat):
        widths = [output_channels(b, in_chs) for b in module.branches]
        return None if None in widths else sum(widths)
    if isinstance(module, nn.Sequential):
        chs = in_chs
        for layer in module:
            chs = output_channels(layer, chs)
            if chs is None:
                return None
        return chs
    return None


def _run_into(layers: list[nn.Module], x: torch.Tensor, out: fused_norm.ConcatOutput, offset: int) -> None:
    """Runs ``layers`` on ``x`` in order; the last one's result goes into ``out`` from channel
    ``offset`` on: straight from the fused kernel when it ends in a batch norm, else copied."""
    if not layers:
        out.copy(x, offset)
        return
    *head, last = layers
    for layer in head:
        x = layer(x)
    if isinstance(last, Concat):
        last.forward_into(x, out, offset)
        return
    if _layers(last) != [last]:  # a Sequential: run its layers the same way
        _run_into(_layers(last), x, out, offset)
        return
    block = last[1] if isinstance(last, PoolProjection) else last
    if isinstance(block, ConvBN) and block.bn is not None:
        y = last.project_then_pool(x) if isinstance(last, PoolProjection) else block.convolve(x)
        if fused_norm.supports(y, block.bn):
            fused_norm.fused_bn_relu(y, block.bn, block.act, into=out, offset=offset)
        else:
            out.copy(block.normalize(y), offset)
        return
    out.copy(last(x), offset)


def _opener(branch: nn.Module) -> ConvBN | None:
    """The 1x1 `ConvBN` a branch opens with, if it opens with one."""
    layers = _layers(branch)
    branch = layers[0] if layers else None
    return branch if isinstance(branch, ConvBN) and branch.pointwise else None


def _mergeable_openers(branches: nn.ModuleList) -> dict[int, ConvBN]:
    """Branch index -> opening 1x1 `ConvBN`, when at least two branches open with one and all of
    those can run as one: the same activation, bias and batch norm settings, and plain
    `BatchNorm2d`s (a synchronized one must gather its own statistics)."""
    openers = {i: m for i, m in ((i, _opener(b)) for i, b in enumerate(branches)) if m is not None}
    settings = {_merge_settings(m) for m in openers.values()}
    return openers if len(openers) >= 2 and len(settings) == 1 and None not in settings else {}


def _merge_settings(m: ConvBN):
    bn = m.bn
    if bn is None:
        return m.act, m.conv.bias is not None, None
    if type(bn) is not nn.BatchNorm2d or not (bn.affine and bn.track_running_stats) or bn.momentum is None:
        return None
    return m.act, m.conv.bias is not None, (bn.eps, bn.momentum, bn.training)


def merged_pointwise(x: torch.Tensor, blocks: list[ConvBN]) -> torch.Tensor:
    """Several 1x1 `ConvBN` blocks on one channels-last map as one: their weights stacked into one
    matrix product, their batch norms into one, with the running statistics written back to each.

    N x C x H x W -> N x sum(C_out) x H x W, equal to ``torch.cat([b(x) for b in blocks], 1)``.
    """
    y = _stacked_pointwise(x, blocks)
    norms = [b.bn for b in blocks if b.bn is not None]
    act = blocks[0].act
    if norms:
        first = norms[0]
        weight, bias, mean, var = _stacked_norm(norms)
        if first.training and fused_norm.supports(y, first):
            (y,) = fused_norm.batch_norm_relu(y, weight, bias, mean, var, first.momentum, first.eps, relu=act)
            act = False  # done
        else:
            y = F.batch_norm(y, mean, var, weight, bias, first.training, first.momentum, first.eps)
        if first.training:
            _write_back(norms, mean, var)
    return F.relu(y, inplace=True) if act else y


def merged_pointwise_into(x: torch.Tensor, blocks: list[ConvBN], out: fused_norm.ConcatOutput,
                          targets: list[int | None]) -> list[torch.Tensor]:
    """`merged_pointwise` in training through the fused kernel (every block has a batch norm):
    a block with a target offset writes into ``out`` from that channel on; the others' results
    come back as dense N x C_out x H x W maps, in order."""
    y = _stacked_pointwise(x, blocks)  # N x sum(C_out) x H x W
    norms = [b.bn for b in blocks]
    weight, bias, mean, var = _stacked_norm(norms)
    layout = [(b.conv.out_channels, target) for b, target in zip(blocks, targets)]
    new = fused_norm.batch_norm_relu(y, weight, bias, mean, var, norms[0].momentum, norms[0].eps,
                                     relu=blocks[0].act, layout=layout, into=out)
    _write_back(norms, mean, var)
    return list(new)


def _stacked_pointwise(x: torch.Tensor, blocks: list[ConvBN]) -> torch.Tensor:
    """The blocks' 1x1 convolutions as one matrix product: N x C x H x W -> N x sum(C_out) x H x W."""
    conv_bias = [b.conv.bias for b in blocks] if blocks[0].conv.bias is not None else None
    return pointwise_matmul(x, torch.cat([b.conv.weight for b in blocks]),
                            torch.cat(conv_bias) if conv_bias is not None else None)


def _stacked_norm(norms: list[nn.BatchNorm2d]):
    """Weight, bias, running mean and running variance of several batch norms, end to end (copies)."""
    return (torch.cat([bn.weight for bn in norms]), torch.cat([bn.bias for bn in norms]),
            torch.cat([bn.running_mean for bn in norms]), torch.cat([bn.running_var for bn in norms]))


def _write_back(norms: list[nn.BatchNorm2d], mean: torch.Tensor, var: torch.Tensor) -> None:
    """What each BatchNorm2d would have done to its own statistics in a training step."""
    sizes = [bn.num_features for bn in norms]
    with torch.no_grad():
        for bn, m, v in zip(norms, mean.split(sizes), var.split(sizes)):
            bn.running_mean.copy_(m)
            bn.running_var.copy_(v)
            bn.num_batches_tracked.add_(1)


class ScaledResidual(nn.Module):
    """Inception-ResNet block: ``relu(x + scale * up_project(branches(x)))``.

    The 1x1 up-projection (a linear conv with bias, no BN) restores the input's channel count.
    Scaling the residual by 0.1-0.3 keeps very wide residual networks from dying early in training
    (Szegedy et al. 2016, Sec. 3.3). ``activate=False`` is the last Block8 of the TF weights.

    In training on channels-last CPU maps the up-projection runs as one matrix product
    (`pointwise_matmul`) and the scaled addition as one ``torch.add(x, residual, alpha=scale)``;
    eval mode keeps the reference order (conv, multiply, add).
    """

    def __init__(self, branches: Concat, branch_chs: int, out_chs: int, scale: float, activate: bool = True):
        super().__init__()
        self.branches = branches
        self.up_project = nn.Conv2d(branch_chs, out_chs, 1, bias=True)
        self.scale = float(scale)
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.branches(x)  # N x C_branches x H x W
        if self.training and x.device.type == "cpu" and is_channels_last(x, z) and is_pointwise(self.up_project):
            # the up-projection as the matrix product it is, and x + scale * residual as one
            # operation: measured fwd+bwd per block, 1.04-1.08x at batch 8, 1.03-1.08x at batch 32
            residual = pointwise_matmul(z, self.up_project.weight, self.up_project.bias)
            x = torch.add(x, residual, alpha=self.scale)
        else:  # the reference order, whose rounding published weights' outputs were computed with
            x = x + self.scale * self.up_project(z)  # N x C x H x W, same as x
        return F.relu(x, inplace=True) if self.activate else x

    def extra_repr(self) -> str:
        return f"scale={self.scale}, activate={self.activate}"


class ClassifierHead(nn.Module):
    """Global average pooling -> dropout -> fully connected (``fc``)."""

    def __init__(self, in_chs: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.in_chs = in_chs
        self.drop_rate = drop_rate
        self.fc = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))  # N x C x H x W -> N x C
        x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.fc(x)


class AuxHead(nn.Module):
    """An auxiliary classifier on an intermediate feature map.

    pool -> convs -> [global average] -> flatten -> [BatchNorm1d (the "BN-auxiliary")]
    -> [hidden fc + ReLU + dropout] -> fc
    """

    def __init__(self, pool: nn.Module, convs: nn.Sequential, flat_chs: int, num_classes: int, *,
                 global_pool: bool = False, hidden: int | None = None, dropout: float = 0.0,
                 norm_fc: bool = False):
        super().__init__()
        self.pool = pool
        self.convs = convs
        self.global_pool = global_pool
        self.norm = nn.BatchNorm1d(flat_chs) if norm_fc else None
        self.hidden = nn.Linear(flat_chs, hidden) if hidden else None
        self.dropout = dropout
        self.fc_in = hidden or flat_chs  # what the classifier takes, with or without one
        self.fc = nn.Linear(self.fc_in, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(self.pool(x))
        if self.global_pool:
            x = x.mean((2, 3), keepdim=True)
        x = torch.flatten(x, 1)  # N x C x h x w -> N x (C*h*w)
        if self.norm is not None:
            x = self.norm(x)
        if self.hidden is not None:
            x = F.relu(self.hidden(x), inplace=True)
            x = F.dropout(x, self.dropout, self.training)
        return self.fc(x)
