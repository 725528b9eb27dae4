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
is (it adds the unscaled last C block). The default head is the paper's: average pool, dropout,
fully connected. ``embedding_dim=512`` gives facenet's head instead (`EmbeddingHead`), which its
weights need.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from inceptionlab.errors import UserError
from inceptionlab.models.base import init_weights
from inceptionlab.models.family import build, check_aux, classic_aux_head
from inceptionlab.models.inception_resnet_v2 import block8, block17, block35, reduction_b, residual_body
from inceptionlab.models.inception_v3 import STEM as V3_STEM
from inceptionlab.models.inception_v4 import reduction_a
from inceptionlab.models.registry import INCEPTION_MEAN, INCEPTION_STD, register_model
from inceptionlab.models.spec import Conv, Switches

# Figure 14: the Inception-v3 stem up to its 71 x 71 x 192 map, then a stride-2 3x3 convolution
# where v3 pools
STEM = V3_STEM[:-1] + [("conv2d_4b_3x3", Conv(256, 3, stride=2))]   # N x 256 x 35 x 35
BODY = residual_body(
    (5, 10, 5),
    block35(32, (32, 32), (32, 32, 32)), reduction_a(192, 192, 256, 384),   # N x 896 x 17 x 17
    block17(128, (128, 128, 128)), reduction_b(384, 256, (256, 256)),       # N x 1792 x 8 x 8
    block8(192, (192, 192, 192)), last_c=block8(192, (192, 192, 192), scale=1.0, activate=False))


class EmbeddingHead(nn.Module):
    """facenet's embedding head (Schroff et al. 2015, FaceNet, Sec. 3): average pool -> dropout ->
    linear projection to ``embedding_dim`` (no bias) -> BatchNorm1d [-> fc to the classes].

    Without a classifier (``num_classes=0``) the output is the L2-normalized embedding, as
    facenet-pytorch's ``classify=False``; with one, the logits of the (unnormalized) embedding.
    """

    def __init__(self, in_chs: int, embedding_dim: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.drop_rate = drop_rate
        self.fc_in = embedding_dim  # what reset_classifier builds the new fc on
        self.embedding = nn.Linear(in_chs, embedding_dim, bias=False)
        self.norm = nn.BatchNorm1d(embedding_dim, eps=1e-3)
        self.fc = nn.Linear(embedding_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))                                  # N x C x H x W -> N x C
        x = F.dropout(x, self.drop_rate, self.training)
        x = self.norm(self.embedding(x))                    # N x embedding_dim
        if pre_logits:
            return x
        if isinstance(self.fc, nn.Identity):
            return F.normalize(x, p=2, dim=1)
        return self.fc(x)


@register_model("inception_resnet_v1", paper="Szegedy et al. 2016, Inception-v4, Inception-ResNet and the "
                "Impact of Residual Connections on Learning (arXiv:1602.07261)",
                reference="facenet-pytorch InceptionResnetV1 (body)", input_size=(3, 299, 299), crop_pct=0.875,
                interpolation="bicubic", mean=INCEPTION_MEAN, std=INCEPTION_STD)
def inception_resnet_v1(num_classes=1000, in_chans=3, drop_rate=0.2, aux_logits=False, aux_norm=False,
                        norm=True, residual_scale=(0.17, 0.10, 0.20), factorize_5x5=None, factorize_nxn=None,
                        grid_reduction="efficient", stem="imagenet", depth_multiplier=1.0, min_depth=16,
                        embedding_dim=None):
    """Inception-ResNet-v1 in facenet-pytorch's block layout: the paper's network plus facenet's sixth,
    unscaled C block (Figure 15 draws five); ``embedding_dim`` gives facenet's embedding head (512 for
    its weights)."""
    check_aux(aux_logits, aux_norm)
    if embedding_dim is not None and int(embedding_dim) < 1:
        raise UserError(f"embedding_dim must be >= 1 (512 for facenet's weights) or None, got {embedding_dim}")
    switches = Switches(norm=norm, bn_eps=1e-3, factorize_5x5=factorize_5x5, factorize_nxn=factorize_nxn,
                        grid_reduction=grid_reduction, stem=stem, depth_multiplier=depth_multiplier,
                        min_depth=min_depth, residual_scale=residual_scale)
    aux = {"block17_10": classic_aux_head(norm_fc=aux_norm, low_res=stem == "low_res")} if aux_logits else None
    model = build("inception_resnet_v1", STEM, BODY, switches, num_classes=num_classes, in_chans=in_chans,
                  drop_rate=drop_rate, aux_heads=aux)
    if embedding_dim is not None:
        model.head = EmbeddingHead(model.num_features, int(embedding_dim), model.num_classes, model.drop_rate)
        init_weights(model.head)
    return model
