"""``inceptionlab demo``: the main job. Four Inception families on the same data and budget.

    inceptionlab demo                          # the embedded digits, ~4 minutes on a 2-core CPU
    inceptionlab demo --data photos/ --minutes 5
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from inceptionlab.lab.demo import DEMO_MINUTES, DEMO_MODELS

    parser.add_argument("--data", help="an image folder (<class>/ folders, or train/ and val/) instead of the "
                                       "embedded digits; trained at 96x96 and 1/4 width, whatever the stem "
                                       "(--set img_size=N and --model-kwargs change them)")
    parser.add_argument("--out", default="lab/demo", help="lab folder, started over each time (default "
                                                          "lab/demo); a folder holding a compare or a study is refused")
    parser.add_argument("--minutes", type=float, help=f"wall-clock minutes per run (default {DEMO_MINUTES})")
    parser.add_argument("--steps", type=int, help="steps per run (with --minutes too, the first reached ends a run)")
    parser.add_argument("--epochs", type=float, help="epochs per run (with --minutes too, the first reached ends a run)")
    parser.add_argument("--models", help=f"comma-separated models (default {','.join(DEMO_MODELS)})")
    parser.add_argument("--seeds", type=int, help="seeds per model (default 1)")
    parser.add_argument("--model-kwargs", nargs="+", action="extend", metavar="KEY=VALUE",
                        help="switches for every model, e.g. depth_multiplier=0.25")
    parser.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE", dest="settings",
                        help="training settings, e.g. --set img_size=96 limit_per_class=50")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out (failed runs "
                                                              "start again; --data, where its data folder moved)")
    parser.add_argument("--quiet", action="store_true", help="print only evaluations and the end of each run")


def run(args) -> int:
    from inceptionlab.commands.compare import finish, resumed_plan
    from inceptionlab.lab import run_plan
    from inceptionlab.errors import UserError
    from inceptionlab.lab.demo import demo_plan, holds_other_lab
    from inceptionlab.lab.plan import parse_seeds
    from inceptionlab.train.config import parse_assignments

    hint = "inceptionlab demo --resume" + (f" --out {args.out}" if args.out != "lab/demo" else "")
    if args.resume:
        given = [flag for flag, value in (("--minutes", args.minutes), ("--steps", args.steps),
                                          ("--epochs", args.epochs), ("--models", args.models), ("--seeds", args.seeds),
                                          ("--model-kwargs", args.model_kwargs), ("--set", args.settings))
                 if value is not None]
        if given:  # (they were ignored: the saved plan ran)
            raise UserError(f"--resume continues the demo saved in {args.out}; drop {given[0]} (only --data may be "
                            f"given, where the demo's data folder moved; to change it, run the demo again without "
                            f"--resume)")
        return finish(run_plan(resumed_plan(args.out, args), args.out, resume=True, quiet_runs=args.quiet,
                               resume_hint=hint), args.out, retry_with=hint)
    if holds_other_lab(args.out):
        raise UserError(f"{args.out} holds a compare or a study, which the demo (it starts its folder over) "
                        f"would delete; pass another --out")
    from inceptionlab.lab.demo import DEMO_MODELS

    models = [m.strip() for m in (args.models or ",".join(DEMO_MODELS)).split(",") if m.strip()]
    plan = demo_plan(data=args.data, minutes=args.minutes, steps=args.steps, epochs=args.epochs, models=models,
                     seeds=parse_seeds(args.seeds if args.seeds is not None else 1),
                     model_kwargs=parse_assignments(args.model_kwargs, "model switch"),
                     train=parse_assignments(args.settings, "setting"))
    return finish(run_plan(plan, args.out, overwrite=True, quiet_runs=args.quiet, resume_hint=hint), args.out,
                  retry_with=hint)
