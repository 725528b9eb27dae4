"""The training loop: ``train(cfg)`` and ``train(resume=RUN_DIR)``.

Read `Trainer.train_step` first: batch, forward, loss (main + aux), backward, clip, step, EMA.
Around it, `Trainer.run` walks the epochs and, after each step, agrees with the other processes
on the loss and on whether to stop (one small all-reduce), logs, evaluates, and checkpoints.

What makes resume exact: a checkpoint stores the weights, the optimizer, the EMA, the scaler,
every process's random state, and the data position (epoch, batches consumed in it). The
loader's order and augmentation depend only on (seed, epoch) and on how many batches were drawn,
so a resumed run rebuilds the epoch's loader, draws and drops the batches already consumed, puts
back the random state, and continues exactly where the checkpoint left off.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn

from inceptionlab.cpus import pointwise_path, set_threads
from inceptionlab.errors import UserError, clipped, listed
from inceptionlab.files import why_not_writable
from inceptionlab.models import fused_norm
from inceptionlab.train.checkpoint import (CheckpointDir, CheckpointError, atomic_write_text, load_checkpoint,
                                           rng_state, set_rng_state, versions)
from inceptionlab.train.config import TrainConfig, write_yaml
from inceptionlab.train.distributed import Distributed, ShardedEpochSampler, convert_sync_batchnorm, lost_a_process
from inceptionlab.train.evaluation import EvalResult, run_eval
from inceptionlab.train.logs import Progress, RunLog, stopped_before_its_first_step
from inceptionlab.train.loss import InceptionLoss, default_aux_weight
from inceptionlab.train.optim import LRSchedule, ModelEMA, build_optimizer
from inceptionlab.train.setup import (amp_dtype, build_model, check_freeze_bn, check_model_switches, freeze,
                                      input_convention, preprocessing, trained_input_size)


@dataclass
class Position:
    """Where the run stands; saved in every checkpoint."""
    step: int = 0              # optimizer steps done
    epoch: int = 0             # the epoch being read
    batch: int = 0             # batches of that epoch already consumed
    images: int = 0            # training images seen (all processes)
    seconds: float = 0.0       # wall-clock seconds of training, over all resumes
    train_seconds: float = 0.0  # of which in training steps (for images/s)


@dataclass
class History:
    """Evaluation results so far, and the training loss since the last evaluation."""
    best_top1: float | None = None
    best_top5: float | None = None
    best_step: int | None = None
    last_eval: dict | None = None
    window_loss: float = 0.0
    window_steps: int = 0
    # training images the main head classified right since the last evaluation (of window_images);
    # None in a window begun by a version that did not count them (its checkpoint lacks the key)
    window_correct: int | None = 0
    window_images: int = 0
    window_seconds: float = 0.0


class Agreed(NamedTuple):
    loss: float        # mean over the global batch
    images: int
    correct: int       # of them, classified right by the main head (before this step's update)
    signalled: bool    # SIGINT/SIGTERM reached some process
    time_up: bool      # the wall-clock budget is spent
    seconds: float     # the main process's clock


@dataclass
class StopRequest:
    """Set by SIGINT/SIGTERM; the loop stops at the end of the current step."""
    signal_name: str | None = None
    handlers: dict = field(default_factory=dict)
    announce: bool = False  # say on stderr that the signal came (a --compile first step takes minutes)

    def install(self, signals=(signal.SIGINT, signal.SIGTERM)) -> None:
        """Handles ``signals`` from now on (each once: a second install keeps the first's saved handler)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in signals:
            if sig not in self.handlers:
                self.handlers[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self.signal_name = signal.Signals(signum).name
        if self.announce:
            again = "Ctrl-C again" if signum == signal.SIGINT else "a Ctrl-C"  # (after a SIGTERM, "again" misled)
            print(f"{self.signal_name}: stopping after this step, with a checkpoint ({again} stops at once, "
                  f"without one)", file=sys.stderr, flush=True)

    def uninstall(self) -> None:
        for sig, handler in self.handlers.items():
            signal.signal(sig, handler)
        self.handlers.clear()


BUDGET_KEYS = ("epochs", "steps", "minutes")
# a training loss this many times a uniform guess's (ln of the class count) is a blown-up network, not a
# spike it comes back from: lr=1e6 trained to the end at loss 1e23 and was reported "finished"
DIVERGED_LOSS_FACTOR = 1000


def train(cfg: TrainConfig | None = None, *, resume: str | Path | None = None, quiet: bool | None = None,
          budget: dict | None = None, threads: int | None = None, data: str | Path | None = None,
          grad_checkpointing: bool | None = None, continue_with: str | None = None) -> dict:
    """Trains ``cfg`` (or continues the run in ``resume``); returns the summary (also summary.json).

    ``budget`` (with ``resume``) replaces the run's epochs, steps and minutes together: a finished
    run is extended by giving it a larger one. ``threads`` (with ``resume``) replaces the run's CPU
    thread count (which changes only how sums are split: results differ at rounding level).
    ``data`` (with ``resume``) is where the run's image folder is now, when it moved: the classes
    must be the same (the split follows the file names). ``grad_checkpointing`` (with ``resume``)
    turns recomputation on or off, which changes memory and time, not results. ``continue_with``
    is the command that a run stopped by a signal tells the user to run (default: this run's
    ``train --resume``; a lab names its own, which continues the other runs too). ``quiet`` (True or
    False) holds for this call only: config.yaml keeps the run's own setting for the next resume.
    A run that stopped before its first step (no checkpoint) is started again from its config.yaml.
    Bad configuration raises a one-line UserError before
    any training. Once training runs, a diverged, interrupted or failed run is reported in the
    summary's status and message.
    """
    dist = Distributed.from_env()
    try:
        state = None
        if (budget or threads is not None or data is not None or grad_checkpointing is not None) and resume is None:
            raise UserError("budget=, threads=, data= and grad_checkpointing= change a resumed run; put them in the "
                            "TrainConfig instead")
        if resume is not None:
            if cfg is not None:
                raise UserError("pass either a config or resume=RUN_DIR, not both")
            state, cfg = _resume_state(Path(resume), dist)
            if state is not None:
                cfg = cfg.replace(weights=None)  # the checkpoint holds the weights
            cfg = cfg if threads is None else cfg.replace(threads=threads)
            if grad_checkpointing is not None:
                cfg = cfg.replace(grad_checkpointing=grad_checkpointing)
            if budget:
                unknown = sorted(set(budget) - set(BUDGET_KEYS))
                if unknown:
                    raise UserError(f"budget has an unknown key {unknown[0]!r}; use {', '.join(BUDGET_KEYS)}")
                cfg = cfg.replace(**{key: budget.get(key) for key in BUDGET_KEYS})
            if data is not None:
                cfg = cfg.replace(data=str(Path(data).expanduser().resolve()))
            elif cfg.data is not None and not Path(cfg.data).exists():
                raise UserError(f"the run's data folder {cfg.data} is gone; put it back there, or pass the folder's "
                                f"new place: inceptionlab train --resume {resume} --data NEW_PATH")
        if cfg is None:
            raise UserError("train needs a TrainConfig, or resume=RUN_DIR to continue a run")
        if state is None and cfg.data is not None and isinstance(cfg.data, (str, Path)):
            data = Path(cfg.data).expanduser().resolve()  # saved absolute: --resume from any folder
            out = Path(cfg.out).expanduser().resolve()
            if out == data or data in out.parents:  # its checkpoints/ would become a class folder
                raise UserError(f"the output folder {cfg.out} is inside the data folder {cfg.data}; pass an --out "
                                f"outside it")
            cfg = cfg.replace(data=str(data))
        return Trainer(cfg.resolved(), dist, state, continue_with=continue_with, quiet=quiet).run()
    finally:
        dist.close()


def _resume_state(run_dir: Path, dist: Distributed) -> tuple[dict | None, TrainConfig]:
    """The latest checkpoint's state and the run's config; (None, config.yaml's config) for a run
    that stopped before its first step."""
    folder = CheckpointDir(run_dir / "checkpoints")
    if not run_dir.is_dir():
        what = "is a file" if run_dir.exists() else "does not exist"
        raise UserError(f"cannot resume: {run_dir} {what}; pass the --out folder of an earlier run")
    if not (run_dir / "config.yaml").is_file() and not (run_dir / "checkpoints").is_dir():
        # (it said "no usable checkpoint in DIR/checkpoints ... or delete DIR first" of an image folder)
        raise UserError(f"cannot resume: {run_dir} is not a training run (no config.yaml or checkpoints/ in it); "
                        f"pass the --out folder of an earlier run")
    if not folder.steps() and stopped_before_its_first_step(run_dir):
        # nothing to continue, but config.yaml holds the whole command: it starts again (it said "start it
        # again with the command that started it")
        from inceptionlab.train.config import read_yaml
        where = run_dir / "config.yaml"
        return None, TrainConfig.from_dict(read_yaml(where), where=str(where)).replace(out=str(run_dir))
    path = dist.on_main(lambda: str(folder.load_latest()[1]))
    state = load_checkpoint(path)
    _check_same_run(run_dir, state, path)
    state["passed_over"] = dist.broadcast_object(getattr(folder, "passed_over", []))  # (process 0 looked)
    cfg = TrainConfig.from_dict(state["config"], where=path).replace(out=str(run_dir))
    return state, cfg


def _check_same_run(run_dir: Path, state: dict, path) -> None:
    """A checkpoint of another network in this run's folder is refused before anything is touched
    (one dropped in had replaced the run's model, and its later checkpoints were deleted)."""
    from inceptionlab.train.config import read_yaml

    if not (run_dir / "config.yaml").is_file():
        return
    try:
        recorded = read_yaml(run_dir / "config.yaml")
    except UserError:
        return  # a damaged config.yaml: the checkpoint's own configuration is what resumes
    held = state.get("config") or {}
    same = lambda a, b: json.dumps(a, sort_keys=True, default=list) == json.dumps(b, sort_keys=True, default=list)  # noqa: E731
    for key in ("model", "model_kwargs"):
        if not same(recorded.get(key), held.get(key)):
            raise UserError(f"{path} was written by another run ({key} {held.get(key)!r}; this run's config.yaml "
                            f"says {recorded.get(key)!r}); move it out of {run_dir / 'checkpoints'}, then --resume "
                            f"again")


class Trainer:
    def __init__(self, cfg: TrainConfig, dist: Distributed, state: dict | None = None,
                 continue_with: str | None = None, quiet: bool | None = None):
        self.cfg, self.dist, self.device = cfg, dist, dist.device
        self.main = dist.is_main
        self.out = Path(cfg.out)
        self.checkpoints = CheckpointDir(self.out / "checkpoints", cfg.keep_checkpoints)
        if cfg.batch_size % dist.world_size:
            fix = (f"pass e.g. --batch-size {max(1, cfg.batch_size // dist.world_size) * dist.world_size}"
                   if state is None else  # (a resume refuses --batch-size, which it suggested)
                   f"resume it with a process count that divides {cfg.batch_size} (e.g. --nproc_per_node="
                   f"{max(n for n in range(1, dist.world_size + 1) if cfg.batch_size % n == 0)}), or in one process")
            raise UserError(f"batch_size {cfg.batch_size} (the global batch) must divide evenly over "
                            f"{dist.world_size} processes; {fix}")
        check_model_switches(cfg)
        self.amp_dtype = amp_dtype(cfg.amp, self.device)
        if cfg.threads is not None:
            set_threads(cfg.threads, warn=self.main)
        _seed_everything(cfg.seed)

        # data, then the model it needs, then the preprocessing the model needs: all checked before
        # the output folder is touched, so that bad input leaves what is there as it was
        self._after_last_step = 0.0  # seconds from the last step to the end (the final evaluation)
        self.segments = [[0, dist.world_size]]  # [steps done before, processes] for each part of the run
        self.continue_with = continue_with  # the command a stopped run names (a lab's, for its runs)
        self.weights_notes: list[str] = []  # what fine-tuning's --weights did to the classifier
        # the weights the run started from (a resume loads the checkpoint instead, so cfg has none):
        # they decide the input preprocessing, and config.yaml keeps naming them
        self.initial_weights = cfg.weights if state is None else state.get(
            "initial_weights", state["config"].get("weights"))
        # a resume takes the input convention its checkpoint recorded (the folder it started from may be gone)
        convention = state.get("preprocessing") if state is not None else None
        self.splits, self.net, self.img_size = build_model_and_data(
            cfg, notes=self.weights_notes, pretrained=convention or self.initial_weights or False)
        if state is None and cfg.img_size is None and trained_input_size(cfg.weights) == self.img_size:
            self.weights_notes.append(f"{self.img_size}px, the size those weights were trained at; --img-size "
                                      f"for another")
        if cfg.freeze_until:  # a typo found after config.yaml was written blocked every retry in that --out
            from inceptionlab.models.finetune import blocks_until
            blocks_until(self.net, cfg.freeze_until)
        if cfg.aux_weight is not None and not self.net.has_aux:  # (it was taken, and written to summary.json)
            raise UserError(f"aux_weight {cfg.aux_weight} has no effect: {cfg.model} has no aux heads here; add "
                            f"--model-kwargs aux_logits=true, or leave aux_weight out")
        heads = len(getattr(self.net, "aux_heads", ()))
        if isinstance(cfg.aux_weight, (list, tuple)) and len(cfg.aux_weight) != heads:  # (found in the first step)
            raise UserError(f"aux_weight gives {len(cfg.aux_weight)} weights for {cfg.model}'s {heads} aux head(s); "
                            f"give one number for all, or one per head")
        if state is None:  # (it said "batch norm frozen" of a model without any)
            check_freeze_bn(self.net, cfg)
        self.started_over = False  # the --out of a run that had stopped before its first step, reused
        dist.on_main(lambda: self._prepare_out_dir(resuming=state is not None))  # an error: in every process
        self.classes = self.splits.classes
        self.per_process_batch = cfg.batch_size // dist.world_size
        self.train_loader = self._loader(self.splits.train, train=True)
        self.val_loader = self._loader(self._val_shard(), train=False)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            share = len(self.splits.train) // dist.world_size  # each process's images (it named no size that works)
            fix = (f"pass --batch-size {share * dist.world_size} or less" if share else
                   f"use at most {len(self.splits.train)} processes")
            per = f", {share} for each of {dist.world_size} processes" if dist.world_size > 1 else ""
            raise UserError(f"the training set ({len(self.splits.train)} images{per}) is smaller than one batch per "
                            f"process ({self.per_process_batch}); {fix}")
        self.total_steps = _total_steps(cfg, self.steps_per_epoch)

        # the model on its device, wrapped for speed and for multiple processes
        self.net.to(self.device)
        channels_last = cfg.channels_last if cfg.channels_last is not None else self.device.type == "cpu"
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        freeze(self.net, cfg)  # --freeze-bn, --freeze-until (first: synchronized layers would not freeze)
        if cfg.sync_bn and dist.enabled:
            self.net = convert_sync_batchnorm(self.net, self.device)  # the layers that train
        self.net.set_grad_checkpointing(cfg.grad_checkpointing)
        self.model = self.net
        if dist.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.ema = ModelEMA(self.net, cfg.ema_decay) if cfg.ema_decay else None  # after DDP's broadcast
        if cfg.compile:
            self.model = torch.compile(self.model)
        self.model.train()  # frozen BN layers stay in eval mode
        self.trainable = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(cfg, self.net)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.schedule = LRSchedule(cfg.sched, cfg.lr, self.steps_per_epoch, self.total_steps,
                                   cfg.warmup_steps, cfg.decay_epochs, cfg.decay_rate)
        aux_weight = default_aux_weight(self.net.name) if cfg.aux_weight is None else cfg.aux_weight
        self.loss_fn = InceptionLoss(cfg.smoothing, aux_weight)
        self.aux_weight = aux_weight if self.net.has_aux else None  # (summary.json: no weight of heads not there)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

        self.pos, self.history = Position(), History()
        self.last_lr = self.schedule(0)
        self.resumed_from, self.resume_notes = None, []
        if state is not None:
            self._restore(state)
        try:
            if state is not None and self.main:  # a larger budget, a moved data folder: now the run's
                write_yaml(self.cfg.replace(weights=self.initial_weights).to_dict(), self.out / "config.yaml")
            self.log = RunLog(self.out, enabled=self.main, resume_step=self.pos.step if state is not None else None)
        except OSError as exc:
            raise UserError(f"cannot write the logs in {self.out}: {exc.strerror or exc}; free space or "
                            f"fix permissions") from None
        self.progress = Progress(total_steps=self.total_steps, budget_seconds=_budget_seconds(cfg),
                                 enabled=self.main, quiet=cfg.quiet if quiet is None else quiet,
                                 log_every=cfg.log_every)
        self.stop = StopRequest(announce=self.main)

    # ------------------------------------------------------------------ the step
    def train_step(self, images: torch.Tensor, labels: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimization step: forward, loss (main + aux), backward, clip, step, EMA. Returns the
        loss and how many images the main head classified right (both computed before the update)."""
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        labels = labels.to(self.device, non_blocking=True)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # (the body's, with --body-lr-scale)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            output = self.model(images)             # logits, or (logits, aux) with aux heads
            loss = self.loss_fn(output, labels)     # smoothed CE + aux_weight * aux CE
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()          # DDP averages the gradients over processes here
        if self.cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.trainable, self.cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.net, self.pos.step + 1)
        logits = output[0] if isinstance(output, tuple) else output  # InceptionOutput(logits, aux)
        return loss.detach(), (logits.detach().argmax(1) == labels).sum()

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        status, message = "finished", ""
        self._announce()
        # a SIGTERM (a scheduler's) while the kernel builds or the model compiles, for minutes, stops the
        # run after its first step, with a checkpoint (it killed the run without a word); a Ctrl-C there
        # stays an interrupt, as it reaches the compiler's worker processes too
        self.stop.install((signal.SIGTERM,))
        try:
            self._build_kernels()
            self._compile_now()
        except BaseException:
            self.stop.uninstall()
            raise
        self.stop.install()
        # a resume mid-epoch draws the batches already consumed again before the clock starts: their
        # time is no training (it was counted in the steps, images/s and a --minutes budget)
        batches = None
        if self.pos.batch and not self._budget_reached(self.pos.seconds):
            self.progress.line(f"drawing the {self.pos.batch} batches of epoch {self.pos.epoch} trained before the "
                               f"checkpoint again, untimed, to go on exactly where it stopped")
            batches = self._epoch_batches()
        started = time.monotonic() - self.pos.seconds
        try:
            ended = None
            if (self.resumed_from is not None and self._eval_due(self.pos.step)
                    and self._last_eval_step() != self.pos.step):
                self._evaluate_and_checkpoint()  # a signal at a step due for evaluation stopped the run before it
            while ended is None and not self._budget_reached(self.pos.seconds):
                ended = self._run_epoch(started, batches)
                batches = None
            status, message = ended or ("finished", "")
            if status == "finished" and not message and self._clock_ended_it():
                message = (f"the --minutes {self.cfg.minutes:g} budget ran out first, at step {self.pos.step} of "
                           f"{self.total_steps}")
            if status == "finished" and self._last_eval_step() != self.pos.step:
                self._evaluate_and_checkpoint(final=True)   # a resumed run that had ended
            if status == "finished" and self.stop.signal_name is not None:  # during the final evaluation
                message = (f"{self.stop.signal_name} came after the last step: the run is complete, and a lab "
                           f"stops after it")
            # the budget's clock stops at the last step; the final evaluation after it can take
            # longer than the whole run (10,000 test images after 2 steps): said in the last line
            if status == "finished":  # (a diverged step's time is not the final evaluation's)
                self._after_last_step = time.monotonic() - started - self.pos.seconds
        except Diverged as exc:
            status, message = "diverged", str(exc)
        except (CheckpointError, UserError, OSError) as exc:
            status, message = "failed", _one_line(exc)
        except Exception as exc:
            if not (self.dist.enabled and lost_a_process(exc)):
                self._write_summary("failed", f"{type(exc).__name__}: {_one_line(exc)}")
                raise
            # (it was a page of tracebacks, and summary.json was lost: writing it ran a collective too)
            self.dist.broken = True
            latest = self.checkpoints.latest() if self.main else None
            status, message = "failed", (
                f"another process of the run stopped ({clipped(_one_line(exc), 100)}); the checkpoints are intact"
                + (f" (latest: {latest.name})" if latest else "") + f": continue with {self._resume_command()}")
        finally:
            self.stop.uninstall()
            self.progress.close()
            fused_norm.empty_cache()  # the freed maps it keeps for the next step (217 MiB after v3 at b8)
        return self._finish(status, message)

    def _compile_now(self) -> None:
        """``torch.compile`` compiles at the first call: seconds for a tiny network, minutes for a
        large one. A forward and backward pass on a batch of the training shape does it here,
        before the budget's clock starts, so that compiled runs compared on the same budget (the
        lab) train for the same time. Nothing of it stays: the gradients are dropped, and batch
        norm's statistics and the random state are put back as they were."""
        if not self.cfg.compile:
            return
        self.progress.line("compiling (torch.compile) on a batch of the training shape, before the budget's clock "
                           "starts")
        shape = (self.per_process_batch, self.splits.in_chans, self.img_size, self.img_size)
        images = torch.zeros(shape, device=self.device).contiguous(memory_format=self.memory_format)
        labels = torch.zeros(shape[0], dtype=torch.long, device=self.device)
        buffers = [(b, b.clone()) for b in self.net.buffers()]
        rng = torch.get_rng_state(), (torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss = self.loss_fn(self.model(images), labels)
        loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, kept in buffers:
                buffer.copy_(kept)
        torch.set_rng_state(rng[0])
        if rng[1] is not None:
            torch.cuda.set_rng_state(rng[1], self.device)

    def _build_kernels(self) -> None:
        """Builds the fused batch norm kernel now, where the first training step would (once per
        machine, about 30 s), so that it does not eat into a time budget: runs compared on the same
        budget (the lab) get the same training time. Only where it will run: float32 (not under
        autocast), uncompiled (the compiler fuses batch norm itself), channels-last on the CPU.
        Reads ``INCEPTIONLAB_POINTWISE`` here too: a bad value is a one-line error before the first step."""
        if self.device.type == "cpu":
            pointwise_path()
        if (self.device.type == "cpu" and self.memory_format == torch.channels_last and self.amp_dtype is None
                and not self.cfg.compile and any(type(m) is nn.BatchNorm2d for m in self.net.modules())):
            fused_norm.kernel()

    def _run_epoch(self, started: float, batches=None) -> tuple[str, str] | None:
        """Trains to the end of the epoch (then None), or until the run ends: then (status, message).
        ``batches``: the epoch's, already past those consumed (default: `_epoch_batches`)."""
        whole_epoch, stepped = self.pos.batch == 0, False
        batches = self._epoch_batches() if batches is None else batches
        step_started = time.monotonic()  # a step's time includes reading its batch
        for images, labels, _n_skipped in batches:
            before = (self.pos.epoch, self.pos.batch)
            self.pos.batch += 1
            if self.pos.batch == self.steps_per_epoch:  # the last batch ends the epoch, readable or not
                self.pos.epoch, self.pos.batch = self.pos.epoch + 1, 0
            if self._batch_empty_anywhere(images):  # every file of this batch (in some process) was unreadable
                if not self.dist.enabled and self.stop.signal_name is not None:
                    return self._interrupted()
                continue
            stepped = True
            lr = self.schedule(self.pos.step, self._time_progress())
            loss, correct = self.train_step(images, labels, lr)
            agreed = self._agree(loss, correct, images.shape[0], started)
            guess = math.log(max(2, len(self.classes)))  # the loss of a uniform guess
            if not math.isfinite(agreed.loss) or agreed.loss > DIVERGED_LOSS_FACTOR * guess:
                epoch = self._epoch_float()  # where the failed step ends, as steps.jsonl writes a step's epoch
                self.pos.epoch, self.pos.batch = before  # the failed step is not counted: epochs agree with steps
                latest = self.checkpoints.latest()
                value = (f"{agreed.loss}" if not math.isfinite(agreed.loss) else
                         f"{agreed.loss:.3g} (over {DIVERGED_LOSS_FACTOR}x the {guess:.2f} of a uniform guess)")
                if self.pos.step == 0:  # computed before any update: no learning rate or clipping changes it
                    frozen = "; --freeze-bn keeps their batch norm statistics: try without it" if self.cfg.freeze_bn else ""
                    start = f"the weights from {self.cfg.weights}" if self.cfg.weights else "the initial weights"
                    return "diverged", (f"the first step's loss, before any update, was {value}: {start} do not "
                                        f"suit this data or its preprocessing{frozen}")
                return "diverged", (f"loss became {value} at step {self.pos.step + 1} (epoch "
                                    f"{epoch:.2f}); last good checkpoint: {latest or 'none'}; "
                                    f"start a new run with {self._calmer()}")
            self._count_step(agreed, lr, time.monotonic() - step_started)
            if agreed.signalled:
                return self._interrupted()
            last = agreed.time_up or self._budget_reached(agreed.seconds)
            if whole_epoch and self.pos.batch == 0:  # the epoch's last step: every file was tried once
                failed = self._failed_on_unlearnable_classes()
                if failed:
                    return failed
            self._after_step(final=last)
            if last:
                return "finished", ""
            step_started = time.monotonic()
        if whole_epoch and not stepped:
            return "failed", (f"no image of a whole epoch could be read ({len(self._skipped_files())} files "
                              f"skipped as unreadable); check the data folder (Git LFS pointers? HEIC files "
                              f"named .jpg?)")
        return self._failed_on_unlearnable_classes() if whole_epoch else None  # (its last batch was unreadable)

    def _failed_on_unlearnable_classes(self) -> tuple[str, str] | None:
        """After a whole epoch: ("failed", why), with a checkpoint, for a run with a class none of whose
        files could be read (it would never be learned; the run had "finished" at 100% top-1 on the
        other class); else None."""
        unseen = self._classes_never_read(self._skipped_files())
        if not unseen:
            return None
        self._save_checkpoint()
        return "failed", (f"every training image of class {listed(unseen)} is unreadable (an epoch tried them all; "
                          f"see skipped_files in summary.json): the model would never learn "
                          f"{'it' if len(unseen) == 1 else 'them'}; fix or replace those files, or remove the class "
                          f"folder")

    def _calmer(self) -> str:
        """The settings a diverged run could start again with: clipping is advised only where it was off
        (rmsprop_tf clips at 2.0 by default, and "or with --clip-grad" misled)."""
        clip = self.cfg.clip_grad  # (the trainer's config is resolved: the optimizer's default filled in)
        return (f"a lower --lr or a smaller --clip-grad (it clipped at {clip:g})" if clip
                else "a lower --lr or with --clip-grad")

    def _interrupted(self) -> tuple[str, str]:
        """Saves a checkpoint; the status and message of a run stopped by a signal."""
        path = self._save_checkpoint()
        name = self.stop.signal_name or "a signal to another process"
        return "interrupted", (f"stopped by {name} after step {self.pos.step}; checkpoint {path}; "
                               f"continue with {self._resume_command()}")

    def _resume_command(self) -> str:
        """The command that continues this run as it ran: under torchrun with as many processes
        (a plain `train --resume` had turned a 2-process run into a 1-process one)."""
        if self.continue_with:
            return self.continue_with
        launcher = (f"torchrun --nproc_per_node={self.dist.world_size} -m inceptionlab" if self.dist.world_size > 1
                    else "inceptionlab")
        return f"{launcher} train --resume {self.out}"

    def _epoch_batches(self):
        """The loader of the current epoch, past the batches already consumed (after a resume)."""
        self.train_loader.set_epoch(self.pos.epoch)
        batches = iter(self.train_loader)
        if self.pos.batch:
            outer = rng_state()
            for _ in range(self.pos.batch):  # the same batches, drawn and dropped
                next(batches)
            set_rng_state(outer)
        return batches

    def _batch_empty_anywhere(self, images: torch.Tensor) -> bool:
        """Whether this step's batch is empty here or in any other process: then every process
        skips the step together. (One process skipping alone paired its next backward's gradient
        all-reduce with the others' current one, and the processes fell out of step.)"""
        empty = images.numel() == 0
        if not self.dist.enabled:
            return empty
        return self.dist.sum(torch.tensor([float(empty)], dtype=torch.float64)).item() > 0

    def _agree(self, loss: torch.Tensor, correct: torch.Tensor, n_images: int, started: float) -> "Agreed":
        """The step's mean loss, images, right answers, and whether to stop, agreed by all processes
        (one all-reduce)."""
        seconds = time.monotonic() - started
        time_up = self.cfg.minutes is not None and seconds >= self.cfg.minutes * 60
        values = torch.tensor([loss.item() * n_images, n_images, correct.item(), float(self.stop.signal_name is not None),
                               float(time_up), seconds if self.main else 0.0], dtype=torch.float64)
        loss_sum, n, right, signalled, time_up, seconds = self.dist.sum(values).tolist()
        mean_loss = loss_sum / max(n, 1) if self.dist.enabled else loss.item()
        return Agreed(mean_loss, int(n), int(right), signalled > 0, time_up > 0, seconds)

    def _count_step(self, agreed: "Agreed", lr: float, step_seconds: float) -> None:
        self.pos.step += 1
        self.last_lr = lr
        self.pos.images += agreed.images
        self.pos.seconds = agreed.seconds
        self.pos.train_seconds += step_seconds
        h = self.history
        h.window_loss += agreed.loss
        h.window_steps += 1
        h.window_images += agreed.images
        h.window_correct = None if h.window_correct is None else h.window_correct + agreed.correct
        h.window_seconds += step_seconds
        self.log.step(dict(step=self.pos.step, epoch=round(self._epoch_float(), 6), loss=agreed.loss,
                           lr=float(f"{lr:.6g}"),
                           seconds=round(agreed.seconds, 3), images=self.pos.images))
        self.progress.update(step=self.pos.step, epoch=self._epoch_float(), loss=agreed.loss, lr=lr,
                             images_per_sec=agreed.images / max(step_seconds, 1e-9), seconds=agreed.seconds,
                             step_seconds=self.pos.train_seconds / max(self.pos.step, 1))

    def _after_step(self, final: bool) -> None:
        if final or self._eval_due(self.pos.step):
            self._evaluate_and_checkpoint(final=final)
        elif self.cfg.checkpoint_every and self.pos.step % self.cfg.checkpoint_every == 0:
            self._save_checkpoint()

    def _eval_due(self, step: int) -> bool:
        """Whether ``step`` (just taken) is one to evaluate after: every ``eval_every`` steps, or
        (None) at the end of every epoch."""
        return step > 0 and (step % self.cfg.eval_every == 0 if self.cfg.eval_every else self.pos.batch == 0)

    def _evaluate_and_checkpoint(self, final: bool = False) -> None:
        result = self.evaluate()
        if not math.isfinite(result.loss):  # the weights blew up without a non-finite training loss
            latest = self.checkpoints.latest()
            raise Diverged(f"validation loss became {result.loss} at step {self.pos.step} (epoch "
                           f"{self._epoch_float():.2f}); last good checkpoint: {latest or 'none'}; start a new "
                           f"run with {self._calmer()}")
        improved = self.history.best_top1 is None or result.top1 > self.history.best_top1
        if improved:
            self.history.best_top1 = result.top1
            self.history.best_step = self.pos.step
        # the best top-5 of any evaluation, as its name says (it was the top-5 at the best top-1)
        # (none with 5 classes or fewer: every image is in its top 5)
        if result.top5 is not None:
            best_top5 = self.history.best_top5
            self.history.best_top5 = result.top5 if best_top5 is None else max(best_top5, result.top5)
        h = self.history
        row = dict(epoch=round(self._epoch_float(), 4), step=self.pos.step,
                   train_loss=_round(h.window_loss / h.window_steps) if h.window_steps else None,
                   val_loss=_round(result.loss), top1=round(result.top1, 3), top5=_round(result.top5, 3),
                   lr=float(f"{self.last_lr:.6g}"),  # 0.03737627999999999 was float noise
                   images_per_sec=round(h.window_images / max(h.window_seconds, 1e-9), 2),
                   seconds=round(self.pos.seconds, 2),
                   # of the images trained on since the last evaluation, by the weights of their step
                   train_top1=(round(100.0 * h.window_correct / h.window_images, 3)
                               if h.window_images and h.window_correct is not None else None))
        self.log.metrics(row)
        h.last_eval = row
        h.window_loss, h.window_steps, h.window_images, h.window_seconds = 0.0, 0, 0, 0.0
        h.window_correct = 0
        top5 = f"top5 {row['top5']:.2f}% " if row["top5"] is not None else ""
        train_top1 = f" train_top1 {row['train_top1']:.2f}%" if row["train_top1"] is not None else ""
        self.progress.line(f"eval step {row['step']} epoch {row['epoch']:.2f}: top1 {row['top1']:.2f}% "
                           f"{top5}val_loss {row['val_loss']:.4f} train_loss "
                           f"{row['train_loss'] if row['train_loss'] is not None else float('nan'):.4f}"
                           f"{train_top1}{'  (best)' if improved else ''}")
        every = self.cfg.checkpoint_every
        if final or improved or every is None or self.pos.step % every == 0:
            self._save_checkpoint(best=improved)

    def evaluate(self) -> EvalResult:
        """Top-1/top-5/loss on the validation set (this process's shard, reduced over all)."""
        model = self.ema.module if self.ema is not None else self.net
        self.dist.broadcast_buffers(model)  # every process evaluates the model that process 0 saves
        result = run_eval(model, self.val_loader, self.device, num_classes=len(self.classes),
                          amp_dtype=self.amp_dtype, memory_format=self.memory_format, dist=self.dist)
        self.model.train()
        return result

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, best: bool = False) -> Path | None:
        rngs = self.dist.gather_objects(rng_state())
        return self.dist.on_main(lambda: self._write_checkpoint(rngs, best))

    def _write_checkpoint(self, rngs: list, best: bool) -> Path:
        state = dict(
            model=self.net.state_dict(), optimizer=self.optimizer.state_dict(),
            schedule=self.schedule.state_dict(), ema=self.ema.state_dict() if self.ema else None,
            scaler=self.scaler.state_dict(), rng=rngs, position=dataclasses.asdict(self.pos),
            history=dataclasses.asdict(self.history), config=self.cfg.to_dict(), classes=self.classes,
            initial_weights=self.initial_weights, last_lr=self.last_lr,
            preprocessing=input_convention(self.net),
            world_size=self.dist.world_size, segments=self.segments,
            images=[len(self.splits.train), len(self.splits.val)],
            stop_signal=self.stop.signal_name,  # (a lab stops after a run that finished under a Ctrl-C)
            versions=versions())
        return self.checkpoints.save(state, self.pos.step, best=best)

    def _restore(self, state: dict) -> None:
        if state.get("classes") and list(state["classes"]) != list(self.classes):  # before the weights: a
            then, now = list(state["classes"]), list(self.classes)           # new count would not load
            gone, new = [c for c in then if c not in now], [c for c in now if c not in then]
            what = "; ".join(part for part in (f"gone: {listed(gone)}" if gone else "",
                                               f"new: {listed(new)}" if new else "") if part) or "reordered"
            raise UserError(f"the data's classes changed since the checkpoint ({what}; {len(then)} then, "
                            f"{len(now)} now); resume with the same data, or fine-tune on the new classes with "
                            f"--weights {self.out}")
        self.net.load_state_dict(state["model"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # torch: "... parameter group that doesn't match the size of optimizer's group"
            raise UserError(f"the checkpoint's optimizer state does not fit the parameters this run trains "
                            f"({exc}): it was saved with other layers frozen; start a new run from its "
                            f"weights with --weights {self.out}") from None
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.scaler.load_state_dict(state["scaler"])
        self.pos = Position(**state["position"])
        # the lr of the last step taken, which the next evaluation's row gives (it gave the schedule's
        # step-0 warm-up value); a checkpoint of a version that did not save it: the schedule's then
        self.last_lr = state.get("last_lr", self.schedule(max(self.pos.step - 1, 0), self._time_progress()))
        past_the_end = self._past_the_epochs_end()
        history = dict(state["history"])
        # a checkpoint of a version that did not count right answers: unknown, unless no step was counted yet
        history.setdefault("window_correct", None if history.get("window_images") else 0)
        self.history = History(**history)
        saved = state.get("segments") or [[0, state.get("world_size") or self.dist.world_size]]
        self.segments = saved + ([[self.pos.step, self.dist.world_size]] if saved[-1][1] != self.dist.world_size
                                 else [])
        rngs = state["rng"]
        set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
        if self.main:
            self.checkpoints.truncate_after(self.pos.step)
        self.resumed_from = self.pos.step
        self.resume_notes = _resume_notes(state, self) + ([past_the_end] if past_the_end else [])

    def _past_the_epochs_end(self) -> str | None:
        """A checkpoint's place in its epoch at or past the end of the epoch as the data is now (files
        were removed) moves on to the next epoch, and says so; else None. (The batches to skip ran
        out: a StopIteration traceback.)"""
        if self.pos.batch < self.steps_per_epoch:
            return None
        saved = self.pos.batch
        self.pos.epoch, self.pos.batch = self.pos.epoch + 1, 0
        return (f"the checkpoint was {saved} batches into epoch {self.pos.epoch - 1}, which has "
                f"{self.steps_per_epoch} now: going on with epoch {self.pos.epoch}")

    # ------------------------------------------------------------------ setup helpers
    def _prepare_out_dir(self, resuming: bool) -> None:
        if not resuming and self.checkpoints.steps():
            raise UserError(f"{self.out} already holds a run with checkpoints; continue it with --resume "
                            f"{self.out}, or pass another --out")
        left = [name for name in RUN_FILES if (self.out / name).exists()] if not resuming else []
        if left and stopped_before_its_first_step(self.out):  # (a signal while compiling; a failed start)
            for name in left:
                (self.out / name).unlink()
            self.started_over, left = True, []
        if left:  # a run that ended before its first checkpoint, or someone's files: not to append to
            raise UserError(f"{self.out} already holds {', '.join(left)} (a run without checkpoints, or other "
                            f"files); pass another --out, or delete them to start over there")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / f".write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
            if not resuming:  # (a resume rewrites it once its checkpoint and budget are accepted)
                write_yaml(self.cfg.to_dict(), self.out / "config.yaml")
        except OSError as exc:
            raise UserError(f"cannot write to output folder {self.out}: {why_not_writable(self.out, exc)}; "
                            f"pass a writable --out with free space") from None

    def _loader(self, dataset, train: bool):
        from inceptionlab.data import make_loader
        from inceptionlab.data.loader import SeededLoader, collate_skipping

        batch = self.per_process_batch
        if not (train and self.dist.enabled):
            return make_loader(dataset, batch, train=train, workers=self.cfg.workers, seed=self.cfg.seed)
        # every process takes its share of the single-process order (see distributed.py)
        sampler = ShardedEpochSampler(len(dataset), rank=self.dist.rank, world_size=self.dist.world_size,
                                      shuffle=True, seed=self.cfg.seed)
        return SeededLoader(dataset, seed=self.cfg.seed + 1_000_003 * self.dist.rank, batch_size=batch,
                            sampler=sampler, num_workers=self.cfg.workers, collate_fn=collate_skipping,
                            pin_memory=self.device.type == "cuda", drop_last=True)

    def _val_shard(self):
        val = self.splits.val
        if not self.dist.enabled:
            return val
        return val.subset(list(range(self.dist.rank, len(val), self.dist.world_size)), val.transform)

    def _announce(self) -> None:
        cfg, n = self.cfg, sum(p.numel() for p in self.net.parameters())
        params = f"{n / 1e6:.2f}M params"
        if cfg.freeze_until or cfg.freeze_bn:  # what fine-tuning trains was in config.yaml only
            trained = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
            frozen = " and ".join(([f"up to {cfg.freeze_until}"] if cfg.freeze_until else [])
                                  + (["batch norm"] if cfg.freeze_bn else []))
            count = f"{trained / 1e6:.2f}M" if trained >= 1e5 else f"{trained / 1e3:.1f}k"  # (a classifier: "0.00M")
            params += f", {count} trained: {frozen} frozen"
        tuning = [flag for flag, on in (("--freeze-bn", cfg.freeze_bn), ("--freeze-until", cfg.freeze_until),
                                        ("--body-lr-scale", cfg.body_lr_scale != 1)) if on]
        note = None
        if tuning and not cfg.weights and self.resumed_from is None:  # fine-tuning options on random weights
            note = (f"note: {' and '.join(tuning)} without --weights: they hold back randomly initialized layers "
                    f"(fine-tuning options: pass the weights to start from)")
        where = f"resumed at step {self.resumed_from}" if self.resumed_from is not None else "new run"
        if self.started_over:
            where += " (the run in that folder had stopped before its first step: its files are replaced)"
        where += "".join(f" ({note})" for note in self.resume_notes)
        if cfg.weights is not None:
            where += f"; from {cfg.weights}" + "".join(f" ({note})" for note in self.weights_notes)
        total = f"{self.total_steps} steps" if self.total_steps else f"{cfg.minutes:g} minutes"
        if self.total_steps and cfg.minutes is not None:  # (the minutes went unsaid, and ended a run at step 8 of 100)
            total += f" or {cfg.minutes:g} minutes, whichever comes first"
        if cfg.epochs is not None and cfg.epochs * self.steps_per_epoch < 1:  # rounded up without a word
            total += f" (--epochs {cfg.epochs:g} is less than one step; one step is the least)"
        per_epoch = f"{self.steps_per_epoch}/epoch"
        left_out = len(self.splits.train) - self.steps_per_epoch * cfg.batch_size
        if left_out * 10 >= len(self.splits.train):  # 18 of 50 images unseen each epoch, without a word
            per_epoch += (f", {left_out} of the {len(self.splits.train)} images left out of each epoch: the last "
                          f"partial batch, other images each epoch")
        self.progress.line(
            f"{cfg.model} ({params}) on {self.splits.source}; {len(self.classes)} classes, "
            f"{self.img_size}px, batch {cfg.batch_size}"
            + (f" over {self.dist.world_size} processes" if self.dist.enabled else "")
            + f"; {cfg.opt} lr {cfg.lr:g}" + (f" (body x{cfg.body_lr_scale:g})" if cfg.body_lr_scale != 1 else "")
            + f" {cfg.sched}; {total} ({per_epoch}); {where}; "
            f"out {self.out}")
        if note:
            self.progress.line(note)

    # ------------------------------------------------------------------ budget and bookkeeping
    def _budget_reached(self, seconds: float) -> bool:
        if self.total_steps is not None and self.pos.step >= self.total_steps:
            return True
        if self.cfg.epochs is not None and self._epoch_float() >= self.cfg.epochs:
            return True  # (before total_steps when unreadable files left some batches empty)
        return self.cfg.minutes is not None and seconds >= self.cfg.minutes * 60

    def _clock_ended_it(self) -> bool:
        """Whether a run with both budgets stopped on the clock, before its steps (or epochs) were done."""
        if self.cfg.minutes is None or not self.total_steps or self.pos.step >= self.total_steps:
            return False
        epochs_done = self.cfg.epochs is not None and self._epoch_float() >= self.cfg.epochs
        return not epochs_done and self.pos.seconds >= self.cfg.minutes * 60

    def _time_progress(self) -> float | None:
        budget = _budget_seconds(self.cfg)
        return None if budget is None or self.total_steps else self.pos.seconds / budget

    def _epoch_float(self) -> float:
        return self.pos.epoch + self.pos.batch / self.steps_per_epoch

    def _last_eval_step(self) -> int | None:
        return self.history.last_eval["step"] if self.history.last_eval else None

    # ------------------------------------------------------------------ the end
    def _finish(self, status: str, message: str) -> dict:
        summary = self._write_summary(status, message)
        if self.main:
            self.log.close()
            ended = {"finished": "finished", "diverged": "DIVERGED", "interrupted": "interrupted",
                     "failed": "FAILED"}[status]
            best = f"best top1 {summary['best_top1']:.2f}% at step {summary['best_step']}" \
                if summary["best_top1"] is not None else "no evaluation"
            skipped = len(summary["skipped_files"] or ())
            unseen = summary["unreadable_classes"]
            after = self._after_last_step
            then = f", then {after:.0f}s for the final evaluation" if after >= 1.0 else ""
            steps = f"{summary['steps']} step" + "s" * (summary["steps"] != 1)  # (it said "1 steps")
            self.progress.line(f"{ended}: {steps} in {summary['seconds']:.0f}s{then}, {best}"
                               + (f"; {skipped} unreadable file(s) skipped (listed in summary.json)" if skipped else "")
                               + (f"; {message}" if message else ""))
            # (a run shorter than an epoch: the model has an output for them that never saw an example)
            if unseen and status != "failed":
                self.progress.line(f"warning: every training image of class {listed(unseen)} was unreadable: the "
                                   f"model never saw {'it' if len(unseen) == 1 else 'them'}; fix or replace those "
                                   f"files (see skipped_files in summary.json)")
        return summary

    def _write_summary(self, status: str, message: str) -> dict:
        skipped = self._skipped_files()
        final_weights = None
        if status == "finished" and self.main:
            from inceptionlab.models.weights import save_pretrained

            model = self.ema.module if self.ema is not None else self.net
            try:
                save_pretrained(model, self.out, classes=self.classes)
                final_weights = str(self.out / "model.safetensors")
            except OSError as exc:
                status, message = "failed", f"cannot write the final weights to {self.out}: {exc.strerror or exc}"
        last = self.history.last_eval or {}
        summary = dict(
            model=self.cfg.model, model_kwargs=self.cfg.model_kwargs, status=status, message=message,
            params=sum(p.numel() for p in self.net.parameters()), steps=self.pos.step,
            epochs=round(self._epoch_float(), 4), seconds=round(self.pos.seconds, 2),
            best_top1=_round(self.history.best_top1, 3), best_top5=_round(self.history.best_top5, 3),
            best_step=self.history.best_step,  # rounded as metrics.csv rounds them (33.333333333333336)
            final_top1=last.get("top1"), final_top5=last.get("top5"), final_train_loss=last.get("train_loss"),
            final_train_top1=last.get("train_top1"),  # of the training images since the evaluation before
            final_val_loss=last.get("val_loss"),
            train_images_per_sec=(round(self.pos.images / max(self.pos.train_seconds, 1e-9), 2)
                                  if self.pos.images else None),  # None: no step trained, nothing timed
            skipped_files=skipped, unreadable_classes=self._classes_never_read(skipped), classes=self.classes,
            data_source=self.splits.source, seed=self.cfg.seed,
            img_size=self.img_size, batch_size=self.cfg.batch_size, world_size=self.dist.world_size,
            threads=torch.get_num_threads(),  # per process: what train_images_per_sec was measured with
            # the kernels of training's 1x1 convolutions on the CPU (results differ at rounding level)
            pointwise_path=pointwise_path() if self.device.type == "cpu" else None,
            # every part of a run resumed with another process count (world_size is the last part's)
            processes=[dict(from_step=done + 1, processes=count) for done, count in self.segments],
            opt=self.cfg.opt, lr=self.cfg.lr, sched=self.cfg.sched, aux_weight=self.aux_weight,
            ema=self.ema is not None, weights=final_weights, run_dir=str(self.out),
            checkpoint=str(self.checkpoints.latest()) if self.main and self.checkpoints.latest() else None,
            best_checkpoint=str(self.checkpoints.best) if self.main and self.checkpoints.best.exists() else None,
            stop_signal=self.stop.signal_name,  # (a lab stops after a run that finished under a Ctrl-C)
            versions=versions())
        if self.main:
            try:
                atomic_write_text(json.dumps(summary, indent=2, default=str) + "\n", self.out / "summary.json")
            except OSError as exc:
                summary["message"] = (message + "; " if message else "") + \
                    f"cannot write summary.json: {exc.strerror or exc}"
        return summary

    def _classes_never_read(self, skipped) -> list[str]:
        """Classes whose every training file was found unreadable (only files that were tried count)."""
        samples = getattr(self.splits.train, "samples", None)
        if not skipped or not samples:
            return []
        bad = {record["path"] for record in skipped}
        files: dict[int, list[bool]] = {}
        for path, label in samples:
            files.setdefault(label, []).append(str(path) in bad)
        return [self.classes[label] for label, unreadable in sorted(files.items()) if all(unreadable)]

    def _skipped_files(self) -> list[dict]:
        mine = [(path, reason) for ds in (self.splits.train, self.val_loader.dataset)
                for path, reason in getattr(ds, "skipped", ())]
        merged: dict[str, str] = {}
        for records in self.dist.gather_objects(mine):
            for path, reason in records:
                merged.setdefault(path, reason)
        return [dict(path=path, reason=reason) for path, reason in merged.items()]


# ------------------------------------------------------------------ module helpers
def build_model_and_data(cfg: TrainConfig, classes_of=None, notes: list[str] | None = None,
                         pretrained: bool | str | Path | dict | None = None, min_classes: int = 2,
                         hold_out: bool = True, scoring: bool = False):
    """(splits, model, img_size): the data, a model with its classes, the model's preprocessing.
    ``classes_of(splits)`` may give the model another class count (evaluation on a subset); what
    loading ``cfg.weights`` did to the classifier is added to ``notes``. ``pretrained``: whether the
    weights to be used started from a weights file (see `preprocessing`; default: ``cfg.weights``).
    ``hold_out=False``: no validation split held out of a folder without val/ (scoring every image);
    ``scoring``: the weights are scored as they are, at the crop they recorded (see `preprocessing`)."""
    from inceptionlab.data import build_datasets

    train_tf, eval_tf = LateTransform(), LateTransform()
    splits = build_datasets(cfg.data, train_transform=train_tf, eval_transform=eval_tf,
                            val_split=cfg.val_split, seed=cfg.seed, strict=cfg.strict,
                            limit_per_class=cfg.limit_per_class, val_limit_per_class=cfg.val_limit_per_class,
                            min_classes=min_classes, hold_out=hold_out)
    num_classes = classes_of(splits) if classes_of is not None else len(splits.classes)
    net = build_model(cfg, num_classes=num_classes, in_chans=splits.in_chans,
                      classes=splits.classes if classes_of is None else None, notes=notes)
    img_size, train_tf.fn, eval_tf.fn = preprocessing(cfg, net, splits.native_size, pretrained, scoring)
    return splits, net, img_size


class LateTransform:
    """A transform chosen after the datasets exist (it depends on the model they decide)."""
    fn = None

    def __call__(self, picture):
        return self.fn(picture)

    @property
    def decode_side(self) -> int | None:
        """The chosen transform's: how large `load_image` decodes a JPEG for it."""
        return getattr(self.fn, "decode_side", None)


def _finished_at(run_dir: Path, step: int) -> bool:
    """Whether the run's summary.json says it finished at ``step``."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.get("status") == "finished" and summary.get("steps") == step


def _resume_notes(state: dict, trainer: "Trainer") -> list[str]:
    """What differs from the run as it was checkpointed: another budget (refused when already
    spent), the learning rate a stretched cosine schedule jumps to, another process count."""
    notes = [f"{problem}: passed over, kept as {name}" for name, problem in state.get("passed_over", [])]
    best = trainer.history.best_step
    if best is not None and trainer.main and not trainer.checkpoints.best.exists():  # pruned next, without a word
        notes.append(f"best.pt was missing: linked again to step {best}'s checkpoint"
                     if trainer.checkpoints.relink_best(best) else
                     f"best.pt is missing and step {best}'s checkpoint is gone: no best checkpoint from before")
    saved = TrainConfig.from_dict(state["config"], where="the checkpoint")
    cfg, pos = trainer.cfg, trainer.pos
    if any(getattr(saved, key) != getattr(cfg, key) for key in BUDGET_KEYS):
        if trainer._budget_reached(pos.seconds):
            spent = f"step {pos.step}, epoch {trainer._epoch_float():.2f}, {pos.seconds / 60:.1f} minutes"
            raise UserError(f"the run is already at {spent}; pass a budget beyond that to extend it")
        old = _total_steps(saved, trainer.steps_per_epoch)
        text = lambda c: ", ".join(f"{k} {getattr(c, k):g}" for k in BUDGET_KEYS  # noqa: E731
                                   if getattr(c, k) is not None)
        notes.append(f"budget {text(saved)} -> {text(cfg)}")
        before = LRSchedule(cfg.sched, cfg.lr, trainer.steps_per_epoch, old, cfg.warmup_steps, cfg.decay_epochs,
                            cfg.decay_rate)(pos.step, pos.seconds / saved.minutes / 60 if saved.minutes else None)
        now = trainer.schedule(pos.step, trainer._time_progress())
        if not math.isclose(before, now, rel_tol=1e-6, abs_tol=1e-12):
            notes.append(f"the {cfg.sched} schedule spans the new budget: lr {before:.3g} -> {now:.3g} at this step")
    elif trainer._budget_reached(pos.seconds) and _finished_at(trainer.out, pos.step):
        # (it ran again to the same end, exit 0, rewriting its files; a run that stopped after its
        # last checkpoint but before summary.json still completes)
        given = ", ".join(f"--{k} {getattr(cfg, k):g}" for k in BUDGET_KEYS if getattr(cfg, k) is not None)
        raise UserError(f"the run already finished at step {pos.step} ({given}); pass a larger budget to "
                        f"continue it")
    saved_images, images = state.get("images"), [len(trainer.splits.train), len(trainer.splits.val)]
    if saved_images and list(saved_images) != images:  # files added or removed: the epochs and split differ
        notes.append(f"the data changed since the checkpoint: {saved_images[0]} -> {images[0]} training and "
                     f"{saved_images[1]} -> {images[1]} validation images")
    saved_world = state.get("world_size")
    if saved_world and saved_world != trainer.dist.world_size:
        notes.append(f"checkpointed by {saved_world} process(es), resumed by {trainer.dist.world_size}: the same "
                     f"global batch, but the images' order from here is not the uninterrupted run's")
    if saved.grad_checkpointing != cfg.grad_checkpointing:
        notes.append(f"gradient checkpointing {'on' if cfg.grad_checkpointing else 'off'}: the same results, "
                     f"{'less memory and slower steps' if cfg.grad_checkpointing else 'faster steps, more memory'}")
    return notes


def _total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int | None:
    limits = [cfg.steps] if cfg.steps is not None else []
    if cfg.epochs is not None:
        limits.append(max(1, math.ceil(cfg.epochs * steps_per_epoch - 1e-9)))
    return min(limits) if limits else None


def _budget_seconds(cfg: TrainConfig) -> float | None:
    return cfg.minutes * 60 if cfg.minutes is not None else None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# what a run writes in its folder besides checkpoints/
RUN_FILES = ("config.yaml", "config.json", "metrics.csv", "steps.jsonl", "summary.json", "model.safetensors")


def _round(value: float | None, digits: int = 6):
    """Rounded; None for none and for a non-finite value (JSON has no NaN)."""
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


class Diverged(Exception):
    """An evaluation found the weights blown up (non-finite validation loss)."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
