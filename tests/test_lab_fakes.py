"""Fake run directories and a fake training engine for the lab's unit tests (no tests here).

`write_fake_run` writes what the engine writes (config.yaml, metrics.csv, steps.jsonl,
summary.json, a checkpoint) with a made-up learning curve; `FakeEngine` stands in for
`inceptionlab.train.train` and decides each run's fate from its config.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import yaml

from inceptionlab.lab.plan import BUDGET_KEYS

METRIC_COLUMNS = ["epoch", "step", "train_loss", "val_loss", "top1", "top5", "lr", "images_per_sec", "seconds"]


def curve(speed: float, steps: int, evals: int, ceiling: float = 98.0):
    """(step, top1, top5, val_loss, train_loss, seconds) at each evaluation: top-1 rises as 1 - exp(-step/speed)."""
    rows = []
    for i in range(1, evals + 1):
        step = round(steps * i / evals)
        frac = 1 - math.exp(-step / speed)
        top1 = round(10 + (ceiling - 10) * frac, 3)
        top5 = round(min(100.0, 50 + (100 - 50) * frac), 3)
        val_loss = round(2.3 * (1 - frac) + 0.05, 6)
        rows.append(dict(epoch=round(step / 10, 4), step=step, train_loss=round(val_loss * 1.1, 6),
                         val_loss=val_loss, top1=top1, top5=top5, lr=0.001, images_per_sec=100.0,
                         seconds=round(step * 0.5, 2)))
    return rows


def folder_classes(data) -> list[str] | None:
    """The classes of an image folder of <class>/ folders, as the engine names them (None: the digits)."""
    return sorted(path.name for path in Path(data).iterdir() if path.is_dir()) if data is not None else None


def write_fake_run(run_dir, *, model="googlenet", status="finished", message="", speed=20.0, steps=100,
                   evals=5, seed=0, img_size=28, params=1000, nan_at=None, checkpoint=True, config=None,
                   skipped_files=(), classes=None):
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = curve(speed, steps, evals)
    if nan_at is not None:
        rows = [r for r in rows if r["step"] < nan_at]
    with open(run_dir / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    last_step = nan_at if nan_at is not None else steps
    with open(run_dir / "steps.jsonl", "w") as handle:
        for step in range(1, last_step + 1):
            loss = float("nan") if step == nan_at else 2.3 * math.exp(-step / speed) + 0.05
            handle.write(json.dumps(dict(step=step, epoch=step / 10, loss=loss, lr=0.001, seconds=step * 0.5,
                                         images=32 * step)) + "\n")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(dict(config or {}, model=model, seed=seed)))
    if checkpoint:
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        (run_dir / "checkpoints" / f"step_{last_step:08d}.pt").write_bytes(b"fake")
    last = rows[-1] if rows else {}
    summary = dict(model=model, model_kwargs={}, status=status, message=message, params=params, steps=last_step,
                   epochs=last_step / 10, seconds=last_step * 0.5,
                   best_top1=max((r["top1"] for r in rows), default=None),
                   best_top5=max((r["top5"] for r in rows), default=None),
                   final_top1=last.get("top1"), final_top5=last.get("top5"),
                   final_train_loss=last.get("train_loss"), final_val_loss=last.get("val_loss"),
                   train_images_per_sec=64.0, classes=classes or [str(i) for i in range(10)],
                   data_source="fake digits", seed=seed, img_size=img_size, batch_size=32,
                   skipped_files=[dict(path=path, reason="not an image") for path in skipped_files])
    if status is not None:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


class FakeEngine:
    """``train(cfg)`` / ``train(resume=dir)`` writing fake runs.

    ``fates`` maps a run folder name to "raise", "diverge", "sigterm", "interrupt_once" (interrupted the first
    time, finished on resume) or a speed (lower learns faster); default speed 20. ``skipped`` maps a run folder
    name to the paths its summary lists as unreadable (a new run's). config.yaml records the run's budget and
    data, as the engine's does, and summary.json the data's classes; a resume with ``budget=`` (an extended run)
    trains to its steps, and one with ``data=`` (a moved folder) on that folder, and records them."""

    def __init__(self, fates: dict | None = None):
        self.fates = dict(fates or {})
        self.skipped: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str]] = []   # (run name, "new" | "resume")
        self.extended: list[tuple[str, dict]] = []  # (run name, the new budget) of each resume given one
        self.interrupted: set[str] = set()

    def __call__(self, cfg=None, *, resume=None, continue_with=None, budget=None, data=None):
        self.continue_with = continue_with
        if resume is not None:
            run_dir = Path(resume)
            self.calls.append((run_dir.name, "resume"))
            saved = yaml.safe_load((run_dir / "config.yaml").read_text())
            if budget:
                self.extended.append((run_dir.name, budget))
                saved.update({key: budget.get(key) for key in BUDGET_KEYS})
            if data is not None:
                saved["data"] = data
            return write_fake_run(run_dir, model=saved["model"], seed=saved["seed"], speed=10.0, config=saved,
                                  steps=saved.get("steps") or 100, classes=folder_classes(saved.get("data")))
        run_dir = Path(cfg.out)
        self.calls.append((run_dir.name, "new"))
        fate = self.fates.get(run_dir.name, 20.0)
        steps = cfg.steps or 100
        config = dict(lr=cfg.lr, smoothing=cfg.smoothing, model_kwargs=dict(cfg.model_kwargs), data=cfg.data,
                      **{key: getattr(cfg, key) for key in BUDGET_KEYS})
        classes = folder_classes(cfg.data)
        if fate == "raise":
            run_dir.mkdir(parents=True, exist_ok=True)
            raise RuntimeError("CUDA out of memory (fake)\nsecond line")
        if fate == "diverge":
            return write_fake_run(run_dir, model=cfg.model, seed=cfg.seed, status="diverged",
                                  message="loss became nan at step 30", steps=steps, nan_at=30, config=config,
                                  classes=classes)
        if fate == "sigterm":  # the signal arrives while the run sets up, before its own handlers
            import os
            import signal
            os.kill(os.getpid(), signal.SIGTERM)
        if fate == "interrupt_once" and run_dir.name not in self.interrupted:
            self.interrupted.add(run_dir.name)
            return write_fake_run(run_dir, model=cfg.model, seed=cfg.seed, status="interrupted",
                                  message="stopped by SIGINT", steps=steps // 2, config=config, classes=classes)
        return write_fake_run(run_dir, model=cfg.model, seed=cfg.seed, speed=float(fate), steps=steps,
                              config=config, skipped_files=self.skipped.get(run_dir.name, ()),
                              classes=classes)


def fake_measure(model_name, model_kwargs, *, num_classes, img_size, batch_size=32, **_):
    """Stands in for `measure_model`: numbers that depend on the model name only."""
    size = len(model_name) * 1000
    return dict(params=size * 10, macs=size * 1000, img_size=img_size, infer_images_per_sec=500.0 - size / 100,
                infer_batch_size=batch_size)
