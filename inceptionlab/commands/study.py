"""``inceptionlab study NAME``: measure one of the papers' claims on your data.

    inceptionlab study batchnorm                       # on the embedded digits, small models
    inceptionlab study label_smoothing --data photos/ --epochs 5 --model-kwargs depth_multiplier=0.5
    inceptionlab study --list
"""
from __future__ import annotations

import argparse

from inceptionlab.commands.compare import (add_budget_arguments, add_shared_arguments, finish, plan_values,
                                           refuse_with_resume, resumed_plan)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="batchnorm, factorization, label_smoothing, grid_reduction, "
                                                "residual, aux or family")
    parser.add_argument("--list", action="store_true", help="list the studies and their claims")
    parser.add_argument("--model", help="the model a one-model study varies (default inception_v3)")
    parser.add_argument("--out", help="lab folder (default: lab/<study>)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted study in --out (failed runs "
                                                              "start again; a larger --steps/--epochs/--minutes "
                                                              "extends every run; --data, where its data folder moved)")
    parser.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a study")
    add_budget_arguments(parser)
    add_shared_arguments(parser)


def run(args) -> int:
    from inceptionlab.errors import UserError
    from inceptionlab.lab import STUDIES, get_study, run_plan
    from inceptionlab.lab.demo import study_plan

    if args.list:
        for study in STUDIES.values():
            print(f"{study.name:<16} {study.claim}")
        return 0
    if not args.name:
        raise UserError(f"name a study: {', '.join(STUDIES)} (inceptionlab study --list shows their claims)")
    study = get_study(args.name)
    out = args.out or f"lab/{study.name}"
    hint = f"inceptionlab study {study.name} --resume" + (f" --out {args.out}" if args.out else "")
    if args.resume:
        refuse_with_resume(args, model=args.model, overwrite=args.overwrite)
        plan = resumed_plan(out, args)  # a larger budget: the verdicts say "give the runs a larger budget"
        if plan.study != study.name:
            raise UserError(f"{out} holds {plan.study or 'a compare'}, not the {study.name} study")
        return finish(run_plan(plan, out, resume=True, quiet_runs=args.quiet, resume_hint=hint), out, retry_with=hint)
    plan = study_plan(study, plan_values(args), model=args.model)  # (run_plan says the claim, once it is checked)
    return finish(run_plan(plan, out, overwrite=args.overwrite, quiet_runs=args.quiet, resume_hint=hint), out,
                  retry_with=hint)
