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
