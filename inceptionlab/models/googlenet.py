"""GoogLeNet (Inception-v1): Szegedy et al., "Going Deeper with Convolutions", CVPR 2015
(arXiv:1409.4842).

Table 1 of the paper, in TF-slim's block names (paper names in brackets):

    block            paper                               output (224 input)
    conv2d_1a_7x7    convolution 7x7/2                   112 x 112 x 64
    maxpool_2a_3x3   max pool 3x3/2                      56 x 56 x 64
    conv2d_2b_1x1    convolution 1x1 (3x3 reduce)        56 x 56 x 64
    conv2d_2c_3x3    convolution 3x3/1                   56 x 56 x 192
    maxpool_3a_3x3   max pool 3x3/2                      28 x 28 x 192
    mixed_3b, 3c     inception (3a), (3b)  (Figure 2b)   28 x 28 x 480
    maxpool_4a_3x3   max pool 3x3/2                      14 x 14 x 480
    mixed_4b..4f     inception (4a)..(4e)                14 x 14 x 832
    maxpool_5a       max pool 3x3/2 (torchvision: 2x2/2)  7 x 7 x 832
    mixed_5b, 5c     inception (5a), (5b)                7 x 7 x 1024

Two auxiliary classifiers (Sec. 5) tap inception (4a) and (4d) (mixed_4b, mixed_4e): average pool
5x5/3 (4x4 at 224 px; torchvision pools adaptively to 4x4), 1x1 conv 128, fc 1024, dropout 0.7, fc.

``googlenet`` is the layout of torchvision's weights: BN after every convolution, a 3x3 where the
paper has the 5x5 branch, ceil-mode pools, a 2x2 pool before inception (5a) and adaptive pooling in
the aux heads, no local response normalization.
``googlenet_paper`` is the paper's network: no BN, a true 5x5 branch, the paper's 3x3/2 pool before
(5a) (Caffe's pool4/3x3_s2) and 5x5/3 average pool in the aux heads (then adaptive to 4x4 at other
input sizes), dropout 0.4 (the LRN layers of the paper are left out, as every modern
implementation does).
"""
from __future__ import annotations

import torch.nn as nn

from inceptionlab.errors import UserError
from inceptionlab.models.family import build, check_aux
from inceptionlab.models.layers import AuxHead
from inceptionlab.models.registry import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD, register_model
from inceptionlab.models.spec import Builder, Conv, Mixed, Pool, Switches

STEM = [
    ("conv2d_1a_7x7", Conv(64, 7, stride=2, pad=3)),            # N x 64 x 112 x 112
    ("maxpool_2a_3x3", Pool("max", 3, stride=2, ceil=True)),    # N x 64 x 56 x 56
    ("conv2d_2b_1x1", Conv(64, 1)),                             # N x 64 x 56 x 56
    ("conv2d_2c_3x3", Conv(192, 3)),                            # N x 192 x 56 x 56
    ("maxpool_3a_3x3", Pool("max", 3, stride=2, ceil=True)),    # N x 192 x 28 x 28
]

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj
INCEPTION = {
    "mixed_3b": (64, 96, 128, 16, 32, 32),       # inception (3a): 256 channels
    "mixed_3c": (128, 128, 192, 32, 96, 64),     # inception (3b): 480
    "mixed_4b": (192, 96, 208, 16, 48, 64),      # inception (4a): 512
    "mixed_4c": (160, 112, 224, 24, 64, 64),     # inception (4b): 512
    "mixed_4d": (128, 128, 256, 24, 64, 64),     # inception (4c): 512
    "mixed_4e": (112, 144, 288, 32, 64, 64),     # inception (4d): 528
    "mixed_4f": (256, 160, 320, 32, 128, 128),   # inception (4e): 832
    "mixed_5b": (256, 160, 320, 32, 128, 128),   # inception (5a): 832
    "mixed_5c": (384, 192, 384, 48, 128, 128),   # inception (5b): 1024
}


def inception(name: str, kernel_5x5: int) -> Mixed:
    """Figure 2(b): 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1."""
    c1, c3r, c3, c5r, c5, proj = INCEPTION[name]
    return Mixed([Conv(c1, 1)],
                 [Conv(c3r, 1), Conv(c3, 3)],
                 [Conv(c5r, 1), Conv(c5, kernel_5x5)],
                 [Pool("max", 3, stride=1, ceil=True), Conv(proj, 1)])


def body(kernel_5x5: int, paper_pools: bool) -> list:
    blocks = [(n, inception(n, kernel_5x5)) for n in ("mixed_3b", "mixed_3c")]
    blocks += [("maxpool_4a_3x3", Pool("max", 3, stride=2, ceil=True))]                  # N x 480 x 14 x 14
    blocks += [(n, inception(n, kernel_5x5)) for n in ("mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e", "mixed_4f")]
    blocks += [("maxpool_5a_3x3", Pool("max", 3, stride=2, ceil=True)) if paper_pools     # N x 832 x 7 x 7
               else ("maxpool_5a_2x2", Pool("max", 2, stride=2, ceil=True))]
    blocks += [(n, inception(n, kernel_5x5)) for n in ("mixed_5b", "mixed_5c")]        # N x 1024 x 7 x 7
    return blocks


def aux_head(builder: Builder, in_chs: int, num_classes: int) -> AuxHead:
    """torchvision's: average pool to 4x4, 1x1 conv 128, fc 1024 + ReLU, dropout 0.7, fc. The hidden
    fc's width follows depth_multiplier as the convolutions' do (at 1/8 it kept 1024 and the two
    heads held 5.6x the rest of the network's parameters)."""
    convs, chs = builder.branch([Conv(128, 1)], in_chs, in_module=False)
    return AuxHead(nn.AdaptiveAvgPool2d(4), convs, chs * 16, num_classes, hidden=builder.s.depth(1024), dropout=0.7)


def paper_aux_head(builder: Builder, in_chs: int, num_classes: int) -> AuxHead:
    """Sec. 5: average pool 5x5/3 (14x14 -> 4x4 at 224 px; adaptive to 4x4 at other sizes), then as torchvision."""
    head = aux_head(builder, in_chs, num_classes)
    head.pool = nn.Sequential(nn.AvgPool2d(5, stride=3), nn.AdaptiveAvgPool2d(4))
    return head


CARD = dict(paper="Szegedy et al. 2014, Going Deeper with Convolutions (arXiv:1409.4842)",
            input_size=(3, 224, 224), crop_pct=0.875, interpolation="bilinear",
            mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _googlenet(name, *, num_classes, in_chans, drop_rate, aux_logits, norm, kernel_5x5, factorize_5x5,
               factorize_nxn, stem, depth_multiplier, min_depth, paper_pools=False):
    if kernel_5x5 not in (3, 5):
        raise UserError(f"kernel_5x5 must be 5 (the paper) or 3 (torchvision's weights), got {kernel_5x5!r}")
    if factorize_5x5 and kernel_5x5 != 5:
        raise UserError("factorize_5x5=True needs kernel_5x5=5: this layout has a 3x3 in the 5x5 branch "
                        "(torchvision's weights); pass kernel_5x5=5, or use googlenet_paper (the paper's 5x5)")
    switches = Switches(norm=norm, bn_eps=1e-3, factorize_5x5=factorize_5x5, factorize_nxn=factorize_nxn, stem=stem,
                        depth_multiplier=depth_multiplier, min_depth=min_depth)
    head = paper_aux_head if paper_pools else aux_head
    aux = {"mixed_4b": head, "mixed_4e": head} if aux_logits else None
    return build(name, STEM, body(kernel_5x5, paper_pools), switches, num_classes=num_classes, in_chans=in_chans,
                 drop_rate=drop_rate, aux_heads=aux)


# torchvision's weights were trained on (pixel - 0.5) / 0.5: its googlenet, built for them with
# transform_input=True, turns ImageNet-normalized input into that inside the model; this one has no
# such step, so its card says 0.5 (with ImageNet's, predict fed those weights logits off by ~8)
@register_model("googlenet", **{**CARD, "mean": INCEPTION_MEAN, "std": INCEPTION_STD},
                reference="torchvision googlenet", top1=69.778, weights_top1_source="torchvision IMAGENET1K_V1")
def googlenet(num_classes=1000, in_chans=3, drop_rate=0.2, aux_logits=False, norm=True, kernel_5x5=3,
              factorize_5x5=None, factorize_nxn=None, stem="imagenet", depth_multiplier=1.0, min_depth=16):
    """GoogLeNet in the layout of torchvision's weights (BN, 3x3 in the "5x5" branch)."""
    return _googlenet("googlenet", **locals())


@register_model("googlenet_paper", **CARD, reference="the paper's Table 1 (no public weights in PyTorch)")
def googlenet_paper(num_classes=1000, in_chans=3, drop_rate=0.4, aux_logits=False, norm=False, kernel_5x5=5,
                    factorize_5x5=None, factorize_nxn=None, stem="imagenet", depth_multiplier=1.0, min_depth=16):
    """GoogLeNet as the paper builds it: no BN, a 5x5 branch, its pools, dropout 0.4."""
    return _googlenet("googlenet_paper", paper_pools=True, **locals())
