"""``inceptionlab eval``: top-1, top-5, loss, per-class accuracy and a confusion matrix.

    inceptionlab eval --run runs/v3                      # the run's final (EMA) weights, its val data
    inceptionlab eval --model inception_v3 --weights v3.safetensors --data photos/
    inceptionlab eval --run runs/v3 --data test_photos/ --all-images   # a test folder, every image
    inceptionlab eval --run runs/v3 --no-ema             # the raw weights of its latest checkpoint
    inceptionlab eval --run runs/v3 --json               # eval.json's object on stdout, for scripts
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys

from inceptionlab.commands.summary import add_threads, apply_threads, image_size, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", metavar="RUN_DIR", help="a training run's --out folder")
    parser.add_argument("--model", help="registry name, or a directory written by save_pretrained")
    parser.add_argument("--weights", metavar="FILE", help="weights file (ours, torchvision or timm layout)")
    parser.add_argument("--data", help="image folder or CIFAR folder (default: the run's data, or the digits)")
    parser.add_argument("--out", help="where to write confusion_matrix.csv/.png and eval.json (default: the run's "
                                      "folder for its own data; else eval_<data folder>[_<weights file>][_all]"
                                      "[_raw] beside the run or the weights)")
    parser.add_argument("--model-kwargs", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="model switches")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="default: 64")
    parser.add_argument("--img-size", type=image_size, help="default: the model's (a run's: its own)")
    parser.add_argument("--val-split", type=float, help="the held-out fraction scored (default: 0.2, as training's)")
    parser.add_argument("--all-images", action="store_true",
                        help="score every image of --data (a test folder), not its validation split")
    parser.add_argument("--limit-per-class", type=positive_int, metavar="N",
                        help="score at most N images of each class (a quick look at a large test folder)")
    parser.add_argument("--seed", type=int, help="seed of the validation split (default 0)")
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes (default: 0)")
    add_threads(parser)
    parser.add_argument("--no-ema", dest="ema", action="store_false",
                        help="score the raw weights, not the EMA, of a run that kept one (train --ema-decay): a "
                             "checkpoint's 'model' weights. With --run (or --model RUN_DIR) its latest checkpoint, "
                             "the final step of a finished run (model.safetensors holds that step's EMA); for "
                             "another, e.g. the best, pass --model RUN_DIR --weights RUN_DIR/checkpoints/best.pt "
                             "--data DIR --no-ema. Without --out its scores go to eval_raw (beside the EMA's eval.json, not over "
                             "it); eval.json records the file scored and whether it was the EMA")
    parser.add_argument("--json", action="store_true",
                        help="print eval.json's object on stdout and nothing else (the summary lines go to "
                             "stderr); eval.json is written as ever")
    parser.add_argument("--amp", nargs="?", const=True, default=False, metavar="bf16|fp16",
                        help="autocast: bf16 (alone: bf16 on the CPU), fp16 on CUDA; false or leave out for fp32")


def run(args: argparse.Namespace) -> int:
    from inceptionlab.errors import UserError
    from inceptionlab.train import evaluate
    from inceptionlab.train.config import parse_model_kwargs

    if (args.run is None) == (args.model is None):
        raise UserError("pass --run RUN_DIR (a training run) or --model NAME --weights FILE, "
                        + ("not both" if args.run else "one of them"))
    if args.all_images and args.val_split is not None:
        raise UserError("--all-images scores every image, so --val-split would not be used; drop one of them")
    if args.run:  # the run's own weights, switches, size, split and seed: refused rather than ignored
        given = [flag for flag, value in (("--weights", args.weights), ("--model-kwargs", args.model_kwargs),
                                          ("--img-size", args.img_size), ("--val-split", args.val_split),
                                          ("--seed", args.seed)) if value not in (None, [])]
        if given:
            raise UserError(f"--run evaluates the run as it was trained; drop {given[0]} (or evaluate "
                            f"--model {args.run} --data DIR with your own settings)")
    apply_threads(args)
    # with --json, stdout is the JSON document alone: what a person reads goes to stderr
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        report = evaluate(args.run, model=args.model, weights=args.weights, data=args.data, out=args.out,
                          batch_size=args.batch_size, img_size=args.img_size,
                          model_kwargs=parse_model_kwargs(args.model_kwargs), workers=args.workers,
                          val_split=args.val_split, seed=0 if args.seed is None else args.seed, amp=args.amp,
                          all_images=args.all_images, limit_per_class=args.limit_per_class, ema=args.ema,
                          quiet=False)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0
