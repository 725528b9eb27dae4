"""Inception-ResNet-v2: Szegedy, Ioffe, Vanhoucke, Alemi, "Inception-v4, Inception-ResNet and the
Impact of Residual Connections on Learning", AAAI 2017 (arXiv:1602.07261), Sec. 3.2.

``inception_resnet_v2`` is the layout of the public weights (TF-slim, ported by timm), which
differs from the paper's figures:

    block            TF-slim / timm                          output (299 input)
    conv2d_1a_3x3 .. maxpool_5a_3x3   the v3 stem            35 x 35 x 192
    mixed_5b         an Inception-A-like module              35 x 35 x 320
    block35_1..10    10 x Inception-ResNet-A (Figure 16), scale 0.17     35 x 35 x 320
    mixed_6a         Reduction-A, Figure 7 (k,l,m,n = 256, 256, 384, 384) 17 x 17 x 1088
    block17_1..20    20 x Inception-ResNet-B (Figure 17), scale 0.10     17 x 17 x 1088
    mixed_7a         Reduction-B, Figure 18                  8 x 8 x 2080
    block8_1..9      9 x Inception-ResNet-C (Figure 19), scale 0.20      8 x 8 x 2080
    block8_10        Inception-ResNet-C, unscaled, no ReLU   8 x 8 x 2080
    conv2d_7b_1x1    1x1 conv 1536                           8 x 8 x 1536

``inception_resnet_v2_paper`` follows Figure 15 instead: the Inception-v4 stem (Figure 3, 384
channels), 5 x A, 10 x B, 5 x C, every block with its ReLU, and no final 1x1 convolution. The
paper's figures give up-projections of 384, 1154 and 2048 channels that do not add up with its
reductions; here each up-projection restores its input width (384, 1152, 2144), which the
residual sum requires.

Residual scaling (Sec. 3.3): ``residual_scale`` is one number or three (A, B, C blocks).
"""
from __future__ import annotations

from inceptionlab.models.family import build, check_aux, classic_aux_head
from inceptionlab.models.inception_v3 import STEM as V3_STEM
from inceptionlab.models.inception_v4 import STEM as V4_STEM, reduction_a
from inceptionlab.models.registry import INCEPTION_MEAN, INCEPTION_STD, register_model
from inceptionlab.models.spec import Conv, Factorized5x5, FactorizedNxN, Mixed, Pool, Reduction, Residual, Switches


def block35(b0: int, b1: tuple, b2: tuple) -> Residual:
    """Inception-ResNet-A (35x35): 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3, then the 1x1 up-projection."""
    return Residual(([Conv(b0, 1)],
                     [Conv(b1[0], 1), Conv(b1[1], 3)],
                     [Conv(b2[0], 1), Factorized5x5(b2[2], mid=b2[1])]), stage=0)


def block17(b0: int, b1: tuple) -> Residual:
    """Inception-ResNet-B (17x17): 1x1 | 1x1 -> 1x7 -> 7x1."""
    return Residual(([Conv(b0, 1)],
                     [Conv(b1[0], 1), FactorizedNxN(b1[2], 7, mid=b1[1])]), stage=1)


def block8(b0: int, b1: tuple, **last) -> Residual:
    """Inception-ResNet-C (8x8): 1x1 | 1x1 -> 1x3 -> 3x1."""
    return Residual(([Conv(b0, 1)],
                     [Conv(b1[0], 1), FactorizedNxN(b1[2], 3, mid=b1[1])]), stage=2, **last)


def reduction_b(b0: int, b1: int, b2: tuple) -> Reduction:
    """Reduction-B of the Inception-ResNets (Figures 12 and 18)."""
    return Reduction([Conv(256, 1), Conv(b0, 3, stride=2)],
                     [Conv(256, 1), Conv(b1, 3, stride=2)],
                     [Conv(256, 1), Factorized5x5(b2[1], mid=b2[0], stride=2, pad=0)],
                     [Pool("max", 3, stride=2)])


def residual_body(blocks: tuple, a, red_a, b, red_b, c, last_c=None, top=None) -> list:
    """35x35 blocks, Reduction-A, 17x17 blocks, Reduction-B, 8x8 blocks (+ an unscaled last one)."""
    n_a, n_b, n_c = blocks
    body = [(f"block35_{i}", a) for i in range(1, n_a + 1)] + [("mixed_6a", red_a)]
    body += [(f"block17_{i}", b) for i in range(1, n_b + 1)] + [("mixed_7a", red_b)]
    body += [(f"block8_{i}", c) for i in range(1, n_c + 1)]
    if last_c is not None:
        body += [(f"block8_{n_c + 1}", last_c)]
    return body + ([top] if top else [])


MIXED_5B = Mixed([Conv(96, 1)],
                 [Conv(48, 1), Conv(64, 5)],
                 [Conv(64, 1), Factorized5x5(96, mid=96)],
                 [Pool("avg"), Conv(64, 1)])
C_BLOCK = block8(192, (192, 224, 256))
TF_BODY = [("mixed_5b", MIXED_5B)] + residual_body(
    (10, 20, 9),
    block35(32, (32, 32), (32, 48, 64)), reduction_a(256, 256, 384, 384),
    block17(192, (128, 160, 192)), reduction_b(384, 288, (288, 320)),
    C_BLOCK, last_c=block8(192, (192, 224, 256), scale=1.0, activate=False),
    top=("conv2d_7b_1x1", Conv(1536, 1)))
PAPER_BODY = residual_body(
    (5, 10, 5),
    block35(32, (32, 32), (32, 48, 64)), reduction_a(256, 256, 384, 384),
    block17(192, (128, 160, 192)), reduction_b(384, 288, (288, 320)), C_BLOCK)

CARD = dict(paper="Szegedy et al. 2016, Inception-v4, Inception-ResNet and the Impact of Residual "
            "Connections on Learning (arXiv:1602.07261)", input_size=(3, 299, 299), crop_pct=0.8975,
            interpolation="bicubic", mean=INCEPTION_MEAN, std=INCEPTION_STD)


def _inception_resnet_v2(name, stem, body, *, num_classes, in_chans, drop_rate, aux_logits, aux_norm, norm,
                         residual_scale, factorize_5x5, factorize_nxn, grid_reduction, stem_kind,
                         depth_multiplier, min_depth):
    check_aux(aux_logits, aux_norm)
    switches = Switches(norm=norm, bn_eps=1e-3, factorize_5x5=factorize_5x5, factorize_nxn=factorize_nxn,
                        grid_reduction=grid_reduction, stem=stem_kind, depth_multiplier=depth_multiplier,
                        min_depth=min_depth, residual_scale=residual_scale, avg_pool_count_pad=False)
    tap = [n for n, _ in body if n.startswith("block17_")][-1]
    aux = {tap: classic_aux_head(norm_fc=aux_norm, low_res=stem_kind == "low_res")} if aux_logits else None
    return build(name, stem, body, switches, num_classes=num_classes, in_chans=in_chans,
                 drop_rate=drop_rate, aux_heads=aux)


@register_model("inception_resnet_v2", **CARD, reference="timm inception_resnet_v2 (TF-slim port)",
                top1=80.4, weights_top1_source="TF-slim / timm inception_resnet_v2.tf_in1k")
def inception_resnet_v2(num_classes=1000, in_chans=3, drop_rate=0.2, aux_logits=False, aux_norm=False,
                        norm=True, residual_scale=(0.17, 0.10, 0.20), factorize_5x5=None, factorize_nxn=None,
                        grid_reduction="efficient", stem="imagenet", depth_multiplier=1.0, min_depth=16):
    """Inception-ResNet-v2 in the layout of the TF-slim weights (as timm ports them)."""
    kw = dict(locals())
    kw["stem_kind"] = kw.pop("stem")
    return _inception_resnet_v2("inception_resnet_v2", V3_STEM, TF_BODY, **kw)


@register_model("inception_resnet_v2_paper", **CARD, reference="the paper's Figure 15 (no public weights)")
def inception_resnet_v2_paper(num_classes=1000, in_chans=3, drop_rate=0.2, aux_logits=False, aux_norm=False,
                              norm=True, residual_scale=(0.17, 0.10, 0.20), factorize_5x5=None,
                              factorize_nxn=None, grid_reduction="efficient", stem="imagenet",
                              depth_multiplier=1.0, min_depth=16):
    """Inception-ResNet-v2 as Figure 15 draws it (v4 stem, 5/10/5 blocks)."""
    kw = dict(locals())
    kw["stem_kind"] = kw.pop("stem")
    return _inception_resnet_v2("inception_resnet_v2_paper", V4_STEM, PAPER_BODY, **kw)
