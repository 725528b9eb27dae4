"""Inception-v4: Szegedy, Ioffe, Vanhoucke, Alemi, "Inception-v4, Inception-ResNet and the Impact
of Residual Connections on Learning", AAAI 2017 (arXiv:1602.07261), Sec. 3.1.

    block            paper                                   output (299 input)
    conv2d_1a_3x3    stem, Figure 3                          149 x 149 x 32
    conv2d_2a_3x3                                            147 x 147 x 32
    conv2d_2b_3x3                                            147 x 147 x 64
    mixed_3a         stem: 3x3 max pool | 3x3/2 conv 96      73 x 73 x 160
    mixed_4a         stem: two branches to 96 each           71 x 71 x 192
    mixed_5a         stem: 3x3/2 conv 192 | max pool         35 x 35 x 384
    mixed_5b..5e     4 x Inception-A, Figure 4               35 x 35 x 384
    mixed_6a         Reduction-A, Figure 7 (k,l,m,n = 192, 224, 256, 384)  17 x 17 x 1024
    mixed_6b..6h     7 x Inception-B, Figure 5               17 x 17 x 1024
    mixed_7a         Reduction-B, Figure 8                   8 x 8 x 1536
    mixed_7b..7d     3 x Inception-C, Figure 6               8 x 8 x 1536

The layout is timm's ``inception_v4`` (a port of the TF-slim weights): BN eps 1e-3, average pools
that exclude padding, and the asymmetric pairs in TF-slim's order (mixed_4a and Inception-B's first
branch 1x7 then 7x1, Inception-B's long branch and Inception-C's 448/512 branch starting with the
nx1), which may differ from the figures' drawing but not in widths or cost. The paper leaves the
first two unspecified, so there is one variant. The optional
auxiliary classifier (TF-slim's, on mixed_6h) is the v3 one.
"""
from __future__ import annotations

from inceptionlab.models.family import build, check_aux, classic_aux_head
from inceptionlab.models.registry import INCEPTION_MEAN, INCEPTION_STD, register_model
from inceptionlab.models.spec import Conv, Factorized5x5, FactorizedNxN, Mixed, Pool, Reduction, Split, Switches

STEM = [                                                           # Figure 3
    ("conv2d_1a_3x3", Conv(32, 3, stride=2)),                      # N x 32 x 149 x 149
    ("conv2d_2a_3x3", Conv(32, 3, pad=0)),                         # N x 32 x 147 x 147
    ("conv2d_2b_3x3", Conv(64, 3, pad=1)),                         # N x 64 x 147 x 147
    ("mixed_3a", Reduction([Pool("max", 3, stride=2)],             # N x 160 x 73 x 73
                           [Conv(96, 3, stride=2)])),
    ("mixed_4a", Mixed([Conv(64, 1), Conv(96, 3, pad=0)],          # N x 192 x 71 x 71
                       [Conv(64, 1), FactorizedNxN(64, 7, mid=64), Conv(96, 3, pad=0)])),
    ("mixed_5a", Reduction([Conv(192, 3, stride=2)],               # N x 384 x 35 x 35
                           [Pool("max", 3, stride=2)])),
]


def reduction_a(k: int, l: int, m: int, n: int) -> Reduction:
    """Figure 7, shared by Inception-v4 and both Inception-ResNets (Table 1 gives k, l, m, n)."""
    return Reduction([Conv(n, 3, stride=2)],
                     [Conv(k, 1), Factorized5x5(m, mid=l, stride=2, pad=0)],  # 3x3 -> 3x3/2 ("Rethinking" Fig. 5)
                     [Pool("max", 3, stride=2)])


INCEPTION_A = Mixed([Conv(96, 1)],                                 # Figure 4: 4 x 96 = 384
                    [Conv(64, 1), Conv(96, 3)],
                    [Conv(64, 1), Factorized5x5(96, mid=96)],
                    [Pool("avg"), Conv(96, 1)])
INCEPTION_B = Mixed([Conv(384, 1)],                                # Figure 5: 384 + 256 + 256 + 128
                    [Conv(192, 1), FactorizedNxN(256, 7, mid=224)],
                    [Conv(192, 1), FactorizedNxN(224, 7, mid=192, first="nx1"),
                     FactorizedNxN(256, 7, mid=224, first="nx1")],
                    [Pool("avg"), Conv(128, 1)])
REDUCTION_B = Reduction([Conv(192, 1), Conv(192, 3, stride=2)],   # Figure 8: 192 + 320 + 1024
                        [Conv(256, 1), FactorizedNxN(320, 7, mid=256), Conv(320, 3, stride=2)],
                        [Pool("max", 3, stride=2)])
INCEPTION_C = Mixed([Conv(256, 1)],                                # Figure 6: 256 + 512 + 512 + 256
                    [Conv(384, 1), Split((Conv(256, (1, 3)), Conv(256, (3, 1))))],
                    [Conv(384, 1), FactorizedNxN(512, 3, mid=448, first="nx1"),
                     Split((Conv(256, (1, 3)), Conv(256, (3, 1))))],
                    [Pool("avg"), Conv(256, 1)])

BODY = ([(f"mixed_5{c}", INCEPTION_A) for c in "bcde"]            # N x 384 x 35 x 35
        + [("mixed_6a", reduction_a(192, 224, 256, 384))]          # N x 1024 x 17 x 17
        + [(f"mixed_6{c}", INCEPTION_B) for c in "bcdefgh"]        # N x 1024 x 17 x 17
        + [("mixed_7a", REDUCTION_B)]                              # N x 1536 x 8 x 8
        + [(f"mixed_7{c}", INCEPTION_C) for c in "bcd"])           # N x 1536 x 8 x 8


@register_model("inception_v4", paper="Szegedy et al. 2016, Inception-v4, Inception-ResNet and the Impact "
                "of Residual Connections on Learning (arXiv:1602.07261)", reference="timm inception_v4 (TF-slim port)",
                top1=80.2, weights_top1_source="TF-slim / timm inception_v4.tf_in1k",
                input_size=(3, 299, 299), crop_pct=0.875, interpolation="bicubic",
                mean=INCEPTION_MEAN, std=INCEPTION_STD)
def inception_v4(num_classes=1000, in_chans=3, drop_rate=0.2, aux_logits=False, aux_norm=False, norm=True,
                 factorize_5x5=None, factorize_nxn=None, grid_reduction="efficient", stem="imagenet",
                 depth_multiplier=1.0, min_depth=16):
    """Inception-v4 in the layout of timm's (TF-slim) weights."""
    check_aux(aux_logits, aux_norm)
    switches = Switches(norm=norm, bn_eps=1e-3, factorize_5x5=factorize_5x5, factorize_nxn=factorize_nxn,
                        grid_reduction=grid_reduction, stem=stem, depth_multiplier=depth_multiplier,
                        min_depth=min_depth, avg_pool_count_pad=False)
    aux = {"mixed_6h": classic_aux_head(norm_fc=aux_norm, low_res=stem == "low_res")} if aux_logits else None
    return build("inception_v4", STEM, BODY, switches, num_classes=num_classes, in_chans=in_chans,
                 drop_rate=drop_rate, aux_heads=aux)
