"""The building blocks of the Inception family: one small module per idea.

Every architecture in the zoo is a composition of these; none has private copies.

- `ConvBN`        convolution -> batch norm -> ReLU (Ioffe & Szegedy 2015, Sec. 3); `norm=False`
                  gives the pre-BN network (conv with bias, no BN) of that paper's ablation.
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


class ConvBN(nn.Module):
    """conv -> BatchNorm -> ReLU. With ``norm=False`` the conv has a bias and there is no BN.

    ``conv_bias=True`` keeps a bias next to BN, as in the Caffe BN-Inception weights.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel, stride: int = 1, padding=0, *,
                 norm: bool = True, eps: float = 1e-3, conv_bias: bool = False, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, padding, bias=conv_bias or not norm)
        self.bn = nn.BatchNorm2d(out_chs, eps=eps) if norm else None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=True) if self.act else x


class Concat(nn.Module):
    """Runs every branch on the same input and concatenates the results on channels."""

    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x C_in x H x W -> N x sum(C_branch) x H' x W'
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class ScaledResidual(nn.Module):
    """Inception-ResNet block: ``relu(x + scale * up_project(branches(x)))``.

    The 1x1 up-projection (a linear conv with bias, no BN) restores the input's channel count.
    Scaling the residual by 0.1-0.3 keeps very wide residual networks from dying early in training
    (Szegedy et al. 2016, Sec. 3.3). ``activate=False`` is the last Block8 of the TF weights.
    """

    def __init__(self, branches: Concat, branch_chs: int, out_chs: int, scale: float, activate: bool = True):
        super().__init__()
        self.branches = branches
        self.up_project = nn.Conv2d(branch_chs, out_chs, 1, bias=True)
        self.scale = float(scale)
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.up_project(self.branches(x))  # N x C x H x W, same as x
        x = x + self.scale * residual
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
        self.fc = nn.Linear(hidden or flat_chs, num_classes) if num_classes > 0 else nn.Identity()

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
