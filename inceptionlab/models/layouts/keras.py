"""Keras applications' weight files (``InceptionV3``, ``InceptionResNetV2``), read with h5py alone.

The files
---------
- Keras 2 / tf.keras ``save_weights`` files (the applications' ``*_tf_dim_ordering_tf_kernels*.h5``),
  and full-model ``.h5`` files, which hold the same under the group ``model_weights``: the root
  attribute ``layer_names`` lists the layers in ``model.layers`` order; each layer's group has the
  attribute ``weight_names`` (``"conv2d_5/kernel:0"``, ...) and one dataset per name.
- Keras 3 ``.weights.h5`` files, and the ``model.weights.h5`` inside a ``.keras`` archive:
  ``layers/<class>[_k]/vars/<i>``, where ``conv2d_5`` is the sixth ``Conv2D`` of ``model.layers``
  (the path names a layer by its class and place, not by its name), and ``vars`` are numbered in
  the order the layer creates them.

The tensors
-----------
- ``Conv2D``: kernel H x W x in x out (ours: out x in x H x W), and a bias where ``use_bias`` (the
  1x1 up-projections of the Inception-ResNet blocks).
- ``BatchNormalization``: [gamma], beta, moving_mean, moving_variance, epsilon 1e-3 as ours. Both
  applications build it with ``scale=False``, so there is no gamma: ours is set to 1. (A Keras 3
  layer with three variables is read as beta, mean, variance: ``scale=False``, as the applications.)
- ``Dense`` ("predictions"): kernel in x out (ours: out x in), bias; 1000 classes, or none in the
  ``include_top=False`` ("notop") files.

The order
---------
Both formats list layers in ``model.layers`` order, which for a Keras functional model is *not*
the order the code creates them: layers are sorted by depth (the longest path to the output, the
deepest first), and layers of equal depth by when a depth-first walk from the output, through each
layer's inputs in order, first reaches them. So the branches of an Inception module interleave
(InceptionV3's first module lists conv2d_8, conv2d_6, conv2d_9, conv2d_5, ...: the published
``model.summary()``, which the tests check). `keras_layer_order` builds the Keras graph of our
model from its modules (``ConvBN`` = Conv2D -> BatchNormalization -> Activation; ``Concat`` = the
branches, then Concatenate; ``ScaledResidual`` = branches, Concatenate, the 1x1 Conv2D, the scaled
sum of [input, up-projection], Activation; ``ClassifierHead`` = GlobalAveragePooling2D -> Dense)
and sorts it the same way.

TensorFlow's conventions
------------------------
Keras pads ``'same'`` as TensorFlow: for stride 2 and an even total padding that puts the extra
row and column at the bottom and right, which PyTorch's symmetric padding cannot express. Both
applications use ``'same'`` only at stride 1 with odd kernels (where TF and PyTorch agree) and
``'valid'`` in every stride-2 convolution and pooling, so the weights need no padding change. What
differs is the ``'same'`` 3x3 average pool, which divides by the valid pixels only: loading a Keras
file sets ``avg_pool_count_pad=False`` (Inception-ResNet-v2 has it already).
"""
from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from inceptionlab.errors import UserError, clipped
from inceptionlab.models.layers import ClassifierHead, Concat, ConvBN, ScaledResidual

KERAS_CLASSES = {"conv2d": "conv", "batch_normalization": "bn", "dense": "dense"}
KIND_NAMES = {"conv": "Conv2D", "bn": "BatchNormalization", "dense": "Dense"}
BN_VARIABLES = {4: ("gamma", "beta", "moving_mean", "moving_variance"),
                3: ("beta", "moving_mean", "moving_variance"),
                2: ("moving_mean", "moving_variance")}
CONVENTION = {"switches": {"avg_pool_count_pad": False}}
FIX = ("Keras applications' InceptionV3 loads into inception_v3 and InceptionResNetV2 into "
       "inception_resnet_v2, with their default switches")


@dataclass
class KerasLayer:
    kind: str                                  # "conv", "bn" or "dense"
    name: str                                  # its name (Keras 2) or class and place (Keras 3)
    weights: dict = field(default_factory=dict)  # variable name -> array, as stored


# ------------------------------------------------------------------ reading
def read_keras(path) -> list[KerasLayer]:
    """The layers with weights of a Keras file, in ``model.layers`` order within each kind."""
    try:
        import h5py
    except ImportError:
        raise UserError(f"reading the Keras file {path} needs h5py: pip install h5py") from None
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = archive.read("model.weights.h5")
            handle = h5py.File(io.BytesIO(data), "r")
        else:
            handle = h5py.File(path, "r")
        with handle:
            return _read(handle, path)
    except UserError:
        raise
    except KeyError:
        raise UserError(f"{path} is a zip archive without model.weights.h5: not a Keras 3 .keras file") from None
    except Exception as exc:  # noqa: BLE001 - h5py/zip errors become one line
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read Keras weights file {path}: truncated or corrupt ({clipped(text)})") from None


def _read(handle, path: Path) -> list[KerasLayer]:
    if "layer_names" in handle.attrs:
        return _read_keras2(handle, path)
    if "model_weights" in handle and "layer_names" in handle["model_weights"].attrs:
        return _read_keras2(handle["model_weights"], path)
    for name in ("layers", "_layer_checkpoint_dependencies"):
        if name in handle:
            return _read_keras3(handle[name], path)
    raise UserError(f"{path} is an HDF5 file but not Keras weights (no layer_names attribute, no layers/ "
                    f"group); save the model with Keras' save_weights")


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read_keras2(group, path: Path) -> list[KerasLayer]:
    layers = []
    for name in (_text(n) for n in group.attrs["layer_names"]):
        names = [_text(w) for w in group[name].attrs.get("weight_names", [])]
        if not names:
            continue
        weights = {w.split("/")[-1].split(":")[0]: np.asarray(group[name][w], dtype=np.float32) for w in names}
        layers.append(KerasLayer(_kind(weights, name, path), name, weights))
    return layers


def _kind(weights: dict, name: str, path: Path) -> str:
    kernel = weights.get("kernel")
    if kernel is not None and kernel.ndim == 4:
        return "conv"
    if kernel is not None and kernel.ndim == 2:
        return "dense"
    if "moving_mean" in weights:
        return "bn"
    raise UserError(f"{path}: Keras layer {name} ({', '.join(weights)}) is not a Conv2D, BatchNormalization "
                    f"or Dense layer; only InceptionV3 and InceptionResNetV2 files are supported")


def _read_keras3(group, path: Path) -> list[KerasLayer]:
    places = []
    for entry in group:
        cls, place = re.fullmatch(r"(.*?)(?:_(\d+))?", entry).groups()
        variables = group[entry].get("vars")
        arrays = [np.asarray(variables[i], dtype=np.float32) for i in sorted(variables, key=int)] if variables else []
        if not arrays:
            if "layers" in group[entry]:
                raise UserError(f"{path} holds a nested Keras model ({entry}); save the Inception model's own "
                                f"weights (model.get_layer(...).save_weights) and load those")
            continue
        kind = KERAS_CLASSES.get(cls)
        if kind is None:
            raise UserError(f"{path}: Keras layer {entry} is not a Conv2D, BatchNormalization or Dense layer; "
                            f"only InceptionV3 and InceptionResNetV2 files are supported")
        if kind == "bn":
            if len(arrays) not in BN_VARIABLES:
                raise UserError(f"{path}: BatchNormalization {entry} has {len(arrays)} variables")
            weights = dict(zip(BN_VARIABLES[len(arrays)], arrays))
        else:
            weights = dict(zip(("kernel", "bias"), arrays))
        places.append((int(place or 0), KerasLayer(kind, entry, weights)))
    return [layer for _, layer in sorted(places, key=lambda p: p[0])]


# ------------------------------------------------------------------ the Keras graph of our model
class _Graph:
    def __init__(self):
        self.kinds: list[str] = []
        self.refs: list = []
        self.parents: list[list[int]] = []

    def add(self, kind: str, parents: list[int], ref: str | None = None) -> int:
        self.kinds.append(kind)
        self.refs.append(ref)
        self.parents.append(list(parents))
        return len(self.kinds) - 1


def _walk(graph: _Graph, module: nn.Module, prefix: str, x: int) -> int:
    if isinstance(module, ConvBN):
        x = graph.add("conv", [x], prefix + "conv")
        if module.bn is not None:
            x = graph.add("bn", [x], prefix + "bn")
        return graph.add("activation", [x]) if module.act else x
    if isinstance(module, ScaledResidual):
        mixed = _walk(graph, module.branches, prefix + "branches.", x)
        up = graph.add("conv", [mixed], prefix + "up_project")
        total = graph.add("scaled_sum", [x, up])           # Keras: Lambda / CustomScaleLayer([x, up])
        return graph.add("activation", [total]) if module.activate else total
    if isinstance(module, Concat):
        outs = [_walk(graph, branch, f"{prefix}branches.{i}.", x) for i, branch in enumerate(module.branches)]
        return graph.add("concatenate", outs)
    if isinstance(module, nn.Sequential):
        for i, child in enumerate(module):
            x = _walk(graph, child, f"{prefix}{i}.", x)
        return x
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return graph.add("pooling", [x])
    if isinstance(module, nn.Identity):
        return x
    raise UserError(f"Keras weights cannot be laid out on a {type(module).__name__} ({prefix.rstrip('.')})")


def _keras_graph(model) -> tuple[_Graph, int]:
    graph = _Graph()
    x = graph.add("input", [])
    for name, block in model.blocks.items():
        x = _walk(graph, block, f"blocks.{name}.", x)
    if not isinstance(model.head, ClassifierHead):
        raise UserError(f"Keras weights need the plain classifier head, not {type(model.head).__name__}; "
                        f"drop embedding_dim")
    if isinstance(model.head.fc, nn.Linear):
        x = graph.add("dense", [graph.add("global_average_pooling", [x])], "head.fc")
    return graph, x


def keras_layer_order(model) -> dict[str, list[str]]:
    """Our module names of each Keras kind ('conv', 'bn', 'dense'), in Keras' ``model.layers`` order
    for the Keras model built like ours."""
    graph, output = _keras_graph(model)
    # first visit in a depth-first walk from the output through the inputs, in order
    visit = {output: 0}
    stack = [(output, iter(graph.parents[output]))]
    while stack:
        node, parents = stack[-1]
        parent = next(parents, None)
        if parent is None:
            stack.pop()
        elif parent not in visit:
            visit[parent] = len(visit)
            stack.append((parent, iter(graph.parents[parent])))
    # depth: the longest path to the output (nodes are created after their inputs)
    depth = [0] * len(graph.kinds)
    for node in reversed(range(len(graph.kinds))):
        for parent in graph.parents[node]:
            depth[parent] = max(depth[parent], depth[node] + 1)
    order = sorted(visit, key=lambda n: (-depth[n], visit[n]))
    out: dict[str, list[str]] = {"conv": [], "bn": [], "dense": []}
    for node in order:
        if graph.kinds[node] in out:
            out[graph.kinds[node]].append(graph.refs[node])
    return out


# ------------------------------------------------------------------ mapping
def map_keras_state(model, layers: list[KerasLayer], path) -> tuple[dict, dict]:
    """(our state dict, the convention to apply) from the layers of a Keras file."""
    from inceptionlab.models.weights import map_classifier

    ours = model.state_dict()
    order = keras_layer_order(model)
    by_kind = {kind: [layer for layer in layers if layer.kind == kind] for kind in order}
    for kind in ("conv", "bn"):
        if len(by_kind[kind]) != len(order[kind]):
            raise UserError(f"{path} does not fit {model.name}: it has {len(by_kind[kind])} Keras "
                            f"{KIND_NAMES[kind]} layers, the model {len(order[kind])}; {_fix(layers, model)}")
    mapped: dict = {}
    for layer, name in zip(by_kind["conv"], order["conv"]):
        kernel = torch.from_numpy(layer.weights["kernel"]).permute(3, 2, 0, 1)   # HWIO -> OIHW
        _put(mapped, ours, f"{name}.weight", kernel, layer, path, model)
        if ("bias" in layer.weights) != (f"{name}.bias" in ours):
            raise UserError(f"{path} does not fit {model.name}: Keras layer {layer.name} "
                            f"{'has' if 'bias' in layer.weights else 'has no'} bias, the model's {name} "
                            f"{'has none' if 'bias' in layer.weights else 'has one'}; {_fix(layers, model)}")
        if "bias" in layer.weights:
            _put(mapped, ours, f"{name}.bias", torch.from_numpy(layer.weights["bias"]), layer, path, model)
    for layer, name in zip(by_kind["bn"], order["bn"]):
        w = layer.weights
        channels = w["moving_mean"].shape
        values = {"weight": w.get("gamma", np.ones(channels, np.float32)),
                  "bias": w.get("beta", np.zeros(channels, np.float32)),
                  "running_mean": w["moving_mean"], "running_var": w["moving_variance"]}
        for var, value in values.items():
            _put(mapped, ours, f"{name}.{var}", torch.from_numpy(value), layer, path, model)
    dense = by_kind["dense"][-1:]
    theirs = [(f"{layer.name}/kernel", torch.from_numpy(layer.weights["kernel"]).t()) for layer in dense]
    theirs += [(f"{layer.name}/bias", torch.from_numpy(layer.weights["bias"])) for layer in dense]
    head = [(k, v) for k, v in ours.items() if k.startswith("head.fc.")]
    mapped.update(map_classifier(theirs, head, "classifier", path, model))
    if model.aux_heads:
        import warnings
        warnings.warn(f"{path} has no auxiliary heads (Keras applications have none): the model's aux "
                      f"heads keep their initial weights", stacklevel=3)
    return mapped, CONVENTION


def _put(mapped: dict, ours: dict, key: str, value: torch.Tensor, layer: KerasLayer, path, model) -> None:
    if tuple(value.shape) != tuple(ours[key].shape):
        raise UserError(f"{path} does not fit {model.name}: Keras layer {layer.name} gives {key} the shape "
                        f"{tuple(value.shape)}, the model's is {tuple(ours[key].shape)}; {_fix(None, model)}")
    mapped[key] = value.contiguous()


def _fix(layers: list[KerasLayer] | None, model) -> str:
    if layers is not None:
        shapes = [tuple(layer.weights["kernel"].shape) for layer in layers if layer.kind == "conv"]
        names = [name for name, sig in _keras_signatures().items() if sig == shapes]
        arch = model.pretrained_cfg.get("architecture", model.name)
        if names and arch not in names:
            return f"the file holds {' or '.join(names)} weights: use create_model({names[0]!r}, weights=...)"
    return FIX


_SIGNATURES: dict = {}


def _keras_signatures() -> dict:
    """Conv kernel shapes (Keras' H x W x in x out, in file order) of each zoo model's Keras build."""
    if not _SIGNATURES:
        from inceptionlab.models.registry import create_model, list_models
        for name in list_models():
            with torch.device("meta"):
                model = create_model(name)
            state = model.state_dict()
            try:
                convs = keras_layer_order(model)["conv"]
            except UserError:
                continue
            _SIGNATURES[name] = [tuple(state[f"{c}.weight"].permute(2, 3, 1, 0).shape) for c in convs]
    return _SIGNATURES
