"""The report's plots, drawn from the results records (so every plotted number is in results.json).

One colour per variant, the same in every plot; several seeds of a variant share its colour, and
each seed has its own marker and line style (`SEED_MARKERS`, `SEED_LINES`), named in the legend.
Each function writes one PNG and returns ``{"file", "title", "caption"}``, or None when there is
nothing to draw.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from inceptionlab.files import write_whole

# the files the plots are written to (the lab deletes only these when it starts a folder over)
PLOT_FILES = ("loss_vs_step.png", "loss_vs_time.png", "accuracy_vs_epoch.png", "accuracy_vs_cost.png",
              "calibration.png")

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
DPI = 110
SEED_MARKERS, SEED_LINES, SEED_HATCHES = ("o", "s", "^", "D", "v"), ("-", "--", ":", "-."), ("", "///", "...", "xx")


def run_colors(names: list[str]) -> dict[str, str]:
    """A colour per name, in order (tab10; tab20 past ten)."""
    if len(names) > len(PALETTE):
        import matplotlib

        cmap = matplotlib.colormaps["tab20"]
        return {n: matplotlib.colors.to_hex(cmap(i % 20)) for i, n in enumerate(names)}
    return {n: PALETTE[i] for i, n in enumerate(names)}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _smooth(values: list, weight: float = 0.9) -> list:
    """Exponential moving average that skips missing values (TensorBoard's smoothing)."""
    out, last = [], None
    for v in values:
        if v is None:
            out.append(None)
            continue
        last = v if last is None else weight * last + (1 - weight) * v
        out.append(last)
    return out


# a loss this many times the runs' typical starting loss is a blow-up (a diverging run), drawn off the
# chart so that it does not flatten the others; the plot names the runs it leaves off
OFF_CHART_FACTOR = 10
LOG_RANGE = 8           # losses spanning more than this factor are drawn on a log scale
MARGIN = 0.05           # of the drawn range, above and below


@dataclass
class LossAxis:
    low: float
    high: float
    log: bool
    off_chart: dict     # run name -> its largest loss above `high` (inf for an infinite one)


def _loss_axis(lines: list[tuple[str, list]]) -> LossAxis | None:
    """y-limits fitted to the drawn losses (``(run name, [loss, ...])`` per line) with a margin.

    Values above OFF_CHART_FACTOR times the median of the lines' first losses are left off the chart
    (in a short lab every loss sits near ln(classes), and an axis from 0 drew the runs as one line)."""
    firsts = sorted(next(v for v in ys if math.isfinite(v)) for _, ys in lines if any(map(math.isfinite, ys)))
    if not firsts:
        return None
    start = firsts[len(firsts) // 2]
    ceiling = OFF_CHART_FACTOR * start if start > 0 else math.inf
    kept = [v for _, ys in lines for v in ys if math.isfinite(v) and v <= ceiling]
    off_chart: dict = {}
    for name, ys in lines:
        above = [v for v in ys if v > ceiling]  # (nan is not above anything: a diverged run's end is left out)
        if above:
            off_chart[name] = max(off_chart.get(name, -math.inf), *above)
    low, high = min(kept), max(kept)
    if low > 0 and high / low > LOG_RANGE:  # a wide range: losses near zero stay readable
        pad = (high / low) ** MARGIN
        return LossAxis(low / pad, high * pad, True, off_chart)
    pad = MARGIN * (high - low) or MARGIN * abs(high) or MARGIN
    return LossAxis(max(low - pad, 0.0) if low >= 0 else low - pad, high + pad, False, off_chart)


def _legend_once(seen: set, run: dict) -> str | None:
    if run["variant"] in seen:
        return None
    seen.add(run["variant"])
    return run["variant"]


def _seed_index(results: dict, runs: list[dict]) -> dict[str, int]:
    """Each run's place among the plan's seeds: the seeds of a variant share its colour, so each seed
    has its own marker (and line style), the same in every plot."""
    seeds = list(results.get("seeds") or [])
    seeds += [s for s in dict.fromkeys(r.get("seed") for r in runs) if s not in seeds]
    return {r["name"]: seeds.index(r.get("seed")) for r in runs}


def _legend(ax, runs: list[dict], seed_index: dict, *, seed_lines: bool, extra=(), **kwargs) -> None:
    """One entry per variant (its colour), then, with several seeds, one per seed (its style)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=r["color"], lw=1.4, label=r["variant"])
               for r in {r["variant"]: r for r in reversed(runs)}.values()][::-1]
    seeds = {seed_index[r["name"]]: r.get("seed") for r in runs}
    if len(seeds) > 1:
        handles += [Line2D([], [], color="#555", lw=1.2, marker=SEED_MARKERS[k % len(SEED_MARKERS)], ms=4,
                           ls=SEED_LINES[k % len(SEED_LINES)] if seed_lines else "-", label=f"seed {seed}")
                    for k, seed in sorted(seeds.items())]
    ax.legend(handles=handles + list(extra), fontsize=8, **kwargs)


def plot_loss(results: dict, out_dir: Path, x: str) -> dict | None:
    """Training (smoothed) and validation loss against ``x`` = "step" or "seconds"."""
    runs = [r for r in results["runs"] if r["train_curve"] or r["metrics"]]
    if not runs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    seed_index = _seed_index(results, runs)
    several_seeds = len(set(seed_index.values())) > 1
    lines = []
    for r in runs:
        marker = SEED_MARKERS[seed_index[r["name"]] % len(SEED_MARKERS)]
        xs = [p[x] for p in r["train_curve"]]
        ys = _smooth([p["loss"] for p in r["train_curve"]])
        pts = [(a, b) for a, b in zip(xs, ys) if a is not None and b is not None]
        if pts:  # one point (a run that ended at its first step) gets a marker, or nothing shows
            ax.plot(*zip(*pts), color=r["color"], lw=1.4, alpha=0.9, ms=4,
                    marker=marker if several_seeds or len(pts) == 1 else None, markevery=max(1, len(pts) // 8))
            lines.append((r["name"], [b for _, b in pts]))
        val = [(m[x], m["val_loss"]) for m in r["metrics"] if m.get(x) is not None and m.get("val_loss") is not None]
        if val:
            ax.plot(*zip(*val), color=r["color"], lw=1.2, ls="--", marker=marker, ms=3.5)
            lines.append((r["name"], [b for _, b in val]))
    axis = _loss_axis(lines)
    if axis:
        if axis.log:
            ax.set_yscale("log")
        ax.set_ylim(axis.low, axis.high)
        if axis.off_chart:
            ax.text(0.01, 0.98, "off the chart: " + ", ".join(f"{name} (up to {value:.3g})"
                                                               for name, value in axis.off_chart.items()),
                    transform=ax.transAxes, ha="left", va="top", fontsize=8, color="#a00")
    ax.set_xlabel("training step" if x == "step" else "wall-clock seconds of the run (evaluations included)")
    ax.set_ylabel("loss (log scale)" if axis and axis.log else "loss")
    ax.set_title("Loss: training (solid, smoothed) and validation (dashed" + (")" if several_seeds else ", dots)"))
    ax.grid(True, alpha=0.3, which="both")
    _legend(ax, runs, seed_index, seed_lines=False, loc="upper right")
    name = "loss_vs_step.png" if x == "step" else "loss_vs_time.png"
    return _save(fig, plt, out_dir / name, "Loss against " + ("step" if x == "step" else "wall-clock time"),
                 "Training loss per step (exponential moving average, 0.9) and validation loss at each evaluation"
                 + ("; each seed has its own marker." if several_seeds else "."))


def plot_accuracy(results: dict, out_dir: Path) -> dict | None:
    """Top-1 and top-5 against epoch, side by side."""
    runs = [r for r in results["runs"] if any(m.get("top1") is not None for m in r["metrics"])]
    if not runs:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.0), sharex=True)
    seed_index = _seed_index(results, runs)
    for r in runs:
        k = seed_index[r["name"]]
        for ax, key in zip(axes, ("top1", "top5")):
            pts = [(m["epoch"], m[key]) for m in r["metrics"] if m.get("epoch") is not None and m.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), color=r["color"], marker=SEED_MARKERS[k % len(SEED_MARKERS)], ms=3.5, lw=1.4,
                        ls=SEED_LINES[k % len(SEED_LINES)])
        # the training images' top-1 since the evaluation before, faint beside the validation's: overfitting
        train = [(m["epoch"], m["train_top1"]) for m in r["metrics"]
                 if m.get("epoch") is not None and m.get("train_top1") is not None]
        if train:
            axes[0].plot(*zip(*train), color=r["color"], lw=0.9, alpha=0.45, ls=SEED_LINES[k % len(SEED_LINES)])
    target = results.get("target_top1")
    extra = []
    if any(m.get("train_top1") is not None for r in runs for m in r["metrics"]):
        from matplotlib.lines import Line2D
        extra.append(Line2D([], [], color="#555", lw=0.9, alpha=0.45, label="training top-1 (faint)"))
    if target is not None:
        extra.append(axes[0].axhline(target, color="#444", lw=0.8, ls=":", label=f"target {target:g}%"))
    for ax, title in zip(axes, ("top-1 accuracy (%)", "top-5 accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    if not any(m.get("top5") is not None for r in runs for m in r["metrics"]):
        axes[1].text(0.5, 0.5, "not measured:\n5 classes or fewer", transform=axes[1].transAxes,
                     ha="center", va="center", color="#666")
    _legend(axes[0], runs, seed_index, seed_lines=True, extra=extra, loc="lower right")
    fig.tight_layout()
    return _save(fig, plt, out_dir / "accuracy_vs_epoch.png", "Validation accuracy against epoch",
                 "Top-1 and top-5 on the validation split at each evaluation; the dotted line is the target; "
                 "the faint lines, where the runs logged it, the training images' top-1 since the evaluation "
                 "before (far above the validation's: overfitting).")


def plot_cost(results: dict, out_dir: Path) -> dict | None:
    """Best top-1 against multiply-adds per image (one dot per run)."""
    runs = [r for r in results["runs"] if r.get("macs") and best_of(r) is not None]
    if not runs:
        return None
    plt = _pyplot()
    from matplotlib.ticker import NullFormatter, NullLocator

    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    seen: set = set()
    unfinished = False
    for r in runs:
        label = _legend_once(seen, r)
        finished = r.get("status") == "finished"
        unfinished |= not finished
        # a failed run's best is no result: a hollow marker, where a filled dot had topped the plot unremarked
        ax.scatter([r["macs"] / 1e6], [best_of(r)], s=45, label=label, zorder=3, linewidths=1.4,
                   color=r["color"] if finished else "none", edgecolors=r["color"])
    if unfinished:
        ax.scatter([], [], s=45, color="none", edgecolors="#444", label="hollow: did not finish")
    ax.set_xscale("log")
    costs = sorted({r["macs"] / 1e6 for r in runs})
    if costs[-1] / costs[0] < 10:  # within a decade: label the runs' own costs, not overlapping minor ticks
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(costs, [f"{c:.3g}" for c in costs])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("multiply-adds per image (millions, log scale)")
    ax.set_ylabel("best top-1 (%)")
    ax.set_title("Accuracy against cost")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, plt, out_dir / "accuracy_vs_cost.png", "Accuracy against multiply-adds",
                 "Best validation top-1 of each run against the multiply-adds of one image at its input size"
                 + ("; hollow markers: runs that did not finish (diverged or failed), whose best is no result."
                    if unfinished else "."))


def plot_calibration(results: dict, out_dir: Path) -> dict | None:
    """Reliability diagram and confidence histogram for runs that carry a calibration table."""
    runs = [r for r in results["runs"] if r.get("calibration")]
    if not runs:
        return None
    plt = _pyplot()
    fig, (ax, hist) = plt.subplots(1, 2, figsize=(9.5, 4.0))
    ax.plot([0, 100], [0, 100], color="#888", lw=0.8, ls=":")
    width = 100.0 / len(runs[0]["calibration"]["bins"]) / (len(runs) + 1)
    seed_index = _seed_index(results, runs)
    for i, r in enumerate(runs):
        bins = r["calibration"]["bins"]
        # the seeds of a variant share its colour: each its own marker, line and hatch to tell them apart
        k = seed_index[r["name"]]
        pts = [(100 * b["confidence"], 100 * b["accuracy"]) for b in bins if b["count"]]
        label = f"{r['name']} (ECE {r['calibration']['ece']:.2f}%)"
        if pts:
            ax.plot(*zip(*pts), color=r["color"], marker=SEED_MARKERS[k % len(SEED_MARKERS)], ms=3.5,
                    ls=SEED_LINES[k % len(SEED_LINES)], label=label)
        total = max(1, sum(b["count"] for b in bins))
        hist.bar([100 * b["low"] + width * (i + 0.5) for b in bins], [100 * b["count"] / total for b in bins],
                 width=width, color=r["color"], label=r["name"], hatch=SEED_HATCHES[k % len(SEED_HATCHES)],
                 edgecolor="white" if k else None, linewidth=0)
    ax.set_xlabel("confidence (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Reliability (diagonal = calibrated)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, alpha=0.3)
    hist.set_xlabel("top-1 confidence (%)")
    hist.set_ylabel("share of validation images (%)")
    hist.set_title("Confidence histogram")
    hist.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _save(fig, plt, out_dir / "calibration.png", "Calibration",
                 "Accuracy against confidence in 15 equal bins, and how confidences are spread.")


def best_of(record: dict):
    from inceptionlab.lab.results import best_top1

    return best_top1(record)


def _save(fig, plt, path: Path, title: str, caption: str) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_whole(path, lambda tmp: fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)
    return dict(file=path.name, title=title, caption=caption)


def draw_all(results: dict, out_dir: Path) -> list[dict]:
    """Every plot that has data; the list of ``{"file", "title", "caption"}``."""
    out_dir = Path(out_dir)
    plots = [plot_loss(results, out_dir, "step"), plot_loss(results, out_dir, "seconds"),
             plot_accuracy(results, out_dir), plot_cost(results, out_dir), plot_calibration(results, out_dir)]
    return [p for p in plots if p is not None]
