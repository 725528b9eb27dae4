"""Inception-v3: Szegedy, Vanhoucke, Ioffe, Shlens, Wojna, "Rethinking the Inception Architecture
for Computer Vision", CVPR 2016 (arXiv:1512.00567).

Table 1 of the paper, in TF-slim's block names (which torchvision and timm keep):

    block            paper                                          output (299 input)
    conv2d_1a_3x3    conv 3x3/2                                     149 x 149 x 32
    conv2d_2a_3x3    conv 3x3/1 (valid)                             147 x 147 x 32
    conv2d_2b_3x3    conv padded 3x3/1                              147 x 147 x 64
    maxpool_3a_3x3   pool 3x3/2                                     73 x 73 x 64
    conv2d_3b_1x1    conv 1x1 (Table 1 draws a 3x3 here; the code and weights use 1x1)
    conv2d_4a_3x3    conv 3x3/1                                     71 x 71 x 192
    maxpool_5a_3x3   pool 3x3/2 (Table 1: a conv 3x3/2 to 35 x 35)  35 x 35 x 192
    mixed_5b..5d     3 x Inception, Figure 5 (35 x 35)              35 x 35 x 256, 288, 288
    mixed_6a         grid reduction, Figure 10                      17 x 17 x 768
    mixed_6b..6e     4 x Inception, Figure 6 (n=7 asymmetric)       17 x 17 x 768
    mixed_7a         grid reduction, Figure 10                      8 x 8 x 1280
    mixed_7b..7c     2 x Inception, Figure 7 (expanded filter bank) 8 x 8 x 2048

Table 1 counts 5 modules at 17 x 17, the grid reduction among them, and its rows do not add up to
the code's shapes in the stem; the table above is the code of the public weights, which the paper's
authors released. The grid reductions are Figure 10's idea (parallel stride-2 convolution and
pooling), not its exact widths: mixed_6a's 3x3/2 384 branch has no 1x1 reduce.

The auxiliary classifier (Figure 8, Sec. 4) taps mixed_6e.

``inception_v3`` is the layout of the public weights (torchvision ``inception_v3`` and timm
``inception_v3.*``): a 35 x 35 module has a 5x5 branch (1x1 48 -> 5x5 64) where Figure 5 draws a
3x3 one, beside the two-3x3 branch, and average pools count padding. ``inception_v3_paper`` is
Figure 5 as drawn: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | pool -> 1x1, at the reference's widths
(its ``factorize_5x5=False`` gives Figure 4, the module before factorization).
"""
from __future__ import annotations

from inceptionlab.models.family import build, check_aux, classic_aux_head
from inceptionlab.models.registry import INCEPTION_MEAN, INCEPTION_STD, register_model
from inceptionlab.models.spec import (Conv, Factorized5x5, FactorizedNxN, Mixed, Pool, Reduction, Split,
                                      Switches)

STEM = [
    ("conv2d_1a_3x3", Conv(32, 3, stride=2)),                   # N x 32 x 149 x 149
    ("conv2d_2a_3x3", Conv(32, 3, pad=0)),                      # N x 32 x 147 x 147
    ("conv2d_2b_3x3", Conv(64, 3, pad=1)),                      # N x 64 x 147 x 147
    ("maxpool_3a_3x3", Pool("max", 3, stride=2)),               # N x 64 x 73 x 73
    ("conv2d_3b_1x1", Conv(80, 1)),                             # N x 80 x 73 x 73
    ("conv2d_4a_3x3", Conv(192, 3, pad=0)),                     # N x 192 x 71 x 71
    ("maxpool_5a_3x3", Pool("max", 3, stride=2)),               # N x 192 x 35 x 35
]


def inception_35x35(pool_proj: int) -> Mixed:
    """Figure 5 (with the reference's 5x5 branch): 64 + 64 + 96 + pool_proj channels."""
    return Mixed([Conv(64, 1)],
                 [Conv(48, 1), Conv(64, 5)],
                 [Conv(64, 1), Factorized5x5(96, mid=96)],
                 [Pool("avg"), Conv(pool_proj, 1)])


def inception_35x35_paper(pool_proj: int) -> Mixed:
    """Figure 5 as drawn: a 3x3 branch where the reference has its 5x5 one (48 -> 64)."""
    return Mixed([Conv(64, 1)],
                 [Conv(48, 1), Conv(64, 3)],
                 [Conv(64, 1), Factorized5x5(96, mid=96)],
                 [Pool("avg"), Conv(pool_proj, 1)])


def inception_17x17(c7: int) -> Mixed:
    """Figure 6 with n=7: 7x7 receptive fields as 1x7 + 7x1; 4 x 192 = 768 channels."""
    return Mixed([Conv(192, 1)],
                 [Conv(c7, 1), FactorizedNxN(192, 7, mid=c7)],
                 [Conv(c7, 1), FactorizedNxN(c7, 7, mid=c7, first="nx1"), FactorizedNxN(192, 7, mid=c7, first="nx1")],
                 [Pool("avg"), Conv(192, 1)])


def inception_8x8() -> Mixed:
    """Figure 7, the expanded filter bank: 320 + 768 + 768 + 192 = 2048 channels."""
    return Mixed([Conv(320, 1)],
                 [Conv(384, 1), Split((Conv(384, (1, 3)), Conv(384, (3, 1))))],
                 [Conv(448, 1), Conv(384, 3), Split((Conv(384, (1, 3)), Conv(384, (3, 1))))],
                 [Pool("avg"), Conv(192, 1)])


BODY = [
    ("mixed_5b", inception_35x35(32)),                          # N x 256 x 35 x 35
    ("mixed_5c", inception_35x35(64)),                          # N x 288 x 35 x 35
    ("mixed_5d", inception_35x35(64)),                          # N x 288 x 35 x 35
    ("mixed_6a", Reduction([Conv(384, 3, stride=2)],            # Figure 10: N x 768 x 17 x 17
                           [Conv(64, 1), Factorized5x5(96, mid=96, stride=2, pad=0)],
                           [Pool("max", 3, stride=2)])),
    ("mixed_6b", inception_17x17(128)),                         # N x 768 x 17 x 17
    ("mixed_6c", inception_17x17(160)),
    ("mixed_6d", inception_17x17(160)),
    ("mixed_6e", inception_17x17(192)),                         # aux classifier taps here
    ("mixed_7a", Reduction([Conv(192, 1), Conv(320, 3, stride=2)],   # N x 1280 x 8 x 8
                           [Conv(192, 1), FactorizedNxN(192, 7, mid=192), Conv(192, 3, stride=2)],
                           [Pool("max", 3, stride=2)])),
    ("mixed_7b", inception_8x8()),                              # N x 2048 x 8 x 8
    ("mixed_7c", inception_8x8()),
]
BODY_PAPER = [("mixed_5b", inception_35x35_paper(32)),          # the paper's Figure 5 modules
              ("mixed_5c", inception_35x35_paper(64)),
              ("mixed_5d", inception_35x35_paper(64))] + BODY[3:]

CARD = dict(paper="Szegedy et al. 2015, Rethinking the Inception Architecture (arXiv:1512.00567)",
            input_size=(3, 299, 299), crop_pct=0.875, interpolation="bicubic",
            mean=INCEPTION_MEAN, std=INCEPTION_STD)


def _inception_v3(name, body, *, num_classes=1000, in_chans=3, drop_rate=0.5, aux_logits=False, aux_norm=False,
                  norm=True, factorize_5x5=None, factorize_nxn=None, grid_reduction="efficient",
                  stem="imagenet", depth_multiplier=1.0, min_depth=16, avg_pool_count_pad=True):
    check_aux(aux_logits, aux_norm)
    switches = Switches(norm=norm, bn_eps=1e-3, factorize_5x5=factorize_5x5, factorize_nxn=factorize_nxn,
                        grid_reduction=grid_reduction, stem=stem, depth_multiplier=depth_multiplier,
                        min_depth=min_depth, avg_pool_count_pad=bool(avg_pool_count_pad))
    aux = {"mixed_6e": classic_aux_head(norm_fc=aux_norm, low_res=stem == "low_res")} if aux_logits else None
    return build(name, STEM, body, switches, num_classes=num_classes, in_chans=in_chans,
                 drop_rate=drop_rate, aux_heads=aux)


@register_model("inception_v3", **CARD, reference="torchvision inception_v3 / timm inception_v3",
                top1=77.294, weights_top1_source="torchvision IMAGENET1K_V1")
def inception_v3(num_classes=1000, in_chans=3, drop_rate=0.5, aux_logits=False, aux_norm=False, norm=True,
                 factorize_5x5=None, factorize_nxn=None, grid_reduction="efficient", stem="imagenet",
                 depth_multiplier=1.0, min_depth=16, avg_pool_count_pad=True):
    """Inception-v3 in the layout of the torchvision/timm weights. ``avg_pool_count_pad=False`` is the
    TensorFlow/Keras convention ('same' average pools divide by the valid pixels only), which the
    weight loader sets for Keras weight files."""
    return _inception_v3("inception_v3", BODY, **{k: v for k, v in locals().items()})


@register_model("inception_v3_paper", **CARD, reference="the paper's Figure 5 (no public weights)")
def inception_v3_paper(num_classes=1000, in_chans=3, drop_rate=0.5, aux_logits=False, aux_norm=False,
                       norm=True, factorize_5x5=None, factorize_nxn=None, grid_reduction="efficient",
                       stem="imagenet", depth_multiplier=1.0, min_depth=16, avg_pool_count_pad=True):
    """Inception-v3 with Figure 5's modules as drawn: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | pool -> 1x1
    (``factorize_5x5=False``: Figure 4, the two 3x3 as one 5x5)."""
    return _inception_v3("inception_v3_paper", BODY_PAPER, **{k: v for k, v in locals().items()})
