"""The resume guarantee: a run killed with SIGKILL at some step and resumed with ``--resume`` ends
with bit-identical weights and the same per-step losses as a run that was never interrupted."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from helpers import train_in_process
from inceptionlab.train import TrainConfig
from inceptionlab.train.logs import read_metrics, read_steps

# dropout, aux head, EMA and random crops all draw random numbers: resume must restore them all
ARGS = dict(steps=14, batch_size=8, img_size=12, limit_per_class=4, val_split=0.02, eval_every=5,
            checkpoint_every=3, ema_decay=0.99, threads=1, quiet=True,
            model_kwargs=dict(stem="low_res", depth_multiplier=0.1, min_depth=8, aux_logits=True))


def _cli_args(out) -> list[str]:
    args = ["--out", str(out), "--model-kwargs", *[f"{k}={v}" for k, v in ARGS["model_kwargs"].items()]]
    for key, value in ARGS.items():
        if key == "quiet":
            args.append("--quiet")
        elif key != "model_kwargs":
            args += [f"--{key.replace('_', '-')}", str(value)]
    return args


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    straight = train_in_process(TrainConfig(model="inception_v3", out=str(tmp_path / "straight"), **ARGS))
    assert straight["status"] == "finished"

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "inceptionlab", "train", *_cli_args(killed)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    steps_file, deadline = killed / "steps.jsonl", time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if steps_file.exists() and len(steps_file.read_text().splitlines()) >= 8:
            break
        time.sleep(0.005)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    process.send_signal(signal.SIGKILL)   # no handler, no cleanup: as a crash or the OOM killer
    process.wait()
    assert not (killed / "model.safetensors").exists()
    steps_at_kill = len(read_steps(killed))
    assert 8 <= steps_at_kill < 14

    resumed = subprocess.run([sys.executable, "-m", "inceptionlab", "train", "--resume", str(killed)],
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    losses = lambda run: [s["loss"] for s in read_steps(run)]  # noqa: E731
    assert losses(killed) == losses(tmp_path / "straight")           # the same per-step losses, exactly
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)   # bit-identical weights
    same = ("step", "train_loss", "val_loss", "top1", "top5", "lr")
    assert [{k: r[k] for k in same} for r in read_metrics(killed)] == \
        [{k: r[k] for k in same} for r in read_metrics(tmp_path / "straight")]
    assert b"\r" not in (killed / "metrics.csv").read_bytes()  # one line ending (a resume mixed \n and \r\n)


@pytest.mark.slow
def test_sigterm_to_the_process_group_with_loader_workers_stops_with_a_checkpoint(tmp_path):
    """What torchrun and a scheduler do: SIGTERM to every process of the group, loader workers
    included. The workers had died at once ("DataLoader worker is killed by signal: Terminated"):
    the run failed, without its checkpoint; and each worker printed the stop notice."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "inceptionlab", "train", "--out", str(out), "--steps", "400", "--batch-size", "8",
               "--img-size", "28", "--workers", "2", "--threads", "1", "--eval-every", "1000", "--log-every", "1",
               "--model-kwargs", "stem=low_res", "depth_multiplier=0.125", "min_depth=8"]
    process = subprocess.Popen(command, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    steps_file, deadline = out / "steps.jsonl", time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if steps_file.exists() and len(steps_file.read_text().splitlines()) >= 5:
            break
        time.sleep(0.01)
    assert process.poll() is None
    os.killpg(process.pid, signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    summary = __import__("json").loads((out / "summary.json").read_text())
    assert process.returncode == 130 and summary["status"] == "interrupted", output[-2000:]
    assert (out / "checkpoints" / f"step_{summary['steps']:08d}.pt").exists()
    assert output.count("SIGTERM: stopping after this step") == 1 and "Traceback" not in output


# ------------------------------------------------------------------ resume: what it restores, what it counts
TINY = dict(stem="low_res", depth_multiplier=0.1, min_depth=8)


def _tiny(tmp_path, name="run", **changes) -> TrainConfig:
    values = dict(model="inception_v3", out=str(tmp_path / name), steps=4, batch_size=8, img_size=12,
                  limit_per_class=4, val_split=0.02, quiet=True, threads=1, model_kwargs=dict(TINY))
    values.update(changes)
    return TrainConfig(**values)


def _stop_after_step(monkeypatch, step: int) -> None:
    """SIGINT in step ``step``: the run stops after it, with a checkpoint."""
    from inceptionlab.train.engine import Trainer

    take_step = Trainer.train_step

    def signal_then(self, *args):
        out = take_step(self, *args)
        if self.pos.step == step - 1:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(Trainer, "train_step", signal_then)


def train_in_process_resume(run, **kwargs):
    """``train(resume=run)`` in this process, leaving torch's thread count as it found it."""
    from inceptionlab.train import train
    before = torch.get_num_threads()
    try:
        return train(resume=run, **kwargs)
    finally:
        torch.set_num_threads(before)


def test_a_resume_past_the_end_of_a_shrunk_epoch_goes_on_with_the_next(tmp_path, monkeypatch, capsys):
    # 30 of 40 images per class deleted after a stop 5 batches into the epoch: a StopIteration traceback,
    # and summary.json said "failed", "StopIteration: StopIteration"
    from helpers import image_folder

    data = image_folder(tmp_path / "pics", ("red", "blue"), 20)
    cfg = _tiny(tmp_path, data=str(data), limit_per_class=None, val_split=0.2, batch_size=4, steps=10,
                checkpoint_every=1)
    _stop_after_step(monkeypatch, 5)
    assert train_in_process(cfg)["status"] == "interrupted"  # 32 training images: 8 batches an epoch
    monkeypatch.undo()
    for cls in ("red", "blue"):
        for i in range(15):
            (data / cls / f"{i}.png").unlink()
    resumed = train_in_process_resume(tmp_path / "run", quiet=False)
    assert (resumed["status"], resumed["steps"], resumed["message"]) == ("finished", 10, "")
    assert ("(the checkpoint was 5 batches into epoch 0, which has 2 now: going on with epoch 1)"
            in capsys.readouterr().out)
    assert [s["epoch"] for s in read_steps(tmp_path / "run")][4:7] == [0.625, 1.5, 2.0]


def test_the_lr_of_an_evaluation_after_a_resume_is_its_steps_own(tmp_path, monkeypatch):
    # stopped in a step due for evaluation, the resumed run evaluated first and logged the schedule's
    # step-0 warm-up lr (0.01 where the uninterrupted run logged 0.02)
    cfg = dict(steps=4, eval_every=2, warmup_steps=4, opt="sgd", lr=0.04, sched="constant")
    train_in_process(_tiny(tmp_path, "straight", **cfg))
    _stop_after_step(monkeypatch, 2)
    assert train_in_process(_tiny(tmp_path, "stopped", **cfg))["steps"] == 2
    monkeypatch.undo()
    assert train_in_process_resume(tmp_path / "stopped")["status"] == "finished"
    lrs = lambda name: [(row["step"], row["lr"]) for row in read_metrics(tmp_path / name)]  # noqa: E731
    assert lrs("stopped") == lrs("straight") == [("2", "0.02"), ("4", "0.04")]


def test_quiet_on_resume_is_for_that_resume_only(tmp_path, capsys):
    # --no-quiet on a resume was ignored, and a --quiet given on one resume was written into config.yaml
    import yaml
    from inceptionlab.cli import main

    run = tmp_path / "run"
    flags = ["--model-kwargs", *[f"{k}={v}" for k, v in TINY.items()], "--batch-size", "8", "--img-size", "12",
             "--limit-per-class", "4", "--val-split", "0.02", "--threads", "1"]
    assert main(["train", "--out", str(run), "--steps", "1", "--quiet", *flags]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "2", "--no-quiet"]) == 0
    assert "step 2/2  epoch" in capsys.readouterr().out
    assert yaml.safe_load((run / "config.yaml").read_text())["quiet"] is True
    assert main(["train", "--resume", str(run), "--steps", "3"]) == 0  # the run's own setting again
    assert "step 3/3" not in capsys.readouterr().out


def test_the_batches_replayed_on_a_resume_are_not_training_time(tmp_path, monkeypatch):
    # a resume mid-epoch draws the epoch's consumed batches again: their time was counted as the next
    # step's, in images/s, the summary's seconds and a --minutes budget
    from inceptionlab.train.engine import Trainer

    cfg = _tiny(tmp_path, steps=4, eval_every=100, checkpoint_every=1)
    _stop_after_step(monkeypatch, 2)
    stopped = train_in_process(cfg)
    monkeypatch.undo()
    draw = Trainer._epoch_batches

    def slow_replay(self):
        if self.pos.batch:
            time.sleep(3.0)
        return draw(self)

    monkeypatch.setattr(Trainer, "_epoch_batches", slow_replay)
    resumed = train_in_process_resume(tmp_path / "run")
    assert resumed["status"] == "finished" and resumed["seconds"] - stopped["seconds"] < 2.5
    assert max(s["seconds"] for s in read_steps(tmp_path / "run")) - stopped["seconds"] < 2.5
