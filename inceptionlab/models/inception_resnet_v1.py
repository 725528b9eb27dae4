"""Inception-ResNet-v1: Szegedy, Ioffe, Vanhoucke, Alemi, "Inception-v4, Inception-ResNet and the
Impact of Residual Connections on Learning", AAAI 2017 (arXiv:1602.07261), Sec. 3.2, Figure 15.

    block            paper                                   output (299 input)
    conv2d_1a_3x3 .. conv2d_4b_3x3   stem, Figure 14          35 x 35 x 256
    block35_1..5     5 x Inception-ResNet-A (Figure 10), scale 0.17         35 x 35 x 256
    mixed_6a         Reduction-A, Figure 7 (k,l,m,n = 192, 192, 256, 384)   17 x 17 x 896
    block17_1..10    10 x Inception-ResNet-B (Figure 11), scale 0.10        17 x 17 x 896
    mixed_7a         Reduction-B, Figure 12                  8 x 8 x 1792
    block8_1..5      5 x Inception-ResNet-C (Figure 13), scale 0.20         8 x 8 x 1792
    block8_6         a sixth C block, unscaled and without ReLU (the public weights' layout)

The only public weights are facenet-pytorch's face-embedding ``InceptionResnetV1``, whose body this
is (it adds the unscaled last C block); its embedding head is loaded by the weights code. Here the
head is the paper's: average pool, dropout, fully connected.
"""
from __future__ import annotations

from inceptionlab.models.family import build, check_aux, classic_aux_head
from inceptionlab.models.inception_resnet_v2 import block8, block17, block35, reduction_b, residual_body
from inceptionlab.models.inception_v4 import reduction_a
from inceptionlab.models.registry import INCEPTION_MEAN, INCEPTION_STD, register_model
from inceptionlab.models.spec import Conv, Pool, Switches

STEM = [                                                           # Figure 14
    ("conv2d_1a_3x3", Conv(32, 3, stride=2)),                      # N x 32 x 149 x 149
    ("conv2d_2a_3x3", Conv(32, 3, pad=0)),                         # N x 32 x 147 x 147
    ("conv2d_2b_3x3", Conv(64, 3, pad=1)),                         # N x 64 x 147 x 147
    ("maxpool_3a_3x3", Pool("max", 3, stride=2)),                  # N x 64 x 73 x 73
    ("conv2d_3b_1x1", Conv(80, 1)),                                # N x 80 x 73 x 73
    ("conv2d_4a_3x3", Conv(192, 3, pad=0)),                        # N x 192 x 71 x 71
    ("conv2d_4b_3x3", Conv(256, 3, stride=2)),                     # N x 256 x 35 x 35
]
BODY = residual_body(
    (5, 10, 5),
    block35(32, (32, 32), (32, 32, 32)), reduction_a(192, 192, 256, 384),   # N x 896 x 17 x 17
    block17(128, (128, 128, 128)), reduction_b(384, 256, (256, 256)),       # N x 1792 x 8 x 8
    block8(192, (192, 192, 192)), last_c=block8(192, (192, 192, 192), scale=1.0, activate=False))


@register_model("inception_resnet_v1", paper="Szegedy et al. 2016, Inception-v4, Inception-ResNet and the "
                "Impact of Residual Connections on Learning (arXiv:1602.07261)",
                reference="facenet-pytorch InceptionResnetV1 (body)", input_size=(3, 299, 299), crop_pct=0.875,
                interpolation="bicubic", mean=INCEPTION_MEAN, std=INCEPTION_STD)
def inception_resnet_v1(num_classes=1000, in_chans=3, drop_rate=0.2, aux_logits=False, aux_norm=False,
                        norm=True, residual_scale=(0.17, 0.10, 0.20), factorize_5x5=None, factorize_nxn=None,
                        grid_reduction="efficient", stem="imagenet", depth_multiplier=1.0, min_depth=16):
    """Inception-ResNet-v1 (the paper's network, in facenet-pytorch's block layout)."""
    check_aux(aux_logits, aux_norm)
    switches = Switches(norm=norm, bn_eps=1e-3, factorize_5x5=factorize_5x5, factorize_nxn=factorize_nxn,
                        grid_reduction=grid_reduction, stem=stem, depth_multiplier=depth_multiplier,
                        min_depth=min_depth, residual_scale=residual_scale)
    aux = {"block17_10": classic_aux_head(norm_fc=aux_norm, low_res=stem == "low_res")} if aux_logits else None
    return build("inception_resnet_v1", STEM, BODY, switches, num_classes=num_classes, in_chans=in_chans,
                 drop_rate=drop_rate, aux_heads=aux)
