"""What a run writes as it goes: ``steps.jsonl``, ``metrics.csv``, TensorBoard events, the console.

Only the main process writes. After a resume, lines newer than the checkpoint (written by the
run that was killed) are dropped first, so the files read as if the run had never stopped.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path

METRIC_COLUMNS = ["epoch", "step", "train_loss", "val_loss", "top1", "top5", "lr", "images_per_sec", "seconds",
                  "train_top1"]
# the columns before train_top1 was logged: a run begun then keeps them when resumed
OLDER_METRIC_COLUMNS = METRIC_COLUMNS[:9]


class RunLog:
    """``steps.jsonl`` (one object per step) and ``metrics.csv`` (one row per evaluation)."""

    def __init__(self, run_dir, *, enabled: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self.steps_path = Path(run_dir) / "steps.jsonl"
        self.metrics_path = Path(run_dir) / "metrics.csv"
        self._steps = self._metrics = self._tb = None
        if not enabled:
            return
        if resume_step is not None:
            _keep_lines(self.steps_path, lambda line: json.loads(line)["step"] <= resume_step)
            _keep_lines(self.metrics_path, lambda line: line.startswith("epoch,")
                        or int(line.split(",")[1]) <= resume_step)
        new_csv = not self.metrics_path.exists() or self.metrics_path.stat().st_size == 0
        # a run resumed from an older version goes on with its own header's columns (a new one would
        # misalign its rows)
        self.columns = METRIC_COLUMNS if new_csv else _header(self.metrics_path)
        self._steps = open(self.steps_path, "a")
        self._metrics = open(self.metrics_path, "a", newline="")
        self._csv = csv.DictWriter(self._metrics, self.columns, lineterminator="\n")  # as _keep_lines writes
        if new_csv:
            self._csv.writeheader()
            self._metrics.flush()
        self._tb = _tensorboard(run_dir)

    def step(self, record: dict) -> None:
        if not self.enabled:
            return
        self._steps.write(json.dumps(record) + "\n")
        self._steps.flush()
        if self._tb is not None:
            self._tb.add_scalar("train/loss", record["loss"], record["step"])
            self._tb.add_scalar("train/lr", record["lr"], record["step"])

    def metrics(self, row: dict) -> None:
        if not self.enabled:
            return
        self._csv.writerow({key: row.get(key) for key in self.columns})
        self._metrics.flush()
        if self._tb is not None:
            for key in ("train_loss", "train_top1", "val_loss", "top1", "top5", "images_per_sec"):
                if row.get(key) is not None:
                    self._tb.add_scalar(f"eval/{key}", row[key], row["step"])

    def close(self) -> None:
        for handle in (self._steps, self._metrics, self._tb):
            if handle is not None:
                handle.close()
        self._steps = self._metrics = self._tb = None


def read_steps(run_dir) -> list[dict]:
    """The steps logged; a last line cut short by a crash is left out (it was a bare JSON error)."""
    path = Path(run_dir) / "steps.jsonl"
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    steps = []
    for number, line in enumerate(lines, 1):
        try:
            steps.append(json.loads(line))
        except ValueError:
            if number == len(lines):
                break
            from inceptionlab.errors import UserError
            raise UserError(f"{path} line {number} is not a step record; it is not this tool's log, or it was "
                            f"edited: pass another --out, or move the file away") from None
    return steps


def _header(path: Path) -> list[str]:
    """The columns of an existing metrics.csv: this version's, or an older version's (fewer)."""
    first = path.read_text().splitlines()[:1]
    columns = first[0].split(",") if first else []
    return columns if columns in (METRIC_COLUMNS, OLDER_METRIC_COLUMNS) else METRIC_COLUMNS


def read_metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    return list(csv.DictReader(io.StringIO(path.read_text())))


def stopped_before_its_first_step(run_dir) -> bool:
    """Whether ``run_dir`` holds a run that logged no step, and no checkpoint or weights: its
    steps.jsonl and metrics.csv are there and empty (a user's own folder has no empty steps.jsonl),
    or neither is there yet and its config.yaml is this tool's (a run stopped in its first second,
    between writing config.yaml and the logs, was refused by the same command and by --resume)."""
    run = Path(run_dir)
    if (run / "model.safetensors").exists() or any((run / "checkpoints").glob("*.pt")):
        return False
    logs = [(run / name).is_file() for name in ("steps.jsonl", "metrics.csv")]
    if not any(logs):
        return not (run / "summary.json").exists() and holds_a_whole_config(run / "config.yaml")
    if not all(logs):
        return False
    header = (run / "metrics.csv").read_text().splitlines()[:1]  # this tool's own log, not a user's file
    return (header in ([",".join(METRIC_COLUMNS)], [",".join(OLDER_METRIC_COLUMNS)])
            and not (run / "steps.jsonl").read_text().strip() and not read_metrics(run))


def holds_a_whole_config(path) -> bool:
    """Whether ``path`` is a config.yaml as a run writes it: every TrainConfig key, and no other
    (a user's own file names a few)."""
    import dataclasses

    from inceptionlab.errors import UserError
    from inceptionlab.train.config import TrainConfig, read_yaml

    if not Path(path).is_file():
        return False
    try:
        values = read_yaml(path)
    except UserError:
        return False
    return set(values) == {f.name for f in dataclasses.fields(TrainConfig)}


def _keep_lines(path: Path, keep) -> None:
    """Rewrites ``path`` with the complete lines for which ``keep(line)`` holds."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if line.strip() and keep(line):
                kept.append(line)
        except (ValueError, KeyError, IndexError):  # a line cut short by a crash
            continue
    path.write_text("".join(line + "\n" for line in kept))


def _tensorboard(run_dir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir))


class Progress:
    """A progress bar with ETA, loss and images/s on a terminal; plain periodic lines otherwise.

    With ``quiet``, only evaluations and the end of the run are printed.
    """

    def __init__(self, *, total_steps: int | None, budget_seconds: float | None, enabled: bool = True,
                 quiet: bool = False, log_every: int | None = None, stream=None):
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.quiet = quiet
        self.bar = enabled and not quiet and _isatty(self.stream)
        self.total_steps = total_steps
        self.budget_seconds = budget_seconds
        self.log_every = log_every
        self._last_print = 0.0
        self._bar_shown = False

    def update(self, *, step: int, epoch: float, loss: float, lr: float, images_per_sec: float,
               seconds: float, step_seconds: float) -> None:
        if not self.enabled or self.quiet:
            return
        now = time.monotonic()
        eta = self._eta(step, seconds, step_seconds)
        if self.bar:
            if now - self._last_print < 0.2 and step != self.total_steps:
                return
            done = step / self.total_steps if self.total_steps else (
                seconds / self.budget_seconds if self.budget_seconds else 0.0)
            width = 24
            filled = int(width * min(done, 1.0))
            total = f"/{self.total_steps}" if self.total_steps else ""
            text = (f"\r[{'=' * filled}{'>' if filled < width else ''}{' ' * (width - filled - 1)}] "
                    f"step {step}{total} ep {epoch:.2f} loss {loss:.4f} lr {lr:.3g} "
                    f"{images_per_sec:.0f} img/s ETA {_clock(eta)}")
            self._write(lambda: (self.stream.write(text + "\033[K"), self.stream.flush()))
            self._bar_shown = self.enabled
        else:
            due = (step % self.log_every == 0) if self.log_every else (now - self._last_print >= 30.0)
            if not due:
                return
            total = f"/{self.total_steps}" if self.total_steps else ""
            self._print(f"step {step}{total}  epoch {epoch:.2f}  loss {loss:.4f}  lr {lr:.4g}  "
                        f"{images_per_sec:.0f} img/s  eta {_clock(eta)}")
        self._last_print = now

    def line(self, text: str) -> None:
        """A full line (evaluations, warnings, the end of the run); printed even when quiet."""
        if self.enabled:
            self._print(text)

    def _print(self, text: str) -> None:
        def write():
            if self._bar_shown:
                self.stream.write("\r\033[K")
                self._bar_shown = False
            print(text, file=self.stream, flush=True)
        self._write(write)

    def _write(self, write) -> None:
        """Writes, or stops writing for good when the reader has gone (`train ... | head -1`): the
        run goes on to its end and its files. A closed pipe had failed the run after its last step,
        without its final weights."""
        try:
            write()
        except BrokenPipeError:
            self.enabled = False
            try:  # later writes to the stream (and Python's flush at exit) go nowhere instead of raising
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
            except (OSError, ValueError, AttributeError):
                pass

    def close(self) -> None:
        if self._bar_shown:
            self._write(lambda: (self.stream.write("\n"), self.stream.flush()))
            self._bar_shown = False

    def _eta(self, step: int, seconds: float, step_seconds: float) -> float | None:
        if self.total_steps:
            return max(0, self.total_steps - step) * step_seconds
        if self.budget_seconds:
            return max(0.0, self.budget_seconds - seconds)
        return None


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
