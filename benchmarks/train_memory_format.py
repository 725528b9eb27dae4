"""Training steps in channels-last against the default (NCHW) layout, at the lab's small defaults:
why `inceptionlab train` turns channels-last on by itself on the CPU.

    .venv/bin/python benchmarks/train_memory_format.py --iters 7

For each demo family, at the demo's setting (28 px digits, 1/8 width, low-resolution stem) and at
the image-folder setting (96 px, 1/4 width), both at batch 32: one full training step (forward,
cross-entropy, backward, fused SGD) in each layout, the two timed in alternation in one process.
Prints a table and writes benchmarks/results/train_memory_format.md, which `benchmarks/report.py`
puts in BENCHMARKS.md (``--results-dir DIR``: DIR/train_memory_format.md only).
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.report import run_script, timing_parser, write_section  # noqa: E402
from inceptionlab.lab.demo import DEMO_MODELS, FOLDER_MODEL_KWARGS, SMALL_MODEL_KWARGS  # noqa: E402
from inceptionlab.tools import benchmark as bench  # noqa: E402

SETTINGS = {"demo (28 px, 1/8 width)": (28, SMALL_MODEL_KWARGS), "folder (96 px, 1/4 width)": (96, FOLDER_MODEL_KWARGS)}


def main(argv=None) -> int:
    args = timing_parser(__doc__, iters=7, warmup=2, batch=32).parse_args(argv)
    torch.set_num_threads(args.threads)
    info, device = bench.machine(), torch.device("cpu")
    lines = ["| setting | model | NCHW step (ms) | channels-last step (ms) | speedup |", "|---|---|---:|---:|---:|"]
    for setting, (size, kwargs) in SETTINGS.items():
        for name in DEMO_MODELS:
            steps = {}
            for channels_last in (False, True):
                cfg = bench.Config(name, size, args.batch, "train", channels_last=channels_last, model_kwargs=kwargs)
                steps[channels_last] = bench.train_step(bench._our_model(cfg), cfg, True, device)
            times = bench.time_alternating(steps, args.warmup, args.iters, device)
            nchw, last = (statistics.median(times[k]) * 1e3 for k in (False, True))
            lines.append(f"| {setting} | {name} | {nchw:.1f} | {last:.1f} | {nchw / last:.2f}x |")
            print(lines[-1], flush=True)
    command = "python benchmarks/train_memory_format.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_section("train_memory_format", command, info,
                  f"One training step at batch {args.batch} (median of {args.iters} after {args.warmup} warm-up steps, "
                  "the two layouts alternating in one process) at the lab's small settings. This is why "
                  "`inceptionlab train` uses channels-last by itself on the CPU (`--no-channels-last` turns it off).",
                  lines, folder=args.results_dir)
    return 0


if __name__ == "__main__":
    run_script(main)
