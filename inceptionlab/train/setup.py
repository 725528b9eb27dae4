"""Turning a config into the model and preprocessing it describes, with errors at the boundary."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn as nn

from inceptionlab.errors import UserError, closest, listed
from inceptionlab.train.config import TrainConfig

# the input convention a network's weights need beyond its card: what a checkpoint records, and
# what fine-tuning carries from a weights file's layout (Keras' average pools, facenet's
# standardization) into the trained model
CONVENTION_KEYS = ("mean", "std", "crop_pct", "input_space", "input_range", "interpolation", "input_size")
CONVENTION_SWITCHES = ("avg_pool_count_pad",)


def check_model_switches(cfg: TrainConfig) -> None:
    """An unknown model or switch is reported before any data is read."""
    from inceptionlab.models.registry import is_saved_folder, model_entry

    if is_saved_folder(cfg.model):
        return
    entry = model_entry(cfg.model)
    for key in cfg.model_kwargs:
        if key not in entry.switches:
            hint = closest(key, entry.switches)
            raise UserError(f"{cfg.model} has no switch {key!r}" + (f"; did you mean {hint}?" if hint else "")
                            + f" (switches: {', '.join(entry.switches)})")


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int = 3, classes: list[str] | None = None,
                notes: list[str] | None = None) -> nn.Module:
    """The model of ``cfg`` with ``num_classes`` outputs, and its initial ``weights`` if any.
    ``classes`` (the data's class names) match a trained classifier's rows by name; what loading
    did to the classifier is added to ``notes``."""
    from inceptionlab import create_model

    kwargs = dict(cfg.model_kwargs)
    given = kwargs.pop("num_classes", None)
    if given is not None and given != num_classes:
        raise UserError(f"model_kwargs num_classes={given} but the data has {num_classes} classes; "
                        f"drop num_classes (it is taken from the data)")
    if kwargs.get("in_chans", in_chans) not in (in_chans, 1):  # (1: the transform makes the images gray)
        raise UserError(f"model_kwargs in_chans={kwargs['in_chans']} but the images have {in_chans} channels; "
                        f"drop in_chans, or pass in_chans=1 to train on gray images")
    model = create_model(cfg.model, num_classes=num_classes, **kwargs)
    if cfg.weights is not None:
        note = load_initial_weights(model, cfg.weights, cfg.model, kwargs, classes)
        if note and notes is not None:
            notes.append(note)
    return model


def _refuse_with_saved_switches(file: Path, name: str, kwargs: dict) -> None:
    """A UserError naming the switches a run's (or save_pretrained's) weights were trained with, where
    they differ from ``kwargs``; else nothing (the caller re-raises its own error). The run's model
    takes its switches from --model-kwargs, so that is where the folder's values go."""
    from inceptionlab.models.weights import saved_config, trained_with

    saved = saved_config(file.parent)["switches"] if (file.parent / "config.json").is_file() else {}
    hint = trained_with(saved, kwargs)
    if hint:
        given = f" with {' '.join(f'{k}={v}' for k, v in kwargs.items())}" if kwargs else ""
        raise UserError(f"{file} does not fit {name}{given}; {hint}") from None


def load_initial_weights(model: nn.Module, path, name: str, kwargs: dict, classes: list[str] | None = None) -> str:
    """Loads a weights file (ours or a reference layout) for fine-tuning; returns what happened to
    the classifier ('' when it was loaded as it is).

    A classifier trained on named classes (a run, or save_pretrained) gives each of ``classes`` its
    row by name: the same classes in another order are reordered, shared classes are kept and new
    ones start fresh. (Weights of other classes but the same count were loaded by position, bird
    against frog, without a word.) Unnamed classifiers of another class count start fresh."""
    from inceptionlab import create_model
    from inceptionlab.models.registry import is_saved_folder, saved_directory
    from inceptionlab.models.weights import classifier_size, load_weights, trained_classes, trained_with

    path = Path(path)
    if not is_saved_folder(name):  # a run's weights of another architecture: its name, as predict says it
        saved_directory(name, path)  # (train said "159 missing keys ... check num_classes")
    file = path / "model.safetensors" if path.is_dir() else path
    count = classifier_size(file)
    named = trained_classes(path) if classes is not None else None
    if named is not None and len(named) != count:
        named = None  # a config.json that does not describe this file
    if count is None or (count == model.num_classes and named in (None, list(classes))):
        try:
            load_weights(model, file)
        except UserError:  # (a run's weights under other switches: a generic "check the switches" here)
            _refuse_with_saved_switches(file, name, kwargs)
            raise
        if count is not None and named is None and classes is not None:  # it was loaded without a word
            return f"classifier kept by position: {file.name} names no classes"
        return ""
    try:
        donor = create_model(name, **{**kwargs, "num_classes": count}, weights=file)
    except UserError:
        _refuse_with_saved_switches(file, name, kwargs)
        raise
    body = {k: v for k, v in donor.state_dict().items() if not _is_classifier(k)}
    if not getattr(model, "aux_heads", None):  # a run's config.json gave the donor aux heads this model lacks
        body = {k: v for k, v in body.items() if not k.startswith("aux_heads.")}
    target = model.state_dict()
    wrong = [k for k, v in body.items() if k not in target or target[k].shape != v.shape]
    if wrong:  # a run's config.json built the donor with its own switches (width, stem...)
        hint = trained_with(dataclasses.asdict(donor.switches), dataclasses.asdict(model.switches))
        raise UserError(f"{file} does not fit {name}: {wrong[0]} is {tuple(body[wrong[0]].shape)} there, "
                        f"{tuple(target[wrong[0]].shape) if wrong[0] in target else 'absent'} here; "
                        f"{hint or 'check the model name and switches'}")
    model.load_state_dict(body, strict=False)
    carry_convention(donor, model, file)
    if named is None:
        return f"classifier starts fresh ({count} classes in {file.name}, {model.num_classes} here)"
    shared = [(row, named.index(cls)) for row, cls in enumerate(classes) if cls in named]
    if not shared:
        return f"classifier starts fresh: {file.name} was trained on other classes ({listed(named)})"
    trained = donor.state_dict()
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if _is_classifier(key) and key in trained:  # rows: classes (weight K x C, bias K)
                for row, old in shared:
                    tensor[row] = trained[key][old]
    new = [cls for cls in classes if cls not in named]
    if not new and len(classes) == len(named):
        return "classifier rows reordered by class name"
    kept = f"classifier keeps {len(shared)} of the {len(named)} trained classes by name"
    return kept + (f"; new: {listed(new)}" if new else "")


def carry_convention(donor: nn.Module, model: nn.Module, file: Path) -> None:
    """The input convention that loading ``file`` gave ``donor`` (a Keras file's average pools, facenet's
    standardization and 160 px), given to ``model``, which took only its tensors (it trained, evaluated
    and saved the card's network instead). A run's or save_pretrained's folder passes on its switches
    here; its preprocessing is `preprocessing`'s to take (see `trained_input_size`)."""
    from inceptionlab.models.weights import apply_convention, saved_folder

    own = convention_switches(model)
    switches = {name: value for name, value in convention_switches(donor).items() if own.get(name) != value}
    carried = {} if saved_folder(file) is not None else {
        key: donor.pretrained_cfg[key] for key in CONVENTION_KEYS
        if key in donor.pretrained_cfg and donor.pretrained_cfg[key] != model.pretrained_cfg.get(key)}
    apply_convention(model, {**carried, "switches": switches}, file)


def convention_switches(model: nn.Module) -> dict:
    """The model's values of the switches a weights layout may set (CONVENTION_SWITCHES)."""
    switches = getattr(model, "switches", None)
    return {name: getattr(switches, name) for name in CONVENTION_SWITCHES if getattr(switches, name, None) is not None}


def input_convention(model: nn.Module) -> dict:
    """What a checkpoint records of the model's input convention, for `preprocessing` to give the
    resumed run: the preprocessing of CONVENTION_KEYS and the convention switches."""
    return {**{key: model.pretrained_cfg.get(key) for key in CONVENTION_KEYS},
            "switches": convention_switches(model)}


def trained_input_size(weights) -> int | None:
    """The input side the weights of a run or save_pretrained folder (or its model.safetensors or a
    run's checkpoint) were trained at, from its config.json; None for weights from elsewhere."""
    from inceptionlab.models.weights import saved_config, saved_folder

    folder = saved_folder(weights) if isinstance(weights, (str, Path)) else None
    size = saved_config(folder)["preprocessing"].get("input_size") if folder is not None else None
    return int(size[-1]) if size else None


def check_freeze_bn(model: nn.Module, cfg: TrainConfig) -> None:
    """``--freeze-bn`` on a model without batch norm (``norm=false``) is refused before any training (it
    said "batch norm frozen")."""
    if cfg.freeze_bn and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        switches = " ".join(f"{k}={v}" for k, v in cfg.model_kwargs.items())
        raise UserError(f"--freeze-bn: {cfg.model}{' with ' + switches if switches else ''} has no batch norm to "
                        f"freeze; drop --freeze-bn")


def _is_classifier(key: str) -> bool:
    return key.startswith("head.fc.") or (key.startswith("aux_heads.") and ".fc." in key)


def _recorded_crop(source, card: dict) -> float | None:
    """The evaluation crop that weights of our own training recorded: a saved folder's card, a run's
    config.json, a resume's record; None for others."""
    from inceptionlab.models.weights import saved_config, saved_folder

    if card.get("saved_from"):
        return card.get("crop_pct")
    if isinstance(source, dict):
        return source.get("crop_pct")
    folder = saved_folder(source) if isinstance(source, (str, Path)) else None
    return saved_config(folder)["preprocessing"].get("crop_pct") if folder is not None else None


def preprocessing(cfg: TrainConfig, model: nn.Module, native_size: int | None,
                  pretrained: bool | str | Path | dict | None = None, scoring: bool = False):
    """(img_size, train transform, eval transform) from the model's input configuration.

    ``pretrained`` (default: ``cfg.weights``) is the weights file or folder the run's weights started
    from, or the convention itself (a dict of mean, std, input_space, input_range: a resume's), or
    True / False where that is not known: a card's Caffe preprocessing (BGR pixels in 0-255) is
    what the reference's weights need; weights a run or save_pretrained wrote keep the convention
    its config.json records; a network trained from scratch gets unit-scale RGB input. ``scoring``:
    the weights are scored as they are (eval), at the crop they recorded.

    The image size is ``cfg.img_size``, else the size a saved run was trained at, else the data's
    native size for a low_res stem (32 for CIFAR, 28 for the digits) where it is no larger than the
    card's, else the model's input size;
    never below the model's minimum.
    """
    from inceptionlab.data import eval_transform, train_transform
    from inceptionlab.models.weights import apply_convention, trained_preprocessing

    card = model.pretrained_cfg
    source = cfg.weights if pretrained is None else pretrained
    pretrained = bool(source)
    weights_size = trained_input_size(source)  # a fine-tune of a run trains at its size (it took the card's)
    if isinstance(source, dict):  # the convention itself (a resume: its checkpoint's record)
        recorded = {k: tuple(v) if isinstance(v, list) else v for k, v in source.items()
                    if v is not None and k not in ("switches", "input_size")}
        weights_size = source["input_size"][-1] if source.get("input_size") else None  # the size it trained at
        apply_convention(model, {"switches": source.get("switches") or {}})
    else:
        recorded = (trained_preprocessing(source) if isinstance(source, (str, Path)) and not card.get("saved_from")
                    else None)
    if recorded:  # weights of our own training: the input convention they learned with
        card = {**card, **recorded}
    elif not pretrained and not card.get("saved_from") and tuple(card.get("input_range", (0, 1))) != (0, 1):
        # (BN-Inception without BN started at loss 21.7 on 0-255 input, not ln(10) = 2.3)
        from inceptionlab.models.registry import IMAGENET_MEAN, IMAGENET_STD
        card = {**card, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "input_space": "RGB", "input_range": (0, 1)}
    low_res = getattr(getattr(model, "switches", None), "stem", None) == "low_res"
    with_aux = getattr(model, "has_aux", False) and getattr(model, "num_classes", 0) > 0  # (they run in training)
    minimum = getattr(model, "min_train_size" if with_aux else "min_input_size", 1)
    img_size = cfg.img_size
    if img_size is None:
        trained_at = card["input_size"][-1] if card.get("saved_from") else weights_size  # a saved run's own size
        own = card["input_size"][-1]  # (pictures larger than the low-res card's size are scaled down to it)
        img_size = max(trained_at or (native_size if low_res and native_size and native_size <= own else own), minimum)
    elif with_aux and model.min_input_size <= img_size < minimum:  # (it failed in the first step, files written)
        raise UserError(f"img_size {img_size} is below the {minimum}x{minimum} that {cfg.model}'s aux heads need in "
                        f"training: pass --img-size {minimum} or more, or leave out aux_logits=true")
    elif img_size < minimum:
        hint = "; or --model-kwargs stem=low_res for small images" if not low_res else ""  # (CLI words, as summary)
        raise UserError(f"img_size {img_size} is below {cfg.model}'s minimum input of {minimum}x{minimum}: "
                        f"pass --img-size {minimum} or more{hint}")
    at_native_size = native_size is not None and img_size == native_size
    # weights scored as they are keep the crop their run or save_pretrained recorded: eval of a run trained on
    # mixed pictures, on a folder of 32x32 ones, took 1.0 (the data's own size) where predict took its 0.875
    own_crop = _recorded_crop(source, card) if scoring else None
    crop_pct = cfg.crop_pct or own_crop or (1.0 if at_native_size else card.get("crop_pct", 0.875))
    mean, std = card.get("mean", (0.5,) * 3), card.get("std", (0.5,) * 3)
    chans = card["input_size"][0]
    if len(mean) != chans:  # unit-scale RGB statistics for a one-channel model: their average
        mean, std = (sum(mean) / len(mean),) * chans, (sum(std) / len(std),) * chans
    interpolation = card.get("interpolation", "bilinear")
    space = card.get("input_space", "RGB")
    # the size and crop the run evaluates at are what its saved config.json must tell `predict`,
    # `eval --model RUN_DIR` and an export (it said the card's 32 px / 0.875 for a run at 48 px)
    model.pretrained_cfg = {**card, "input_size": (card["input_size"][0], img_size, img_size), "crop_pct": crop_pct}
    evaluate = eval_transform(img_size, mean, std, crop_pct=crop_pct, interpolation=interpolation,
                              input_space=space)
    if not cfg.augment:
        return img_size, evaluate, evaluate
    training = train_transform(img_size, mean, std, scale=tuple(cfg.crop_scale), hflip=cfg.hflip,
                               distort=cfg.distort, interpolation=interpolation, input_space=space)
    return img_size, training, evaluate


def amp_setting(amp) -> bool | str:
    """``amp`` as True, False, "bf16" or "fp16"; the words and numbers a command line or a caller may
    use for them ("false", None, 0) mean off. Anything else is refused: eval took "--amp false",
    "fp32" and None for bf16."""
    from inceptionlab.train.config import AMP_MODES

    if amp is None:
        return False
    if isinstance(amp, bool) or amp in AMP_MODES:
        return amp
    if isinstance(amp, int) and amp in (0, 1):
        return bool(amp)
    words = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False, "fp32": False}
    if isinstance(amp, str) and amp.lower() in words:
        return words[amp.lower()]
    raise UserError(f"amp must be true, false, {' or '.join(AMP_MODES)}, got {amp!r}")


def amp_dtype(amp, device: torch.device):
    """The autocast dtype for ``--amp``: None (off), bf16 on the CPU, fp16/bf16 on CUDA."""
    amp = amp_setting(amp)
    if amp is False:
        return None
    if amp == "fp16":
        if device.type != "cuda":
            raise UserError("fp16 autocast needs a CUDA device; use --amp bf16 on the CPU")
        return torch.float16
    if amp == "bf16" or device.type != "cuda":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def freeze(model: nn.Module, cfg: TrainConfig) -> None:
    """``--freeze-bn`` and ``--freeze-until BLOCK``: the fine-tuning helpers of the model zoo
    (frozen BN layers stay in eval mode through ``model.train()``)."""
    from inceptionlab.models.finetune import freeze_bn, freeze_until

    if cfg.freeze_until:
        freeze_until(model, cfg.freeze_until)
    if cfg.freeze_bn:
        freeze_bn(model)
