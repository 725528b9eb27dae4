"""Where a training step's time goes, ours against timm's: the profiler's self time per operation,
summed into categories (convolutions, 1x1 convolutions, batch norm, ReLU, pooling, concatenation
and copies, gradient accumulation, optimizer, the rest).

    python benchmarks/train_breakdown.py                       # v3, v4, IRv2 at batch 8
    python benchmarks/train_breakdown.py --models inception_v3 --batches 32

The steps are those of the benchmark (`inceptionlab.tools.benchmark.train_step`: 299 px, fp32,
channels-last, one thread), profiled in alternation, ours then timm's, after warm-up. The profiler
adds a few microseconds per operation, so the totals run a little above the benchmark's step times.
Writes benchmarks/results/train_breakdown.md and regenerates BENCHMARKS.md (``--results-dir DIR``:
DIR's file only).

The last column answers one question: with the convolutions as they are (the same oneDNN and BLAS
kernels on both sides), how small would everything else have to be for our step to take
1/1.10 of timm's (issue 5's training target)?
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import TARGETS, add_results_dir, run_script, write_section  # noqa: E402
from inceptionlab.tools import benchmark as bench  # noqa: E402

# (category, the operations whose self time it sums); the first match wins, in this order
CATEGORIES = [
    ("convolutions (oneDNN)", ("aten::mkldnn_convolution", "aten::convolution_backward",
                               "mkldnn::_convolution_pointwise")),
    ("1x1 convolutions (GEMM, im2col)", ("aten::mm", "aten::addmm", "aten::_slow_conv2d_forward",
                                         "aten::_slow_conv2d_backward")),
    ("batch norm", ("aten::native_batch_norm", "aten::native_batch_norm_backward",
                    "aten::_native_batch_norm_legit", "aten::_native_batch_norm_legit_no_training")),
    ("batch norm + ReLU, fused", ("_BatchNormReLU",)),  # ours (inceptionlab/models/fused_norm.py), both ways
    ("ReLU", ("aten::clamp_min_", "aten::clamp_min", "aten::relu_", "aten::relu", "aten::threshold_backward")),
    ("pooling", ("aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward", "aten::avg_pool2d",
                 "aten::avg_pool2d_backward", "aten::adaptive_avg_pool2d", "aten::mean", "aten::sum")),
    ("concatenation, copies", ("aten::cat", "aten::copy_", "aten::clone", "aten::_to_copy", "_CopyInto")),
    ("gradient accumulation, zeroing", ("aten::add", "aten::add_", "aten::fill_", "aten::zero_")),
    ("optimizer", ("aten::_fused_sgd_", "aten::_foreach_", "Optimizer.")),  # and whatever runs inside its step
]
CONVOLUTIONS = {"convolutions (oneDNN)", "1x1 convolutions (GEMM, im2col)"}


def category(op: str) -> str:
    for name, prefixes in CATEGORIES:
        if op.startswith(prefixes):
            return name
    return "the rest (allocation, dispatch, autograd)"


def _in_optimizer(event) -> bool:
    while event is not None:
        if event.name.startswith("Optimizer."):  # the step and zero_grad ranges torch.optim records
            return True
        event = event.cpu_parent
    return False


def profile_step(step) -> dict[str, float]:
    """Milliseconds of self time per category in one profiled call of ``step``; every operation
    run inside the optimizer's step or zero_grad counts as optimizer."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.events():
        name = "optimizer" if _in_optimizer(event) else category(event.name)
        totals[name] += event.self_cpu_time_total / 1e3
    return dict(totals)


def breakdown(model: str, batch: int, warmup: int, repeats: int) -> tuple[dict, dict]:
    """(ours, timm's): milliseconds per category per step, the two profiled in alternation."""
    device = torch.device("cpu")
    steps = {}
    for side in ("ours", "timm"):
        cfg = bench.Config(model, 299, batch, "train", reference=None if side == "ours" else "timm")
        torch.manual_seed(0)
        net = bench._our_model(cfg) if side == "ours" else bench.reference_model("timm", model)
        steps[side] = bench.train_step(net, cfg, side == "ours", device)
    for _ in range(warmup):
        for step in steps.values():
            step()
    sums = {side: defaultdict(float) for side in steps}
    for _ in range(repeats):
        for side, step in steps.items():
            for key, ms in profile_step(step).items():
                sums[side][key] += ms / repeats
    return dict(sums["ours"]), dict(sums["timm"])


def table(model: str, batch: int, ours: dict, theirs: dict) -> list[str]:
    names = [c for c, _ in CATEGORIES] + ["the rest (allocation, dispatch, autograd)"]
    total_ours, total_theirs = sum(ours.values()), sum(theirs.values())
    lines = [f"### {model}, batch {batch}", "",
             "| category | ours ms | timm ms | ours share | timm - ours ms |", "|---|---:|---:|---:|---:|"]
    for name in names:
        a, b = ours.get(name, 0.0), theirs.get(name, 0.0)
        lines.append(f"| {name} | {a:.0f} | {b:.0f} | {a / total_ours:.1%} | {b - a:+.0f} |")
    lines.append(f"| **total** | **{total_ours:.0f}** | **{total_theirs:.0f}** | | {total_theirs - total_ours:+.0f} "
                 f"(ratio {total_theirs / total_ours:.3f}x) |")
    conv = sum(ours.get(c, 0.0) for c in CONVOLUTIONS)
    rest = total_ours - conv
    goal = total_theirs / TARGETS["train"]
    lines += ["", f"Convolutions are {conv:.0f} ms ({conv / total_ours:.0%}) of our step, the rest {rest:.0f} ms. "
              f"For {TARGETS['train']:.2f}x timm's step ({goal:.0f} ms) with the convolutions as they are, the "
              f"rest would have to fall to {goal - conv:.0f} ms ({(goal - conv) / rest - 1:+.0%})"
              + (" - that is, the convolutions alone exceed it." if goal <= conv else "."), ""]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--models", nargs="+", default=["inception_v3", "inception_v4", "inception_resnet_v2"])
    parser.add_argument("--batches", type=int, nargs="+", default=[8])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="profiled steps per side")
    parser.add_argument("--threads", type=int, default=1)
    add_results_dir(parser)
    args = parser.parse_args(argv)
    # a model timm lacks fails now, in one line, not after the first models' minutes of profiling
    bench.check_configs([bench.Config(model, 299, batch, "train", reference="timm")
                         for model in args.models for batch in args.batches])
    torch.set_num_threads(args.threads)
    start = time.time()
    command = "python benchmarks/train_breakdown.py " + " ".join(argv if argv is not None else sys.argv[1:])
    info = bench.machine()
    lines = []
    for model in args.models:
        for batch in args.batches:
            ours, theirs = breakdown(model, batch, args.warmup, args.repeats)
            section = table(model, batch, ours, theirs)
            print("\n".join(section))
            lines += section
    path = write_section("train_breakdown", command, info,
                         "Profiler self time per training step (forward, loss, backward, SGD step; 299 px, fp32, "
                         "channels-last), mean over the profiled steps; see the script's docstring.",
                         lines, folder=args.results_dir)
    print(f"wrote {path} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    run_script(main)
