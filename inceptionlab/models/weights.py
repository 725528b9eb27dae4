"""Loading and saving weights, safely, in our layout or the references'.

Reference layouts (torchvision, timm, ...) are reached by one mechanism, not by a table per
model: a state dict is split into body, auxiliary heads and classifier by its key prefixes, and
each part is matched to ours tensor by tensor, in order, with every shape checked. This works
because every block of the zoo registers its branches in the order the references do (which is
also the order their outputs are concatenated in).

Loading never runs code: safetensors, or ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from pathlib import Path

import torch

from inceptionlab.errors import UserError

# key prefixes of the references' classifier heads and auxiliary heads
HEAD_PREFIXES = ("fc.", "last_linear.", "classif.", "classifier.", "logits.", "last_bn.")
AUX_PREFIXES = ("AuxLogits.", "aux1.", "aux2.", "aux_logits.")
OURS = ("blocks.", "aux_heads.", "head.")


def read_state_dict(path) -> "OrderedDict[str, torch.Tensor]":
    """Reads a state dict from .safetensors or a torch file, without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise UserError(f"refusing to load {path}: it holds pickled code, not only tensors "
                            f"({reason[:120]}); re-save it as a plain state dict or .safetensors") from None
        raise UserError(f"cannot read weights file {path}: truncated or corrupt ({reason[:160]})") from None
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} is not a state dict of tensors; save model.state_dict() instead")
    return OrderedDict((k.removeprefix("module."), v) for k, v in state.items())


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


def _match(theirs: list, ours: list, what: str, path, model_name: str) -> dict:
    if len(theirs) != len(ours):
        raise UserError(f"{path} does not fit {model_name}: its {what} has {len(theirs)} tensors, the "
                        f"model's {len(ours)} (another architecture or switches?); "
                        f"check the model name and switches such as aux_logits")
    for i, ((tk, tv), (ok, ov)) in enumerate(zip(theirs, ours)):
        if tv.shape != ov.shape:
            raise UserError(f"{path} does not fit {model_name}: {what} tensor {i} {tk} has shape "
                            f"{tuple(tv.shape)}, the model's {ok} {tuple(ov.shape)}; check the model "
                            f"name and switches")
    return {ok: tv for (_, tv), (ok, _) in zip(theirs, ours)}


def in_reference_order(state: dict) -> dict:
    """``state`` in its reference's registration order.

    safetensors files store tensors sorted by name; ``reference_layouts.json`` (written by
    scripts/make_reference_layouts.py) records each reference's key order, names only. A state dict
    of no known layout keeps its own order (right for any .pth file).
    """
    import json

    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    layouts = json.loads((Path(__file__).with_name("reference_layouts.json")).read_text())
    for order in layouts.values():
        rank = {k: i for i, k in enumerate(order)}
        if all(k in rank for k in keys):
            return OrderedDict((k, state[k]) for k in sorted(keys, key=rank.__getitem__))
    return state


def map_reference_state(model, state: dict, path="weights") -> dict:
    """Our state dict, filled from a reference layout (torchvision, timm, ...)."""
    state = in_reference_order(state)
    ours = model.state_dict()
    t_body, t_aux, t_head = _parts(state, ours=False)
    o_body, o_aux, o_head = _parts(ours, ours=True)
    mapped = _match(t_body, o_body, "body", path, model.name)
    if o_aux:
        if len(t_aux) == len(o_aux):
            for (_, t_items), (_, o_items) in zip(t_aux.items(), o_aux.items()):
                mapped.update(_match(t_items, o_items, "auxiliary head", path, model.name))
        else:
            warnings.warn(f"{path} has {len(t_aux)} auxiliary heads, the model {len(o_aux)}: "
                          f"the model's aux heads keep their initial weights", stacklevel=3)
    if o_head:
        t_classes = t_head[-2][1].shape[0] if len(t_head) >= 2 else None
        if t_classes is not None and t_classes != model.num_classes:
            raise UserError(f"{path} has a {t_classes}-class classifier, the model {model.num_classes} "
                            f"classes; pass num_classes={t_classes} (then reset_classifier for new classes)")
        mapped.update(_match(t_head, o_head, "classifier", path, model.name))
    return mapped


def load_weights(model, path) -> None:
    """Loads ``path`` into ``model``: our layout, or a reference layout detected by its keys."""
    state = read_state_dict(path)
    if all(k.startswith(OURS) for k in state):
        missing, unexpected = _key_diff(model.state_dict(), state)
        if missing or unexpected:
            raise UserError(f"{path} does not fit {model.name}: {len(missing)} missing keys "
                            f"({', '.join(missing[:2]) or '-'}), {len(unexpected)} unexpected "
                            f"({', '.join(unexpected[:2]) or '-'}); check the model name and switches "
                            f"(aux_logits, num_classes)")
        _check_shapes(model, state, path)
        model.load_state_dict(state)
        return
    mapped = map_reference_state(model, state, path)
    model.load_state_dict(mapped, strict=False)


def _key_diff(ours: dict, theirs: dict) -> tuple[list, list]:
    skip = lambda k: k.endswith("num_batches_tracked")  # noqa: E731
    return ([k for k in ours if k not in theirs and not skip(k)],
            [k for k in theirs if k not in ours and not skip(k)])


def _check_shapes(model, state: dict, path) -> None:
    for key, value in model.state_dict().items():
        if key in state and state[key].shape != value.shape:
            fix = ("pass num_classes=%d" % state[key].shape[0]) if key.endswith(("fc.weight", "fc.bias")) \
                else "check the model name and switches"
            raise UserError(f"{path} does not fit {model.name}: {key} has shape {tuple(state[key].shape)}, "
                            f"the model's {tuple(value.shape)}; {fix}")


# ------------------------------------------------------------------ our own format
def save_pretrained(model, directory, classes: list[str] | None = None) -> Path:
    """Writes ``config.json`` (architecture, switches, classes, preprocessing) and
    ``model.safetensors``; ``create_model(directory)`` restores exactly that model."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.pretrained_cfg
    config = {
        "architecture": cfg.get("architecture", model.name),
        "switches": {**cfg.get("switches", {}), "num_classes": model.num_classes, "in_chans": model.in_chans},
        "classes": list(classes) if classes is not None else cfg.get("classes"),
        "preprocessing": {k: cfg.get(k) for k in ("input_size", "mean", "std", "crop_pct", "interpolation")},
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = directory / "model.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(config, indent=2, default=list) + "\n")
    return directory


def from_pretrained(directory, **overrides):
    """The model saved by ``save_pretrained`` in ``directory``."""
    from inceptionlab.models.registry import create_model

    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise UserError(f"{directory} has no config.json; it is not a directory written by save_pretrained")
    try:
        config = json.loads(config_file.read_text())
        arch, switches = config["architecture"], dict(config.get("switches", {}))
    except (ValueError, KeyError) as exc:
        raise UserError(f"{config_file} is not a valid inceptionlab config ({exc})") from None
    switches.update(overrides)
    weights = directory / "model.safetensors"
    model = create_model(arch, weights=weights if weights.exists() else None, **switches)
    if config.get("classes"):
        model.pretrained_cfg["classes"] = config["classes"]
    return model
