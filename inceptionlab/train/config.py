"""`TrainConfig`: everything a training run needs, checked once where it enters.

A config comes from Python (``TrainConfig(model=..., epochs=3)``), from a YAML file (the same
keys; ``--config FILE``), or from the command line (flags override the file). `resolved()` fills
the recipe defaults that depend on the optimizer (learning rate, schedule, weight decay,
clipping) and raises a one-line `UserError` naming the fix for any bad value, before any data is
read or any model is built. The resolved config is what a run directory's ``config.yaml`` holds
and what ``--resume`` trains on.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inceptionlab.errors import UserError, closest

MAX_IMG_SIZE = 4096  # an input side above this is a typo: 20000 asked for 4.5 GB per image

OPTIMIZERS = ("rmsprop_tf", "sgd", "adamw")
SCHEDULES = ("exp_staircase", "step", "cosine", "constant")
AMP_MODES = ("bf16", "fp16")

# The recipe of each optimizer: what `None` means for lr, schedule, weight decay and clipping.
#   rmsprop_tf: the Inception-v3 paper (Sec. 8): RMSProp decay 0.9, epsilon 1.0, lr 0.045 decayed
#               x0.94 every 2 epochs, gradient clipping at 2.0; TF-slim's weight decay 4e-5.
#   sgd:        momentum 0.9 (Nesterov), cosine; weight decay 1e-4 (GoogLeNet used SGD, 0.9).
#   adamw:      the modern default: lr 1e-3, cosine, decoupled weight decay 0.05.
RECIPES = {
    "rmsprop_tf": dict(lr=0.045, sched="exp_staircase", weight_decay=4e-5, clip_grad=2.0),
    "sgd": dict(lr=0.05, sched="cosine", weight_decay=1e-4, clip_grad=0.0),
    "adamw": dict(lr=1e-3, sched="cosine", weight_decay=0.05, clip_grad=0.0),
}
# (decay_epochs, decay_rate) of the staircase schedules
DECAY = {"exp_staircase": (2.0, 0.94), "step": (30.0, 0.1)}


@dataclass
class TrainConfig:
    """One training run. A budget is required: ``epochs``, ``steps`` or ``minutes`` (the first
    reached ends the run; ``minutes`` is wall clock and stops at the end of a step)."""

    model: str = "inception_v3"
    data: str | None = None              # None: the embedded 5,000 MNIST digits
    out: str = "runs/train"
    # budget
    epochs: float | None = None
    steps: int | None = None
    minutes: float | None = None
    # data and preprocessing
    batch_size: int = 32                 # the global batch: split across processes under torchrun
    img_size: int | None = None          # None: the model's input size (data's native size for low_res)
    val_split: float | None = None
    limit_per_class: int | None = None   # at most this many training images per class
    val_limit_per_class: int | None = None  # at most this many validation images per class
    strict: bool = False
    workers: int = 0
    augment: bool = True                 # False: train on the evaluation crop (deterministic)
    crop_scale: tuple = (0.08, 1.0)      # area range of the random-resized crop
    hflip: bool = True
    distort: bool = False                # the papers' photometric distortions
    crop_pct: float | None = None        # None: the model's, or 1.0 at the data's native size
    # optimization
    lr: float | None = None
    opt: str = "rmsprop_tf"
    momentum: float = 0.9
    sched: str | None = None
    decay_epochs: float | None = None    # staircase schedules: decay every this many epochs ...
    decay_rate: float | None = None      # ... by this factor
    warmup_steps: int = 0
    weight_decay: float | None = None    # never applied to BN and bias parameters
    smoothing: float = 0.1
    aux_weight: float | list | None = None  # None: 0.3 per GoogLeNet head, 0.4 for the others; or one per head
    clip_grad: float | None = None       # max global gradient norm; 0 turns clipping off
    ema_decay: float | None = None       # e.g. 0.9999; evaluation then uses the averaged weights
    freeze_bn: bool = False              # BN keeps its running statistics and affine weights fixed
    freeze_until: str | None = None      # fine-tuning: blocks up to and including this one stay fixed
    body_lr_scale: float = 1.0           # fine-tuning: all but the classifier (and aux heads) learn at lr x this
    # speed
    amp: bool | str = False              # True: bf16 on the CPU; fp16 or bf16 on CUDA
    channels_last: bool | None = None    # None: on for the CPU (training steps 1.3-1.9x faster: BENCHMARKS.md)
    compile: bool = False
    grad_checkpointing: bool = False     # recompute each block's maps in the backward pass: less memory
    sync_bn: bool = False                # multi-process: batch statistics over all processes
    threads: int | None = None           # CPU threads per process (torch.set_num_threads); None: torch's
    # run bookkeeping
    seed: int = 0
    checkpoint_every: int | None = None  # steps; None: at every evaluation
    keep_checkpoints: int = 3
    eval_every: int | None = None        # steps; None: once per epoch
    log_every: int | None = None         # steps between plain log lines; None: every ~30 s
    quiet: bool = False
    model_kwargs: dict = field(default_factory=dict)
    weights: str | None = None           # initial weights (fine-tuning); classifiers of another size are replaced

    # ------------------------------------------------------------------ in and out
    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> "TrainConfig":
        """A config from plain values (YAML), with a clear error for an unknown key."""
        known = {f.name for f in dataclasses.fields(cls)}
        clean = {}
        for key, value in values.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise UserError(f"{where} has an unknown key {key!r}" + setting_hint(name, known))
            clean[name] = value
        if isinstance(clean.get("crop_scale"), list):
            clean["crop_scale"] = tuple(clean["crop_scale"])
        return cls(**clean)

    @classmethod
    def from_yaml(cls, path) -> "TrainConfig":
        return cls.from_dict(read_yaml(path), where=str(path))

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["crop_scale"] = list(self.crop_scale)
        return values

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ checking
    def resolved(self) -> "TrainConfig":
        """A copy with the recipe defaults filled in; UserError for any bad setting. (The model
        name, its switches and ``freeze_until`` are checked where the model is built: ``train``
        checks the name and switches before it reads any data.)"""
        _check_str("model", self.model)
        _check_str("out", self.out)
        for name in ("data", "weights", "freeze_until"):
            if getattr(self, name) is not None:
                _check_str(name, getattr(self, name))
        if not isinstance(self.crop_scale, (list, tuple)):
            raise UserError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {self.crop_scale!r}; "
                            f"e.g. [0.08, 1.0]")
        if not isinstance(self.model_kwargs or {}, dict):
            raise UserError(f"model_kwargs must be a mapping of switch: value, got {self.model_kwargs!r}")
        if self.opt not in OPTIMIZERS:
            raise UserError(_choice("opt", self.opt, OPTIMIZERS))
        recipe = RECIPES[self.opt]
        sched = recipe["sched"] if self.sched is None else self.sched
        if sched not in SCHEDULES:
            raise UserError(_choice("sched", sched, SCHEDULES))
        decay_epochs, decay_rate = DECAY.get(sched, (None, None))
        given = [name for name in ("decay_epochs", "decay_rate") if getattr(self, name) is not None]
        if given and sched not in DECAY:  # (it was taken without a word, and written to config.yaml)
            raise UserError(f"{given[0]} applies to the staircase schedules ({', '.join(DECAY)}), not {sched}; leave it "
                            f"out, or pass --sched exp_staircase or step")
        if self.opt == "adamw" and self.momentum != TrainConfig.momentum:
            raise UserError(f"momentum {self.momentum:g} does not apply to adamw (its betas are 0.9 and 0.999); leave "
                            f"it out, or use --opt sgd or rmsprop_tf")
        cfg = self.replace(
            lr=recipe["lr"] if self.lr is None else self.lr,
            sched=sched,
            weight_decay=recipe["weight_decay"] if self.weight_decay is None else self.weight_decay,
            clip_grad=recipe["clip_grad"] if self.clip_grad is None else self.clip_grad,
            decay_epochs=decay_epochs if self.decay_epochs is None else self.decay_epochs,
            decay_rate=decay_rate if self.decay_rate is None else self.decay_rate,
            crop_scale=tuple(self.crop_scale),
            model_kwargs=dict(self.model_kwargs or {}),
        )
        cfg._check()
        return cfg

    def _check(self) -> None:
        if self.epochs is None and self.steps is None and self.minutes is None:
            raise UserError("no training budget: pass epochs, steps or minutes (e.g. --epochs 10)")
        _check_number("epochs", self.epochs, low=0, low_open=True, fix="e.g. --epochs 10")
        _check_int("steps", self.steps, 1, "e.g. --steps 1000")
        _check_number("minutes", self.minutes, low=0, low_open=True, fix="e.g. --minutes 5")
        _check_int("batch_size", self.batch_size, 1, "e.g. --batch-size 32")
        _check_int("img_size", self.img_size, 1, "e.g. --img-size 299, or leave it out for the model's size",
                   maximum=MAX_IMG_SIZE)
        _check_int("workers", self.workers, 0, "e.g. --workers 4")
        _check_int("threads", self.threads, 1, "e.g. --threads 1 on a busy machine")
        # (upper bounds: beyond float32's 3.4e38, lr x body_lr_scale was a traceback inside the optimizer)
        _check_number("lr", self.lr, low=0, low_open=True, high=1e15, fix="e.g. --lr 0.045")
        _check_number("momentum", self.momentum, low=0, high=1, high_open=True, fix="e.g. 0.9")
        _check_number("decay_rate", self.decay_rate, low=0, high=1, low_open=True, fix="e.g. 0.94")
        _check_number("decay_epochs", self.decay_epochs, low=0, low_open=True, fix="e.g. 2")
        _check_int("warmup_steps", self.warmup_steps, 0, "e.g. --warmup-steps 500")
        _check_number("weight_decay", self.weight_decay, low=0, high=1e6, fix="e.g. 4e-5, or 0 for none")
        _check_number("smoothing", self.smoothing, low=0, high=1, high_open=True, fix="0.1 is the paper's")
        if isinstance(self.aux_weight, (list, tuple)):  # one per head, in depth order (InceptionLoss takes it)
            if not self.aux_weight:
                raise UserError("aux_weight is an empty list; give one number for every head, or one per head")
            for weight in self.aux_weight:
                _check_number("aux_weight", weight, low=0, fix="e.g. [0.3, 0.3] for GoogLeNet's two heads")
        else:
            _check_number("aux_weight", self.aux_weight, low=0, fix="0.3 for GoogLeNet, 0.4 for the others")
        _check_number("clip_grad", self.clip_grad, low=0, fix="2.0 is the paper's; 0 turns clipping off")
        if self.body_lr_scale is None:  # (null in a config file: the announce line and the step crashed on it)
            raise UserError("body_lr_scale must be a number > 0, got None; e.g. --body-lr-scale 0.1, or leave it "
                            "out for 1 (no scaling)")
        _check_number("body_lr_scale", self.body_lr_scale, low=0, low_open=True, high=1e6,
                      fix="e.g. --body-lr-scale 0.1 (to keep the body fixed, use --freeze-until BLOCK)")
        _check_number("ema_decay", self.ema_decay, low=0, high=1, low_open=True, high_open=True,
                      fix="e.g. --ema-decay 0.9999")
        _check_number("crop_pct", self.crop_pct, low=0, high=1, low_open=True, fix="e.g. 0.875")
        _check_int("seed", self.seed, 0, "e.g. --seed 0")
        _check_int("checkpoint_every", self.checkpoint_every, 1, "e.g. --checkpoint-every 500")
        _check_int("keep_checkpoints", self.keep_checkpoints, 1, "e.g. 3")
        _check_int("eval_every", self.eval_every, 1, "e.g. --eval-every 500, or leave it out for each epoch")
        _check_int("log_every", self.log_every, 1, "e.g. 50")
        if len(self.crop_scale) != 2 or not all(_is_number(v) for v in self.crop_scale) or \
                not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise UserError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {self.crop_scale}")
        if not (isinstance(self.amp, bool) or self.amp in AMP_MODES):
            raise UserError(f"amp must be true, false, {' or '.join(AMP_MODES)}, got {self.amp!r}")
        if not isinstance(self.model_kwargs, dict):
            raise UserError(f"model_kwargs must be a mapping of switch: value, got {self.model_kwargs!r}")
        for flag in ("strict", "augment", "hflip", "distort", "freeze_bn", "compile", "grad_checkpointing", "sync_bn",
                     "quiet"):
            if not isinstance(getattr(self, flag), bool):
                raise UserError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        if self.compile and self.grad_checkpointing:  # (a 188-line traceback from dynamo, after the folder was written)
            raise UserError("compile and grad_checkpointing do not go together: torch.compile cannot trace the "
                            "checkpoint that keeps batch norm's statistics exact; use one of them")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise UserError(f"channels_last must be true, false or null (on for the CPU), got {self.channels_last!r}")
        if self.weights is not None and not Path(self.weights).exists():
            scratch = ("; for no weights (from scratch) write weights: null in YAML"
                       if str(self.weights).lower() in ("none", "null") else "")
            raise UserError(f"weights file {self.weights} does not exist; pass a .safetensors/.pth file "
                            f"or a directory written by save_pretrained{scratch}")


# ------------------------------------------------------------------ helpers
@functools.lru_cache(maxsize=None)
def _yaml_loader():
    """PyYAML's safe loader, reading ``1e-3`` as a number: YAML 1.1 reads an exponent without a dot
    (the way everyone writes learning rates) as a string."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))

    def mapping_without_repeats(loader, node, deep=False):
        # PyYAML keeps the last of two equal keys without a word: `lr: 0.1` ... `lr: 0.01` trained at 0.01
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overriding a key is fine
                continue
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:  # `? [a, b]`, `{[1]: 2}`
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a name or a number, got {key!r}", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice in one mapping; keep one", key_node.start_mark)
            seen.add(key)
        loader.flatten_mapping(node)
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping_without_repeats)
    return Loader


def load_yaml(text: str):
    """YAML as the safe loader reads it, ``1e-3`` included."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass


def read_yaml(path, what: str = "config file") -> dict:
    """The mapping a YAML file holds; one-line errors naming it as ``what`` ("plan file" for a plan)."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder; pass a YAML file")
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        values = load_yaml(path.read_text()) or {}
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not text (YAML); pass a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{what} {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(values, dict):
        raise UserError(f"{what} {path} must be a mapping of key: value, got {type(values).__name__}")
    return values


def write_yaml(values: dict, path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(values, sort_keys=False))


def split_top_level(text: str) -> list[str]:
    """Splits on commas outside brackets: ``a=1,b=[1,2]`` -> ``["a=1", "b=[1,2]"]``."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_value(text: str) -> Any:
    """A command-line value, read as YAML: true/false, none, numbers (``1e-3`` too), lists ``[a, b]``
    or ``a,b``, else the text."""
    import yaml

    text = str(text).strip()
    if text.lower() == "none":
        return None
    parts = split_top_level(text)
    if len(parts) > 1:
        return [parse_value(part) for part in parts]
    try:
        return load_yaml(text) if text else None
    except yaml.YAMLError:
        return text


# the names other trainers give these settings (closest() took learning_rate for decay_rate)
SETTING_ALIASES = {"learning_rate": "lr", "wd": "weight_decay", "label_smoothing": "smoothing",
                   "optimizer": "opt", "scheduler": "sched", "schedule": "sched", "lr_schedule": "sched",
                   "bs": "batch_size", "batch": "batch_size", "num_workers": "workers", "warmup": "warmup_steps",
                   "warmup_epochs": "warmup_steps", "ema": "ema_decay", "model_ema_decay": "ema_decay",
                   "clip": "clip_grad", "grad_clip": "clip_grad", "max_grad_norm": "clip_grad",
                   "image_size": "img_size", "input_size": "img_size", "epoch": "epochs", "max_steps": "steps",
                   "channels_last_memory": "channels_last", "mixed_precision": "amp", "precision": "amp"}


def setting_hint(name: str, known) -> str:
    """"; did you mean lr?" for an unknown training setting: the usual other name for it first,
    then the closest spellings, else the list of settings."""
    alias = SETTING_ALIASES.get(str(name).lower().replace("-", "_"))
    hint = alias if alias in known else closest(str(name), known)
    return f"; did you mean {hint}?" if hint else f"; settings are {', '.join(sorted(known))}"


def parse_assignments(items, what: str = "model switch") -> dict:
    """``["a=1", "b=x"]`` or ``"a=1,b=[1,2]"`` -> ``{"a": 1, "b": ...}``: the one key=value parser of
    every command. A comma-separated piece without ``=`` continues the value before it, so
    ``residual_scale=0.1,0.2,0.3`` is one list."""
    raw: dict[str, list[str]] = {}
    for chunk in items or ():
        key = None
        for piece in split_top_level(str(chunk)):
            name, sep, value = piece.partition("=")
            if sep and name.strip():
                key = name.strip().replace("-", "_")
                if key in raw:  # `norm=false norm=true` took the last without a word
                    raise UserError(f"{what} {key} is given twice ({key}={','.join(raw[key])} and {key}={value}); "
                                    f"keep one")
                raw[key] = [value]
            elif key is not None and not sep:
                raw[key].append(piece)
            else:
                raise UserError(f"{what} {piece!r} is not key=value; e.g. depth_multiplier=0.25 norm=false")
    for key, parts in raw.items():
        if not ",".join(parts).strip():  # (`lr=` trained at the default while the report said lr=None)
            raise UserError(f"{what} {key}= has no value; give one, or leave {key} out for its default")
    return {key: parse_value(",".join(parts)) for key, parts in raw.items()}


def parse_model_kwargs(items) -> dict:
    """``["stem=low_res", "depth_multiplier=0.25"]`` -> ``{"stem": "low_res", "depth_multiplier": 0.25}``."""
    return parse_assignments(items, "model switch")


def _choice(name: str, value, choices) -> str:
    hint = closest(str(value), choices)
    return f"unknown {name} {value!r}" + (f"; did you mean {hint}?" if hint else f"; choose from {', '.join(choices)}")


def _check_str(name: str, value) -> None:
    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise UserError(f"{name} must be a non-empty string, got {value!r}")


def _check_int(name: str, value, minimum, fix: str, maximum=None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum) \
            or (maximum is not None and value > maximum):
        bound = f" >= {minimum}" if minimum is not None else ""
        bound += f" and <= {maximum}" if maximum is not None else ""
        raise UserError(f"{name} must be an integer{bound}, got {value!r}; {fix}")


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _check_number(name: str, value, *, low=None, high=None, low_open=False, high_open=False, fix="") -> None:
    if value is None:
        return
    ok = _is_number(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
        hi = "" if high is None else (f"< {high:g}" if high_open else f"<= {high:g}")
        bound = " and ".join(b for b in (lo, hi) if b)
        raise UserError(f"{name} must be a finite number {bound}, got {value!r}; {fix}")
