"""Checkpoints that a crash cannot break, and the random state that makes resume exact.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then
renamed over its final name (an atomic operation), and the folder is fsync'ed: whatever moment a
crash, SIGKILL or full disk hits, the folder holds the previous checkpoints intact and possibly
a stray ``.tmp`` file, which is ignored and cleaned up. Older checkpoints are pruned only after
the new one is safely in place. ``best.pt`` is a hard link to the best step's file (a copy
where links are not supported).

Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``: no code is unpickled.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from inceptionlab.errors import UserError, clipped
from inceptionlab.files import atomic_write_text  # noqa: F401 (imported from here)
from inceptionlab.train.logs import stopped_before_its_first_step

STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(UserError):
    """A checkpoint could not be written (full disk, no permission): the earlier ones are intact."""


def atomic_save(obj, path: Path) -> None:
    """torch.save to ``path`` through a temporary file, fsync and rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure is one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read checkpoint {path} ({clipped(first)})") from None


class CheckpointDir:
    """``RUN/checkpoints``: ``step_00000123.pt`` files (the latest ``keep`` of them) and ``best.pt``."""

    def __init__(self, folder, keep: int = 3):
        self.folder = Path(folder)
        self.keep = keep

    def path(self, step: int) -> Path:
        return self.folder / f"step_{step:08d}.pt"

    @property
    def best(self) -> Path:
        return self.folder / "best.pt"

    def steps(self) -> list[int]:
        """Steps of the checkpoints present, oldest first (temporary files are not checkpoints)."""
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for m in map(STEP_FILE.match, os.listdir(self.folder)) if m)

    def latest(self) -> Path | None:
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def load_latest(self) -> tuple[dict, Path]:
        """The newest checkpoint that loads. A newer one that does not is passed over and renamed
        ``<name>.unreadable`` (kept for a look, out of the way of the run that goes on from the one
        before); ``passed_over`` lists (new name, reason) for the resume to report."""
        problems = []  # newest first, one per checkpoint that did not load
        self.passed_over: list[tuple[str, str]] = []
        for step in reversed(self.steps()):
            try:
                state = load_checkpoint(self.path(step))
            except UserError as exc:
                problems.append(str(exc))
                continue
            held = (state.get("position") or {}).get("step") if isinstance(state, dict) else None
            if held is not None and held != step:  # another run's file dropped in: it had replaced this run's model and deleted
                raise UserError(  # its later checkpoints and metrics
                    f"{self.path(step)} holds step {held}, not step {step}: it is not this run's checkpoint; "
                    f"move it out of {self.folder}, then --resume again")
            newer = [s for s in reversed(self.steps()) if s > step]
            for later, problem in zip(newer, problems):
                kept = self.path(later).with_name(self.path(later).name + ".unreadable")
                self.path(later).replace(kept)
                self.passed_over.append((kept.name, problem))
            return state, self.path(step)
        reason = f": {problems[0]}" if problems else ""
        run = self.folder.parent
        if not problems and (run / "model.safetensors").is_file():  # a finished run whose checkpoints are gone
            raise UserError(f"{self.folder} holds no checkpoint (it was emptied or removed), so the run cannot go on "
                            f"exactly; its final weights are in {run / 'model.safetensors'}: train on from them in a "
                            f"new run, inceptionlab train --weights {run} --out NEW_DIR ...")
        if not problems and stopped_before_its_first_step(run):
            raise UserError(f"no checkpoint in {self.folder}: the run there stopped before its first step, so there is "
                            f"nothing to continue; start it again with the command that started it (the folder is "
                            f"reused)")
        if not problems and (run / "summary.json").is_file():  # it ended before its first checkpoint
            raise UserError(f"no checkpoint in {self.folder}: the run there ended before its first one, so there is "
                            f"nothing to continue (summary.json says why); start it again in another --out, or "
                            f"delete {run} first")
        raise UserError(f"no usable checkpoint in {self.folder}{reason}; start a new run in another --out (or "
                        f"delete {run} first)")

    def save(self, state: dict, step: int, *, best: bool = False) -> Path:
        """Writes the checkpoint of ``step``; CheckpointError (earlier checkpoints intact) on failure."""
        path = self.path(step)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_save(state, path)
            if best:
                self._link_best(path)
        except (OSError, RuntimeError) as exc:  # torch's zip writer turns a full disk into a RuntimeError
            if isinstance(exc, RuntimeError) and _os_error(exc) is None:
                raise
            cause = _os_error(exc)
            previous = [s for s in self.steps() if s != step]
            intact = f"the previous checkpoint {self.path(previous[-1])} is intact" if previous else \
                "no earlier checkpoint existed"
            raise CheckpointError(f"cannot write checkpoint {path}: {cause.strerror or cause}; {intact}; "
                                  f"free disk space or fix permissions, then --resume") from None
        self._prune(step)
        return path

    def relink_best(self, step: int) -> bool:
        """Points best.pt at ``step``'s checkpoint again, where best.pt went missing and that file is
        still there (it would have been pruned with best.pt gone); whether it did."""
        if self.best.exists() or not self.path(step).is_file():
            return False
        self._link_best(self.path(step))
        return True

    def _link_best(self, path: Path) -> None:
        tmp = self.folder / f".best.pt.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:
            atomic_save(torch.load(path, map_location="cpu", weights_only=True), tmp)
        os.replace(tmp, self.best)
        fsync_dir(self.folder)

    def _prune(self, newest: int) -> None:
        for step in self.steps()[:-self.keep]:
            if step != newest:
                self.path(step).unlink(missing_ok=True)
        for name in os.listdir(self.folder):  # temporary files of crashed writers
            if name.endswith(".tmp") and f".{os.getpid()}." not in name:
                (self.folder / name).unlink(missing_ok=True)

    def truncate_after(self, step: int) -> None:
        """Removes checkpoints newer than ``step`` (left by a run killed after ``step``)."""
        for later in self.steps():
            if later > step:
                self.path(later).unlink(missing_ok=True)


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (itself, or what it was raised while handling), if any."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, OSError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


# ------------------------------------------------------------------ random state
def rng_state() -> dict:
    """Python, NumPy, torch CPU (and CUDA) random states, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def versions() -> dict:
    import platform

    import inceptionlab

    return {"inceptionlab": inceptionlab.__version__, "torch": str(torch.__version__),
            "python": platform.python_version(), "numpy": str(np.__version__)}
