"""What every family factory shares: switch validation, aux heads, and building the network."""
from __future__ import annotations

import torch.nn as nn

from inceptionlab.errors import UserError
from inceptionlab.models.base import InceptionNet
from inceptionlab.models.layers import AuxHead
from inceptionlab.models.spec import Builder, Conv, Switches


def check_common(num_classes: int, in_chans: int, drop_rate: float) -> None:
    if int(num_classes) < 0:
        raise UserError(f"num_classes must be >= 0, got {num_classes}")
    if int(in_chans) < 1:
        raise UserError(f"in_chans must be >= 1, got {in_chans}")
    if not 0.0 <= float(drop_rate) < 1.0:
        raise UserError(f"drop_rate must lie in [0, 1), got {drop_rate}")


def check_aux(aux_logits: bool, aux_norm: bool) -> None:
    if aux_norm and not aux_logits:
        raise UserError("aux_norm=True needs aux_logits=True (it batch-normalizes the auxiliary classifier)")


def classic_aux_head(*, norm_fc: bool = False, low_res: bool = False):
    """The auxiliary classifier of Inception-v3 (and TF-slim's v4 and Inception-ResNet-v2), in the
    layout of the public weights: 5x5 average pool stride 3 -> 1x1 conv 128 -> 5x5 conv 768 -> fc.
    The 5x5 conv over the 5x5 map is "Rethinking" Fig. 8's hidden fully connected layer, and with
    ``norm`` on it is batch-normalized already, as the paper's BN-auxiliary is; ``norm_fc``
    (``aux_norm=True``) adds a BatchNorm1d on the features the classifier takes as well.
    At low resolution the pool is adaptive (to 5x5), so 32x32 inputs keep their aux head."""
    def make(builder: Builder, in_chs: int, num_classes: int) -> AuxHead:
        pool = nn.AdaptiveAvgPool2d(5) if low_res else nn.AvgPool2d(5, stride=3)
        convs, chs = builder.branch([Conv(128, 1), Conv(768, 5, pad=0)], in_chs, in_module=False)
        return AuxHead(pool, convs, chs, num_classes, global_pool=True, norm_fc=norm_fc)
    return make


def build(name: str, stem, body, switches: Switches, *, num_classes: int, in_chans: int,
          drop_rate: float, aux_heads: dict | None = None) -> InceptionNet:
    check_common(num_classes, in_chans, drop_rate)
    return InceptionNet(name, stem, body, switches, num_classes=int(num_classes), in_chans=int(in_chans),
                        drop_rate=float(drop_rate), aux_heads=aux_heads)
