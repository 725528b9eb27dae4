"""1x1 convolutions in training: one GEMM (PyTorch's BLAS, MKL) or oneDNN's convolution?

    python benchmarks/pointwise_paths.py                                  # v3, v4, IRv2 at batch 8
    python benchmarks/pointwise_paths.py --models inception_v4 --batch 32

Training runs each 1x1 convolution of a channels-last CPU map as one matrix product
(`inceptionlab.models.layers.pointwise_matmul`), or, where `inceptionlab.cpus.pointwise_path`
says "onednn", as oneDNN's convolution forward and backward. This script measures what decides
between them on the machine at hand:

1. each distinct 1x1 convolution of the model at the batch size (input channels, output channels,
   grid), alone: the forward pass, and forward + backward (input and weight gradients), on each
   path, timed in alternation; milliseconds summed over the model's layers of that shape, and
   GFLOP/s;
2. the whole training step of `inceptionlab benchmark --mode train` (forward, loss, backward, SGD
   step; 299 px, fp32, channels-last) with every 1x1 convolution on one path, then on the other,
   alternating.

Weights are random (timing only); medians of ``--iters`` alternated rounds (after one warm-up
call of each, and ``--warmup`` more training steps of each). Writes
benchmarks/results/pointwise_paths.md and regenerates BENCHMARKS.md (``--results-dir DIR``: DIR's
file only).
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.infer_conv_paths import alternate, convolutions  # noqa: E402
from benchmarks.report import run_script, timing_parser, write_section  # noqa: E402
from inceptionlab import cpus, create_model  # noqa: E402
from inceptionlab.models.layers import is_pointwise, pointwise_matmul  # noqa: E402
from inceptionlab.tools import benchmark as bench  # noqa: E402

PATHS = cpus.POINTWISE_PATHS  # ("gemm", "onednn")


def use_path(path: str) -> None:
    """Every later 1x1 convolution in training runs on ``path``."""
    os.environ["INCEPTIONLAB_POINTWISE"] = path
    cpus.pointwise_path.cache_clear()


def on_path(path: str, fn):
    def run():
        use_path(path)
        return fn()
    return run


def layer_steps(conv: nn.Conv2d, shape: tuple, batch: int) -> dict:
    """{(path, "forward" | "forward + backward"): callable} for one 1x1 convolution."""
    x = torch.randn(batch, *shape[1:]).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = conv.weight.detach().clone().contiguous(memory_format=torch.channels_last).requires_grad_()
    grad = torch.randn(batch, conv.out_channels, *shape[2:]).contiguous(memory_format=torch.channels_last)

    def forward():
        with torch.no_grad():
            return pointwise_matmul(x, weight, None)

    def forward_backward():
        x.grad = weight.grad = None
        pointwise_matmul(x, weight, None).backward(grad)

    return {(path, kind): on_path(path, fn) for path in PATHS
            for kind, fn in (("forward", forward), ("forward + backward", forward_backward))}


def layer_table(name: str, batch: int, iters: int) -> list[str]:
    model = create_model(name)
    size = model.pretrained_cfg["input_size"][-1]
    counts, measured = {}, {}
    for conv, shape in convolutions(model, size):
        if not is_pointwise(conv):
            continue
        key = (conv.in_channels, conv.out_channels, shape[2:])
        if key not in measured:
            measured[key] = alternate(layer_steps(conv, shape, batch), iters)
        counts[key] = counts.get(key, 0) + 1
    lines = [f"### {name}, batch {batch}: each 1x1 convolution, alone", "",
             "| 1x1 convolution (in -> out, grid) | layers | forward GEMM ms | forward oneDNN ms | "
             "fwd+bwd GEMM ms | fwd+bwd oneDNN ms | fwd+bwd GEMM GFLOP/s | fwd+bwd oneDNN GFLOP/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    totals = {k: 0.0 for k in measured[next(iter(measured))]}
    for key, n in sorted(counts.items(), key=lambda kv: -kv[1] * measured[kv[0]][("gemm", "forward + backward")]):
        cin, cout, grid = key
        t = measured[key]
        flops = 3 * 2 * batch * grid[0] * grid[1] * cin * cout  # forward, input gradient, weight gradient
        for k in totals:
            totals[k] += n * t[k]
        fb = "forward + backward"
        lines.append(f"| {cin} -> {cout}, {grid[0]}x{grid[1]} | {n} | {n * t[('gemm', 'forward')] * 1e3:.1f} | "
                     f"{n * t[('onednn', 'forward')] * 1e3:.1f} | {n * t[('gemm', fb)] * 1e3:.1f} | "
                     f"{n * t[('onednn', fb)] * 1e3:.1f} | {flops / t[('gemm', fb)] / 1e9:.0f} | "
                     f"{flops / t[('onednn', fb)] / 1e9:.0f} |")
    lines.append(f"| **all** | {sum(counts.values())} | {totals[('gemm', 'forward')] * 1e3:.0f} | "
                 f"{totals[('onednn', 'forward')] * 1e3:.0f} | {totals[('gemm', 'forward + backward')] * 1e3:.0f} | "
                 f"{totals[('onednn', 'forward + backward')] * 1e3:.0f} | | |")
    return lines + [""]


def step_times(name: str, batch: int, warmup: int, iters: int) -> dict:
    """Median seconds of our whole training step with every 1x1 convolution on each path."""
    cfg = bench.Config(name, 299, batch, "train")
    torch.manual_seed(0)
    step = bench.train_step(bench._our_model(cfg), cfg, True, torch.device("cpu"))
    steps = {path: on_path(path, step) for path in PATHS}
    for _ in range(warmup):
        for run in steps.values():
            run()
    return alternate(steps, iters)


def main(argv=None) -> int:
    parser = timing_parser(__doc__, iters=5, warmup=1, batch=8)
    parser.add_argument("--models", nargs="+", default=["inception_v3", "inception_v4", "inception_resnet_v2"])
    parser.add_argument("--no-steps", action="store_true", help="the layer tables only")
    args = parser.parse_args(argv)
    bench.check_configs([bench.Config(m, 299, args.batch, "train") for m in args.models])
    if not torch.backends.mkldnn.is_available():
        from inceptionlab.errors import UserError
        raise UserError("this PyTorch has no oneDNN (torch.backends.mkldnn), so there is only the GEMM path to time")
    torch.set_num_threads(args.threads)
    start = time.time()
    command = "python benchmarks/pointwise_paths.py " + " ".join(argv if argv is not None else sys.argv[1:])
    info = bench.machine()
    chosen = os.environ.get("INCEPTIONLAB_POINTWISE")
    cpus.pointwise_path.cache_clear()
    default = cpus.pointwise_path()
    lines = [f"On this machine training takes the **{default}** path by default "
             f"(`inceptionlab.cpus.pointwise_path`{', from INCEPTIONLAB_POINTWISE' if chosen else ''}).", ""]
    steps = []
    try:
        for name in args.models:
            section = layer_table(name, args.batch, args.iters)
            if not args.no_steps:
                t = step_times(name, args.batch, args.warmup, args.iters)
                steps.append(f"| {name} | {args.batch} | {t['gemm'] * 1e3:.0f} | {t['onednn'] * 1e3:.0f} | "
                             f"{t['gemm'] / t['onednn']:.3f}x |")
            print("\n".join(section + steps[-1:]), flush=True)
            lines += section
    finally:
        if chosen is None:
            os.environ.pop("INCEPTIONLAB_POINTWISE", None)
        else:
            os.environ["INCEPTIONLAB_POINTWISE"] = chosen
        cpus.pointwise_path.cache_clear()
    if steps:
        lines += ["### The whole training step, 1x1 convolutions on one path or the other", "",
                  "| model | batch | GEMM ms | oneDNN ms | oneDNN's speed-up |", "|---|---:|---:|---:|---:|",
                  *steps, ""]
    path = write_section("pointwise_paths", command, info,
                         "Training's 1x1 convolutions as one GEMM (MKL) or as oneDNN's convolution, layer by layer "
                         "and in the whole step (299 px, fp32, channels-last); medians of alternated rounds. See "
                         "the script's docstring.", lines, folder=args.results_dir)
    print(f"wrote {path} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    run_script(main)
