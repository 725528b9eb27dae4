"""``inceptionlab study NAME``: measure one of the papers' claims on your data.

    inceptionlab study batchnorm                       # on the embedded digits, small models
    inceptionlab study label_smoothing --data photos/ --epochs 5 --model-kwargs depth_multiplier=0.5
    inceptionlab study --list
"""
from __future__ import annotations

import argparse

from inceptionlab.commands.compare import (add_budget_arguments, add_shared_arguments, finish, plan_values,
                                           refuse_with_resume)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="batchnorm, factorization, label_smoothing, grid_reduction, "
                                                "residual, aux or family")
    parser.add_argument("--list", action="store_true", help="list the studies and their claims")
    parser.add_argument("--model", help="the model a one-model study varies (default inception_v3)")
    parser.add_argument("--out", help="lab folder (default: lab/<study>)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted study in --out (failed runs "
                                                              "start again)")
    parser.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a study")
    add_budget_arguments(parser)
    add_shared_arguments(parser)


def run(args) -> int:
    from inceptionlab.errors import UserError
    from inceptionlab.lab import STUDIES, get_study, load_lab, run_plan
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
        refuse_with_resume(args, extends=True, model=args.model, overwrite=args.overwrite)
        plan = load_lab(out)
        if plan.study != study.name:
            raise UserError(f"{out} holds {plan.study or 'a compare'}, not the {study.name} study")
        from inceptionlab.lab.plan import BUDGET_KEYS
        budget = {k: v for k, v in plan_values(args).items() if k in BUDGET_KEYS}
        if budget:  # the verdicts say "give the runs a larger budget": extend every run, as compare --resume does
            plan.budget = budget
        return finish(run_plan(plan, out, resume=True, quiet_runs=args.quiet, resume_hint=hint), out, retry_with=hint)
    plan = study_plan(study, plan_values(args), model=args.model)  # (run_plan says the claim, once it is checked)
    return finish(run_plan(plan, out, overwrite=args.overwrite, quiet_runs=args.quiet, resume_hint=hint), out,
                  retry_with=hint)
