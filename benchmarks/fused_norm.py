"""Training-mode batch norm + ReLU: PyTorch's kernels against ours (inceptionlab/models/fused_norm.py),
on the map shapes of Inception-v3 at 299 px, channels-last, float32, one thread (or --threads N).

    .venv/bin/python benchmarks/fused_norm.py --repeats 21
    .venv/bin/python benchmarks/fused_norm.py --repeats 21 --threads 2

Per shape, medians of --repeats alternating runs after warm-up: the forward alone, then forward and
backward; and the relative error (2-norm) of each against the same step in float64 (input gradient;
the kernel shifts its sums by the first row, PyTorch's float32 does not), with the outputs that
land on the other side of the ReLU than in float64. Prints a table and writes
benchmarks/results/fused_norm.md (fused_norm_threadsN.md for --threads N), which
`benchmarks/report.py` puts in BENCHMARKS.md (``--results-dir DIR``: into DIR only).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.report import add_results_dir, run_script, write_section  # noqa: E402
from inceptionlab.models import fused_norm  # noqa: E402
from inceptionlab.tools.benchmark import machine  # noqa: E402

# (N, C, H, W): Inception-v3's stem and one map of each grid, at batch 8, and a batch-32 map
SHAPES = [(8, 64, 147, 147), (8, 192, 71, 71), (8, 192, 35, 35), (8, 768, 17, 17), (8, 320, 8, 8),
          (32, 192, 35, 35)]


def pytorch(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return F.relu(bn(x), inplace=True)


def ours(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return fused_norm.fused_bn_relu(x, bn)


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def against_float64(impl, x, grad, bn) -> tuple[float, int]:
    """Relative error (2-norm) of impl's input gradient against PyTorch's in float64, and how many
    outputs fall on the other side of the ReLU than in float64 (an output within float32 rounding
    of zero: each one's gradient is then all error)."""
    def step(fn, t, b):
        t = t.clone().requires_grad_()
        y = fn(t, b)
        y.backward(grad.to(t.dtype))
        return t.grad.double(), y.detach() > 0
    want, want_on = step(pytorch, x.double(), copy.deepcopy(bn).double())
    got, got_on = step(impl, x, copy.deepcopy(bn))
    return ((got - want).norm() / want.norm()).item(), int((got_on != want_on).sum())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (the kernel splits its rows over them); other than 1, the section "
                             "is fused_norm_threadsN")
    add_results_dir(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if fused_norm.kernel() is None:
        sys.exit("the fused kernel did not build here (a C++ compiler and ninja are needed)")
    info = machine()
    rows = []
    for shape in SHAPES:
        torch.manual_seed(0)
        x = (torch.randn(shape) * 2 + 3).contiguous(memory_format=torch.channels_last)
        grad = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        bn = nn.BatchNorm2d(shape[1], eps=1e-3).train()
        xg = x.clone().requires_grad_()
        res = {}
        for impl in (pytorch, ours):
            def forward(impl=impl):
                impl(x, bn)

            def both(impl=impl):
                impl(xg, bn).backward(grad)
            forward(), both()  # warm-up
            res[impl] = {"fwd": [], "both": []}
        for r in range(args.repeats):
            for impl in ((pytorch, ours) if r % 2 == 0 else (ours, pytorch)):
                res[impl]["fwd"] += timed(lambda: impl(x, bn), 1)
                res[impl]["both"] += timed(lambda: impl(xg, bn).backward(grad), 1)
        med = {impl: {k: statistics.median(v) for k, v in d.items()} for impl, d in res.items()}
        rows.append((shape, x.numel() * 4 / 2**20, med[pytorch]["fwd"], med[ours]["fwd"], med[pytorch]["both"],
                     med[ours]["both"], *against_float64(pytorch, x, grad, bn), *against_float64(ours, x, grad, bn)))
    lines = ["| map (N, C, H, W) | MiB | forward PyTorch ms | ours ms | ratio | fwd+bwd PyTorch ms | ours ms | ratio "
             "| input-grad error PyTorch | ours | ReLU flips PyTorch | ours |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for shape, mib, f_pt, f_us, b_pt, b_us, e_pt, n_pt, e_us, n_us in rows:
        lines.append(f"| {tuple(shape)} | {mib:.1f} | {f_pt:.2f} | {f_us:.2f} | {f_pt / f_us:.2f}x | {b_pt:.2f} "
                     f"| {b_us:.2f} | {b_pt / b_us:.2f}x | {e_pt:.1e} | {e_us:.1e} | {n_pt} | {n_us} |")
    print("\n".join(lines))
    one_thread = args.threads == 1
    write_section("fused_norm" if one_thread else f"fused_norm_threads{args.threads}",
                  f"python benchmarks/fused_norm.py --repeats {args.repeats}"
                  + ("" if one_thread else f" --threads {args.threads}"), info,
                  "Training-mode `BatchNorm2d` then ReLU on a channels-last float32 map with mean 3 and deviation 2: "
                  "PyTorch's kernels (`F.relu(bn(x), inplace=True)`) against the fused kernel "
                  "(`inceptionlab.models.fused_norm`). Medians of alternating runs; the errors are the relative "
                  "error (2-norm) of the input gradient against PyTorch in float64. 'ReLU flips' counts the outputs "
                  "that fall on the other side of the ReLU than in float64 (within float32 rounding of zero): "
                  "each adds its whole gradient to the error.", lines, folder=args.results_dir)
    return 0


if __name__ == "__main__":
    run_script(main)
