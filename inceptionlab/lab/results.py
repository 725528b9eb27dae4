"""Reading a lab directory back: one record per run, the target accuracy, time to reach it, and
mean and spread over seeds.

Everything the report shows comes from these records, and they are what ``results.json`` holds:
the metrics rows exactly as the engine wrote them (as numbers), the training-loss curve, the
engine's summary, and the lab's measurements.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from inceptionlab.lab.measure import MEASURE_FILE
from inceptionlab.lab.plan import Plan

FAILURE_FILE = "lab_failure.json"   # written by the lab when the engine raised instead of returning
CALIBRATION_FILE = "lab_calibration.json"
MAX_CURVE_POINTS = 1500              # training-loss points kept per run (evenly thinned)
DEFAULT_TARGET_SHARE = 0.9           # target accuracy: this share of the best run's best top-1
LEARNED_POINTS = 5.0                 # a top-1 beats chance (100 / classes) by at least this much, whatever the images
OK_STATUSES = ("finished",)
DONE_STATUSES = ("finished", "diverged", "failed")

# summary.json keys copied into a run's record
SUMMARY_KEYS = ("status", "message", "params", "steps", "epochs", "seconds", "best_top1", "best_top5",
                "final_top1", "final_top5", "final_train_loss", "final_train_top1", "final_val_loss",
                "train_images_per_sec", "classes", "data_source", "img_size",
                "skipped_files")  # [{path, reason}] of the files it found unreadable (results.json left them out)
# numbers aggregated over seeds, in table order
NUMERIC = ("params", "macs", "train_images_per_sec", "infer_images_per_sec", "best_top1", "best_top5",
           "final_top1", "final_top5", "final_train_loss", "final_train_top1", "final_val_loss", "steps", "seconds",
           "steps_to_target", "seconds_to_target", "ece")


def _number(value):
    """A metrics.csv cell as a float (None for empty or missing)."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_run(run_dir: Path) -> dict:
    """What one run directory holds, as plain values (missing files give empty fields)."""
    run_dir = Path(run_dir)
    record: dict = dict(dir=str(run_dir), status="pending", message="")
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
        except json.JSONDecodeError:
            summary = dict(status="failed", message="summary.json is unreadable")
        record.update({k: summary.get(k) for k in SUMMARY_KEYS if k in summary})
    failure_path = run_dir / FAILURE_FILE
    if failure_path.exists():  # the engine raised: the lab's record wins over a stale summary
        record.update(json.loads(failure_path.read_text()))
    measure_path = run_dir / MEASURE_FILE
    if measure_path.exists():
        measured = json.loads(measure_path.read_text())
        # the engine's numbers (of the model it trained) first; the lab's fill in the rest
        record.update({k: v for k, v in measured.items() if k != "error" and record.get(k) is None})
    calibration_path = run_dir / CALIBRATION_FILE
    if calibration_path.exists():
        record["calibration"] = json.loads(calibration_path.read_text())
        record["ece"] = record["calibration"]["ece"]
    record["metrics"] = _read_metrics(run_dir)
    record["train_curve"] = _read_steps(run_dir)
    record["message"] = record.get("message") or ""
    return record


def _read_metrics(run_dir: Path) -> list[dict]:
    from inceptionlab.train.logs import read_metrics

    return [{k: _number(v) for k, v in row.items()} for row in read_metrics(run_dir)]


def _read_steps(run_dir: Path) -> list[dict]:
    """(step, epoch, loss, seconds) per step, thinned evenly to at most MAX_CURVE_POINTS."""
    from inceptionlab.train.logs import read_steps

    rows = read_steps(run_dir)
    if len(rows) > MAX_CURVE_POINTS:
        stride = len(rows) / MAX_CURVE_POINTS
        rows = [rows[int(i * stride)] for i in range(MAX_CURVE_POINTS - 1)] + [rows[-1]]
    return [dict(step=r.get("step"), epoch=r.get("epoch"), loss=_finite(r.get("loss")), seconds=r.get("seconds"))
            for r in rows]


def _finite(value):
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


# ------------------------------------------------------------------ across runs
def best_top1(record: dict):
    if record.get("best_top1") is not None:
        return record["best_top1"]
    values = [r["top1"] for r in record.get("metrics", []) if r.get("top1") is not None]
    return max(values) if values else None


def learned_bar(classes: int, val_images: int | None = None) -> float:
    """The top-1 (in %) beyond which an accuracy is no guess: chance plus the larger of LEARNED_POINTS and twice
    the binomial standard error of guessing on ``val_images`` images (8.5 points on 50 images of 10 classes)."""
    chance = 1 / classes
    error = 2 * math.sqrt(chance * (1 - chance) / val_images) if val_images else 0.0
    return 100 * (chance + max(LEARNED_POINTS / 100, error))


def chance_text(classes: int, val_images: int | None = None) -> str:
    """``chance 10% for 10 classes + 8.5 points on 50 validation images``: what ``learned_bar`` asks."""
    on = f" on {val_images} validation images" if val_images else ""
    return (f"chance {100 / classes:.3g}% for {classes} classes + "
            f"{learned_bar(classes, val_images) - 100 / classes:.1f} points{on}")


def choose_target(records: list[dict], target: float | None, target_fn=None,
                  val_images: int | None = None) -> tuple[float | None, str]:
    """(target top-1 in %, how it was chosen): the plan's, else the study's, else 90% of the best; none (with
    the reason) when a chosen one is within the noise of chance: guessing would "reach" it and steps to it would
    mean nothing."""
    if target is not None:
        return float(target), f"top-1 {target:g}% (set by the plan)"
    classes = next((len(r["classes"]) for r in records if r.get("classes")), 0)
    guess = (f"is within the noise of chance ({chance_text(classes, val_images)}); train longer or set --target"
             if classes else "")
    if target_fn is not None:
        value = target_fn(records)
        if value is not None:
            rule = target_fn.__doc__.strip().rstrip(".")
            rule = rule[:1].lower() + rule[1:]
            if classes and value < learned_bar(classes, val_images):
                return None, f"none: top-1 {value:g}% ({rule}) {guess}"
            return float(value), f"top-1 {value:g}% ({rule})"
    bests = [(best_top1(r), r["name"]) for r in records if r.get("status") in OK_STATUSES and best_top1(r) is not None]
    if not bests:
        return None, "no finished run has a top-1"
    best, name = max(bests, key=lambda b: b[0])  # the first of equals, in the plan's order
    value = round(DEFAULT_TARGET_SHARE * best, 2)
    share = f"{DEFAULT_TARGET_SHARE:.0%} of the best run's best ({name}: {best:.2f}%)"
    if classes and value <= 100 / classes:
        return None, (f"none: {share} is at or below chance ({100 / classes:.3g}% for {classes} classes); "
                      f"train longer or set --target")
    if classes and value < learned_bar(classes, val_images):
        return None, f"none: top-1 {value:g}% = {share} {guess}"
    return value, f"top-1 {value:g}% = {share}"


def time_to_target(record: dict, target: float | None) -> tuple:
    """(step, seconds) of the first evaluation at or above ``target`` top-1; (None, None) if never."""
    if target is None:
        return None, None
    for row in record.get("metrics", []):
        if row.get("top1") is not None and row["top1"] >= target:
            return row.get("step"), row.get("seconds")
    return None, None


def aggregate(records: list[dict]) -> list[dict]:
    """One row per variant: n runs, n finished, and mean / std / min / max of every number.

    Failed runs count in ``n`` but not in the statistics of their accuracy and losses."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["variant"], []).append(r)
    rows = []
    for variant, members in groups.items():
        done = [m for m in members if m.get("status") in OK_STATUSES]
        row = dict(variant=variant, model=members[0]["model"], n=len(members), finished=len(done),
                   seeds=[m["seed"] for m in members], color=members[0].get("color"))
        for key in NUMERIC:
            pool = members if key in ("params", "macs") else done
            values = [m[key] for m in pool if isinstance(m.get(key), (int, float))]
            if key in ("steps_to_target", "seconds_to_target"):
                row[f"{key}_reached"] = len(values)
            if values:
                row[key] = dict(mean=statistics.fmean(values),
                                std=statistics.stdev(values) if len(values) > 1 else 0.0,
                                min=min(values), max=max(values), n=len(values))
            else:
                row[key] = None
        rows.append(row)
    return rows


def collect(plan: Plan, lab_dir: Path, data_source: str | None = None, target_fn=None,
            val_images: int | None = None) -> dict:
    """The results of a lab directory: every run's record, the target (judged against the noise of
    ``val_images`` validation images), and the per-variant rows."""
    from inceptionlab.lab.plots import run_colors

    lab_dir = Path(lab_dir)
    records = []
    variants = {v.name: v for v in plan.variants}
    for run in plan.runs():
        record = read_run(lab_dir / "runs" / run.name)
        own = variants[run.variant]
        record.update(name=run.name, variant=run.variant, model=run.model, model_kwargs=run.model_kwargs,
                      own_switches=dict(own.model_kwargs), train=dict(own.train), seed=run.seed,
                      left_out=list(run.left_out), dir=str(Path("runs") / run.name))
        records.append(record)
    colors = run_colors([v.name for v in plan.variants])
    for record in records:
        record["color"] = colors[record["variant"]]
    target, rule = choose_target(records, plan.target, target_fn, val_images)
    for record in records:
        record["steps_to_target"], record["seconds_to_target"] = time_to_target(record, target)
    sources = [r.get("data_source") for r in records if r.get("data_source")]
    return dict(title=plan.title, study=None, plan=plan.to_dict(),
                data_source=data_source or (sources[0] if sources else None),
                budget=dict(plan.budget), seeds=list(plan.seeds), target_top1=target, target_rule=rule,
                runs=records, variants=aggregate(records), plots=[])
