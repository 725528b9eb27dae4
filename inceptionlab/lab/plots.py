"""The report's plots, drawn from the results records (so every plotted number is in results.json).

One colour per variant, the same in every plot; several seeds of a variant share its colour.
Each function writes one PNG and returns ``{"file", "title", "caption"}``, or None when there is
nothing to draw.
"""
from __future__ import annotations

import math
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


def _loss_limits(runs: list[dict]):
    """y-limits that keep a diverged run from flattening the others."""
    values = [p["loss"] for r in runs for p in r["train_curve"] if p.get("loss")]
    values += [m["val_loss"] for r in runs for m in r["metrics"] if m.get("val_loss") is not None]
    values = sorted(v for v in values if v is not None and math.isfinite(v) and v > 0)
    if not values:
        return None
    low = values[max(0, int(0.01 * len(values)))]
    high = values[min(len(values) - 1, int(0.99 * len(values)))]
    return max(low * 0.8, 1e-4), max(high * 1.25, low * 2)


def _legend_once(seen: set, run: dict) -> str | None:
    if run["variant"] in seen:
        return None
    seen.add(run["variant"])
    return run["variant"]


def plot_loss(results: dict, out_dir: Path, x: str) -> dict | None:
    """Training (smoothed) and validation loss against ``x`` = "step" or "seconds"."""
    runs = [r for r in results["runs"] if r["train_curve"] or r["metrics"]]
    if not runs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    seen: set = set()
    for r in runs:
        xs = [p[x] for p in r["train_curve"]]
        ys = _smooth([p["loss"] for p in r["train_curve"]])
        pts = [(a, b) for a, b in zip(xs, ys) if a is not None and b is not None]
        label = _legend_once(seen, r)
        if pts:  # one point (a run that ended at its first step) gets a marker, or nothing shows
            ax.plot(*zip(*pts), color=r["color"], lw=1.4, alpha=0.9, label=label,
                    marker="o" if len(pts) == 1 else None, ms=4)
            label = None
        val = [(m[x], m["val_loss"]) for m in r["metrics"] if m.get(x) is not None and m.get("val_loss") is not None]
        if val:
            ax.plot(*zip(*val), color=r["color"], lw=1.2, ls="--", marker="o", ms=3.5, label=label)
    limits = _loss_limits(runs)
    log_scale = limits is not None and limits[1] / limits[0] > 8  # a wide range: losses near zero stay readable
    if log_scale:
        ax.set_yscale("log")
    if limits:
        ax.set_ylim(*limits if log_scale else (0, limits[1]))
    ax.set_xlabel("training step" if x == "step" else "wall-clock seconds of the run (evaluations included)")
    ax.set_ylabel("loss (log scale)" if log_scale else "loss")
    ax.set_title("Loss: training (solid, smoothed) and validation (dashed, dots)")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper right")
    name = "loss_vs_step.png" if x == "step" else "loss_vs_time.png"
    return _save(fig, plt, out_dir / name, "Loss against " + ("step" if x == "step" else "wall-clock time"),
                 "Training loss per step (exponential moving average, 0.9) and validation loss at each evaluation.")


def plot_accuracy(results: dict, out_dir: Path) -> dict | None:
    """Top-1 and top-5 against epoch, side by side."""
    runs = [r for r in results["runs"] if any(m.get("top1") is not None for m in r["metrics"])]
    if not runs:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.0), sharex=True)
    seen: set = set()
    for r in runs:
        label = _legend_once(seen, r)
        for ax, key in zip(axes, ("top1", "top5")):
            pts = [(m["epoch"], m[key]) for m in r["metrics"] if m.get("epoch") is not None and m.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), color=r["color"], marker="o", ms=3.5, lw=1.4, label=label if key == "top1" else None)
    target = results.get("target_top1")
    if target is not None:
        axes[0].axhline(target, color="#444", lw=0.8, ls=":", label=f"target {target:g}%")
    for ax, title in zip(axes, ("top-1 accuracy (%)", "top-5 accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    if not any(m.get("top5") is not None for r in runs for m in r["metrics"]):
        axes[1].text(0.5, 0.5, "not measured:\n5 classes or fewer", transform=axes[1].transAxes,
                     ha="center", va="center", color="#666")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, plt, out_dir / "accuracy_vs_epoch.png", "Validation accuracy against epoch",
                 "Top-1 and top-5 on the validation split at each evaluation; the dotted line is the target.")


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
    seed_of: dict = {}
    for i, r in enumerate(runs):
        bins = r["calibration"]["bins"]
        # the seeds of a variant share its colour: each its own marker, line and hatch to tell them apart
        k = seed_of[r["variant"]] = seed_of.get(r["variant"], -1) + 1
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
