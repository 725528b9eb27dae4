"""One registry for the zoo: ``create_model``, ``list_models``, ``model_card``.

A family registers a factory per name with ``@register_model``; the factory's keyword arguments
are the switches it accepts, so an unknown or misspelled switch is caught here with the closest
names, before anything is built.
"""
from __future__ import annotations

import fnmatch
import inspect
import json
import math
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from inceptionlab.errors import FixInPython, UserError, closest

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass
class ModelEntry:
    name: str
    factory: Callable
    card: dict = field(default_factory=dict)

    @property
    def switches(self) -> list[str]:
        return [p for p in inspect.signature(self.factory).parameters if p != "kwargs"]

    @property
    def defaults(self) -> dict:
        """Each switch's default value."""
        return {n: p.default for n, p in inspect.signature(self.factory).parameters.items()
                if p.default is not inspect.Parameter.empty}


_REGISTRY: dict[str, ModelEntry] = {}


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # True is an int in Python


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _flag(value) -> bool:
    return isinstance(value, bool)


def _or_none(test: Callable) -> Callable:
    return lambda value: value is None or test(value)


def _scales(value) -> bool:
    return _number(value) or (isinstance(value, (list, tuple)) and all(_number(v) for v in value))


# What each switch takes, checked where the values enter (`create_model`) so that a wrong type is
# named before anything is built, and 1.5 channels are not quietly cut to 1. The families check
# ranges and the named choices (``stem``, ``grid_reduction``).
SWITCH_KINDS = {
    "num_classes": ("a whole number", _whole), "in_chans": ("a whole number", _whole),
    "min_depth": ("a whole number", _whole), "kernel_5x5": ("a whole number", _whole),
    "embedding_dim": ("a whole number or none", _or_none(_whole)),
    "drop_rate": ("a finite number", _number), "depth_multiplier": ("a finite number", _number),
    "residual_scale": ("a finite number or a list of three", _scales),
    "norm": ("true or false", _flag), "conv_bias": ("true or false", _flag),
    "aux_logits": ("true or false", _flag), "aux_norm": ("true or false", _flag),
    "avg_pool_count_pad": ("true or false", _flag),
    "factorize_5x5": ("true, false or none (the table as drawn)", _or_none(_flag)),
    "factorize_nxn": ("true, false or none (the table as drawn)", _or_none(_flag)),
}


def check_switch_values(switches: dict) -> None:
    """Refuses a switch value of the wrong type, naming what the switch takes."""
    for key, value in switches.items():
        kind, fits = SWITCH_KINDS.get(key, ("", None))
        if fits is not None and not fits(value):
            raise UserError(f"{key} takes {kind}, got {value!r}")


def register_model(name: str, **card):
    """Decorator: registers ``factory(**switches) -> InceptionNet`` under ``name``.

    ``card`` holds the model's documentation: paper, reference implementation, reference
    accuracy of the public weights, and the input configuration (input_size, mean, std,
    crop_pct, interpolation).
    """
    def wrap(factory):
        if not factory.__module__.startswith("inceptionlab.models."):
            _load_families()  # a user's model: the built-in names are taken first
        existing = _REGISTRY.get(name)
        if existing is not None and (existing.factory.__module__, existing.factory.__qualname__) != \
                (factory.__module__, factory.__qualname__):  # (it replaced the built-in googlenet silently)
            raise UserError(f"a model named {name!r} is registered already ({existing.factory.__module__}."
                            f"{existing.factory.__qualname__}); register yours under another name")
        _REGISTRY[name] = ModelEntry(name, factory, dict(card, name=name))
        return factory
    return wrap


def list_models(pattern: str | None = "*") -> list[str]:
    """The registered model names matching a shell-style ``pattern``, sorted: all of them by default
    ('*', or None), ``list_models("inception_v*")`` for the Inception-v3/v4 names."""
    _load_families()
    if pattern is not None and not isinstance(pattern, str):
        raise UserError(f"list_models takes a name pattern such as 'inception_*', got {pattern!r}")
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern or "*"))


def model_entry(name: str) -> ModelEntry:
    _load_families()
    if not isinstance(name, (str, Path)):
        raise UserError(f"a model name is a string (see inceptionlab.list_models()), got {type(name).__name__} "
                        f"{name!r}")
    name = str(name)  # (a Path raised "argument of type 'PosixPath' is not iterable")
    if not name.strip():
        raise UserError("the model name is empty; pass a name such as inception_v3 (see inceptionlab.list_models()) "
                        "or a folder that training or save_pretrained wrote")
    if name not in _REGISTRY:
        if any(sep in name for sep in ("/", os.sep)) or name.startswith((".", "~")):  # a path, not a name
            what = ("is a file, not a folder (weights files go in --weights / weights=, with a model name)"
                    if os.path.isfile(name) else "does not exist")
            raise UserError(f"{name} {what}: pass a folder that training or save_pretrained wrote, or a "
                            f"model name such as {sorted(_REGISTRY)[0]}")
        hint = closest(name, _REGISTRY)
        raise UserError(f"unknown model {name!r}" + (f"; did you mean {hint}?" if hint else
                        f"; choose from {', '.join(sorted(_REGISTRY))}"))
    return _REGISTRY[name]


def is_saved_folder(name) -> bool:
    """Whether ``name`` means a folder (written by training or ``save_pretrained``) rather than a
    model of the zoo: a registered name always means the model, even beside a folder of that name
    (``./googlenet`` means the folder)."""
    _load_families()
    return str(name) not in _REGISTRY and Path(str(name)).is_dir()


def model_card(name: str) -> dict:
    """A copy of the documentation card of the registered model ``name`` (its default switches).

    Keys: ``name``; ``paper`` (authors, year, title, arXiv id); ``reference`` (the implementation
    whose weights load with ``weights=``, or the paper's figure for a model without public weights);
    ``input_size`` (C, H, W), ``crop_pct``, ``interpolation``, ``mean`` and ``std`` (on 0-1 pixels):
    the preprocessing the reference weights expect, with ``input_space`` and ``input_range`` where
    they are not RGB on 0-1 (BN-Inception's Caffe weights: BGR, 0-255); and, for a model with public
    weights, ``top1`` (their ImageNet top-1, in %) and ``weights_top1_source`` (where that figure
    comes from). A built model's ``pretrained_cfg`` holds the same, adjusted to its switches.
    """
    return dict(model_entry(name).card)


def create_model(name: str, pretrained: bool = False, weights=None,
                 features_only: bool = False, out_indices=None, **switches):
    """Builds a model of the zoo.

    ``name`` is a registered name, or a directory written by ``save_pretrained`` (config.json +
    model.safetensors). ``weights`` is a state dict file (.pth/.pt/.bin or .safetensors), or a state
    dict in memory (e.g. a torchvision or timm model's ``state_dict()``), in our layout or a reference
    layout (torchvision, timm), detected by itself and checked tensor by tensor; the model.safetensors of
    a directory that training or ``save_pretrained`` wrote for this architecture brings its
    config.json along (class count and names, stem, width; ``switches`` still win), as if the
    directory were ``name``. ``pretrained=True`` is refused: inceptionlab never downloads; pass
    ``weights=FILE``.

    ``features_only=True`` returns a `FeatureExtractor` instead of a classifier: calling it gives a
    list of feature maps, one per level of ``model.feature_info`` (the last block at each
    resolution); ``out_indices`` (e.g. ``(1, 3)``, or ``(-1,)`` for the last) chooses which levels, all by
    default. Other keyword arguments are the model's switches (``inceptionlab.model_card`` and each
    family's factory document them).
    """
    if pretrained:
        raise UserError("inceptionlab does not download weights; pass weights=FILE (a torchvision or "
                        "timm state dict saved on this machine) instead of pretrained=True")
    if not isinstance(name, (str, Path)):
        raise UserError(f"create_model takes a model name (see inceptionlab.list_models()) or a saved folder, "
                        f"got {type(name).__name__} {name!r}")
    if weights is not None and not isinstance(weights, (str, Path, Mapping)):
        from inceptionlab.models.weights import describe
        raise UserError(f"weights= takes the path of a weights file or a state dict (a dict of tensors, as "
                        f"model.state_dict() gives), got {describe(weights)}")
    if not isinstance(features_only, bool):
        raise UserError(f"features_only takes True or False, got {features_only!r}")
    if out_indices is not None and not features_only:
        raise UserError("out_indices chooses the feature levels of features_only=True; pass features_only=True "
                        "too, or leave out_indices out")
    if not str(name).strip():  # ("" is the current folder to Path: ". has no config.json")
        model_entry(name)
    directory = name if is_saved_folder(name) else saved_directory(name, weights)
    if directory is not None:
        from inceptionlab.models.weights import from_pretrained
        model = from_pretrained(directory, weights=weights, **switches)  # weights=: another file of it
    else:
        entry = model_entry(name)
        accepted = entry.switches
        for key in switches:
            if key not in accepted:
                hint = closest(key, accepted)
                raise UserError(f"{name} has no switch {key!r}" + (f"; did you mean {hint}?" if hint else "")
                                + f" (switches: {', '.join(accepted)})")
        check_switch_values(switches)
        _check_memory(name, entry, switches)
        try:
            model = entry.factory(**switches)
        except RuntimeError as exc:  # e.g. depth_multiplier=100 for 1.0: one layer wants 40 GB
            if "allocate" not in str(exc):
                raise
            size = re.search(r"allocate (\d+) bytes", str(exc))
            need = f" (one tensor alone needs {int(size.group(1)) / 2**30:.1f} GiB)" if size else ""
            raise UserError(f"{name} with {', '.join(f'{k}={v}' for k, v in switches.items()) or 'its defaults'} "
                            f"does not fit in memory{need}; lower depth_multiplier or min_depth") from None
        model.pretrained_cfg = _input_config(model, entry.card, switches)
        if weights is not None:
            from inceptionlab.models.weights import load_weights
            load_weights(model, weights)
    if features_only:
        from inceptionlab.models.base import FeatureExtractor
        return FeatureExtractor(model, out_indices)
    return model


def _available_memory() -> int | None:
    """Bytes this machine can still give (MemAvailable), or None where /proc/meminfo is not there."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_memory(name, entry: ModelEntry, switches: dict) -> None:
    """A one-line error for widths whose weights would not fit in memory, measured on the meta device
    first. Linux overcommits: the allocations of googlenet with min_depth=4096 (19 GiB of weights)
    succeeded, and the kernel killed the process without a word while they were initialized. Only
    widened builds are measured (the standard widths are at most 0.2 GiB)."""
    if (float(switches.get("depth_multiplier", 1.0)) <= 1.0 and int(switches.get("min_depth", 16)) <= 64
            and int(switches.get("num_classes", 1000)) <= 100_000):  # (2.5M classes: a 20 GiB classifier)
        return
    available = _available_memory()
    if available is None:
        return
    import torch

    with torch.device("meta"):
        shell = entry.factory(**switches)
    need = sum(t.numel() * t.element_size() for t in [*shell.parameters(), *shell.buffers()])
    if need > 0.8 * available:
        raise UserError(f"{name} with {', '.join(f'{k}={v}' for k, v in switches.items())} has {need / 2**30:.1f} GiB "
                        f"of weights, and this machine has {available / 2**30:.1f} GiB available; lower "
                        + ("num_classes" if "num_classes" in switches and int(switches["num_classes"]) > 100_000
                           else "depth_multiplier or min_depth"))


def saved_directory(name: str, weights) -> Path | None:
    """The directory ``weights`` is (or is the model.safetensors of), when ``save_pretrained`` wrote
    it (its config.json says for which architecture: another one than ``name``'s is an error); else None."""
    if weights is None or isinstance(weights, Mapping):
        return None
    path = Path(str(weights))
    if path.is_dir():  # the folder itself, as the file inside it (the two loaded differently)
        folder = path
    elif path.suffix == ".pt" and path.parent.name == "checkpoints":
        folder = path.parent.parent  # a run's checkpoint: the run's config.json, as for its weights
    elif path.name == "model.safetensors":
        folder = path.parent
    else:
        return None
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        architecture = json.loads(config.read_text()).get("architecture")
    except (OSError, ValueError, AttributeError):
        return None  # not ours: the file is read as a plain state dict
    if architecture == model_entry(name).card["name"]:
        return folder if str(folder) not in _REGISTRY else folder.absolute()  # a folder named like a model
    said = f"{path} was saved for {architecture} (its config.json says so), not {name}: use "
    raise FixInPython(f"{said}create_model({architecture!r}, weights=...), or the directory {folder} as the model",
                      command_line=f"{said}--model {architecture}, or the directory {folder} as the model")


def _input_config(model, card: dict, switches: dict) -> dict:
    """The model card, with the input size and channels of this build."""
    cfg = {**card, **model.pretrained_cfg, "architecture": card["name"], "switches": dict(switches)}
    defaults = {**model_entry(card["name"]).defaults, "num_classes": 1000, "in_chans": 3}
    if any(k != "drop_rate" and not _same_value(defaults.get(k, object()), v) for k, v in switches.items()):
        # the card's ImageNet top-1 is of the reference network's weights: a 10-class 1/4-width
        # Inception-ResNet-v2 reported 'top1': 80.4 as its own (model_card(name) still has it)
        for key in ("top1", "weights_top1_source"):
            cfg.pop(key, None)
    # channel order, and the pixel range of the weights' own convention (mean/std here are on 0-1 pixels)
    cfg.setdefault("input_space", "RGB")
    cfg.setdefault("input_range", (0, 1))
    for key in ("mean", "std"):  # (a registered card without them raised KeyError 'mean' at in_chans=1)
        cfg.setdefault(key, (0.5, 0.5, 0.5))
    size = 32 if model.switches.stem == "low_res" else cfg.get("input_size", (3, 299, 299))[-1]
    cfg["input_size"] = (model.in_chans, size, size)
    if model.in_chans != 3:
        cfg["mean"] = (sum(cfg["mean"]) / 3,) * model.in_chans
        cfg["std"] = (sum(cfg["std"]) / 3,) * model.in_chans
    model.default_cfg = cfg
    return cfg


def _same_value(a, b) -> bool:
    """``a == b`` for switch values of any type (a numpy number against a tuple gave an array)."""
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _load_families() -> None:
    # importing the family modules runs their @register_model decorators
    from inceptionlab.models import (  # noqa: F401
        bn_inception, googlenet, inception_resnet_v1, inception_resnet_v2, inception_v3, inception_v4)
