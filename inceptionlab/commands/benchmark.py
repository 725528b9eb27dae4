"""``inceptionlab benchmark``: images/s, step time and GFLOP/s against this machine's peak.

    inceptionlab benchmark --models inception_v3 inception_v4 --batch-size 8 32 --mode infer --reference timm
    inceptionlab benchmark --models inception_v3 --mode train --batch-size 8 --reference timm --memory
    inceptionlab benchmark --models googlenet --img-size 224 --runtime onnxruntime

Prints one row per configuration (model x batch size) and writes them as CSV (``--out``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from inceptionlab.commands.summary import (add_model_kwargs, add_threads, apply_threads, image_size, parse_model_kwargs,
                                          positive_int)
from inceptionlab.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=["inception_v3"],
                        help="registered model names, or directories written by training")
    parser.add_argument("--img-size", type=image_size, default=None, help="input size (default: each model's)")
    parser.add_argument("--batch-size", type=positive_int, nargs="+", default=[8], help="one or more batch sizes")
    parser.add_argument("--mode", choices=("infer", "train"), default="infer")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--channels-last", dest="channels_last", action="store_true", default=True,
                        help="channels-last memory format (the default)")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models (slow first step)")
    parser.add_argument("--reference", choices=("timm", "torchvision"), default=None,
                        help="time the same architecture from this library in alternation, and show the ratio")
    parser.add_argument("--runtime", choices=("torch", "onnxruntime"), default="torch",
                        help="run our model in PyTorch, or export it to ONNX and run it in onnxruntime")
    parser.add_argument("--no-fast", dest="fast", action="store_false",
                        help="our plain eager model, without optimize_for_inference / the training fast path")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5, help="timed iterations (the median is reported)")
    add_threads(parser)
    parser.add_argument("--memory", action="store_true",
                        help="train mode: also the peak resident memory of a training step (fresh processes)")
    parser.add_argument("--out", default="benchmark.csv", help="the CSV file to write (default: benchmark.csv "
                                                               "in the current folder); the rows are added to an "
                                                               "existing benchmark CSV")
    add_model_kwargs(parser)


def run(args: argparse.Namespace) -> int:
    from inceptionlab.tools import benchmark

    apply_threads(args)
    if args.warmup < 0 or args.iters < 1:
        raise UserError("--warmup must be >= 0 and --iters >= 1")
    if args.runtime == "onnxruntime" and args.mode == "train":
        raise UserError("--runtime onnxruntime times inference only; use --mode infer")
    if args.runtime == "onnxruntime" and args.precision != "fp32":
        raise UserError("--runtime onnxruntime runs fp32 only; drop --precision")
    if args.runtime == "onnxruntime" and args.compile:  # (it was accepted, and the row said compile=yes)
        raise UserError("--compile compiles PyTorch models, and onnxruntime runs the exported graph; drop --compile")
    if args.memory and args.mode != "train":
        raise UserError("--memory measures the peak memory of a training step; add --mode train")
    if args.mode == "train" and 1 in args.batch_size:
        raise UserError("a training step with batch norm needs at least 2 images per batch (its statistics "
                        "of one image on a 1x1 grid are undefined); pass --batch-size 2 or more")
    benchmark.check_csv_target(args.out)  # before the minutes of timing, not after
    kwargs = parse_model_kwargs(args.model_kwargs)
    configs = []
    for name in args.models:
        size = args.img_size or benchmark.architecture(name, kwargs)[2].get("input_size", (3, 299, 299))[-1]
        for batch in args.batch_size:
            configs.append(benchmark.Config(name, size, batch, args.mode, args.precision, args.channels_last,
                                            args.compile, args.runtime, args.reference, args.fast, kwargs))
    info = benchmark.machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['threads']} torch threads, torch {info['torch']}"
          + (f", load average {info['load_average']}" if "load_average" in info else ""))
    rows, _ = benchmark.benchmark(configs, args.warmup, args.iters, memory=args.memory)
    print()
    print(benchmark.format_rows(rows))
    before = len(benchmark.read_csv(args.out)) if Path(args.out).is_file() else 0
    path = benchmark.write_csv(rows, args.out, append=True)
    print(f"\nwrote {path}" + (f" ({len(rows)} rows added to its {before})" if before else ""))
    return 0
