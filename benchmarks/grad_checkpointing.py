"""Gradient checkpointing (`model.set_grad_checkpointing()`, `train --grad-checkpointing`): what it
saves in memory and what it costs in time.

    .venv/bin/python benchmarks/grad_checkpointing.py --models inception_v3 --batch 16 --iters 3

For each model at 299 px: the peak resident size of a fresh process that builds the model and runs
two training steps (forward, cross-entropy, backward, fused SGD), with and without checkpointing,
less the size it had once the model was built; then the step time of both, timed in alternation in
one process. Prints a table and writes benchmarks/results/grad_checkpointing.md, which
`benchmarks/report.py` puts in BENCHMARKS.md (``--results-dir DIR``: DIR/grad_checkpointing.md only).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.report import run_script, timing_parser, write_section  # noqa: E402
from inceptionlab.tools import benchmark as bench  # noqa: E402

_CHILD = """
import json, sys, torch
sys.path.insert(0, sys.argv[3])
from inceptionlab.tools import benchmark as bench
cfg = bench.Config(sys.argv[1], 299, int(sys.argv[2]), "train")
torch.manual_seed(0)
model = bench._our_model(cfg)
model.set_grad_checkpointing(sys.argv[4] == "on")
before = bench._peak_rss_mb()
step = bench.train_step(model, cfg, True, torch.device("cpu"))
for _ in range(2):
    step()
print(json.dumps({"peak": bench._peak_rss_mb(), "model": before}))
"""


def step_memory_mb(name: str, batch: int, checkpointing: bool, threads: int) -> float:
    """What two training steps add to the peak resident size of a fresh process, in MiB."""
    out = subprocess.run([sys.executable, "-c", _CHILD, name, str(batch), str(ROOT), "on" if checkpointing else "off"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    sizes = json.loads(out.stdout.strip().splitlines()[-1])
    return sizes["peak"] - sizes["model"]


def main(argv=None) -> int:
    parser = timing_parser(__doc__, iters=3, warmup=1, batch=16)
    parser.add_argument("--models", default="inception_v3")
    args = parser.parse_args(argv)
    # an unknown name fails now, in one line (it was a child process's traceback)
    bench.check_configs([bench.Config(name, 299, args.batch, "train") for name in args.models.split(",")])
    torch.set_num_threads(args.threads)
    info, device = bench.machine(), torch.device("cpu")
    lines = ["| model | batch | step memory, plain (MiB) | with checkpointing (MiB) | saved | plain step (ms) | "
             "with checkpointing (ms) | time cost |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in args.models.split(","):
        memory = {on: step_memory_mb(name, args.batch, on, args.threads) for on in (False, True)}
        cfg = bench.Config(name, 299, args.batch, "train")
        steps = {}
        for on in (False, True):
            torch.manual_seed(0)
            model = bench._our_model(cfg)
            model.set_grad_checkpointing(on)
            steps[on] = bench.train_step(model, cfg, True, device)
        times = bench.time_alternating(steps, args.warmup, args.iters, device)
        plain, recomputed = (statistics.median(times[on]) * 1e3 for on in (False, True))
        lines.append(f"| {name} | {args.batch} | {memory[False]:.0f} | {memory[True]:.0f} | "
                     f"{1 - memory[True] / memory[False]:.0%} | {plain:.0f} | {recomputed:.0f} | "
                     f"+{recomputed / plain - 1:.0%} |")
        print(lines[-1], flush=True)
    command = "python benchmarks/grad_checkpointing.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_section("grad_checkpointing", command, info,
                  "Step memory: what two training steps at 299 px (fp32, channels-last, fused SGD) add to the peak "
                  "resident size of a fresh process, once the model is built (VmHWM). Step time: the median of "
                  f"{args.iters} steps after {args.warmup} warm-up, the two settings alternating in one process. "
                  "Checkpointing keeps each block's input and recomputes its maps in the backward pass; the "
                  "gradients and batch norm statistics are bit-identical (tests/test_models.py).", lines,
                  folder=args.results_dir)
    return 0


if __name__ == "__main__":
    run_script(main)
