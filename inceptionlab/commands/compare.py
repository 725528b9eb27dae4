"""``inceptionlab compare``: train several models on the same data and budget, then report.

    inceptionlab compare --models googlenet,inception_v3,inception_v4 --steps 500 --out lab/three \\
        --model-kwargs stem=low_res depth_multiplier=0.25
    inceptionlab compare --variant bn:bn_inception --variant no_bn:bn_inception:norm=false,lr=0.01 ...
    inceptionlab compare --plan plan.yaml --out lab/mine
    inceptionlab compare --resume lab/mine          # after an interruption, or to start failed runs again
    inceptionlab compare --resume lab/mine --steps 1000   # every run extended to a larger budget
    inceptionlab compare --resume lab/mine --data ~/moved/photos   # where the lab's data folder moved
"""
from __future__ import annotations

import argparse

# training settings with their own flag (anything else: --set key=value)
SETTING_FLAGS = [("batch_size", int, "images per step"), ("img_size", int, "input size (default: the model's)"),
                 ("lr", float, "learning rate (default: the optimizer's own; AdamW's 0.002 on the digits)"),
                 ("opt", str, "rmsprop_tf, sgd or adamw"),
                 ("sched", str, "learning-rate schedule"), ("smoothing", float, "label smoothing epsilon"),
                 ("limit_per_class", int, "train on at most this many images per class"),
                 ("val_limit_per_class", int, "validate on at most this many images per class"),
                 ("val_split", float, "hold out this fraction of the train data for validation"),
                 ("eval_every", int, "evaluate every N steps (default: each epoch)"),
                 ("clip_grad", float, "clip gradients to this norm (0: off)"),
                 ("threads", int, "CPU threads per run (default 1, so that runs time alike)"),
                 ("workers", int, "data-loading processes")]


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("budget of every run (the first reached ends a run)")
    group.add_argument("--epochs", type=float, help="epochs per run")
    group.add_argument("--steps", type=int, help="optimizer steps per run")
    group.add_argument("--minutes", type=float, help="wall-clock minutes per run")


def add_shared_arguments(parser: argparse.ArgumentParser) -> None:
    """Data, seeds, shared switches and training settings: what compare, study and demo share."""
    parser.add_argument("--data", help="image folder (<class>/ folders, or train/ and val/); default: the "
                                       "embedded 5,000 MNIST digits, trained with the demo's small-data settings "
                                       "(AdamW at lr 0.002, mild crops, no flips, 100 images per class; flags "
                                       "override them, and another --opt without --lr takes its own default lr; "
                                       "the models keep their own width and input size: the demo's are "
                                       "--img-size 28 --model-kwargs stem=low_res depth_multiplier=0.125 "
                                       "min_depth=8)")
    parser.add_argument("--seeds", type=int, help="train every variant with seeds 0..K-1 (default 1)")
    parser.add_argument("--target", type=float, help="top-1 %% whose steps and seconds to reach are reported "
                                                     "(default: 90%% of the best run's best)")
    parser.add_argument("--model-kwargs", nargs="+", action="extend", metavar="KEY=VALUE",
                        help="switches for every model that has them, e.g. stem=low_res depth_multiplier=0.25")
    group = parser.add_argument_group("training settings shared by every run")
    for name, kind, text in SETTING_FLAGS:
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)
    group.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE", dest="settings",
                       help="any other training setting, e.g. --set warmup_steps=100 clip_grad=2.0")
    parser.add_argument("--quiet", action="store_true", help="print only evaluations and the end of each run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", help="comma-separated model names, one run each")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:MODEL[:KEY=VALUE,...]",
                        help="a named run with its own switches and settings (repeatable), "
                             "e.g. no_bn:bn_inception:norm=false,lr=0.01")
    parser.add_argument("--plan", help="a YAML plan file (command-line options override its shared values; "
                                       "a run's own values in the file still win for that run)")
    parser.add_argument("--out", help="lab folder for the runs and the report (default: lab/compare)")
    parser.add_argument("--resume", metavar="LAB_DIR", help="continue an interrupted compare (failed runs start "
                                                           "again; finished ones are kept, or extended to a larger "
                                                           "--steps/--epochs/--minutes; with --data, where the lab's "
                                                           "data folder moved)")
    parser.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a compare")
    parser.add_argument("--title", help="the report's title")
    add_budget_arguments(parser)
    add_shared_arguments(parser)


def plan_values(args) -> dict:
    """The plan keys given on the command line (None and empty left out)."""
    from inceptionlab.train.config import parse_assignments

    values = {k: getattr(args, k, None) for k in ("epochs", "steps", "minutes", "seeds", "target", "data")}
    values = {k: v for k, v in values.items() if v is not None}
    train = {name: getattr(args, name) for name, _, _ in SETTING_FLAGS if getattr(args, name, None) is not None}
    settings = parse_assignments(getattr(args, "settings", None), "setting")
    for key, value in settings.items():  # (`--lr 0.02 --set lr=0.01` trained at 0.01 without a word)
        if key in train:
            from inceptionlab.errors import UserError
            raise UserError(f"setting {key} is given twice (--{key.replace('_', '-')} {train[key]} and --set "
                            f"{key}={value}); keep one")
    train.update(settings)
    if train:
        values["train"] = train
    kwargs = parse_assignments(getattr(args, "model_kwargs", None), "model switch")
    if kwargs:
        values["model_kwargs"] = kwargs
    return values


def refuse_with_resume(args, **more) -> None:
    """--resume continues the plan saved in the lab folder: any option that would change it is an
    error rather than silently ignored, but for a new budget, which extends the runs, and --data, where
    the lab's data folder moved (see `resumed_plan`)."""
    from inceptionlab.errors import UserError
    from inceptionlab.lab.plan import BUDGET_KEYS

    values = plan_values(args)
    flagged = {name for name, _, _ in SETTING_FLAGS}
    given = [f"--{k}" for k in values if k not in ("train", "model_kwargs", "data", *BUDGET_KEYS)]
    given += [f"--{k.replace('_', '-')}" if k in flagged else f"--set {k}=" for k in values.get("train", {})]
    given += ["--model-kwargs"] * ("model_kwargs" in values) + [f"--{k}" for k, v in more.items() if v]
    if given:
        raise UserError(f"--resume continues the plan saved in the lab folder; drop {given[0]} (only --epochs, "
                        f"--steps and --minutes may change: a larger budget extends every run; --data, where the "
                        f"lab's data folder moved; to change the plan, start over with --overwrite)")


def resumed_plan(lab_dir, args):
    """The plan saved in ``lab_dir`` with what --resume may change: a larger budget, which extends every run,
    and --data, where the lab's data folder moved (`run_plan` checks it holds the classes the runs trained on,
    then saves it in plan.yaml)."""
    from inceptionlab.lab import load_lab
    from inceptionlab.lab.plan import BUDGET_KEYS

    plan = load_lab(lab_dir)
    budget = {k: v for k, v in plan_values(args).items() if k in BUDGET_KEYS}
    if budget:  # a finished lab extended: every run that shares the budget goes on to the new one
        plan.budget = budget
    if args.data is not None:
        plan.data = args.data
    return plan


def merge(base: dict, override: dict) -> dict:
    """Plan values: ``override`` wins; train and model_kwargs mappings merge key by key."""
    budgets = ("epochs", "steps", "minutes")
    out = dict(base)
    if any(key in override for key in budgets):  # the command line's budgets replace the file's, together
        for key in budgets:
            out.pop(key, None)
    for key in override.get("train") or {}:  # a setting the file gives at its top level (lr: 1e-3) too:
        if key not in ("train", "model_kwargs"):  # from_dict applies those last, so it beat the command line
            out.pop(key, None)
    for key, value in override.items():
        if key in ("train", "model_kwargs") and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        elif key in ("train", "model_kwargs") and out.get(key) is not None:
            continue  # the file's value is no mapping: the plan check names it (the command line hid it)
        else:
            out[key] = value
    return out


def finish(results: dict, lab_dir, retry_with: str | None = None) -> int:
    """Prints the table and where the report is; 1 when a run failed (``retry_with``: the command that
    starts the failed runs again), else 0."""
    from pathlib import Path

    from inceptionlab.lab.report import terminal_table

    print()
    print(terminal_table(results))
    print(f"\nreport: {Path(lab_dir) / 'report.html'}  (also report.md, results.json and the plots in {lab_dir})")
    failed = [r["name"] for r in results["runs"] if r.get("status") == "failed"]
    if failed:  # a diverged run is a result; a run that raised is not, and scripts must see it
        print(f"{len(failed)} of {len(results['runs'])} run(s) failed ({', '.join(failed)}); their reasons are "
              f"in the report" + (f"; start them again with {retry_with}" if retry_with else "") + "; exit status 1")
        return 1
    return 0


def run(args) -> int:
    import copy

    from inceptionlab.errors import UserError
    from inceptionlab.lab import Plan, parse_variant, run_plan
    from inceptionlab.lab.demo import SMALL_TRAIN, small_train
    from inceptionlab.train.config import RECIPES

    if args.resume:
        from pathlib import Path
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():  # it was ignored
            raise UserError(f"--resume {args.resume} continues the lab in that folder; drop --out {args.out} "
                            f"(copy the lab folder first to continue it elsewhere)")
        refuse_with_resume(args, models=args.models, variant=args.variant, plan=args.plan, title=args.title,
                           overwrite=args.overwrite)
        hint = f"inceptionlab compare --resume {args.resume}"
        return finish(run_plan(resumed_plan(args.resume, args), args.resume, resume=True, quiet_runs=args.quiet,
                               resume_hint=hint), args.resume, retry_with=hint)
    from inceptionlab.train.config import read_yaml

    values = read_yaml(args.plan, "plan file") if args.plan else {}
    if args.plan:  # the file's own mistakes are the file's; what is wrong only after merging is the flags'
        Plan.from_dict(copy.deepcopy(values), where=f"plan file {args.plan}")
    where = "the command line" + (f" (with plan file {args.plan})" if args.plan else "")
    values = merge(values, plan_values(args))
    on_digits = values.get("data") is None
    given = {**(values.get("train") or {}), **{k: v for k, v in values.items() if k in ("opt", "lr")}}
    if on_digits:  # the embedded digits: the demo's and the studies' small-data settings
        values = merge({"train": small_train(given)}, values)  # (no flips: digits are not mirror-symmetric)
    if args.models:
        values["models"] = args.models
    if args.title:
        values["title"] = args.title
    if not values.get("models") and not values.get("runs") and not args.variant:
        raise UserError("nothing to compare: pass --models NAME,NAME, --variant NAME:MODEL[:KEY=VALUE,...] "
                        "or --plan FILE")
    plan = Plan.from_dict(values, where=where, train_where="--set")
    plan.variants += [parse_variant(text) for text in args.variant]
    if on_digits and "lr" not in given and "lr" in plan.train:
        for variant in plan.variants:  # a run of another optimizer: its own lr, not AdamW's
            opt = variant.train.get("opt", plan.train.get("opt"))
            if opt != SMALL_TRAIN["opt"] and "lr" not in variant.train and opt in RECIPES:
                variant.train["lr"] = RECIPES[opt]["lr"]
    out = args.out or "lab/compare"
    hint = f"inceptionlab compare --resume {out}"
    return finish(run_plan(plan, out, overwrite=args.overwrite, quiet_runs=args.quiet, resume_hint=hint), out,
                  retry_with=hint)
