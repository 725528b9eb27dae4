"""Writes BENCHMARKS.md from the measured results in benchmarks/results/ (nothing typed by hand).

Each result is a CSV of benchmark rows (`inceptionlab.tools.benchmark.COLUMNS`) and a JSON beside
it: the command that produced it, the machine, the date. ``python benchmarks/report.py``
regenerates the file; the benchmark scripts call it after every run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable, NoReturn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REPORT = ROOT / "BENCHMARKS.md"
sys.path.insert(0, str(ROOT))

from inceptionlab.tools.benchmark import cpu_description, format_rows, read_csv, write_csv  # noqa: E402

# issue 5's targets on CPU, against timm with channels-last
TARGETS = {"infer": 1.25, "train": 1.10}
PEAK_FRACTION = 0.80


def timing_parser(doc: str, *, iters: int, warmup: int, batch: int) -> argparse.ArgumentParser:
    """A timing script's command line: the first paragraph of its docstring as the description, and
    --iters, --warmup, --batch, --threads (default 1: this machine is shared) and --results-dir."""
    parser = argparse.ArgumentParser(description=" ".join(doc.split("\n\n")[0].split()))
    parser.add_argument("--iters", type=int, default=iters)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--threads", type=int, default=1)
    add_results_dir(parser)
    return parser


def add_results_dir(parser: argparse.ArgumentParser) -> None:
    """--results-dir: where a script writes its result. The default is the published results, which
    BENCHMARKS.md is made from (so that its commands reproduce them); rerunning a command of
    BENCHMARKS.md on another machine overwrote them without a word, so measure elsewhere with this."""
    parser.add_argument("--results-dir", type=Path, default=RESULTS, metavar="DIR",
                        help="where to write the result (default: benchmarks/results, the published results, "
                             "which also regenerates BENCHMARKS.md; another folder leaves both as they are)")


def is_published(folder: Path) -> bool:
    """Whether ``folder`` is benchmarks/results, whose files BENCHMARKS.md is made from."""
    return Path(folder).resolve() == RESULTS.resolve()


def run_script(main: Callable[[], int | None]) -> NoReturn:
    """Runs a benchmark script's ``main`` and exits with its status; a `UserError` (a model the
    reference library lacks, a size too small) is printed as one line and exits 2, as the
    inceptionlab commands print it, not as a traceback."""
    from inceptionlab.errors import UserError

    try:
        code = main()
    except UserError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)


def save_result(name: str, rows: list[dict], info: dict, command: str, folder: Path = RESULTS) -> Path:
    """Writes ``folder/name.csv`` (the rows) and ``folder/name.json`` (command, date, machine)."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(rows, folder / f"{name}.csv")
    meta = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": info}
    (folder / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return csv_path


def write_section(name: str, command: str, info: dict, about: str, lines: list[str],
                  folder: Path = RESULTS) -> Path:
    """Writes ``folder/name.md``: a BENCHMARKS.md section headed by the command that produced it and
    the machine it ran on (``info``: `inceptionlab.tools.benchmark.machine()`, taken at the start),
    then ``about`` (what was measured) and the table ``lines``; regenerates BENCHMARKS.md when
    ``folder`` is the results folder."""
    text = "\n".join([
        f"## {name}", "", f"Command: `{command.strip()}`", "",
        f"Machine: {cpu_description(info)}, {info['cores']} cores, {info['threads']} torch threads; torch {info['torch']}; "
        f"load average at start {info.get('load_average', '?')}; measured {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        "", about, "", *lines]).rstrip() + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.md"
    path.write_text(text)
    if is_published(folder):
        write_report()
    return path


def _targets(rows: list[dict]) -> list[str]:
    """One line per row with a timm reference: each target, the measured value, met or not. The
    targets are our PyTorch model's: rows run in onnxruntime are left out."""
    lines = ["| model | batch | mode | target | measured | met | at 100% of the peak |",
             "|---|---:|---|---|---:|---|---:|"]
    for r in rows:
        if (r.get("reference") != "timm" or r["precision"] != "fp32" or r["img_size"] != "299"
                or r.get("runtime", "torch") != "torch"):
            continue
        mode = r["mode"]
        if r.get("ratio"):
            goal = TARGETS[mode]
            ratio = float(r["ratio"])
            # the ratio our same operations would reach at 100% of the machine's convolution peak: a
            # ceiling below the target means only fewer operations (not faster ones) could meet it
            ceiling = (f"{ratio / float(r['fraction_of_peak']):.2f}x" if mode == "infer" and r.get("fraction_of_peak")
                       else "-")
            lines.append(f"| {r['model']} | {r['batch']} | {mode} | >= {goal:.2f}x timm (channels-last) | "
                         f"{ratio:.2f}x | {'yes' if ratio >= goal else 'no'} | {ceiling} |")
        if mode == "infer" and r.get("fraction_of_peak"):
            frac = float(r["fraction_of_peak"])
            lines.append(f"| {r['model']} | {r['batch']} | infer | >= {PEAK_FRACTION:.0%} of the convolution peak | "
                         f"{frac:.0%} | {'yes' if frac >= PEAK_FRACTION else 'no'} | - |")
        if r.get("peak_rss_mb") and r.get("ref_peak_rss_mb"):
            ours, theirs = float(r["peak_rss_mb"]), float(r["ref_peak_rss_mb"])
            lines.append(f"| {r['model']} | {r['batch']} | train | peak RSS <= timm's ({theirs:.0f} MiB) | "
                         f"{ours:.0f} MiB | {'yes' if ours <= theirs else 'no'} | - |")
    return lines if len(lines) > 2 else []


def _against_best_peak(rows: list[dict], machine: dict) -> list[dict]:
    """Rows whose 'of peak' divides by the best peak the run measured (start or end) for its precision."""
    out = []
    for r in rows:
        prec = r.get("precision", "fp32")
        peaks = [float(v) for k, v in machine.items() if k in (f"peak_gflops_{prec}", f"peak_gflops_{prec}_at_end") and v]
        if peaks and r.get("gflops_per_sec"):
            r = {**r, "fraction_of_peak": str(round(float(r["gflops_per_sec"]) / max(peaks), 3))}
        out.append(r)
    return out


def _load_note(m: dict) -> list[str]:
    """A caveat, from the load averages the run recorded, when other work shared the machine."""
    loads = [float(str(m.get(k)).split()[0]) for k in ("load_average", "load_average_end") if m.get(k)]
    cores = int(m.get("cores") or 1)
    if not loads or max(loads) <= 0.75 * cores:
        return []
    return [f"Caveat: the machine was shared while this ran (1-minute load average {max(loads):.1f} on "
            f"{cores} cores; other jobs held the CPUs), so absolute numbers are low and noisy; the ratios, "
            f"from alternating runs in one process, are the more reliable figures.", ""]


def write_report() -> Path:
    parts = ["# Benchmarks", "",
             "Generated by `python benchmarks/report.py` from the results in `benchmarks/results/`, which the "
             "benchmark scripts write; do not edit by hand. Re-run a script to refresh its section; to measure "
             "another machine without overwriting these numbers, give the script `--results-dir DIR`.", "",
             "Columns: images/s and step time are medians over the timed iterations after warm-up; GFLOP/s counts "
             "2 x the forward multiply-adds per image (3 x that for a training step); 'of peak' divides it by the "
             "machine's peak: the best of the large 3x3 convolutions timed at the start and at the end of the run "
             "(on a shared machine one of them can catch a neighbour's load); 'ratio' is our "
             "images/s over the reference's, the two timed in alternation in the same process with the same "
             "settings (reference: eval + inference_mode, plain SGD; ours: `optimize_for_inference`, fused SGD). "
             "In the targets, 'at 100% of the peak' is the inference ratio that our same operations would reach "
             "running at the measured peak (ratio / 'of peak'): where it is below the target, no faster kernel "
             "meets it, only fewer operations would.", ""]
    for meta_path in sorted(RESULTS.glob("*.json")):
        csv_path = meta_path.with_suffix(".csv")
        if not csv_path.exists():
            continue
        meta = json.loads(meta_path.read_text())
        m = meta["machine"]
        rows = _against_best_peak(read_csv(csv_path), m)
        peaks = ", ".join(f"{k.removeprefix('peak_gflops_')} {v} GFLOP/s" for k, v in m.items()
                          if k.startswith("peak_gflops_"))
        parts += [f"## {meta_path.stem}", "",
                  f"Command: `{meta['command']}`", "",
                  f"Machine: {cpu_description(m)}, {m.get('cores')} cores, {m.get('threads')} torch threads"
                  + (f", GPU {m['gpu']}" if m.get("gpu") else "")
                  + f"; torch {m.get('torch')}, Python {m.get('python')}, {m.get('os')}; measured {meta['date']}"
                  + (f"; load average at start {m['load_average']}" if m.get("load_average") else "")
                  + (f"; run took {m['wall_seconds']} s" if m.get("wall_seconds") else "") + ".", "",
                  f"Measured peak (3x3 convolution): {peaks}.", "",
                  format_rows(rows, markdown=True), ""]
        parts += _load_note(m)
        if m.get("partial"):
            parts += ["This run was cut short: only the rows above were measured.", ""]
        targets = _targets(rows)
        if targets:
            parts += ["Targets (issue 5):", ""] + targets + [""]
        memory = [r for r in rows if r.get("peak_rss_mb")]
        if memory:
            parts += ["Peak resident memory of a training step (fresh process, model built + two steps):", ""]
            parts += [f"- {r['model']} batch {r['batch']}: ours {float(r['peak_rss_mb']):.0f} MiB"
                      + (f", reference {float(r['ref_peak_rss_mb']):.0f} MiB" if r.get("ref_peak_rss_mb") else "")
                      for r in memory] + [""]
        parts += ["Timed steps (ms), ours | reference:", ""]
        parts += [f"- {r['model']} {r['mode']} b{r['batch']}: {r['step_times_ms']}"
                  + (f" | {r['ref_step_times_ms']}" if r.get("ref_step_times_ms") else "") for r in rows] + [""]
    for section in sorted(RESULTS.glob("*.md")):  # sections that scripts write whole (build_time.md)
        parts += [section.read_text().rstrip(), ""]
    if not (RESULTS / "gpu_targets.json").exists():
        parts += ["## GPU", "", "Not measured yet: no GPU has been at hand. `benchmarks/gpu_targets.py` is the prepared "
                  "run (CUDA correctness for the six families, then AMP throughput against timm); on a machine "
                  "with a GPU: `PYTHONUNBUFFERED=1 python3 benchmarks/gpu_targets.py --out DIR`.", ""]
    REPORT.write_text("\n".join(parts).rstrip() + "\n")
    return REPORT


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description="Writes BENCHMARKS.md from the results in benchmarks/results/ "
                                        "(no options; the benchmark scripts call it after each run).").parse_args()
    print(write_report())
