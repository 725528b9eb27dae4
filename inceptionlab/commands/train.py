"""``inceptionlab train``: train a model of the zoo; ``--resume RUN_DIR`` continues a run.

    inceptionlab train --model inception_v3 --data photos/ --out runs/v3 --epochs 10 \\
        --model-kwargs stem=low_res depth_multiplier=0.25
    inceptionlab train --config recipe.yaml --lr 0.01        # flags override the file
    torchrun --nproc_per_node=2 -m inceptionlab train ...    # DistributedDataParallel

Exit status: 0 finished, 1 failed, 3 diverged, 130 interrupted (a checkpoint was saved).
"""
from __future__ import annotations

import argparse
import sys

from inceptionlab.errors import UserError

EXIT = {"finished": 0, "failed": 1, "diverged": 3, "interrupted": 130}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # only the flags given override the config file
    parser.set_defaults()
    run = parser.add_argument_group("run")
    run.add_argument("--model", default=S, help="registry name, e.g. inception_v3 (see `inceptionlab summary --all`)")
    run.add_argument("--data", default=S, help="image folder (class folders, train/ + val/) or CIFAR folder; "
                                               "default: the embedded MNIST digits")
    run.add_argument("--out", default=S, help="run directory (checkpoints, metrics, weights)")
    run.add_argument("--config", metavar="FILE", help="YAML file of TrainConfig keys; flags override it")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue that run from its latest checkpoint; with "
                                                         "--epochs/--steps/--minutes, a new budget (extends a "
                                                         "finished run); with --data, where its data folder "
                                                         "moved")
    run.add_argument("--model-kwargs", nargs="+", action="extend", default=S, metavar="KEY=VALUE",
                     help="model switches, e.g. stem=low_res depth_multiplier=0.25 norm=false aux_logits=true")
    run.add_argument("--weights", default=S, help="initial weights (fine-tuning); a classifier of another "
                                                  "size is replaced")
    budget = parser.add_argument_group("budget (the first reached ends the run)")
    budget.add_argument("--epochs", type=float, default=S)
    budget.add_argument("--steps", type=int, default=S)
    budget.add_argument("--minutes", type=float, default=S,
                        help="wall clock; stops at the end of a step. Alone, the schedule (cosine, decay) follows "
                             "the clock; beside --steps or --epochs it follows those, so a clock that runs out "
                             "first stops it before its end")
    data = parser.add_argument_group("data")
    data.add_argument("--batch-size", type=int, default=S, help="global batch (split over processes); 32")
    data.add_argument("--img-size", type=int, default=S, help="default: the model's, or the data's for low_res")
    data.add_argument("--val-split", type=float, default=S, help="hold out this fraction of train for validation (default: 0.2, or none beside a val/ folder)")
    data.add_argument("--limit-per-class", type=int, default=S, help="at most this many training images per class")
    data.add_argument("--val-limit-per-class", type=int, default=S,
                      help="at most this many validation images per class (a quick look at a large test folder)")
    data.add_argument("--strict", action=argparse.BooleanOptionalAction, default=S, help="an unreadable image is an error (default: off: skipped, and listed)")
    data.add_argument("--workers", type=int, default=S, help="data-loading processes (default: 0, decode in the training process); each "
                      "draws its own random crops, so another count gives other crops (the same order)")
    data.add_argument("--augment", action=argparse.BooleanOptionalAction, default=S,
                      help="random crop and flip in training (default: on); --no-augment trains on the evaluation "
                           "crop")
    data.add_argument("--crop-scale", type=float, nargs=2, default=S, metavar=("LOW", "HIGH"),
                      help="area range of the random crop; 0.08 1.0")
    data.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=S,
                      help="random horizontal flips in training (default: on)")
    data.add_argument("--distort", action=argparse.BooleanOptionalAction, default=S,
                      help="the papers' colour distortions (TF-slim's distort_color: brightness +-32/255 added, "
                           "saturation and contrast x0.5-1.5, hue +-0.2, in a random one of its four orders)")
    data.add_argument("--crop-pct", type=float, default=S, help="evaluation crop fraction (default: the model's, e.g. 0.875; 1.0 for data "
                                                                      "trained at its own size: the embedded digits, CIFAR, an image "
                                                                      "folder of square pictures of one size, such as 32x32)")
    opt = parser.add_argument_group("optimization")
    opt.add_argument("--opt", default=S, help="rmsprop_tf (the papers', the default), sgd or adamw; each brings its "
                                              "own lr, schedule, weight decay and clipping unless given (rmsprop_tf: "
                                              "0.045, exp_staircase, 4e-5, 2.0; sgd: 0.05, cosine, 1e-4, off; adamw: "
                                              "1e-3, cosine, 0.05, off)")
    opt.add_argument("--lr", type=float, default=S, help="default by optimizer: 0.045 / 0.05 / 1e-3")
    opt.add_argument("--momentum", type=float, default=S, help="default: 0.9")
    opt.add_argument("--sched", default=S, help="exp_staircase, step, cosine or constant (default: the "
                                                "optimizer's: exp_staircase for rmsprop_tf, cosine for sgd and adamw)")
    opt.add_argument("--decay-epochs", type=float, default=S, help="staircase period (2 for exp_staircase)")
    opt.add_argument("--decay-rate", type=float, default=S, help="staircase factor (0.94 for exp_staircase)")
    opt.add_argument("--warmup-steps", type=int, default=S, help="linear warm-up of the learning rate (default: 0)")
    opt.add_argument("--weight-decay", type=float, default=S, help="not applied to BN and biases (default by "
                                                                       "optimizer: 4e-5 / 1e-4 / 0.05)")
    opt.add_argument("--smoothing", type=float, default=S, help="label smoothing; 0.1")
    opt.add_argument("--aux-weight", type=float, default=S, help="0.3 per GoogLeNet head, 0.4 otherwise; only with the heads on (--model-kwargs aux_logits=true); "
                          "one per head in a --config file (aux_weight: [0.3, 0.1])")
    opt.add_argument("--clip-grad", type=float, default=S, help="max gradient norm (2.0 with rmsprop_tf; 0 = off)")
    opt.add_argument("--ema-decay", type=float, default=S, help="e.g. 0.9999: evaluate the averaged weights")
    opt.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=S,
                     help="keep every batch norm fixed, its statistics and its scale and shift (fine-tuning "
                          "with small batches)")
    opt.add_argument("--freeze-until", default=S, metavar="BLOCK",
                     help="fine-tuning: keep every block up to and including BLOCK fixed (e.g. mixed_6e)")
    opt.add_argument("--body-lr-scale", type=float, default=S, metavar="SCALE",
                     help="fine-tuning: every layer but the classifier (and the aux heads) learns at the learning "
                          "rate times SCALE, e.g. 0.1 (default: 1)")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--amp", nargs="?", const=True, default=S, metavar="bf16|fp16",
                       help="mixed precision (bf16 on the CPU)")
    speed.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=S,
                       help="channels-last memory format; default: on for the CPU")
    speed.add_argument("--compile", action=argparse.BooleanOptionalAction, default=S)
    speed.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=S,
                       help="recompute each block's maps in the backward pass: less memory, slower steps")
    speed.add_argument("--threads", type=int, default=S,
                       help="CPU threads per process (default: PyTorch's, $OMP_NUM_THREADS or one per core; pass 1 "
                            "on a busy machine); summary.json records the count used")
    speed.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=S, help="multi-process: global BN statistics")
    book = parser.add_argument_group("bookkeeping")
    book.add_argument("--seed", type=int, default=S, help="default: 0")
    book.add_argument("--checkpoint-every", type=int, default=S, metavar="STEPS",
                      help="default: at every evaluation")
    book.add_argument("--keep-checkpoints", type=int, default=S, help="latest step checkpoints kept (default: 3; best.pt besides)")
    book.add_argument("--eval-every", type=int, default=S, metavar="STEPS", help="default: every epoch")
    book.add_argument("--log-every", type=int, default=S, metavar="STEPS", help="default: every 30 s")
    book.add_argument("--quiet", action=argparse.BooleanOptionalAction, default=S, help="no progress bar or step lines")


def config_from_args(args: argparse.Namespace):
    """The TrainConfig of the command line: defaults < --config file < flags."""
    from inceptionlab.train.config import TrainConfig, parse_model_kwargs, read_yaml

    values = read_yaml(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "resume")}
    if "model_kwargs" in flags:
        in_file = values.get("model_kwargs") or {}
        if not isinstance(in_file, dict):  # (merging it with the flag's raised a TypeError traceback)
            raise UserError(f"model_kwargs in {args.config} must be a mapping of switch: value, got {in_file!r}; "
                            f"e.g. model_kwargs: {{stem: low_res}}")
        flags["model_kwargs"] = {**in_file, **parse_model_kwargs(flags["model_kwargs"])}
    if "crop_scale" in flags:
        flags["crop_scale"] = tuple(flags["crop_scale"])
    if args.config:
        _budget_follows_the_flags(values, flags, args.config)
        _defaults_follow_the_flags(values, flags, args.config)
    return TrainConfig.from_dict({**values, **flags}, where=args.config or "command line")


def _budget_follows_the_flags(values: dict, flags: dict, where: str) -> None:
    """The budget (epochs, steps, minutes) is one setting: a budget flag replaces the file's whole
    budget, as on --resume (`--config RUN/config.yaml --epochs 1` kept the file's steps: 30, which
    capped the new budget without a word). Says what it dropped, on stderr."""
    from inceptionlab.train.engine import BUDGET_KEYS

    given = [key for key in BUDGET_KEYS if key in flags]
    if not given:
        return
    dropped = [f"{key} {values.pop(key)}" for key in BUDGET_KEYS
               if key not in flags and values.get(key) is not None]
    for key in BUDGET_KEYS:
        values.pop(key, None)  # (a null one too)
    if dropped:
        flag = " ".join(f"--{key} {flags[key]:g}" for key in given)
        print(f"note: {flag} replaces the budget in {where} ({', '.join(dropped)} dropped)", file=sys.stderr)


def _defaults_follow_the_flags(values: dict, flags: dict, where: str) -> None:
    """A run's config.yaml holds what its optimizer and schedule filled in (lr 0.045, exp_staircase,
    decay 2/0.94, ...). Where a flag changes the optimizer or the schedule, the file's values that
    are the old one's defaults are dropped from ``values``, so that the new one's apply: `--config
    RUN/config.yaml --opt adamw` trained AdamW at RMSProp's lr 0.045 with its clipping and decay,
    and `--sched cosine` was refused for a decay_epochs the user never gave. Values the file set
    otherwise stay (and are checked as given). Says what it dropped, on stderr."""
    from inceptionlab.train.config import DECAY, RECIPES, TrainConfig

    dropped = []
    old_opt, new_opt = values.get("opt", TrainConfig.opt), flags.get("opt", values.get("opt", TrainConfig.opt))
    if new_opt != old_opt and old_opt in RECIPES:
        for key, default in RECIPES[old_opt].items():
            if key not in flags and values.get(key) == default:
                del values[key]
                dropped.append(key)
    old_sched = values.get("sched") or RECIPES.get(old_opt, {}).get("sched")
    new_sched = flags.get("sched") or values.get("sched") or RECIPES.get(new_opt, {}).get("sched")
    if new_sched != old_sched and old_sched in DECAY:
        for key, default in zip(("decay_epochs", "decay_rate"), DECAY[old_sched]):
            if key not in flags and values.get(key) == default:
                del values[key]
                dropped.append(key)
    if dropped:
        changed = " ".join(f"--{k} {flags[k]}" for k in ("opt", "sched") if k in flags)
        print(f"note: {changed}: {', '.join(dropped)} in {where} were {old_opt if new_opt != old_opt else old_sched}'s "
              f"defaults, and are dropped for {new_opt if new_opt != old_opt else new_sched}'s (give them as flags to "
              f"keep them)", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from inceptionlab.train import train

    if args.resume:
        budget = {k: getattr(args, k) for k in ("epochs", "steps", "minutes") if k in vars(args)}
        extra = sorted(k for k in vars(args)
                       if k not in ("command", "config", "resume", "quiet", "threads", "data", "grad_checkpointing",
                                    *budget))
        if extra or args.config:  # named as typed: --no-augment, not --augment
            negated = extra and getattr(args, extra[0]) is False
            given = "--" + ("no-" if negated else "") + (extra[0].replace("_", "-") if extra else "config")
            raise UserError(f"--resume continues with the run's saved configuration; drop {given} "
                            f"(only --epochs, --steps and --minutes may change: a larger budget extends the run; "
                            f"--data, where the run's data folder moved; --threads, which changes results at "
                            f"rounding level only; and --grad-checkpointing, which changes memory, not results)")
        # --quiet / --no-quiet hold for this resume only (--no-quiet was ignored, and --quiet was saved)
        summary = train(resume=args.resume, quiet=getattr(args, "quiet", None),
                        budget=budget or None, threads=getattr(args, "threads", None), data=getattr(args, "data", None),
                        grad_checkpointing=getattr(args, "grad_checkpointing", None))
    else:
        summary = train(config_from_args(args))
    status = summary["status"]
    if status in ("failed", "diverged"):
        # the run's last line said why; on one terminal it is not said twice (stderr alone keeps it)
        shown = getattr(args, "quiet", None) is not True and sys.stdout.isatty() and sys.stderr.isatty()
        print(f"inceptionlab train: {status}" + (f" (exit status {EXIT[status]})" if shown else
                                                  f": {summary['message']}"), file=sys.stderr)
    return EXIT.get(status, 1)
