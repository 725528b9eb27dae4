"""The main job's plan, and the small-model defaults the studies use on the embedded digits.

`demo_plan` is what ``inceptionlab demo`` (and ``make demo``) runs: four families, at an eighth
of their width and with the low-resolution stem, on the embedded 28x28 digits, each for the same
wall-clock budget, so the whole compare ends in about four minutes on a 2-core CPU. With
``data=FOLDER`` the same compare runs on one's own images.
"""
from __future__ import annotations

from inceptionlab.errors import UserError
from inceptionlab.lab.plan import Plan, Variant

# four families, four ideas: the original module, batch norm, factorization, residual connections
DEMO_MODELS = ("googlenet", "bn_inception", "inception_v3", "inception_resnet_v2")
DEMO_MINUTES = 0.85         # wall clock per run, evaluations included: 4 runs ~ 3.4 minutes of training
# narrow networks that keep the full 28x28 (or 32x32) grid through the stem ("Rethinking" Sec. 8)
SMALL_MODEL_KWARGS = dict(stem="low_res", depth_multiplier=0.125, min_depth=8)
# quick learners for a short budget: AdamW, mild crops, no flips (digits are not mirror-symmetric),
# 100 images per class for training (31 steps an epoch, so the curves have points), 300 for validation.
# (One CPU thread per run, as in every lab run: `plan.LAB_THREADS`.)
SMALL_TRAIN = dict(batch_size=32, opt="adamw", lr=2e-3, hflip=False, crop_scale=[0.6, 1.0],
                   limit_per_class=100, val_split=0.06)
# on one's own folder: the ImageNet stem at 96x96 (every family's minimum is below it) and a quarter
# of the width, so a CPU still takes a few steps a second; --set img_size=299 for the papers' size
FOLDER_TRAIN = dict(batch_size=32, img_size=96, opt="adamw", lr=2e-3)
FOLDER_MODEL_KWARGS = dict(depth_multiplier=0.25)
DEMO_TITLE_PREFIX = "Demo: "  # how the demo knows a folder of its own, which it may start over
STUDY_STEPS = 150           # the studies' default budget on the embedded digits


def small_train(given: dict, defaults: dict = SMALL_TRAIN) -> dict:
    """``defaults`` (the small-data settings) for a lab whose user gave the training settings ``given``:
    its lr is AdamW's, so another optimizer given without an lr takes that optimizer's own
    (TrainConfig resolves lr None per optimizer: `--opt sgd` trained SGD at AdamW's 0.002)."""
    out = dict(defaults)
    if given.get("opt") not in (None, defaults.get("opt")) and "lr" not in given:
        out.pop("lr", None)
    return out


def demo_plan(*, data: str | None = None, minutes: float | None = None, steps: int | None = None,
              models=DEMO_MODELS, seeds=(0,), model_kwargs: dict | None = None, train: dict | None = None,
              epochs: float | None = None) -> Plan:
    """The demo's compare. On the embedded digits it uses the small defaults; on a folder, 96x96
    inputs at a quarter of the width (pass ``train`` / ``model_kwargs`` to change them). The budget
    is the epochs and steps given (the first reached ends a run), else DEMO_MINUTES (or ``minutes``)."""
    budget = {k: v for k, v in (("epochs", epochs), ("steps", steps), ("minutes", minutes)) if v is not None}
    budget = budget or {"minutes": DEMO_MINUTES}
    shared_train = small_train(train or {}, SMALL_TRAIN if data is None else FOLDER_TRAIN)
    shared_train.update(train or {})
    kwargs = dict(SMALL_MODEL_KWARGS) if data is None else dict(FOLDER_MODEL_KWARGS)
    kwargs.update(model_kwargs or {})
    return Plan(variants=[Variant(m, m) for m in models], budget=budget, seeds=list(seeds), data=data,
                train=shared_train, model_kwargs=kwargs,
                title=DEMO_TITLE_PREFIX + ("four Inception families" if len(models) == 4 else
                                           f"{len(models)} model{'s' * (len(models) != 1)}")
                + " on the same data and budget")


def holds_other_lab(lab_dir) -> bool:
    """Whether ``lab_dir`` holds a compare or a study (which the demo, starting its folder over each
    time, must not delete), rather than nothing or an earlier demo."""
    from pathlib import Path

    from inceptionlab.lab.runner import PLAN_FILE
    from inceptionlab.train.config import read_yaml

    lab_dir = Path(lab_dir)
    plan = lab_dir / PLAN_FILE
    if not plan.is_file():
        return (lab_dir / "runs").exists()
    try:
        return not str(read_yaml(plan).get("title", "")).startswith(DEMO_TITLE_PREFIX)
    except (UserError, OSError):  # an unreadable plan: not the demo's
        return True


def study_plan(study, values: dict, model: str | None = None) -> Plan:
    """A study's plan from command-line values (see ``commands.compare.plan_values``).

    On the embedded digits the small defaults fill what the user did not set, and the budget
    defaults to STUDY_STEPS steps per run; on a folder the user's values (and a budget) are needed."""
    from inceptionlab.lab.plan import BUDGET_KEYS, parse_seeds

    on_digits = values.get("data") is None
    budget = {k: values[k] for k in BUDGET_KEYS if values.get(k) is not None}
    if not budget and on_digits:
        budget = {"steps": STUDY_STEPS}
    elif not budget:  # (the README's own command had none: "no training budget", after a minute)
        raise UserError(f"a study on your own data needs a budget for each of its runs: add e.g. --minutes 5 "
                        f"(or --steps N, --epochs N); on the embedded digits it is {STUDY_STEPS} steps")
    user_train = values.get("train", {})
    small = {k: v for k, v in small_train(user_train).items() if k not in study.train} if on_digits else {}
    train = {**small, **user_train}         # the study's own settings sit between the two (Study.plan)
    model_kwargs = {**(SMALL_MODEL_KWARGS if on_digits else {}), **values.get("model_kwargs", {})}
    return study.plan(budget=budget, seeds=parse_seeds(values.get("seeds", 1)), data=values.get("data"),
                      train=train, model_kwargs=model_kwargs, target=values.get("target"),
                      options={"model": model, "lr": user_train.get("lr")})
