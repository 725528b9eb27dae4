"""Our weights in a reference implementation's key layout: the inverse of loading timm's or
torchvision's weights, so that a network trained here runs in the library its users deploy with.

    state = reference_state_dict(model, "timm")        # inception_v3, inception_v4, inception_resnet_v2
    timm.create_model("inception_v4", num_classes=10).load_state_dict(state)   # strict: every key fits

Loading matches tensors by position (``weights.map_reference_state``), and so does writing: the
reference's keys, in their registration order from ``reference_layouts.json``, are paired with our
body, aux heads and classifier in order. The result is checked by loading it back through the same
mapping, which must give every tensor of the model unchanged. Only the networks the references
build can be written: the default switches (a class count, a dropout rate and aux heads aside).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from inceptionlab.errors import UserError

# which layout of reference_layouts.json each library writes for our architecture, and the name
# under which the library builds it
LAYOUTS = {
    "timm": {"inception_v3": ("torchvision.inception_v3", "inception_v3"),  # (timm's keys are torchvision's)
             "inception_v4": ("timm.inception_v4", "inception_v4"),
             "inception_resnet_v2": ("timm.inception_resnet_v2", "inception_resnet_v2")},
    "torchvision": {"googlenet": ("torchvision.googlenet", "googlenet"),
                    "inception_v3": ("torchvision.inception_v3", "inception_v3")},
}
# switches the references build too (timm's create_model takes in_chans; torchvision's models do not; timm
# builds aux heads for inception_v3 only)
FREE_SWITCHES = {"timm": ("num_classes", "drop_rate", "in_chans", "aux_logits"),  # (aux: inception_v3's only)
                 "torchvision": ("num_classes", "drop_rate", "aux_logits")}


def reference_name(model: nn.Module, library: str) -> tuple[str, str]:
    """(layout key in reference_layouts.json, the library's model name) for ``model``; a one-line
    error naming what the library has, or the switch that makes ``model`` another network."""
    from inceptionlab.models.registry import model_entry
    from inceptionlab.models.weights import _arch

    if library not in LAYOUTS:
        raise UserError(f"unknown reference layout {library!r}; choose from {', '.join(LAYOUTS)}")
    arch = _arch(model)
    if arch not in LAYOUTS[library]:
        raise UserError(f"{library} has no {arch}; it has {', '.join(LAYOUTS[library])}")
    defaults = model_entry(arch).defaults
    given = (getattr(model, "pretrained_cfg", None) or {}).get("switches", {})
    changed = {k: v for k, v in given.items()
               if k not in FREE_SWITCHES[library] and not (k in defaults and defaults[k] == v)}
    if library == "timm" and given.get("aux_logits") and arch != "inception_v3":
        changed["aux_logits"] = True
    if changed:
        shown = " ".join(f"{k}={v}" for k, v in changed.items())
        raise UserError(f"{library}'s {arch} is the standard network, not one with {shown}: its weights cannot be "
                        f"written in {library}'s layout")
    return LAYOUTS[library][arch]


def reference_state_dict(model: nn.Module, library: str) -> "OrderedDict[str, torch.Tensor]":
    """``model``'s weights under ``library``'s keys (``"timm"`` or ``"torchvision"``), in its order,
    batch norm counters included: ``load_state_dict(..., strict=True)`` of the library's model with
    the same class count (and aux heads, in torchvision) takes it."""
    from inceptionlab.models.weights import _parts, _reference_layouts

    layout, _ = reference_name(model, library)
    ours = model.state_dict()
    o_body, o_aux, o_head = _parts(ours, ours=True)
    theirs = OrderedDict((k, None) for k in _reference_layouts()[layout])
    t_body, t_aux, t_head = _parts(theirs, ours=False)
    if len(t_body) != len(o_body):  # (the switch check above makes this a broken model, not a user error)
        raise UserError(f"{model.name}'s body has {len(o_body)} tensors, {library}'s {len(t_body)}: it is not "
                        f"the network {library} builds")
    pairs = list(zip((k for k, _ in t_body), o_body))
    if o_aux:  # torchvision's aux heads, in order (ours are named by the block they follow)
        if len(o_aux) != len(t_aux):
            raise UserError(f"{model.name} has {len(o_aux)} aux heads, {library}'s {len(t_aux)}")
        for t_items, o_items in zip(t_aux.values(), o_aux.values()):
            pairs += list(zip((k for k, _ in t_items), o_items))
    if o_head:  # the classifier (num_classes=0: none)
        pairs += list(zip((k for k, _ in t_head), o_head))
    paired = {their_key: our_key for their_key, (our_key, _) in pairs}
    full = OrderedDict()
    for key in theirs:  # the layout's order (its aux heads sit between the blocks; ours pair after them)
        if key not in paired:
            continue
        full[key] = ours[paired[key]].detach().clone()
        if key.endswith(".running_var"):  # then the norm's counter, as PyTorch registers it (layouts omit them)
            counter = ours.get(paired[key][:-len("running_var")] + "num_batches_tracked")
            full[key[:-len("running_var")] + "num_batches_tracked"] = (counter.clone() if counter is not None
                                                                        else torch.tensor(0))
    _check_round_trip(model, full)
    return full


def _check_round_trip(model: nn.Module, state: dict) -> None:
    """Loading ``state`` back through the loader's own mapping gives every tensor of ``model``."""
    from inceptionlab.models.weights import map_reference_state

    ours = model.state_dict()
    mapped = map_reference_state(model, state, path="the written state dict")
    wrong = [k for k, v in ours.items() if not k.endswith("num_batches_tracked")
             and (k not in mapped or not torch.equal(mapped[k], v))]
    if wrong:
        raise RuntimeError(f"the reference layout does not load back into {model.name}: {wrong[:3]}")


def _reference_arguments(model: nn.Module, library: str) -> dict:
    """The keyword arguments of the library's constructor that `reference_state_dict`'s output fits."""
    given = (getattr(model, "pretrained_cfg", None) or {}).get("switches", {})
    arguments = {"num_classes": getattr(model, "num_classes", 1000)}
    if library == "timm":
        if getattr(model, "in_chans", 3) != 3:
            arguments["in_chans"] = model.in_chans
        if given.get("aux_logits"):
            arguments["aux_logits"] = True
        return arguments
    # torchvision builds aux heads and the input transform by default: the file has neither
    return {**arguments, "aux_logits": bool(given.get("aux_logits")), "transform_input": False, "init_weights": False}


def reference_constructor(model: nn.Module, library: str) -> str:
    """The library call that builds the model `reference_state_dict`'s output loads into, as text:
    torchvision's defaults (aux heads, input transform) would refuse it or change its input."""
    _, name = reference_name(model, library)
    shown = ", ".join(f"{k}={v!r}" for k, v in _reference_arguments(model, library).items())
    if library == "timm":
        return f"timm.create_model({name!r}, {shown})"
    return f"torchvision.models.{name}({shown})"


def reference_model(model: nn.Module, library: str) -> nn.Module:
    """The library's own model of ``model``'s architecture and class count, random weights, no
    download: what `reference_state_dict`'s output loads into."""
    _, name = reference_name(model, library)
    arguments = _reference_arguments(model, library)
    if library == "timm":
        import timm
        return timm.create_model(name, pretrained=False, **arguments)
    import torchvision
    return getattr(torchvision.models, name)(weights=None, **arguments)
