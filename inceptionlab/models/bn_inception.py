"""BN-Inception (Inception-v2): Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network
Training by Reducing Internal Covariate Shift", ICML 2015 (arXiv:1502.03167), Sec. 4.2 and the
network table of its appendix (Figure 5).

GoogLeNet with batch normalization after every convolution, its 5x5 convolutions replaced by two
3x3 (``Factorized5x5``; ``factorize_5x5=False`` puts the 5x5 back), 28x28 and 14x14 grids reduced
by stride-2 Inception modules (3c and 4e), and no dropout. Block names are TF-slim's (paper names
in brackets):

    block            paper                               output (224 input)
    conv2d_1a_7x7    convolution 7x7/2                   112 x 112 x 64
    maxpool_2a_3x3   max pool 3x3/2                      56 x 56 x 64
    conv2d_2b_1x1    convolution 1x1 (3x3 reduce)        56 x 56 x 64
    conv2d_2c_3x3    convolution 3x3/1                   56 x 56 x 192
    maxpool_3a_3x3   max pool 3x3/2                      28 x 28 x 192
    mixed_3b, 3c     inception (3a), (3b)                28 x 28 x 320
    mixed_4a         inception (3c), stride 2            14 x 14 x 576
    mixed_4b..4e     inception (4a)..(4d)                14 x 14 x 576, 576, 608, 608
    mixed_5a         inception (4e), stride 2            7 x 7 x 1056
    mixed_5b, 5c     inception (5a), (5b)                7 x 7 x 1024

Channel counts are the table's #1x1/#3x3/double-#3x3/pool-proj columns, as the public Caffe
weights (ported to PyTorch by Cadene's ``pretrainedmodels.bninception``) have them; those weights
also keep a bias in every convolution next to BN (``conv_bias=True``) and use BN eps 1e-5.
"""
from __future__ import annotations

from inceptionlab.models.family import build
from inceptionlab.models.registry import register_model
from inceptionlab.models.spec import Conv, Factorized5x5, Mixed, Pool, Reduction, Switches

# Cadene's (pixel - (104, 117, 128)) on BGR 0-255 pixels, written as our transforms' (pixel/255 - mean)/std
CAFFE_MEAN = (104 / 255, 117 / 255, 128 / 255)
CAFFE_STD = (1 / 255, 1 / 255, 1 / 255)

STEM = [
    ("conv2d_1a_7x7", Conv(64, 7, stride=2, pad=3)),             # N x 64 x 112 x 112
    ("maxpool_2a_3x3", Pool("max", 3, stride=2, ceil=True)),     # N x 64 x 56 x 56
    ("conv2d_2b_1x1", Conv(64, 1)),                              # N x 64 x 56 x 56
    ("conv2d_2c_3x3", Conv(192, 3)),                             # N x 192 x 56 x 56
    ("maxpool_3a_3x3", Pool("max", 3, stride=2, ceil=True)),     # N x 192 x 28 x 28
]


def inception(c1: int, c3r: int, c3: int, d3r: int, d3: int, pool: str, proj: int) -> Mixed:
    """1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 | avg or max pool -> 1x1 projection."""
    return Mixed([Conv(c1, 1)],
                 [Conv(c3r, 1), Conv(c3, 3)],
                 [Conv(d3r, 1), Factorized5x5(d3, mid=d3)],
                 [Pool(pool, 3, stride=1, ceil=True), Conv(proj, 1)])


def reduction(c3r: int, c3: int, d3r: int, d3: int) -> Reduction:
    """Stride-2 module: 1x1 -> 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max pool 3x3/2 (pass-through)."""
    return Reduction([Conv(c3r, 1), Conv(c3, 3, stride=2, pad=1)],
                     [Conv(d3r, 1), Factorized5x5(d3, mid=d3, stride=2)],
                     [Pool("max", 3, stride=2, ceil=True)])


BODY = [
    ("mixed_3b", inception(64, 64, 64, 64, 96, "avg", 32)),      # (3a): N x 256 x 28 x 28
    ("mixed_3c", inception(64, 64, 96, 64, 96, "avg", 64)),      # (3b): N x 320 x 28 x 28
    ("mixed_4a", reduction(128, 160, 64, 96)),                   # (3c): N x 576 x 14 x 14
    ("mixed_4b", inception(224, 64, 96, 96, 128, "avg", 128)),   # (4a): N x 576 x 14 x 14
    ("mixed_4c", inception(192, 96, 128, 96, 128, "avg", 128)),  # (4b): N x 576 x 14 x 14
    ("mixed_4d", inception(160, 128, 160, 128, 160, "avg", 128)),  # (4c): N x 608 x 14 x 14
    ("mixed_4e", inception(96, 128, 192, 160, 192, "avg", 128)),   # (4d): N x 608 x 14 x 14
    ("mixed_5a", reduction(128, 192, 192, 256)),                 # (4e): N x 1056 x 7 x 7
    ("mixed_5b", inception(352, 192, 320, 160, 224, "avg", 128)),  # (5a): N x 1024 x 7 x 7
    ("mixed_5c", inception(352, 192, 320, 192, 224, "max", 128)),  # (5b): N x 1024 x 7 x 7
]


@register_model("bn_inception", paper="Ioffe & Szegedy 2015, Batch Normalization (arXiv:1502.03167)",
                reference="Cadene pretrainedmodels bninception (Caffe port)", top1=73.524,
                weights_top1_source="pretrainedmodels bninception (imagenet)",
                input_size=(3, 224, 224), crop_pct=0.875, interpolation="bilinear",
                # the Caffe weights' input: BGR pixels in 0-255 minus per-channel means (B, G, R)
                input_space="BGR", input_range=(0, 255), mean=CAFFE_MEAN, std=CAFFE_STD)
def bn_inception(num_classes=1000, in_chans=3, drop_rate=0.0, norm=True, conv_bias=True, factorize_5x5=None,
                 factorize_nxn=None, grid_reduction="efficient", stem="imagenet", depth_multiplier=1.0,
                 min_depth=16):
    """BN-Inception in the layout of the Caffe weights (Cadene's bninception)."""
    switches = Switches(norm=norm, bn_eps=1e-5, conv_bias=conv_bias, factorize_5x5=factorize_5x5,
                        factorize_nxn=factorize_nxn, grid_reduction=grid_reduction, stem=stem,
                        depth_multiplier=depth_multiplier, min_depth=min_depth)
    return build("bn_inception", STEM, BODY, switches, num_classes=num_classes, in_chans=in_chans,
                 drop_rate=drop_rate)
