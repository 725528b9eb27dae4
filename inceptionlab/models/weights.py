"""Loading and saving weights, safely, in our layout or the references'.

Layouts read (detected from the file, never from its name):

==========================  ==============================================================
ours                        ``blocks.* / aux_heads.* / head.*`` (``save_pretrained``, checkpoints)
torchvision, timm           googlenet, inception_v3; inception_v3/v4, inception_resnet_v2
Cadene pretrainedmodels     bninception (Caffe: conv biases, BGR 0-255 input), inceptionv4 and
                            inceptionresnetv2 (1001 classes: TF-slim's background class first)
facenet-pytorch             InceptionResnetV1: 512-d embedding head, optional logits
                            (needs ``embedding_dim=512``)
Keras applications          InceptionV3, InceptionResNetV2 ``.h5`` / ``.weights.h5`` / ``.keras``
                            (`inceptionlab.models.layouts.keras`, read with h5py alone)
==========================  ==============================================================

Reference layouts of PyTorch are reached by one mechanism, not by a table per model: a state dict
is split into body, auxiliary heads and head by its key prefixes, and each part is matched to ours
tensor by tensor, in order, with every shape checked. This works because every block of the zoo
registers its branches in the order the references do (which is also the order their outputs are
concatenated in). A head is "what comes before the classifier" (facenet's embedding) plus the
classifier, the last fully connected layer with a bias: a 1001-class classifier loads into a
1000-class model without its first row (TF-slim's background class), or whole with
``num_classes=1001``.

A layout also carries its input convention (facenet's standardization, Keras' average pools),
which is written into the model's configuration or switches, so ``save_pretrained`` keeps it.

Loading never runs code: safetensors, HDF5 read as arrays, or ``torch.load(weights_only=True)``
(which refuses any pickled object but tensors, containers, numbers and strings).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch

from inceptionlab.errors import FixInPython, UserError, clipped

# key prefixes of the references' heads and auxiliary heads
HEAD_PREFIXES = ("fc.", "last_linear.", "classif.", "classifier.", "logits.", "last_bn.")
AUX_PREFIXES = ("AuxLogits.", "aux1.", "aux2.", "aux_logits.")
OURS = ("blocks.", "aux_heads.", "head.")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

# input conventions of layouts whose weights expect other inputs than the model card says
CONVENTIONS = {
    # facenet-pytorch's fixed_image_standardization: (pixel - 127.5) / 128 on 160x160 faces
    "facenet": dict(mean=(0.5, 0.5, 0.5), std=(128 / 255,) * 3, input_size=(3, 160, 160), crop_pct=1.0),
}


# ------------------------------------------------------------------ reading files, safely
def is_keras_file(path) -> bool:
    """An HDF5 file (Keras 2 .h5, Keras 3 .weights.h5) or a Keras 3 ``.keras`` archive."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    if head == HDF5_MAGIC:
        return True
    if head[:2] == b"PK" and path.suffix == ".keras":
        return True
    return False


def _safe_globals() -> list:
    """Plain-data classes that training checkpoints hold next to the weights (timm's ``args``
    namespace, numpy scalars): they rebuild data, never call code of the file's choosing."""
    import argparse

    allowed: list = [argparse.Namespace]
    try:
        import numpy as np
        core = getattr(np, "_core", None) or np.core
        allowed += [np.dtype, (core.multiarray.scalar, "numpy.core.multiarray.scalar"),
                    core.multiarray.scalar]
        allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    except Exception:  # noqa: BLE001 - numpy is optional here
        pass
    return allowed


def _torch_load(path: Path):
    with torch.serialization.safe_globals(_safe_globals()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the refusal below says it all
        return torch.load(path, map_location="cpu", weights_only=True)


def _other_kind(path: Path) -> str | None:
    """What a file that is no weights file at all is (by its first bytes), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy array file"
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8")):
        return "an image"
    text = head.removeprefix(b"\xef\xbb\xbf")
    if not text or not all(32 <= c < 127 or c in (9, 10, 13) for c in text):
        return None  # binary: a corrupt weights file, not some other kind of file
    return "a JSON/text file" if text[:1] in (b"{", b"[") else "a text file"


WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".h5", ".keras")


def _weights_files_in(folder: Path) -> str:
    """The fix for a folder given where a weights file was expected: the files in it that could be one."""
    found = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHTS_SUFFIXES))
    if not found:
        return "it holds no weights file (.safetensors/.pth/.pt/.bin/.h5); pass one, or a folder that training or " \
               "save_pretrained wrote"
    shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    return f"pass one of its files ({shown}), e.g. {folder / found[0]}"


def read_state_dict(path) -> "OrderedDict[str, torch.Tensor]":
    """Reads a state dict from .safetensors, a torch file or a Keras file, without running code.

    A Keras file gives its arrays as they are stored, named ``layer/variable`` (the loader maps
    them; see `inceptionlab.models.layouts.keras`).
    """
    path = Path(path)
    if path.is_dir():
        saved = (path / "model.safetensors").is_file()
        if saved:
            raise UserError(f"{path} is a folder, not a weights file; pass {path / 'model.safetensors'} or the "
                            f"folder itself as the model (create_model('{path}'), --model {path})")
        raise UserError(f"{path} is a folder, not a weights file; " + _weights_files_in(path))
    if not path.is_file():
        if path.name == "model.safetensors" and path.parent.is_dir():  # a folder given: it was said of the file
            raise UserError(f"{path.parent} holds no model.safetensors: it is not a folder that training or "
                            f"save_pretrained wrote; " + _weights_files_in(path.parent))
        raise UserError(f"weights file {path} does not exist; pass a .safetensors/.pth/.pt file, or a folder that "
                        f"training or save_pretrained wrote")
    exported = {".onnx": "an ONNX file", ".pt2": "a torch.export program"}.get(path.suffix.lower())
    if exported:
        raise UserError(f"{path} is {exported} (an export), not weights: pass the state dict it was exported "
                        f"from (.pth/.safetensors) or the training run's folder (predict also takes the export "
                        f"itself as --model)")
    if is_keras_file(path):
        from inceptionlab.models.layouts.keras import read_keras
        return OrderedDict((f"{layer.name}/{var}", torch.from_numpy(array))
                           for layer in read_keras(path) for var, array in layer.weights.items())
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = _torch_load(path)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
        text = str(exc)
        resave = "Re-save it as a plain state dict (torch.save(model.state_dict(), ...)) or as .safetensors"
        if "GLOBAL" in text:  # the safe unpickler met a class or function it does not rebuild
            raise UserError(f"refusing to load {path}: it holds pickled code, not only tensors ({_culprit(text)}); "
                            f"nothing in it was run. {resave}") from None
        if "Unsupported operand" in text and _starts_with(path, b"\x80") and not _is_torch_legacy(path):
            raise UserError(f"refusing to load {path}: it is a raw pickle, which only an unsafe load (one that can "
                            f"run code) reads; nothing in it was run. {resave}") from None
        reason = _reason(text) or _first_line(exc)
        kind = _other_kind(path)
        if kind:
            raise UserError(f"{path} is {kind}, not a weights file; pass a .safetensors/.pth/.pt state dict or a "
                            f"run folder") from None
        if path.stat().st_size == 0:
            raise UserError(f"weights file {path} is empty (0 bytes): copy or save it again") from None
        raise UserError(f"cannot read weights file {path}: truncated or corrupt ({clipped(reason)}); copy or save it "
                        f"again (a download or copy that stopped early leaves such a file)") from None
    return unwrap_state_dict(state, path)


IN_MEMORY = "the state dict passed as weights="  # what messages call a state dict given in memory


def unwrap_state_dict(state, source=IN_MEMORY) -> "OrderedDict[str, torch.Tensor]":
    """The network's tensors in what a file held or a caller passed: a state dict, or a checkpoint
    around one (``state_dict`` / ``model`` / ``ema`` entries), without DDP's and torch.compile's
    key prefixes. ``source`` names it in the error for anything else."""
    if isinstance(state, Mapping) and "optimizer" in state and "config" in state and isinstance(state.get("ema"), Mapping):
        state = state["ema"]  # a checkpoint of our training that kept an average: its weights, as eval takes
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = "" if source != IN_MEMORY else f" (got {describe(state)})"
        raise UserError(f"{source} is not a state dict of tensors{what}; save model.state_dict() instead")
    # DDP's module. and torch.compile's _orig_mod. wrappers: the keys of the network inside
    return OrderedDict((str(k).removeprefix("module.").removeprefix("_orig_mod.").removeprefix("module."), v)
                       for k, v in state.items())


def describe(value) -> str:
    """A short description of ``value`` for an error message: its type and size, never the repr of
    a large object (a state dict's repr is 350,000 characters)."""
    kind = type(value).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    if isinstance(value, Mapping):
        tensors = sum(isinstance(v, torch.Tensor) for v in value.values())
        others = [(k, v) for k, v in value.items() if not isinstance(v, torch.Tensor)]
        text = f"{article} {kind} of {tensors} tensor{'s' * (tensors != 1)}"
        if others:
            key, other = others[0]
            text += (f" and {len(others)} other entr{'ies' if len(others) != 1 else 'y'} (the first: "
                     f"{clipped(repr(key), 40)}, {type(other).__name__})")
        return text
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple, set)):
        return f"{article} {kind} of {len(value)} item{'s' * (len(value) != 1)}"
    text = repr(value)
    return f"{kind} {text}" if len(text) <= 60 else f"{article} {kind}"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _culprit(text: str) -> str:
    """The global a refused pickle asked for ('builtins.exec', 'posix.system', ...)."""
    import re

    hit = re.search(r"GLOBAL ([\w.]+)", text)
    return f"it asks for {hit.group(1)}" if hit else "it asks for a class or function"


def _reason(text: str) -> str:
    """The informative line of torch's error (not its advice about weights_only=False)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("Unsupported", "PytorchStreamReader", "Invalid", "unpickling", "EOF", "Ran out")):
            return line
    return lines[0] if lines else ""


def _starts_with(path: Path, prefix: bytes) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(prefix)) == prefix


def _is_torch_legacy(path: Path) -> bool:
    """torch.save's pre-1.6 format: a pickled magic number at protocol 2 first."""
    return _starts_with(path, b"\x80\x02\x8a\x0a")


# ------------------------------------------------------------------ layout detection
def detect_layout(state: dict) -> str:
    """'ours', 'facenet', 'caffe' (Cadene's bninception) or 'reference' (any other)."""
    keys = list(state)
    if keys and all(k.startswith(OURS) for k in keys):
        return "ours"
    if "last_bn.running_mean" in state and any(k.startswith("repeat_1.") for k in keys):
        return "facenet"
    if "conv1_7x7_s2.weight" in state:
        return "caffe"
    return "reference"


def in_reference_order(state: dict) -> dict:
    """``state`` in its reference's registration order.

    safetensors files store tensors sorted by name; ``reference_layouts.json`` (written by
    scripts/make_reference_layouts.py) records each reference's key order, names only. A state dict
    of no known layout keeps its own order (right for any .pth file).
    """
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    for order in _reference_layouts().values():
        rank = {k: i for i, k in enumerate(order)}
        if all(k in rank for k in keys):
            return OrderedDict((k, state[k]) for k in sorted(keys, key=rank.__getitem__))
    return state


@functools.lru_cache(maxsize=1)
def _reference_layouts() -> dict:
    return json.loads((Path(__file__).with_name("reference_layouts.json")).read_text())


# ------------------------------------------------------------------ matching by order
def _parts(state: dict, ours: bool) -> tuple[list, dict, list]:
    """(body items, {aux head name: items}, head items) in state-dict order, without BN counters."""
    body, aux, head = [], OrderedDict(), []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        if ours:
            if key.startswith("aux_heads."):
                aux.setdefault(key.split(".")[1], []).append((key, value))
            elif key.startswith("head."):
                head.append((key, value))
            else:
                body.append((key, value))
        elif key.startswith(AUX_PREFIXES):
            aux.setdefault(key.split(".")[0], []).append((key, value))
        elif key.startswith(HEAD_PREFIXES):
            head.append((key, value))
        else:
            body.append((key, value))
    return body, aux, head


def _arch(model) -> str:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return cfg.get("architecture", getattr(model, "name", type(model).__name__))


def _match(theirs: list, ours: list, what: str, path, model, fix: str | None = None) -> dict:
    """{our key: their tensor}, pairing the two lists in order; one clear line on any mismatch."""
    model_name = getattr(model, "name", str(model))
    first = next((i for i, ((_, tv), (_, ov)) in enumerate(zip(theirs, ours)) if tv.shape != ov.shape), None)
    if len(theirs) == len(ours) and first is None:
        return {ok: tv for (_, tv), (ok, _) in zip(theirs, ours)}
    if first is None:
        first = min(len(theirs), len(ours))
    where = []
    if first < len(theirs):
        where.append(f"its {theirs[first][0]} {tuple(theirs[first][1].shape)}")
    if first < len(ours):
        where.append(f"the model's {ours[first][0]} {tuple(ours[first][1].shape)}")
    count = (f"its {what} has {len(theirs)} tensor{'s' * (len(theirs) != 1)}, the model's {len(ours)}"
             if len(theirs) != len(ours)
             else f"its {what} differs from the model's")
    if first == 0 and min(len(theirs), len(ours)) > 0:
        t_shape, o_shape = tuple(theirs[0][1].shape), tuple(ours[0][1].shape)
        if len(t_shape) == len(o_shape) == 4 and t_shape[:1] + t_shape[2:] == o_shape[:1] + o_shape[2:]:
            # weights of a gray (or other-channel) model: the hint had listed every switch but this one
            fix = (f"the file's first convolution takes {t_shape[1]} input channel{'s' * (t_shape[1] != 1)}, "
                   f"the model's {o_shape[1]}: pass in_chans={t_shape[1]}")
    fix = fix or _switches_of_the_run(path, model) or _fix_for(theirs if what == "body" else None, model)
    raise UserError(f"{path} does not fit {model_name}: {count}; first difference at tensor {first}: "
                    f"{' vs '.join(where)}; {fix}")


def _switches_of_the_run(path, model) -> str:
    """For weights that training or save_pretrained wrote (a config.json beside them): the switches
    they were trained with that this model differs in, as the fix. config.json holds only the
    switches given, so both sides are compared in full (factorize_nxn=false into a run of the
    default said only "check the model name and switches")."""
    folder = saved_folder(path) if path != IN_MEMORY and Path(path).exists() else None
    if folder is None or not hasattr(model, "switches"):
        return ""
    from inceptionlab.models.registry import model_entry
    try:
        config = saved_config(folder)
        arch, theirs = _switch_values(config["architecture"], **config["switches"])
        names = set(model_entry(config["architecture"]).switches) - {"num_classes", "drop_rate", "in_chans"}
    except (UserError, TypeError, ValueError):
        return ""
    if arch != _arch(model):
        return ""
    ours = dataclasses.asdict(model.switches)
    differ = [k for k in sorted(names & set(theirs)) if theirs[k] != ours.get(k)]
    given = [f"{k}={theirs[k]}" for k in differ if theirs[k] is not None]
    default = [k for k in differ if theirs[k] is None]  # (None: the family's own choice)
    if not differ:
        return ""
    fixes = ([f"pass --model-kwargs {' '.join(given)}"] if given else []) + (
        [f"leave {' and '.join(default)} out"] if default else [])
    return (f"the weights were trained with {', '.join(given + [f'the default {k}' for k in default])} "
            f"({folder / 'config.json'}): {' and '.join(fixes)}")


def _switch_values(name: str, **switches) -> tuple[str, dict]:
    """(architecture, every switch's value) of ``create_model(name, **switches)``, built on meta."""
    from inceptionlab.models.registry import create_model
    with torch.device("meta"):
        model = create_model(name, **switches)
    return _arch(model), dataclasses.asdict(model.switches)


def _fix_for(body: list | None, model, ours: bool = False) -> str:
    """'use create_model(NAME ...)' when the body is that of another zoo model, else a generic hint."""
    generic = "check the model name and switches (depth_multiplier, norm, aux_logits, num_classes, in_chans)"
    if body is None:
        return generic
    if ours:  # our keys name the blocks: compare names and shapes, in any order
        found = {k: tuple(v.shape) for k, v in body}
        names = [name for name, (_, keyed) in _body_signatures().items() if keyed == found]
    else:
        names = guess_architecture([tuple(v.shape) for _, v in body])
    if not names:
        return generic
    if _arch(model) in names:  # the default network's body: name the switches this model changed
        given = (getattr(model, "pretrained_cfg", {}) or {}).get("switches", {})
        changed = " ".join(f"{k}={v}" for k, v in given.items() if k not in ("num_classes", "drop_rate"))
        if changed:
            return (f"the file holds {_arch(model)} weights of the default switches, and this model has "
                    f"{changed}: leave those out")
        return f"the file holds {_arch(model)} weights of other switches; " + generic
    return (f"the file holds {' or '.join(names)} weights: use create_model({names[0]!r}, weights=...) "
            f"(or --model {names[0]})")


def guess_architecture(body_shapes: list) -> list[str]:
    """The zoo models (default switches) whose body has exactly these tensor shapes, in order."""
    return [name for name, (shapes, _) in _body_signatures().items() if shapes == list(body_shapes)]


@functools.lru_cache(maxsize=1)
def _body_signatures() -> dict:
    from inceptionlab.models.registry import create_model, list_models

    signatures = {}
    for name in list_models():
        with torch.device("meta"):
            state = create_model(name).state_dict()
        body, _, _ = _parts(state, ours=True)
        signatures[name] = ([tuple(v.shape) for _, v in body], {k: tuple(v.shape) for k, v in body})
    return signatures


def _split_classifier(items: list) -> tuple[list, list]:
    """(what comes before the classifier, the classifier): the last linear layer with a bias."""
    if len(items) >= 2:
        (_, w), (bk, b) = items[-2], items[-1]
        if w.dim() == 2 and b.dim() == 1 and b.shape[0] == w.shape[0] and bk.endswith("bias"):
            return items[:-2], items[-2:]
    return items, []


def _classes(classifier: list) -> int:
    return classifier[0][1].shape[0] if classifier else 0


class NoClassifierWarning(UserWarning):
    """Weights without a classifier loaded into a model with one: its classifier keeps its random
    initialization (right for fine-tuning, where a fresh head is intended)."""

    def __init__(self, path) -> None:
        super().__init__(f"{path} has no classifier (an embedding or include_top=False file): the model's "
                         f"classifier keeps its initial weights")
        self.path = path


@contextlib.contextmanager
def classifier_required():
    """Weights loaded inside refuse to leave the model's classifier random: predict and eval, whose
    class scores would mean nothing (they ran on a random head, with a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoClassifierWarning)
        try:
            yield
        except NoClassifierWarning as missing:
            raise UserError(f"{missing.path} has no classifier (an embedding or "
                            f"include_top=False file), so its class scores would be random; fine-tune it with "
                            f"train --weights, or pass weights with a classifier") from None


def map_classifier(theirs: list, ours: list, what: str, path, model) -> dict:
    """Maps a classifier (weight, bias): the class counts must agree, except TF-slim's 1001 classes
    (background first) into a 1000-class model. A file without classifier, or a model without one,
    loads the rest (the model's classifier keeps its initialization)."""
    if not ours:
        return {}  # num_classes=0: the file's classifier is not needed
    if not theirs:
        warnings.warn(NoClassifierWarning(path) if what == "classifier" else
                      f"{path} has no {what} (an embedding or include_top=False file): the model's {what} keeps "
                      f"its initial weights", stacklevel=4)
        return {}
    t_classes, o_classes = _classes(theirs), _classes(ours)
    (_, tw), (_, tb) = theirs
    if t_classes == 1001 and o_classes == 1000:  # TF-slim's background class is row 0
        tw, tb = tw[1:], tb[1:]
    elif t_classes != o_classes:
        raise UserError(f"{path} has a {t_classes}-class {what}, the model {o_classes} classes; pass "
                        f"num_classes={t_classes} (then reset_classifier(n) for n new classes)")
    return _match([(theirs[0][0], tw), (theirs[1][0], tb)], ours, what, path, model)


def _map_head(theirs: list, ours: list, what: str, path, model, layout: str = "reference") -> dict:
    t_pre, t_cls = _split_classifier(theirs)
    o_pre, o_cls = _split_classifier(ours)
    fix = None
    if layout == "facenet" and not o_pre:
        embedding = t_pre[0][1].shape[0] if t_pre else 512
        fix = (f"it is facenet-pytorch's InceptionResnetV1 with a {embedding}-d embedding head: "
               f"use create_model('inception_resnet_v1', embedding_dim={embedding}, "
               f"num_classes={_classes(t_cls)}, weights=...)")
    elif o_pre and not t_pre:
        fix = "the model has an embedding head the file lacks: drop embedding_dim"
    if len(t_pre) != len(o_pre):  # an embedding on one side, or a broken classifier: count the heads whole
        return _match(theirs, ours, what, path, model, fix=fix)  # (it counted the embeddings: "the model's 0")
    mapped = _match(t_pre, o_pre, what, path, model, fix=fix)
    mapped.update(map_classifier(t_cls, o_cls, "classifier" if what == "head" else what, path, model))
    return mapped


def map_reference_state(model, state: dict, path="weights") -> dict:
    """Our state dict, filled from a reference layout (torchvision, timm, Cadene, facenet)."""
    layout = detect_layout(state)
    state = in_reference_order(state)
    ours = model.state_dict()
    t_body, t_aux, t_head = _parts(state, ours=False)
    o_body, o_aux, o_head = _parts(ours, ours=True)
    mapped = _match(t_body, o_body, "body", path, model)
    if o_aux:
        if len(t_aux) == len(o_aux):
            for (_, t_items), (_, o_items) in zip(t_aux.items(), o_aux.items()):
                mapped.update(_map_head(t_items, o_items, "auxiliary head", path, model))
        else:
            warnings.warn(f"{path} has {len(t_aux)} auxiliary heads, the model {len(o_aux)}: "
                          f"the model's aux heads keep their initial weights", stacklevel=3)
    mapped.update(_map_head(t_head, o_head, "head", path, model, layout))
    return mapped


def _map_ours(model, state: dict, path) -> dict:
    """Our own layout: keys must agree (aux heads and the classifier as for the references)."""
    ours = model.state_dict()
    skip = lambda k: k.endswith("num_batches_tracked")  # noqa: E731
    # the model's key order (safetensors files store keys sorted), then keys the model lacks
    state = OrderedDict([(k, state[k]) for k in ours if k in state]
                        + [(k, v) for k, v in state.items() if k not in ours])
    t_body, t_aux, t_head = _parts(state, ours=True)
    o_body, o_aux, o_head = _parts(ours, ours=True)
    theirs_body = {k: v for k, v in t_body}
    missing = [k for k, _ in o_body if k not in theirs_body]
    unexpected = [k for k, _ in t_body if k not in dict(o_body)]
    if missing or unexpected:
        raise UserError(f"{path} does not fit {model.name}: {len(missing)} missing keys "
                        f"({', '.join(missing[:2]) or '-'}), {len(unexpected)} unexpected "
                        f"({', '.join(unexpected[:2]) or '-'}); "
                        f"{_switches_of_the_run(path, model) or _fix_for(t_body, model, ours=True)}")
    mapped = {k: v for k, v in state.items() if k in ours and not skip(k) and k.startswith("blocks.")}
    shapes_fit = all(theirs_body[k].shape == v.shape for k, v in o_body)
    _match([(k, theirs_body[k]) for k, _ in o_body], o_body, "body", path, model,
           fix=None if shapes_fit else _fix_for(t_body, model, ours=True))
    if o_aux:
        if list(t_aux) == list(o_aux):
            for name in o_aux:
                mapped.update(_map_head(t_aux[name], o_aux[name], "auxiliary head", path, model))
        else:
            warnings.warn(f"{path} has auxiliary heads at {', '.join(t_aux) or 'no block'}, the model at "
                          f"{', '.join(o_aux)}: the model's aux heads keep their initial weights", stacklevel=3)
    mapped.update(_map_head(t_head, o_head, "head", path, model))
    return mapped


# ------------------------------------------------------------------ loading
def load_weights(model, path) -> None:
    """Loads ``path`` into ``model``: our layout, or a reference layout detected by its content.

    ``path`` is a weights file (or a folder ``save_pretrained`` wrote), or a state dict in memory
    (a torchvision/timm model's ``state_dict()``, say), which goes through the same mapping and checks.
    Every failure is one line naming the file, the mismatch and the fix (a model name, a switch or
    ``num_classes``); nothing is loaded unless everything fits.
    """
    if isinstance(path, Mapping):
        state, path = unwrap_state_dict(path), IN_MEMORY
    else:
        path = Path(path)
        if path.is_dir() and (path / "model.safetensors").is_file():
            path = path / "model.safetensors"  # a directory written by save_pretrained
        if is_keras_file(path):
            from inceptionlab.models.layouts.keras import map_keras_state, read_keras
            mapped, convention = map_keras_state(model, read_keras(path), path)
            model.load_state_dict(mapped, strict=False)
            apply_convention(model, convention, path)
            return
        state = read_state_dict(path)
    state = adapt_input_conv(state, getattr(model, "in_chans", 3), path)
    layout = detect_layout(state)
    try:
        mapped = _map_ours(model, state, path) if layout == "ours" else map_reference_state(model, state, path)
    except UserError:
        lacking = _lacking(model, state, layout == "ours")
        if not lacking:
            raise
        n = len(lacking)
        if n <= 2:
            which = f" ({', '.join(lacking)})"
        else:
            which = f", from {lacking[0].split('.')[0]} on ({lacking[0]}, ...)"
        fix = ("the state dict is incomplete (taken from part of a model?); pass the whole model.state_dict()"
               if path == IN_MEMORY else
               "the file is incomplete (truncated, or saved from part of a model); save or copy it again")
        raise UserError(f"{path} lacks {n} tensor{'s' * (n != 1)} the model needs{which}: {fix}") from None
    model.load_state_dict(mapped, strict=False)
    apply_convention(model, CONVENTIONS.get(layout, {}), path)
    if layout != "ours":
        _warn_of_other_computation(model, path)


# switches that change what a network computes with the same tensors
SAME_TENSORS_OTHER_NETWORK = ("grid_reduction", "avg_pool_count_pad", "residual_scale")


def _warn_of_other_computation(model, path) -> None:
    """A reference's weights fit a model whose grid reduction, padded-average pooling or residual
    scale differs from the reference's, and it computes something else with them: said once (it
    loaded without a word, and its logits were 1e5 away from the reference's)."""
    given = (getattr(model, "pretrained_cfg", {}) or {}).get("switches", {})
    if not hasattr(model, "switches") or not any(k in given for k in SAME_TENSORS_OTHER_NETWORK):
        return  # (building the reference to compare with costs 0.4-1 s: only when such a switch was given)
    try:
        _, theirs = _switch_values(_arch(model))
    except (UserError, TypeError, ValueError):
        return
    ours = dataclasses.asdict(model.switches)
    changed = [f"{k}={ours[k]}" for k in SAME_TENSORS_OTHER_NETWORK if k in ours and ours[k] != theirs.get(k)]
    if changed:
        warnings.warn(f"{path} holds the reference network's weights, and this model has {' '.join(changed)}, which "
                      f"uses them in another network: its outputs are not the reference's until it is trained",
                      stacklevel=3)


def _lacking(model, state: dict, ours: bool) -> list[str]:
    """The tensors, named as ``state`` names them, that the model needs and ``state`` lacks, when
    ``state`` is a strict part of a whole layout (ours, or a reference's, in its own order): nothing
    unknown, only tensors missing. [] when ``state`` is not such a part. Auxiliary heads are optional
    (their absence is a warning), so they are only counted when ``state`` has some of them."""
    skip = lambda k: k.endswith("num_batches_tracked")  # noqa: E731
    keys = {k for k in state if not skip(k)}
    if ours:
        layouts = [[k for k in model.state_dict() if not skip(k)]]
        aux = ("aux_heads.",)
    else:
        layouts = list(_reference_layouts().values())
        aux = AUX_PREFIXES
    has_aux = any(k.startswith(aux) for k in keys) and len(getattr(model, "aux_heads", ())) > 0
    optional = () if has_aux else aux
    if getattr(model, "num_classes", 1) == 0:  # no classifier: the file's is not needed
        optional += ("head.fc.",) if ours else HEAD_PREFIXES
    model_state = model.state_dict()
    if ours and any(state[k].shape != model_state[k].shape for k in keys if k in model_state):
        return []  # tensors of other shapes: other switches, not a part of this model's file
    own = (("aux_heads.",) if not has_aux else ()) + (("head.fc.",) if getattr(model, "num_classes", 1) == 0 else ())
    needed = sum(1 for k in model_state if not skip(k) and not k.startswith(own))
    best: list[str] = []
    for order in layouts:
        whole = [k for k in order if not k.startswith(optional)]
        if not keys < set(order) or len(whole) != needed:
            continue  # not a part of this layout, or the whole layout would not fit the model either
        missing = [k for k in order if k not in keys and not k.startswith(optional)]
        if missing and (not best or len(missing) < len(best)):
            best = missing
    heads = ("head.fc.",) if ours else HEAD_PREFIXES
    whole = next((p for p in heads if best and all(k.startswith(p) for k in best)), None)
    if whole is not None and not any(k.startswith(whole) for k in keys):
        return []  # no classifier at all (an embedding or include_top=False file): its own message
    return best


def adapt_input_conv(state: dict, in_chans: int, path="weights") -> dict:
    """RGB weights for a model of ``in_chans`` input channels, as timm adapts them: the first
    convolution (the one tensor that takes 3 channels) summed over its channels for one (a gray
    image then gives what the RGB weights gave for that gray in every channel), else its RGB
    filters repeated over the channels and scaled by 3 / in_chans. Says so in a warning."""
    rgb = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.dim() == 4 and v.shape[1] == 3]
    if in_chans == 3 or len(rgb) != 1:
        return state
    weight = state[rgb[0]]
    if in_chans == 1:
        adapted = weight.sum(dim=1, keepdim=True)                                   # O x 1 x k x k
    else:
        repeats = -(-in_chans // 3)
        adapted = weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (3.0 / in_chans)  # O x in_chans x k x k
    how = "summed over its RGB channels" if in_chans == 1 else f"repeated over {in_chans} channels, scaled by 3/{in_chans}"
    warnings.warn(f"{path} takes RGB input; its first convolution ({rgb[0]}) is {how} for in_chans={in_chans}",
                  stacklevel=3)
    return {**state, rgb[0]: adapted.to(weight.dtype)}


def apply_convention(model, convention: dict, path="weights") -> None:
    """Writes a layout's input convention into the model: preprocessing into ``pretrained_cfg``,
    switches (``switches={...}``) into the built modules and the recorded switches."""
    cfg = getattr(model, "pretrained_cfg", None)
    for key, value in convention.items():
        if key == "switches":
            for name, setting in value.items():
                _set_switch(model, name, setting, path)
        elif cfg is not None:
            cfg[key] = value


def _set_switch(model, name: str, value, path) -> None:
    if name != "avg_pool_count_pad":
        raise ValueError(f"no convention switch {name}")
    pools = [m for m in model.blocks.modules() if isinstance(m, torch.nn.AvgPool2d) and m.padding != 0]
    if all(m.count_include_pad == value for m in pools):
        return
    for m in pools:
        m.count_include_pad = value
    model.switches.avg_pool_count_pad = value
    from inceptionlab.models.registry import model_entry
    arch = _arch(model)
    try:
        accepted = name in model_entry(arch).switches
    except UserError:
        accepted = False
    if accepted:
        model.pretrained_cfg.setdefault("switches", {})[name] = value
    else:
        warnings.warn(f"{path} needs {name}={value}, which {arch} does not take as a switch: the loaded "
                      f"model is right, but save_pretrained cannot record it", stacklevel=4)


def classifier_size(source) -> int | None:
    """The class count of the classifier in a weights file or state dict (None: no classifier),
    in any layout: to build a donor model of the file's class count before fine-tuning."""
    if not isinstance(source, dict) and is_keras_file(source):
        from inceptionlab.models.layouts.keras import read_keras
        dense = [layer for layer in read_keras(source) if layer.kind == "dense"]
        return int(dense[-1].weights["kernel"].shape[-1]) if dense else None
    state = source if isinstance(source, dict) else read_state_dict(source)
    if detect_layout(state) == "ours":
        return int(state["head.fc.weight"].shape[0]) if "head.fc.weight" in state else None
    _, _, head = _parts(in_reference_order(state), ours=False)
    _, classifier = _split_classifier(head)
    return _classes(classifier) or None


# ------------------------------------------------------------------ our own format
PREPROCESSING = ("input_size", "mean", "std", "crop_pct", "interpolation", "input_space", "input_range")


def save_pretrained(model, directory, classes: list[str] | None = None) -> Path:
    """Writes ``model``'s ``config.json`` (architecture, switches, classes, preprocessing) and
    ``model.safetensors`` into the folder ``directory`` (made if needed), with ``classes``, the
    optional class names (one per output); ``create_model(directory)`` restores exactly that model."""
    from safetensors.torch import save_file

    from inceptionlab.models.registry import model_entry

    directory = Path(directory)
    if classes is not None and (isinstance(classes, (str, bytes)) or not all(isinstance(c, str) for c in classes)):
        raise UserError(f"classes must be a list of class names (strings), got {classes!r}")
    if classes is not None and len(set(classes)) != len(classes):
        from collections import Counter
        twice = sorted(c for c, n in Counter(classes).items() if n > 1)
        raise UserError(f"classes must be distinct names; {', '.join(twice[:5])} appear more than once")
    if classes is not None and len(classes) != model.num_classes:
        raise UserError(f"{len(classes)} class names for a {model.num_classes}-class model; pass one name per "
                        f"output of the classifier")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name (FileExistsError), or a place not writable
        from inceptionlab.files import why_not_writable
        raise UserError(f"cannot save in {directory}: {why_not_writable(directory, exc)}; pass a folder "
                        f"(save_pretrained writes config.json and model.safetensors in it)") from None
    cfg = model.pretrained_cfg
    if classes is None and cfg.get("classes") is not None and len(cfg["classes"]) != model.num_classes:
        raise UserError(f"the model's pretrained_cfg lists {len(cfg['classes'])} class names for its "
                        f"{model.num_classes}-class classifier; pass classes=[...] with one name per output")
    switches = {**cfg.get("switches", {}), "num_classes": model.num_classes, "in_chans": model.in_chans}
    if not model.has_aux and "aux_logits" in model_entry(model.name).switches:
        switches["aux_logits"] = False  # after drop_aux_heads (the switch still said the heads were there)
    config = {
        "architecture": cfg.get("architecture", model.name),
        "switches": switches,
        "classes": list(classes) if classes is not None else cfg.get("classes"),
        "preprocessing": {k: cfg.get(k) for k in PREPROCESSING if cfg.get(k) is not None},
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = directory / "model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt", "architecture": config["architecture"]})
    readable_by_umask(tmp)
    tmp.replace(directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(config, indent=2, default=list) + "\n")
    return directory


def readable_by_umask(path: Path) -> None:
    """The mode a new file gets from the umask (0644 under 022): safetensors writes 0600, so a
    serving user other than the trainer could not read the weights."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def trained_with(saved: dict, used: dict) -> str:
    """What to pass when a model built with the switches ``used`` cannot take weights trained with
    ``saved``: '' when they agree on every switch ``saved`` has."""
    differ = " ".join(f"{k}={v}" for k, v in saved.items() if k in used and used[k] != v)
    return f"the weights were trained with {differ}: pass --model-kwargs {differ}" if differ else ""


def saved_config(directory) -> dict:
    """The config.json that ``save_pretrained`` wrote in ``directory``, checked: ``architecture``,
    ``switches`` and ``preprocessing`` (dicts, maybe empty) and ``classes`` (a list, or None)."""
    directory = Path(directory)
    config_file = directory / "config.json"
    if not directory.exists():
        raise UserError(f"{directory} does not exist; pass a folder written by training or save_pretrained")
    if not config_file.is_file():
        checkpoints = sorted((directory / "checkpoints").glob("step_*.pt"))
        if (directory / "config.yaml").is_file() and checkpoints:  # a run that has not finished
            raise UserError(f"{directory} is a training run without final weights (interrupted, or still "
                            f"running); continue it with inceptionlab train --resume {directory}, or use its "
                            f"latest checkpoint: --weights {checkpoints[-1]}")
        raise UserError(f"{directory} has no config.json; it is not a directory written by save_pretrained")
    try:
        config = json.loads(config_file.read_text())
        return {"architecture": str(config["architecture"]), "switches": dict(config.get("switches") or {}),
                "preprocessing": dict(config.get("preprocessing") or {}), "classes": config.get("classes")}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{config_file} is not a valid inceptionlab config ({exc})") from None


def saved_folder(weights) -> Path | None:
    """The folder whose config.json describes a weights file (or run / saved folder, or a run's
    checkpoint), or None for weights from elsewhere."""
    weights = Path(weights)
    folder = weights if weights.is_dir() else weights.parent
    if folder.name == "checkpoints":
        folder = folder.parent
    return folder if (folder / "config.json").is_file() else None


def trained_classes(weights) -> list[str] | None:
    """The class names that a weights file (or run / saved folder, or a run's checkpoint) was
    trained on, from the config.json that training or save_pretrained wrote beside it, or from the
    training checkpoint itself (one copied out of its run); None for weights from elsewhere."""
    folder = saved_folder(weights)
    if folder is not None:
        classes = saved_config(folder)["classes"]
        return [str(c) for c in classes] if classes else None
    weights = Path(weights)
    if weights.is_file() and weights.suffix.lower() in (".pt", ".pth"):  # best.pt copied elsewhere kept its rows
        try:                                                            # by position, bird against frog
            state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - not a checkpoint we can read: the loader says why, later
            return None
        classes = state.get("classes") if isinstance(state, dict) and "model" in state else None
        return [str(c) for c in classes] if isinstance(classes, (list, tuple)) and classes else None
    return None


def trained_preprocessing(weights) -> dict | None:
    """The input convention (mean, std, channel order, pixel range) that a run or saved folder's
    weights were trained with, from its config.json; None for weights from elsewhere. Fine-tuning
    from a run keeps it: a BN-Inception run trained on unit-scale RGB had been fine-tuned on the
    card's Caffe BGR 0-255, inputs 255 times larger with the channels swapped."""
    folder = saved_folder(weights)
    if folder is None:
        return None
    recorded = saved_config(folder)["preprocessing"]
    return {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()
            if k in ("mean", "std", "input_space", "input_range")} or None


def _against_the_folder(directory, arch: str, saved: dict, overrides: dict) -> FixInPython | None:
    """The error for switches ``overrides`` that differ from those a saved folder's weights were
    trained with (``saved``, and the defaults of those it does not record); None if none differ."""
    try:
        trained = {**_switch_values(arch, **saved)[1], **saved}
    except (UserError, TypeError, ValueError):
        trained = saved
    # a default the folder does not record and that resolves per family (None) is not named here: the
    # loader's own message says which default ("trained with factorize_nxn=None" said nothing)
    differ = [k for k, v in overrides.items() if k in trained and trained[k] != v
              and (k in saved or trained[k] is not None)]
    if not differ:
        return None
    was = " ".join(f"{k}={trained[k]}" for k in differ)
    given = " ".join(f"{k}={overrides[k]}" for k in differ)
    new_classes = overrides.get("num_classes") if "num_classes" in differ else None
    then = f", then reset_classifier({new_classes}) for a new classifier" if new_classes else ""
    train = (f"; for a new {new_classes}-class classifier fine-tune it: inceptionlab train --weights {directory} "
             f"--data DIR" if new_classes else "")
    return FixInPython(f"{directory} holds weights trained with {was}; leave {', '.join(differ)} out (the folder "
                       f"sets {'it' if len(differ) == 1 else 'them'}){then}",
                       f"{directory} holds weights trained with {was}; drop --model-kwargs {given} (the folder "
                       f"sets {'it' if len(differ) == 1 else 'them'}){train}")


def from_pretrained(directory, weights=None, **overrides):
    """The model saved by ``save_pretrained`` in ``directory`` (switches in ``overrides`` win),
    with the weights of the file ``weights`` (or a state dict in memory) instead of the directory's own
    when given (another checkpoint of the same run, say)."""
    from inceptionlab.models.registry import create_model

    directory = Path(directory)
    config = saved_config(directory)
    arch, preprocessing = config["architecture"], config["preprocessing"]
    switches = {**config["switches"], **overrides}
    if isinstance(weights, Mapping):
        pass  # a state dict in memory: load_weights checks it
    elif weights is not None:
        weights = Path(weights)
        if not weights.exists():
            raise UserError(f"weights file {weights} does not exist; pass a .safetensors/.pth/.pt file")
        if weights.is_dir():
            weights = weights / "model.safetensors"
    else:
        weights = directory / "model.safetensors"
    if not isinstance(weights, Mapping) and not weights.is_file():
        checkpoints = directory / "checkpoints"
        hint = (f"; a run's checkpoints are in {checkpoints}: pass one as --weights (e.g. "
                f"{checkpoints / 'best.pt'})" if checkpoints.is_dir() else "; save_pretrained writes both")
        raise UserError(f"{weights.parent} has no model.safetensors" + hint)
    model = create_model(arch, **switches)
    try:
        load_weights(model, weights)
    except UserError as failed:
        # a switch given here against the folder's own (or its default: "this model has in_chans=3
        # aux_logits=False depth_multiplier=0.5", two of them the folder's): what was given, in the API's
        # terms and the command line's
        raise _against_the_folder(directory, arch, config["switches"], overrides) or failed from None
    derived = ("input_size", "mean", "std") if {"in_chans", "stem"} & set(overrides) else ()
    for key, value in preprocessing.items():
        if key not in derived:  # the saved convention, unless an override changed the input
            model.pretrained_cfg[key] = tuple(value) if isinstance(value, list) else value
    if config.get("classes"):
        model.pretrained_cfg["classes"] = list(config["classes"])
    if "input_size" not in derived:
        model.pretrained_cfg["saved_from"] = str(directory)  # its input size is the one it was trained at
    return model
