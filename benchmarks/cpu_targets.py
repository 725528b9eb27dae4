"""Issue 5's CPU targets, measured: our Inception-v3, v4 and Inception-ResNet-v2 against timm's, at
299x299, fp32, channels-last for both, timed in alternation in one process.

    python benchmarks/cpu_targets.py                 # inference at batch 8 and 32, training at batch 8
    python benchmarks/cpu_targets.py --iters 5 --train-batches 8 32
    python benchmarks/cpu_targets.py --precision bf16 --name cpu_bf16 --no-memory   # AMX / AVX512-BF16 CPUs
    python benchmarks/cpu_targets.py --runtime onnxruntime --train-batches --no-memory --name cpu_onnxruntime

Prints the table, writes benchmarks/results/cpu_targets.csv (+ .json: machine, command, date) and
regenerates BENCHMARKS.md from every result in benchmarks/results/. ``--results-dir DIR`` writes
DIR/cpu_targets.csv and .json instead and leaves BENCHMARKS.md alone (to measure another machine
without overwriting the published numbers).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import add_results_dir, is_published, run_script, save_result, write_report  # noqa: E402
from inceptionlab.tools import benchmark as bench  # noqa: E402

MODELS = ["inception_v3", "inception_v4", "inception_resnet_v2"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--infer-batches", type=int, nargs="*", default=[8, 32])
    parser.add_argument("--train-batches", type=int, nargs="*", default=[8])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: weights cast for inference, autocast for training, both sides (the targets are fp32)")
    parser.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                        help="onnxruntime: our model exported to ONNX, inference only (the targets are PyTorch's)")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-RSS measurement of a v3 training step at batch 8")
    parser.add_argument("--name", default="cpu_targets", help="the result's file name in the results folder")
    add_results_dir(parser)
    args = parser.parse_args(argv)
    if args.runtime == "onnxruntime" and args.train_batches:
        parser.error("--runtime onnxruntime times inference only; pass --train-batches with no sizes")
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = [bench.Config(m, 299, b, "infer", args.precision, runtime=args.runtime, reference="timm")
               for m in args.models for b in args.infer_batches]
    configs += [bench.Config(m, 299, b, "train", args.precision, reference="timm")
                for m in args.models for b in args.train_batches]
    start = time.time()
    command = "python benchmarks/cpu_targets.py " + " ".join(argv if argv is not None else sys.argv[1:])
    # saved after every row, so that a run cut short keeps what it measured
    partial = lambda rows, info: save_result(args.name, rows, {**info, "partial": True}, command.strip(),  # noqa: E731
                                             folder=args.results_dir)
    rows, info = bench.benchmark(configs, args.warmup, args.iters, on_row=partial)
    if args.memory:
        cfg = bench.Config("inception_v3", 299, 8, "train")
        ours = bench.training_peak_rss(cfg)["peak_rss_mb"]
        theirs = bench.training_peak_rss(bench.Config("inception_v3", 299, 8, "train", reference="timm"))["peak_rss_mb"]
        print(f"peak RSS of a v3 training step at batch 8: ours {ours:.0f} MiB, timm {theirs:.0f} MiB")
        for row in rows:
            if row["model"] == "inception_v3" and row["mode"] == "train" and row["batch"] == 8:
                row["peak_rss_mb"], row["ref_peak_rss_mb"] = round(ours, 1), round(theirs, 1)
    info[f"peak_gflops_{args.precision}_at_end"] = round(bench.measure_peak(args.precision), 1)
    info["wall_seconds"] = round(time.time() - start)
    info["load_average_end"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print()
    print(bench.format_rows(rows))
    csv_path = save_result(args.name, rows, info, command.strip(), folder=args.results_dir)
    if is_published(args.results_dir):  # BENCHMARKS.md is made from the published results only
        print(f"\nwrote {csv_path}; {write_report()} regenerated")
    else:
        print(f"\nwrote {csv_path} (BENCHMARKS.md, made from benchmarks/results, is left as it was)")
    return 0


if __name__ == "__main__":
    run_script(main)
