"""How long `create_model` takes for every registered model (issue 2: "well under a second").

Prints a table and writes benchmarks/results/build_time.md, which `benchmarks/report.py` puts in
BENCHMARKS.md (``--results-dir DIR``: DIR/build_time.md only). Medians of --repeats builds per model, after one warm-up build of each:

    .venv/bin/python benchmarks/build_time.py --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


import inceptionlab as il  # noqa: E402
from benchmarks.report import add_results_dir, run_script, write_section  # noqa: E402
from inceptionlab.tools.benchmark import machine  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--repeats", type=int, default=5)
    add_results_dir(parser)
    args = parser.parse_args(argv)
    info = machine()
    rows = []
    for name in il.list_models():
        il.create_model(name)  # warm-up: imports, allocator
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            model = il.create_model(name)
            times.append(time.perf_counter() - start)
        params = sum(p.numel() for p in model.parameters())
        rows.append((name, params / 1e6, statistics.median(times), max(times)))
    lines = ["| model | params (M) | median build (s) | slowest (s) |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {p:.2f} | {m:.3f} | {w:.3f} |" for n, p, m, w in rows]
    print("\n".join(lines))
    write_section("build_time", f"python benchmarks/build_time.py --repeats {args.repeats}", info,
                  "`create_model(name)` at 1000 classes, full width, random initialization (the model is built in "
                  "one thread and its truncated-normal initialization drawn at once).", lines,
                  folder=args.results_dir)
    return 0


if __name__ == "__main__":
    run_script(main)
