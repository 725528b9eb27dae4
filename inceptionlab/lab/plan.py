"""Run plans: which runs a compare (or a study) makes, what they share and what they vary.

A `Plan` is a list of `Variant`s (a name, a model, its switches, its training settings) trained
once per seed under one shared budget, on one data source with one split. Everything a plan can
hold can be written in YAML (``--plan FILE``), and a lab directory keeps its plan as
``plan.yaml``, which is what ``--resume`` continues::

    title: BN on and off
    steps: 300                       # the budget of every run: epochs, steps and/or minutes
    seeds: 2                         # 0 and 1; or a list [0, 7]
    data: photos/                    # omit for the embedded digits
    batch_size: 32                   # any training setting, shared by every run
    model_kwargs: {depth_multiplier: 0.25, stem: low_res}   # applied where a model has the switch
    runs:
      - {name: bn, model: bn_inception}
      - {name: no_bn, model: bn_inception, norm: false, lr: 0.01}   # a switch, a training setting

(``models: [googlenet, inception_v3]`` is short for one run per model, named after it. A shared
``aux_weight``, like a shared switch, applies to the runs that have aux heads. ``study:
batchnorm``, which ``inceptionlab study`` writes into its plan.yaml, adds that study's claim and
verdict to the report; the verdict needs the study's own runs, by name.)

`check_plan` is the boundary: unknown models, switches or settings (with the closest names), a
missing or zero budget, bad switch values and a data folder the runs cannot use are all one-line
`UserError`s, raised before anything trains.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inceptionlab.errors import UserError, closest
from inceptionlab.train.config import parse_assignments, setting_hint

BUDGET_KEYS = ("epochs", "steps", "minutes")
# TrainConfig fields the lab sets itself, per run: a plan cannot set them
LAB_OWNED = ("model", "out", "data", "seed", "model_kwargs", "quiet")
# where each of them is given instead (--set seed=4 said only that it could not be set)
LAB_OWNED_FIX = {"model": "name the models with --models or --variant (in a plan file, models: or runs:)",
                 "out": "pass --out DIR", "data": "pass --data DIR (in a plan file, data: at the top level)",
                 "seed": "pass --seeds N for seeds 0..N-1 (in a plan file, seeds: N or seeds: [0, 7])",
                 "model_kwargs": "pass --model-kwargs KEY=VALUE (in a plan file, model_kwargs: at the top level "
                                 "or in a run)",
                 "quiet": "pass --quiet"}
PLAN_KEYS = ("title", "study", "data", "seeds", "target", "models", "runs", "model_kwargs", "train",
             *BUDGET_KEYS)
RUN_KEYS = ("name", "model", "model_kwargs", "train")
# CPU threads per run unless a plan sets threads: the same for every run, so that their speeds compare,
# and one, because on a machine whose cores are busy with anything else two threads per process ran
# many times slower (10x+ measured on this project's 2-core machine)
LAB_THREADS = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")
# training settings that mean something only from initial weights (the engine's note on random weights names
# them): a run of its own weights=none, from scratch, leaves the shared ones out (it trained with batch norm
# frozen at its random start and the body at a tenth of the rate)
FINE_TUNING_SETTINGS = ("freeze_bn", "freeze_until", "body_lr_scale")


def train_settings() -> list[str]:
    """The training settings a plan may set (TrainConfig fields the lab does not own)."""
    from inceptionlab.train import TrainConfig

    return [f.name for f in dataclasses.fields(TrainConfig) if f.name not in LAB_OWNED + BUDGET_KEYS]


@dataclass
class Variant:
    """One arm of a comparison: a model with its switches and its own training settings."""
    name: str
    model: str
    model_kwargs: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


@dataclass
class RunSpec:
    """One training run of a plan: a variant at one seed, with the shared values merged in."""
    name: str          # run directory name: the variant's, plus -seed<N> when there are several seeds
    variant: str
    model: str
    model_kwargs: dict
    train: dict        # every training setting of this run except the lab-owned ones
    seed: int
    left_out: tuple = ()  # the shared fine-tuning settings a run from scratch leaves out

    def config(self, out: Path | str, data: str | None, quiet: bool = False):
        """The engine's `TrainConfig` for this run, writing to ``out``."""
        from inceptionlab.train import TrainConfig

        return TrainConfig(model=self.model, data=data, out=str(out), seed=self.seed,
                           model_kwargs=dict(self.model_kwargs), quiet=quiet, **self.train)


@dataclass
class Plan:
    variants: list[Variant]
    budget: dict = field(default_factory=dict)       # epochs / steps / minutes of every run
    seeds: list[int] = field(default_factory=lambda: [0])
    data: str | None = None
    train: dict = field(default_factory=dict)        # shared training settings
    model_kwargs: dict = field(default_factory=dict)  # shared switches, applied where a model has them
    target: float | None = None                      # top-1 (%) to reach; None: 90% of the best run's best
    title: str = "compare"
    study: str | None = None

    # ------------------------------------------------------------------ runs
    def runs(self) -> list[RunSpec]:
        """Every run, seed-major: all variants at the first seed, then at the next."""
        from inceptionlab.models.registry import model_entry

        out = []
        for seed in self.seeds:
            for v in self.variants:
                accepted = model_entry(v.model).switches
                kwargs = {k: val for k, val in self.model_kwargs.items() if k in accepted}
                kwargs.update(v.model_kwargs)
                name = v.name if len(self.seeds) == 1 else f"{v.name}-seed{seed}"
                # a run's own budget replaces the shared one (both were kept, and the shared one ended it)
                shared = {} if any(key in v.train for key in BUDGET_KEYS) else self.budget
                train = {"threads": LAB_THREADS, **shared, **self.train, **v.train}
                if "aux_weight" in self.train and "aux_weight" not in v.train and not has_aux_heads(v.model, kwargs):
                    del train["aux_weight"]  # shared: where a run has aux heads, as a switch where a model has it
                from_scratch = "weights" in v.train and v.train["weights"] is None
                left_out = tuple(key for key in FINE_TUNING_SETTINGS
                                 if from_scratch and key in self.train and key not in v.train)
                for key in left_out:
                    del train[key]
                out.append(RunSpec(name, v.name, v.model, kwargs, train, seed, left_out))
        return out

    # ------------------------------------------------------------------ YAML
    def to_dict(self) -> dict:
        values: dict[str, Any] = dict(title=self.title)
        if self.study:
            values["study"] = self.study
        values.update(data=self.data, seeds=list(self.seeds), target=self.target, **self.budget)
        values["train"] = dict(self.train)
        values["model_kwargs"] = dict(self.model_kwargs)
        # a run's own budget goes at the run's top level, where a plan file gives it (under train:
        # it was refused on reading, so such a lab could not be resumed)
        values["runs"] = [dict(name=v.name, model=v.model, model_kwargs=dict(v.model_kwargs),
                               train={k: x for k, x in v.train.items() if k not in BUDGET_KEYS},
                               **{k: x for k, x in v.train.items() if k in BUDGET_KEYS})
                          for v in self.variants]
        return values

    @classmethod
    def from_dict(cls, values: dict, where: str = "plan", train_where: str | None = None) -> "Plan":
        """A plan from YAML values; UserError for an unknown key (with the closest names). `train_where`
        names the source of the shared training settings in errors (default: "{where}: train")."""
        if not isinstance(values, dict):
            raise UserError(f"{where} must be a mapping of key: value, got {type(values).__name__}")
        settings = train_settings()
        shared_train = {}
        for key in values:
            if key not in PLAN_KEYS and key not in settings:
                raise UserError(f"{where} has an unknown key {key!r}" + _hint(key, [*PLAN_KEYS, *settings]))
        for key in ("train", "model_kwargs"):
            if not isinstance(values.get(key) or {}, dict):
                raise UserError(f"{where}: {key} must be a mapping of key: value, got {values[key]!r}")
        for key, value in (values.get("train") or {}).items():
            _known_setting(key, settings, train_where or f"{where}: train")
            shared_train[key] = value
        shared_train.update({k: v for k, v in values.items() if k in settings})
        variants = [Variant(m, m) for m in _as_list(values.get("models"), "models", where)]
        runs = values.get("runs") or []
        if not isinstance(runs, list):
            raise UserError(f"{where}: runs must be a list, one '- name: ..., model: ...' entry per run, "
                            f"got {type(runs).__name__}")
        for i, entry in enumerate(runs):
            variants.append(_variant_from_dict(entry, f"{where}: runs[{i}]", settings))
        model_kwargs = values.get("model_kwargs") or {}
        return cls(variants=variants, budget={k: values[k] for k in BUDGET_KEYS if values.get(k) is not None},
                   seeds=parse_seeds(values.get("seeds", 1)), data=values.get("data"), train=shared_train,
                   model_kwargs=dict(model_kwargs), target=values.get("target"),
                   title=str(values.get("title") or "compare"), study=values.get("study"))

    @classmethod
    def from_yaml(cls, path) -> "Plan":
        from inceptionlab.train.config import read_yaml

        return cls.from_dict(read_yaml(path, "plan file"), where=f"plan file {path}")

    def write_yaml(self, path) -> None:
        import yaml

        from inceptionlab.files import atomic_write_text
        atomic_write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), path)


def has_aux_heads(model: str, model_kwargs: dict) -> bool:
    """Whether ``model`` built with ``model_kwargs`` has aux heads (every model builds without them)."""
    from inceptionlab.models.registry import model_entry

    return "aux_logits" in model_entry(model).switches and model_kwargs.get("aux_logits") is True


# ------------------------------------------------------------------ parsing pieces
def parse_seeds(value) -> list[int]:
    """``3`` -> [0, 1, 2]; ``[0, 7]`` -> [0, 7]."""
    if isinstance(value, bool):
        raise UserError(f"seeds must be a count or a list of integers, got {value!r} (YAML reads yes/no as true/false); "
                        f"e.g. seeds: 3 or seeds: [0, 7]")
    if isinstance(value, int):
        if value < 1:
            raise UserError(f"seeds must be at least 1, got {value}; e.g. --seeds 3")
        return list(range(value))
    if isinstance(value, (list, tuple)) and value and all(isinstance(s, int) and not isinstance(s, bool)
                                                          for s in value):
        if len(set(value)) != len(value):
            raise UserError(f"seeds must differ, got {list(value)}")
        if min(value) < 0:
            raise UserError(f"seeds must be integers >= 0, got {list(value)}; e.g. seeds: [0, 1]")
        return list(value)
    raise UserError(f"seeds must be a count or a list of integers, got {value!r}; e.g. seeds: 3")


def parse_variant(text: str) -> Variant:
    """``name:model:key=value,key=value`` (or ``name:model``) -> a `Variant`.

    Each key is a switch of the model or a training setting; values are read like YAML
    scalars (``false``, ``0.1``, ``[1, 0.2, 0.2]``)."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
        raise UserError(f"variant {text!r} is not name:model[:key=value,...]; "
                        f"e.g. --variant no_bn:bn_inception:norm=false,lr=0.01")
    name, model = parts[0].strip(), parts[1].strip()
    values = parse_assignments([parts[2]] if len(parts) == 3 else [], f"variant {name!r}:")
    return _route(name, model, values, train_settings(), f"variant {name!r}")


def _variant_from_dict(entry, where: str, settings) -> Variant:
    if isinstance(entry, str):
        return Variant(entry, entry)
    if not isinstance(entry, dict) or "model" not in entry:
        raise UserError(f"{where} must be a mapping with at least model: NAME, got {entry!r}")
    name = str(entry.get("name") or entry["model"])
    flat = {k: v for k, v in entry.items() if k not in RUN_KEYS}
    variant = _route(name, str(entry["model"]), flat, settings, f"{where} ({name})")
    nested_kwargs = entry.get("model_kwargs") or {}
    nested_train = entry.get("train") or {}
    if not isinstance(nested_kwargs, dict) or not isinstance(nested_train, dict):
        raise UserError(f"{where}: model_kwargs and train must be mappings of key: value")
    for key in nested_train:
        _known_setting(key, settings, f"{where}: train")
    variant.model_kwargs.update(nested_kwargs)
    variant.train.update(nested_train)
    return variant


def _route(name: str, model: str, values: dict, settings, where: str) -> Variant:
    """Sorts ``values`` into the model's switches and training settings."""
    from inceptionlab.models.registry import model_entry

    switches = model_entry(model).switches  # UserError with the closest names for an unknown model
    variant = Variant(name, model)
    for key, value in values.items():
        if key in switches:
            variant.model_kwargs[key] = value
        elif key in settings or key in BUDGET_KEYS:
            variant.train[key] = value
        elif key in LAB_OWNED:
            raise UserError(f"{where}: {key!r} is set by the lab for every run and cannot be varied; "
                            f"{LAB_OWNED_FIX[key]}")
        else:
            raise UserError(f"{where}: {key!r} is neither a switch of {model} nor a training setting"
                            + _hint(key, [*switches, *settings]))
    return variant


def _known_setting(key, settings, where: str) -> None:
    if key not in settings:
        if key in BUDGET_KEYS:
            raise UserError(f"{where}: {key!r} is a budget, not a training setting; pass --{key} N "
                            f"(in a plan file, {key}: N at the top level or in a run)")
        if key in LAB_OWNED:
            raise UserError(f"{where}: {key!r} is set by the lab for every run and cannot be set here; "
                            f"{LAB_OWNED_FIX[key]}")
        if key in _model_switches():  # (--set num_classes=7 offered limit_per_class)
            fix = ("leave it out: it is taken from the data" if key == "num_classes"
                   else f"pass --model-kwargs {key}=VALUE (in a plan file, model_kwargs: at the top level or in a run)")
            raise UserError(f"{where}: {key!r} is a switch of the models, not a training setting; {fix}")
        raise UserError(f"{where} has an unknown training setting {key!r}" + setting_hint(key, settings))


def _model_switches() -> set[str]:
    """The switches of every registered model."""
    from inceptionlab.models.registry import list_models, model_entry

    return {key for name in list_models() for key in model_entry(name).switches}


def _hint(key, choices) -> str:
    hint = closest(str(key), list(choices))
    return f"; did you mean {hint}?" if hint else ""


def _as_list(value, what: str, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UserError(f"{where}: {what} must be a list of names, got {value!r}")


# ------------------------------------------------------------------ checking
@dataclass
class PlanCheck:
    """What checking a plan learned about its data."""
    classes: list[str]
    source: str
    native_size: int | None
    val_images: int = 0
    in_chans: int = 3  # channels of the samples the engine feeds the runs


def check_plan(plan: Plan) -> PlanCheck:
    """Every check that can be made before training; raises a one-line UserError."""
    from inceptionlab.models.registry import model_entry
    from inceptionlab.train.setup import amp_dtype

    if not plan.variants:
        raise UserError("the plan has no runs; pass --models NAME,NAME or --variant name:model:...")
    names = [v.name for v in plan.variants]
    for v in plan.variants:
        if not _NAME.match(v.name):
            raise UserError(f"run name {v.name!r} must be letters, digits and _ . + = - (it names a folder)")
        if names.count(v.name) > 1:
            raise UserError(f"two runs are named {v.name!r}; give each run its own name (the same model "
                            f"twice needs two variants: --variant a:{v.model}:... --variant b:{v.model}:...)")
    plan.seeds = parse_seeds(plan.seeds)  # (checked here too for a Plan built in Python: [] and [0, 0] got through)
    for key in plan.budget:
        if key not in BUDGET_KEYS:
            raise UserError(f"unknown budget {key!r}" + _hint(key, BUDGET_KEYS) + f" (budgets: {', '.join(BUDGET_KEYS)})")
    if not any(k in plan.budget for k in BUDGET_KEYS) and not all(
            any(k in v.train for k in BUDGET_KEYS) for v in plan.variants):
        raise UserError("no training budget: give every run --epochs N, --steps N or --minutes M")
    settings = train_settings()
    for key in plan.train:
        _known_setting(key, settings, "--set")  # where demo and study take them
    for key, value in plan.budget.items():
        _check_budget(key, value)
    for v in plan.variants:
        for key in BUDGET_KEYS:
            if key in v.train:
                _check_budget(key, v.train[key], f" (run {v.name})")
    if plan.target is not None and (isinstance(plan.target, bool) or not isinstance(plan.target, (int, float))
                                    or not 0 < plan.target <= 100):
        raise UserError(f"target must be a top-1 accuracy in percent, in (0, 100], got {plan.target!r}")
    # shared switches: each must be a switch of at least one model of the plan
    all_switches = set()
    for v in plan.variants:
        all_switches.update(model_entry(v.model).switches)
    for key in plan.model_kwargs:
        if key not in all_switches:
            hint = _hint(key, sorted(all_switches)) or f" (switches: {', '.join(sorted(all_switches))})"
            raise UserError(f"no model of the plan has a switch {key!r}" + hint)
    data = check_data(plan)
    device = _training_device()
    runs = plan.runs()
    shared_aux = plan.train.get("aux_weight")
    if shared_aux is not None and not any(has_aux_heads(run.model, run.model_kwargs) for run in runs):
        # (each run failed after the lab had started, and resuming could not change it)
        raise UserError(f"aux_weight {shared_aux} has no effect: no run of the plan has aux heads; add "
                        f"--model-kwargs aux_logits=true, or leave aux_weight out")
    # every run's config, and every model built on the meta device: bad values fail here
    for run in runs:
        cfg = run.config("unused", plan.data)
        try:
            cfg = cfg.resolved()
            amp_dtype(cfg.amp, device)  # fp16 on a CPU failed each run once the lab had started
        except UserError as exc:
            raise UserError(f"run {run.name}: {exc}") from None
        _check_model(run, cfg, data)
    return data


def _training_device():
    """The device the engine trains on here (as `Distributed.from_env` picks it, without setting it)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_data(plan: Plan) -> PlanCheck:
    """The data source, scanned (not decoded) with the plan's split: UserError if unusable."""
    from inceptionlab.data import build_datasets

    if plan.data is not None:
        path = Path(str(plan.data)).expanduser()
        if not path.exists():
            raise UserError(f"data folder {plan.data} does not exist; pass a folder of <class>/ image folders, "
                            f"or leave --data out for the embedded digits")
    settings = plan.train
    splits = build_datasets(plan.data, train_transform=None, eval_transform=None,
                            val_split=settings.get("val_split"), seed=plan.seeds[0],
                            strict=bool(settings.get("strict", False)),
                            limit_per_class=settings.get("limit_per_class"),
                            val_limit_per_class=settings.get("val_limit_per_class"))
    if len(splits.val) == 0:
        raise UserError(f"the data {plan.data or '(embedded digits)'} leave no validation images; "
                        f"add a val/ folder or pass --val-split 0.2")
    source = splits.source
    if len(plan.seeds) > 1:  # scanned with the first seed; each run splits with its own
        source = source.replace(f"seed {plan.seeds[0]}", f"each run's seed ({', '.join(map(str, plan.seeds))})")
    return PlanCheck(list(splits.classes), source, splits.native_size, len(splits.val), splits.in_chans)


def _check_budget(key: str, value, where: str = "") -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < math.inf
    if key == "steps":
        ok = ok and isinstance(value, int)
    if not ok:
        kind = "a whole number" if key == "steps" else "a finite number"
        raise UserError(f"the budget {key}={value!r}{where} must be {kind} above zero; e.g. --{key} "
                        + {"epochs": "3", "steps": "300", "minutes": "1.5"}[key])


def _check_model(run: RunSpec, cfg, data: PlanCheck) -> None:
    """Builds the run's model on the meta device (no memory, no init cost) as the engine builds it, for
    ``data``'s classes and channels (a num_classes or in_chans that does not fit them is the engine's
    refusal); ``cfg.aux_weight`` must fit its aux heads (as the engine checks it, once the lab had started)."""
    import torch

    from inceptionlab.train.setup import build_model

    img_size, aux_weight = cfg.img_size, cfg.aux_weight
    try:
        # (it built with {"num_classes": classes, **model_kwargs}: a num_classes=7 switch won over the data's
        # 4 classes here, and every run then failed at its start)
        with torch.device("meta"):
            model = build_model(cfg.replace(weights=None), len(data.classes), in_chans=data.in_chans)
        if img_size is not None:
            model.check_input(torch.empty(1, model.in_chans, img_size, img_size, device="meta"))
        if run.train.get("freeze_until"):  # a typo made every run fail after the lab had started
            from inceptionlab.models.finetune import blocks_until
            blocks_until(model, run.train["freeze_until"])
        heads = len(getattr(model, "aux_heads", ()))
        if aux_weight is not None and not heads:
            raise UserError(f"aux_weight {aux_weight} has no effect: {run.model} has no aux heads here; add "
                            f"--model-kwargs aux_logits=true, or leave aux_weight out")
        if isinstance(aux_weight, (list, tuple)) and len(aux_weight) != heads:
            raise UserError(f"aux_weight gives {len(aux_weight)} weights for {run.model}'s {heads} aux head(s); "
                            f"give one number for all, or one per head")
    except UserError as exc:
        raise UserError(f"run {run.name}: {exc}") from None
    except TypeError as exc:
        raise UserError(f"run {run.name}: {exc}") from None
