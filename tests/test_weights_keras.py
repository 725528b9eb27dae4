"""Keras applications' InceptionV3 / InceptionResNetV2 weight files, without TensorFlow.

TensorFlow cannot be installed here and the real files cannot be downloaded, so the reference is
built in this file from the published architecture (keras.applications' ``inception_v3.py`` and
``inception_resnet_v2.py``): `KerasNet` creates the layers in the order and with the names that
Keras' code does (``conv2d_5``, ``batch_normalization_5``, ``block35_1_conv``, ...), with random
weights in Keras' tensor layouts, computes the forward pass eagerly with TensorFlow's semantics
('same' padding computed as TF does, average pools that divide by the valid pixels, BN without
gamma), records the graph, lists the layers in Keras' ``model.layers`` order (its own
implementation of Keras' graph sort), and writes the files as Keras 2 (``save_weights`` .h5, the
full-model .h5) and Keras 3 (``.weights.h5``, ``.keras``) write them. The loader's Keras order is
also checked against the published ``model.summary()`` of both applications.
"""
from __future__ import annotations

import json
import math
import re
import sys
import zipfile
from typing import NamedTuple

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import inceptionlab as il
from inceptionlab import UserError, create_model
from inceptionlab.models.layouts.keras import keras_layer_order
from inceptionlab.models.weights import classifier_size, load_weights

SNAKE = {"InputLayer": "input_layer", "Conv2D": "conv2d", "BatchNormalization": "batch_normalization",
         "Activation": "activation", "MaxPooling2D": "max_pooling2d", "AveragePooling2D": "average_pooling2d",
         "Concatenate": "concatenate", "Lambda": "lambda", "GlobalAveragePooling2D": "global_average_pooling2d",
         "Dense": "dense"}
VARIABLES = {"Conv2D": ("kernel", "bias"), "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
             "Dense": ("kernel", "bias")}


class T(NamedTuple):
    value: torch.Tensor  # N x C x H x W
    layer: int           # the Keras layer that produced it


class KerasNet:
    """A Keras functional model, built eagerly on one input with TensorFlow's semantics."""

    def __init__(self, x: torch.Tensor, seed: int = 0, width: float = 1.0):
        self.gen = torch.Generator().manual_seed(seed)
        self.width = width
        self.layers: list[dict] = []
        self.counts: dict = {}
        self.input = T(x, self._add("InputLayer", [], {}, name="input_1"))
        self.logits = None

    def d(self, channels: int) -> int:  # the zoo's depth_multiplier rule
        return channels if self.width == 1.0 else max(int(channels * self.width), 16)

    def _add(self, cls, inputs, weights, name=None) -> int:
        if name is None:  # Keras' automatic names: a counter per class, for unnamed layers only
            n = self.counts.get(SNAKE[cls], 0)
            self.counts[SNAKE[cls]] = n + 1
            name = SNAKE[cls] if n == 0 else f"{SNAKE[cls]}_{n}"
        self.layers.append(dict(name=name, cls=cls, inputs=[t.layer for t in inputs], weights=weights))
        return len(self.layers) - 1

    def _rand(self, *shape, scale=1.0, offset=0.0):
        return torch.rand(*shape, generator=self.gen) * scale + offset

    # -- layers ------------------------------------------------------------------
    def conv(self, x: T, filters: int, kernel, strides=1, padding="same", use_bias=False, name=None) -> T:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        cin = x.value.shape[1]
        k = torch.randn(kh, kw, cin, filters, generator=self.gen) * math.sqrt(2.0 / (kh * kw * cin))  # HWIO
        weights = {"kernel": k}
        bias = None
        if use_bias:
            bias = weights["bias"] = self._rand(filters, scale=0.2, offset=-0.1)
        v = x.value
        if padding == "same":
            v = tf_same_pad(v, (kh, kw), strides)
        out = F.conv2d(v, k.permute(3, 2, 0, 1), bias, stride=strides)
        return T(out, self._add("Conv2D", [x], weights, name))

    def bn(self, x: T, name=None) -> T:  # scale=False: beta, moving_mean, moving_variance
        c = x.value.shape[1]
        beta, mean, var = self._rand(c, scale=0.2, offset=-0.1), self._rand(c, scale=0.4, offset=-0.2), \
            self._rand(c, offset=0.5)
        out = (x.value - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-3) + beta.view(1, -1, 1, 1)
        return T(out, self._add("BatchNormalization", [x], dict(beta=beta, moving_mean=mean, moving_variance=var),
                                name))

    def act(self, x: T, name=None) -> T:
        return T(F.relu(x.value), self._add("Activation", [x], {}, name))

    def max_pool(self, x: T) -> T:  # 3x3/2 'valid' everywhere in both applications
        return T(F.max_pool2d(x.value, 3, 2), self._add("MaxPooling2D", [x], {}))

    def avg_pool_same(self, x: T) -> T:
        """3x3/1 'same': the sum over the window divided by the number of real (unpadded) pixels."""
        v = tf_same_pad(x.value, (3, 3), 1)
        ones = tf_same_pad(torch.ones_like(x.value[:, :1]), (3, 3), 1)
        out = F.avg_pool2d(v, 3, 1) / F.avg_pool2d(ones, 3, 1)
        return T(out, self._add("AveragePooling2D", [x], {}))

    def concat(self, xs, name=None) -> T:
        return T(torch.cat([x.value for x in xs], 1), self._add("Concatenate", xs, {}, name))

    def top(self, x: T, classes: int) -> T:
        pooled = T(x.value.mean((2, 3)), self._add("GlobalAveragePooling2D", [x], {}, name="avg_pool"))
        scale = 1.0 / (float(pooled.value.std()) * math.sqrt(pooled.value.shape[1]) + 1e-6)  # logits ~ N(0, 1)
        k = torch.randn(pooled.value.shape[1], classes, generator=self.gen) * scale
        b = self._rand(classes, scale=0.2, offset=-0.1)
        self.logits = pooled.value @ k + b  # the Dense layer's output before its softmax
        return T(self.logits, self._add("Dense", [pooled], dict(kernel=k, bias=b), name="predictions"))

    def conv_bn(self, x, filters, kernel, strides=1, padding="same", name=None):
        """keras.applications' conv2d_bn: Conv2D (no bias) -> BatchNormalization(scale=False) -> ReLU."""
        x = self.conv(x, filters, kernel, strides, padding, name=None if name is None else name)
        x = self.bn(x, name=None if name is None else name + "_bn")
        return self.act(x, name=None if name is None else name + "_ac")


def tf_same_pad(x: torch.Tensor, kernel, stride: int) -> torch.Tensor:
    """TensorFlow's 'same': total = max((ceil(n / s) - 1) * s + k - n, 0), the extra pixel after."""
    pads = []
    for n, k in zip(reversed(x.shape[-2:]), reversed(kernel)):
        total = max((math.ceil(n / stride) - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


# ------------------------------------------------------------------ the two applications
def keras_stem(net: "KerasNet"):
    """The stem both Keras applications share: to 35 x 35 x 192."""
    d, cb = net.d, net.conv_bn
    x = cb(net.input, d(32), 3, strides=2, padding="valid")
    x = cb(x, d(32), 3, padding="valid")
    x = cb(x, d(64), 3)
    x = net.max_pool(x)
    x = cb(x, d(80), 1, padding="valid")
    x = cb(x, d(192), 3, padding="valid")
    return net.max_pool(x)


def keras_inception_v3(x: torch.Tensor, seed: int = 0, width: float = 1.0, classes: int | None = 1000) -> KerasNet:
    """keras.applications.InceptionV3 (include_top=classes is not None)."""
    net = KerasNet(x, seed, width)
    d, cb = net.d, net.conv_bn
    x = keras_stem(net)
    for i, pool_proj in enumerate((32, 64, 64)):  # mixed 0, 1, 2: 35 x 35
        b1 = cb(x, d(64), 1)
        b5 = cb(cb(x, d(48), 1), d(64), 5)
        b3 = cb(cb(cb(x, d(64), 1), d(96), 3), d(96), 3)
        bp = cb(net.avg_pool_same(x), d(pool_proj), 1)
        x = net.concat([b1, b5, b3, bp], name=f"mixed{i}")
    b3 = cb(x, d(384), 3, strides=2, padding="valid")  # mixed 3: 17 x 17
    bd = cb(cb(cb(x, d(64), 1), d(96), 3), d(96), 3, strides=2, padding="valid")
    x = net.concat([b3, bd, net.max_pool(x)], name="mixed3")
    for i, c7 in zip((4, 5, 6, 7), (128, 160, 160, 192)):  # mixed 4-7: 17 x 17
        b1 = cb(x, d(192), 1)
        b7 = cb(cb(cb(x, d(c7), 1), d(c7), (1, 7)), d(192), (7, 1))
        bd = cb(x, d(c7), 1)
        for filters, kernel in ((c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)), (192, (1, 7))):
            bd = cb(bd, d(filters), kernel)
        bp = cb(net.avg_pool_same(x), d(192), 1)
        x = net.concat([b1, b7, bd, bp], name=f"mixed{i}")
    b3 = cb(cb(x, d(192), 1), d(320), 3, strides=2, padding="valid")  # mixed 8: 8 x 8
    b7 = cb(cb(cb(cb(x, d(192), 1), d(192), (1, 7)), d(192), (7, 1)), d(192), 3, strides=2, padding="valid")
    x = net.concat([b3, b7, net.max_pool(x)], name="mixed8")
    for i in range(2):  # mixed 9, 10: 8 x 8
        b1 = cb(x, d(320), 1)
        b3 = cb(x, d(384), 1)
        b3 = net.concat([cb(b3, d(384), (1, 3)), cb(b3, d(384), (3, 1))], name=f"mixed9_{i}")
        bd = cb(cb(x, d(448), 1), d(384), 3)
        bd = net.concat([cb(bd, d(384), (1, 3)), cb(bd, d(384), (3, 1))])
        bp = cb(net.avg_pool_same(x), d(192), 1)
        x = net.concat([b1, b3, bd, bp], name=f"mixed{9 + i}")
    net.features = x.value
    if classes is not None:
        net.top(x, classes)
    return net


def keras_inception_resnet_v2(x: torch.Tensor, seed: int = 0, width: float = 1.0, classes: int | None = 1000):
    """keras.applications.InceptionResNetV2 (include_top=classes is not None)."""
    net = KerasNet(x, seed, width)
    d, cb = net.d, net.conv_bn

    def block(x, scale, kind, idx, activate=True):
        if kind == "block35":
            branches = [cb(x, d(32), 1), cb(cb(x, d(32), 1), d(32), 3),
                        cb(cb(cb(x, d(32), 1), d(48), 3), d(64), 3)]
        elif kind == "block17":
            branches = [cb(x, d(192), 1), cb(cb(cb(x, d(128), 1), d(160), (1, 7)), d(192), (7, 1))]
        else:
            branches = [cb(x, d(192), 1), cb(cb(cb(x, d(192), 1), d(224), (1, 3)), d(256), (3, 1))]
        name = f"{kind}_{idx}"
        mixed = net.concat(branches, name=name + "_mixed")
        up = net.conv(mixed, x.value.shape[1], 1, use_bias=True, name=name + "_conv")  # no BN, no ReLU
        out = T(x.value + up.value * scale, net._add("Lambda", [x, up], {}, name=name))
        return net.act(out, name=name + "_ac") if activate else out

    x = keras_stem(net)
    b0 = cb(x, d(96), 1)
    b1 = cb(cb(x, d(48), 1), d(64), 5)
    b2 = cb(cb(cb(x, d(64), 1), d(96), 3), d(96), 3)
    bp = cb(net.avg_pool_same(x), d(64), 1)
    x = net.concat([b0, b1, b2, bp], name="mixed_5b")
    for i in range(1, 11):
        x = block(x, 0.17, "block35", i)
    b0 = cb(x, d(384), 3, strides=2, padding="valid")
    b1 = cb(cb(cb(x, d(256), 1), d(256), 3), d(384), 3, strides=2, padding="valid")
    x = net.concat([b0, b1, net.max_pool(x)], name="mixed_6a")
    for i in range(1, 21):
        x = block(x, 0.1, "block17", i)
    b0 = cb(cb(x, d(256), 1), d(384), 3, strides=2, padding="valid")
    b1 = cb(cb(x, d(256), 1), d(288), 3, strides=2, padding="valid")
    b2 = cb(cb(cb(x, d(256), 1), d(288), 3), d(320), 3, strides=2, padding="valid")
    x = net.concat([b0, b1, b2, net.max_pool(x)], name="mixed_7a")
    for i in range(1, 10):
        x = block(x, 0.2, "block8", i)
    x = block(x, 1.0, "block8", 10, activate=False)
    x = cb(x, d(1536), 1, name="conv_7b")
    net.features = x.value
    if classes is not None:
        net.top(x, classes)
    return net


# ------------------------------------------------------------------ Keras' model.layers order
def model_layers(net: KerasNet) -> list[dict]:
    """Keras' Functional graph sort, as its _build_map / map_graph write it: a depth-first walk from
    the output (pre-order numbering, post-order node list), depths from the reversed post-order,
    then layers by decreasing depth, ties by their pre-order number."""
    layers = net.layers
    output = len(layers) - 1
    finished, in_decreasing_depth, index = set(), [], {}

    def build_map(node):
        if node in finished:
            return
        index.setdefault(node, len(index))
        for parent in layers[node]["inputs"]:
            build_map(parent)
        finished.add(node)
        in_decreasing_depth.append(node)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))
    try:
        build_map(output)
    finally:
        sys.setrecursionlimit(limit)
    depth = {}
    for node in reversed(in_decreasing_depth):
        depth.setdefault(node, 0)
        for parent in layers[node]["inputs"]:
            depth[parent] = max(depth.get(parent, 0), depth[node] + 1)
    return [layers[n] for n in sorted(index, key=lambda n: (-depth[n], index[n]))]


# ------------------------------------------------------------------ the file formats
def _variables(layer: dict) -> list[tuple[str, np.ndarray]]:
    return [(v, layer["weights"][v].numpy()) for v in VARIABLES.get(layer["cls"], ()) if v in layer["weights"]]


def write_keras2(path, net: KerasNet, full_model: bool = False) -> None:
    """Keras 2 save_weights (.h5), or the weights part of model.save (under model_weights)."""
    layers = model_layers(net)
    with h5py.File(path, "w") as f:
        group = f.create_group("model_weights") if full_model else f
        if full_model:
            f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": {"name": "inception"}})
        group.attrs["layer_names"] = np.array([layer["name"].encode() for layer in layers])
        group.attrs["backend"] = b"tensorflow"
        group.attrs["keras_version"] = b"2.15.0"
        for layer in layers:
            g = group.create_group(layer["name"])
            variables = _variables(layer)
            g.attrs["weight_names"] = np.array([f"{layer['name']}/{v}:0".encode() for v, _ in variables],
                                               dtype="S" if variables else "S1")
            for v, array in variables:
                g.create_dataset(f"{layer['name']}/{v}:0", data=array)


def write_keras3(path, net: KerasNet) -> None:
    """Keras 3 .weights.h5: layers/<class>[_k]/vars/<i>, k counting that class in model.layers."""
    counts: dict = {}
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        root = f.create_group("layers")
        for layer in model_layers(net):
            snake = SNAKE[layer["cls"]]
            n = counts.get(snake, 0)
            counts[snake] = n + 1
            g = root.create_group(snake if n == 0 else f"{snake}_{n}").create_group("vars")
            for i, (_, array) in enumerate(_variables(layer)):
                g.create_dataset(str(i), data=array)


def write_keras_archive(path, net: KerasNet, tmp_path) -> None:
    weights = tmp_path / "model.weights.h5"
    write_keras3(weights, net)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        archive.writestr("config.json", json.dumps({"class_name": "Functional"}))
        archive.write(weights, "model.weights.h5")


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ref.std() > 1e-3  # not a degenerate output
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    return float((ours - ref).abs().max())


# ------------------------------------------------------------------ tests
def _keras_names(model) -> dict:
    """Our conv/bn modules -> the names Keras' code gives them (auto names counted per class,
    the residual up-projections named blockNN_i_conv)."""
    state = model.state_dict()
    names, counts = {}, {"conv": 0, "bn": 0}
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() == 4:
            module = key[: -len(".weight")]
            if module.endswith("up_project"):
                names[module] = module.split(".")[1] + "_conv"
                continue
            kind = "conv"
        elif key.endswith(".running_mean"):
            module, kind = key[: -len(".running_mean")], "bn"
        else:
            continue
        if module in names:
            continue
        n = counts[kind]
        counts[kind] += 1
        base = "conv2d" if kind == "conv" else "batch_normalization"
        names[module] = base if n == 0 else f"{base}_{n}"
    return names


def _numbers(names):
    """conv2d -> 0, conv2d_5 -> 5, batch_normalization_5 -> 5; other names stay."""
    out = []
    for name in names:
        hit = re.fullmatch(r"(?:conv2d|batch_normalization)(?:_(\d+))?", name)
        out.append(int(hit.group(1) or 0) if hit else name)
    return out


def test_keras_order_equals_the_published_model_summaries():
    """The order of Conv2D / BatchNormalization layers in the model.summary() that Keras prints for
    the applications (include_top=False), as published; numbers are the layers' auto names."""
    v3_head = [0, 1, 2, 3, 4, 8, 6, 9, 5, 7, 10, 11, 15, 13, 16, 12, 14, 17, 18]
    v3_tail = [80, 77, 81, 78, 79, 82, 83, 76, 84, 89, 86, 90, 87, 88, 91, 92, 85, 93]
    with torch.device("meta"):
        v3 = create_model("inception_v3", num_classes=0)
        irv2 = create_model("inception_resnet_v2", num_classes=0)
    names = _keras_names(v3)
    order = keras_layer_order(v3)
    convs = _numbers([names[m] for m in order["conv"]])
    bns = _numbers([names[m] for m in order["bn"]])
    assert len(convs) == len(bns) == 94
    assert convs[:19] == v3_head and bns[:19] == v3_head
    assert convs[-18:] == v3_tail and bns[-18:] == v3_tail
    names = _keras_names(irv2)
    order = keras_layer_order(irv2)
    convs = _numbers([names[m] for m in order["conv"]])
    assert convs[:26] == [0, 1, 2, 3, 4, 8, 6, 9, 5, 7, 10, 11, 15, 13, 16, 12, 14, 17, "block35_1_conv",
                          21, 19, 22, 18, 20, 23, "block35_2_conv"]
    assert _numbers([names[m] for m in order["bn"]])[:19] == v3_head[:18] + [21]


def test_reference_keras_net_sorts_like_the_published_summary():
    # the test's own graph sort, on the test's own Keras build, gives the published order too
    net = keras_inception_v3(torch.randn(1, 3, 75, 75), width=0.25, classes=None)
    convs = [layer["name"] for layer in model_layers(net) if layer["cls"] == "Conv2D"]
    assert _numbers(convs)[:19] == [0, 1, 2, 3, 4, 8, 6, 9, 5, 7, 10, 11, 15, 13, 16, 12, 14, 17, 18]


@pytest.mark.parametrize("fmt", ["keras2.h5", "weights.h5", "keras"])
def test_keras_inception_v3_parity(tmp_path, fmt):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 107, 123)
    ref = keras_inception_v3(x, seed=1, width=0.25, classes=10)
    path = tmp_path / f"inception_v3.{fmt}"
    if fmt == "keras2.h5":
        write_keras2(path, ref)
    elif fmt == "weights.h5":
        write_keras3(path, ref)
    else:
        write_keras_archive(path, ref, tmp_path)
    ours = create_model("inception_v3", depth_multiplier=0.25, num_classes=10, weights=path).eval()
    assert ours.switches.avg_pool_count_pad is False
    assert ours.pretrained_cfg["switches"]["avg_pool_count_pad"] is False
    with torch.no_grad():
        diff = assert_close(ours(x), ref.logits)
    print(f"keras {fmt} inception_v3 max abs diff {diff:.2e}")


def test_keras_inception_resnet_v2_parity_keras3(tmp_path):
    x = torch.randn(1, 3, 91, 91)
    ref = keras_inception_resnet_v2(x, seed=2, width=0.25, classes=7)
    write_keras3(tmp_path / "irv2.weights.h5", ref)
    ours = create_model("inception_resnet_v2", depth_multiplier=0.25, num_classes=7,
                        weights=tmp_path / "irv2.weights.h5").eval()
    with torch.no_grad():
        diff = assert_close(ours(x), ref.logits)
    print(f"keras 3 inception_resnet_v2 max abs diff {diff:.2e}")


def test_keras_full_model_h5_without_top(tmp_path):
    x = torch.randn(1, 3, 75, 75)
    ref = keras_inception_resnet_v2(x, seed=3, width=0.25, classes=None)
    write_keras2(tmp_path / "notop.h5", ref, full_model=True)
    ours = create_model("inception_resnet_v2", depth_multiplier=0.25, num_classes=0,
                        weights=tmp_path / "notop.h5").eval()
    with torch.no_grad():
        assert_close(ours.forward_features(x), ref.features)
    # into a model with a classifier: the body loads, the classifier keeps its initialization
    with pytest.warns(UserWarning, match="has no classifier"):
        create_model("inception_resnet_v2", depth_multiplier=0.25, num_classes=5, weights=tmp_path / "notop.h5")


@pytest.mark.slow
@pytest.mark.parametrize("name, build", [("inception_v3", keras_inception_v3),
                                         ("inception_resnet_v2", keras_inception_resnet_v2)])
def test_keras_applications_files_full_size(tmp_path, name, build):
    """The layout of the applications' own files: full size, 1000 classes, Keras 2 .h5."""
    x = torch.randn(1, 3, 299, 299)
    with torch.no_grad():
        ref = build(x, seed=4)
    path = tmp_path / f"{name}_weights_tf_dim_ordering_tf_kernels.h5"
    write_keras2(path, ref)
    del ref.layers
    ours = create_model(name, weights=path).eval()
    with torch.no_grad():
        diff = assert_close(ours(x), ref.logits)
    print(f"keras applications {name} max abs diff {diff:.2e}")
    assert classifier_size(path) == 1000


def test_keras_weights_survive_save_pretrained(tmp_path):
    x = torch.randn(1, 3, 80, 80)
    ref = keras_inception_v3(x, seed=5, width=0.25, classes=3)
    write_keras3(tmp_path / "v3.weights.h5", ref)
    loaded = create_model("inception_v3", depth_multiplier=0.25, num_classes=3, weights=tmp_path / "v3.weights.h5")
    loaded.save_pretrained(tmp_path / "saved")
    restored = il.from_pretrained(tmp_path / "saved").eval()
    assert restored.switches.avg_pool_count_pad is False
    with torch.no_grad():
        assert_close(restored(x), ref.logits)


def test_keras_file_errors(tmp_path):
    x = torch.randn(1, 3, 75, 75)
    ref = keras_inception_v3(x, seed=6, width=0.25, classes=10)
    path = tmp_path / "v3.h5"
    write_keras2(path, ref)
    # another architecture: the counts of Keras layers, and the fix
    with pytest.raises(UserError, match=r"v3\.h5 does not fit inception_resnet_v2: it has 94 Keras Conv2D "
                                        r"layers, the model 244; .*InceptionV3 loads into inception_v3"):
        create_model("inception_resnet_v2", depth_multiplier=0.25, weights=path)
    # other switches: the first tensor that does not fit
    with pytest.raises(UserError, match=r"Keras layer conv2d gives blocks\.conv2d_1a_3x3\.conv\.weight the shape "
                                        r"\(16, 3, 3, 3\), the model's is \(32, 3, 3, 3\)"):
        create_model("inception_v3", num_classes=10, weights=path)
    # another class count
    with pytest.raises(UserError, match="has a 10-class classifier, the model 1000 classes; pass num_classes=10"):
        create_model("inception_v3", depth_multiplier=0.25, weights=path)
    # a truncated file
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cannot read Keras weights file .*cut\.h5: truncated or corrupt") as err:
        create_model("inception_v3", depth_multiplier=0.25, num_classes=10, weights=tmp_path / "cut.h5")
    assert "\n" not in str(err.value)
    # an HDF5 file that is not Keras weights
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f.create_dataset("images", data=np.zeros((2, 2)))
    with pytest.raises(UserError, match=r"data\.h5 is an HDF5 file but not Keras weights"):
        create_model("inception_v3", weights=tmp_path / "data.h5")


def test_keras_full_size_file_of_another_application_is_named(tmp_path):
    """A full-size InceptionV3 file loaded as inception_resnet_v2 names inception_v3 (on meta, no
    tensors: the file is written from the shapes only)."""
    with torch.device("meta"):
        v3 = create_model("inception_v3")
    state = v3.state_dict()
    with h5py.File(tmp_path / "v3.h5", "w") as f:
        order = keras_layer_order(v3)["conv"]
        names = [f"conv2d_{i}" for i in range(len(order))]
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        for n, module in zip(names, order):
            shape = tuple(state[f"{module}.weight"].permute(2, 3, 1, 0).shape)
            g = f.create_group(n)
            g.attrs["weight_names"] = np.array([f"{n}/kernel:0".encode()])
            g.create_dataset(f"{n}/kernel:0", shape=shape, dtype="f4")
    with torch.device("meta"):
        model = create_model("inception_resnet_v2")
    with pytest.raises(UserError, match=r"the file holds inception_v3 weights: use create_model\('inception_v3'"):
        load_weights(model, tmp_path / "v3.h5")
