"""Short training runs in this process: the run directory, evaluation, interruption and exact
resume, divergence, a full disk, budgets, fine-tuning, the command line. Each run is a few steps
of a tiny low-res Inception-v3 on a few of the embedded digits."""
from __future__ import annotations

import csv
import errno
import json
import types
import re
import math
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from helpers import image_folder
from inceptionlab import create_model
from inceptionlab.errors import UserError
from inceptionlab.train import TrainConfig, evaluate, train
from inceptionlab.train import checkpoint as checkpoint_module
from inceptionlab.train.engine import build_model_and_data
from inceptionlab.train.logs import METRIC_COLUMNS, read_metrics, read_steps

TINY = dict(stem="low_res", depth_multiplier=0.1, min_depth=8)
SUMMARY_KEYS = {"model", "model_kwargs", "status", "message", "params", "steps", "epochs", "seconds", "best_top1",
                "best_top5", "final_top1", "final_top5", "final_train_loss", "final_val_loss",
                "train_images_per_sec", "skipped_files", "classes", "data_source", "seed"}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(tmp_path, name="run", **changes) -> TrainConfig:
    values = dict(model="inception_v3", out=str(tmp_path / name), steps=4, batch_size=8, img_size=12,
                  limit_per_class=4, val_split=0.02, quiet=True, model_kwargs=dict(TINY))
    values.update(changes)
    return TrainConfig(**values)


def test_a_run_directory_holds_everything(tmp_path):
    cfg = tiny(tmp_path, steps=6, eval_every=3, model_kwargs=dict(TINY, aux_logits=True), ema_decay=0.9)
    summary = train(cfg)
    out = tmp_path / "run"
    assert summary["status"] == "finished", summary["message"]
    assert SUMMARY_KEYS <= set(summary) and json.loads((out / "summary.json").read_text())["steps"] == 6
    assert summary["classes"] == [str(d) for d in range(10)] and summary["params"] > 0
    assert summary["skipped_files"] == [] and summary["ema"] is True and summary["aux_weight"] == 0.4
    assert summary["threads"] == torch.get_num_threads()  # (the images/s mean little without it)
    from inceptionlab.cpus import pointwise_path
    assert summary["pointwise_path"] == pointwise_path() in ("gemm", "onednn")
    with open(out / "metrics.csv") as handle:
        assert handle.readline().strip().split(",") == METRIC_COLUMNS
    rows = read_metrics(out)
    assert [int(r["step"]) for r in rows] == [3, 6] and float(rows[0]["epoch"]) == pytest.approx(0.6)
    assert all(0 <= float(r["top1"]) <= 100 and float(r["top1"]) <= float(r["top5"]) for r in rows)
    steps = read_steps(out)
    assert [s["step"] for s in steps] == list(range(1, 7))
    assert set(steps[0]) == {"step", "epoch", "loss", "lr", "seconds", "images"} and steps[-1]["images"] == 48
    assert summary["final_top1"] == float(rows[-1]["top1"]) and summary["best_top1"] == max(
        float(r["top1"]) for r in rows)
    # the best top-5 of any evaluation (it was the top-5 at the best top-1)
    assert round(summary["best_top5"], 3) == max(float(r["top5"]) for r in rows)
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "best.pt").is_file()
    assert sorted(os.listdir(out / "checkpoints")) == ["best.pt", "step_00000003.pt", "step_00000006.pt"]
    reloaded = create_model(str(out))          # config.json + model.safetensors (the EMA weights)
    assert reloaded.pretrained_cfg["classes"] == summary["classes"] and reloaded.num_classes == 10

    report = evaluate(run=out)                 # the same weights on the same val split
    assert report["top1"] == pytest.approx(summary["final_top1"], abs=1e-3)
    assert report["images"] == 100 and set(report["per_class"]) == set(summary["classes"])
    assert (out / "confusion_matrix.csv").read_text().startswith("true \\ predicted,0,1")
    assert (out / "confusion_matrix.png").stat().st_size > 0 and (out / "eval.json").is_file()

    from inceptionlab.cli import main
    assert main(["train", "--out", str(out), "--steps", "2"]) == 2   # never overwrites a run


def _interrupt_when(path, lines: int, sig=signal.SIGINT) -> threading.Thread:
    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if path.exists() and len(path.read_text().splitlines()) >= lines:
                os.kill(os.getpid(), sig)
                return
            time.sleep(0.005)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_resume_is_exact(tmp_path, sig, capsys):
    cfg = dict(steps=7, eval_every=4, model_kwargs=dict(TINY, aux_logits=True), ema_decay=0.9)
    straight = train(tiny(tmp_path, "straight", **cfg))
    watcher = _interrupt_when(tmp_path / "stopped" / "steps.jsonl", 2, sig)
    stopped = train(tiny(tmp_path, "stopped", **cfg))
    watcher.join()
    assert stopped["status"] == "interrupted", stopped
    # said when it comes (a --compile first step can take minutes before the stop)
    again = "Ctrl-C again" if sig == signal.SIGINT else "a Ctrl-C"
    assert (f"{signal.Signals(sig).name}: stopping after this step, with a checkpoint ({again} stops at once, "
            f"without one)") in capsys.readouterr().err
    assert signal.Signals(sig).name in stopped["message"] and "; continue with inceptionlab train --resume " in stopped["message"]
    assert 2 <= stopped["steps"] < 7 and (tmp_path / "stopped" / "checkpoints").is_dir()
    resumed = train(resume=tmp_path / "stopped")
    assert resumed["status"] == "finished" and resumed["steps"] == 7
    losses = lambda name: [s["loss"] for s in read_steps(tmp_path / name)]  # noqa: E731
    assert losses("stopped") == losses("straight")
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "stopped" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["final_top1"] == straight["final_top1"]


def test_a_signal_at_a_step_due_for_evaluation_is_evaluated_on_resume(tmp_path, monkeypatch):
    # the stop came before the step's evaluation, and resume went on from the next step: a lab's run
    # had no row at that step (its curve lacked a point, its earliest "steps to target" moved)
    from inceptionlab.train.engine import Trainer

    cfg = dict(steps=4, eval_every=2)
    straight = train(tiny(tmp_path, "straight", **cfg))
    take_step = Trainer.train_step

    def signal_in_the_second_step(self, *args):
        loss = take_step(self, *args)
        if self.pos.step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(Trainer, "train_step", signal_in_the_second_step)
    stopped = train(tiny(tmp_path, "stopped", **cfg))
    assert (stopped["status"], stopped["steps"], read_metrics(tmp_path / "stopped")) == ("interrupted", 2, [])
    monkeypatch.undo()
    assert train(resume=tmp_path / "stopped")["final_top1"] == straight["final_top1"]
    rows = lambda name: [{k: v for k, v in row.items() if k not in ("seconds", "images_per_sec")}  # noqa: E731
                         for row in read_metrics(tmp_path / name)]
    assert [int(row["step"]) for row in rows("stopped")] == [2, 4] and rows("stopped") == rows("straight")


def test_compile_compiles_before_the_clock_starts_and_changes_nothing(tmp_path, monkeypatch, capsys):
    """torch.compile compiles at the first call, which took minutes of a --minutes budget; a
    forward and backward pass on a batch of the training shape does it first, and leaves no trace."""
    cfg = dict(steps=3, eval_every=3, model_kwargs=dict(TINY, aux_logits=True, drop_rate=0.5), ema_decay=0.9)
    plain = train(tiny(tmp_path, "plain", **cfg))
    calls = []

    class Compiled(torch.nn.Module):  # stands in for the compiled module: counts the calls and their shapes
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            calls.append((tuple(x.shape), torch.is_grad_enabled()))
            return self.module(x)

    monkeypatch.setattr(torch, "compile", Compiled)
    compiled = train(tiny(tmp_path, "compiled", compile=True, quiet=False, **cfg))
    assert calls == [((8, 3, 12, 12), True)] * 4  # the warm-up, then three steps
    assert "compiling (torch.compile) on a batch of the training shape, before the budget's clock starts" in \
        capsys.readouterr().out
    losses = lambda name: [s["loss"] for s in read_steps(tmp_path / name)]  # noqa: E731
    assert losses("compiled") == losses("plain")
    a = load_file(tmp_path / "plain" / "model.safetensors")
    b = load_file(tmp_path / "compiled" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # batch norm's statistics too
    assert compiled["final_top1"] == plain["final_top1"]


def test_a_sigterm_while_compiling_stops_after_the_first_step(tmp_path, monkeypatch, capsys):
    # the handlers were installed after compiling: a SIGTERM then (minutes, for a large network) killed
    # the run without a word or a checkpoint
    from inceptionlab.train.engine import Trainer

    handled = []

    def compiling(self):
        handled.append(signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None))
        if handled[-1]:  # (unhandled, the signal would end the test's own process)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "_compile_now", compiling)
    before = signal.getsignal(signal.SIGTERM)
    summary = train(tiny(tmp_path, steps=4))
    assert handled == [True] and summary["status"] == "interrupted" and summary["steps"] == 1
    assert summary["message"].startswith("stopped by SIGTERM after step 1; checkpoint ")
    assert "SIGTERM: stopping after this step, with a checkpoint (a Ctrl-C stops at once" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before  # put back as it was


def test_a_finished_run_is_extended_by_a_larger_budget(tmp_path, capsys):
    # `train --resume R --steps 40` was refused: a finished run could not be trained further
    from inceptionlab.cli import main

    cfg = dict(eval_every=3, sched="step", decay_epochs=0.2, decay_rate=0.5)  # lr independent of the budget
    longer = train(tiny(tmp_path, "longer", steps=6, **cfg))
    first = train(tiny(tmp_path, "extended", steps=3, **cfg))
    assert first["status"] == "finished" and first["steps"] == 3
    out = str(tmp_path / "extended")
    assert main(["train", "--resume", out, "--steps", "6", "--grad-checkpointing", "--quiet"]) == 0
    extended = json.loads((tmp_path / "extended" / "summary.json").read_text())
    assert extended["status"] == "finished" and extended["steps"] == 6
    assert ("resumed at step 3 (budget steps 3 -> steps 6) (gradient checkpointing on: the same results, less "
            "memory and slower steps)") in capsys.readouterr().out
    losses = lambda name: [s["loss"] for s in read_steps(tmp_path / name)]  # noqa: E731
    assert losses("extended") == losses("longer")  # the same steps as a run given 6 from the start
    # (its last three with each block's maps recomputed in the backward pass: bit for bit the same)
    assert [int(r["step"]) for r in read_metrics(tmp_path / "extended")] == [3, 6]
    assert extended["final_top1"] == longer["final_top1"]
    # the budget is saved: resuming again keeps 6, and a spent budget is refused before anything changes
    assert main(["train", "--resume", out, "--steps", "5"]) == 2
    assert "the run is already at step 6, epoch 1.20" in capsys.readouterr().err
    assert main(["train", "--resume", out, "--lr", "1"]) == 2
    assert "only --epochs, --steps and --minutes may change" in capsys.readouterr().err
    assert main(["train", "--resume", out, "--no-augment"]) == 2
    assert "drop --no-augment (only" in capsys.readouterr().err  # (it said "drop --augment")
    assert yaml.safe_load((tmp_path / "extended" / "config.yaml").read_text())["steps"] == 6  # it kept 3
    # a cosine schedule stretched over a new budget says where its learning rate jumps
    train(tiny(tmp_path, "cosine", steps=3, sched="cosine", lr=0.1))
    resumed = train(resume=tmp_path / "cosine", budget=dict(steps=6), quiet=False)
    assert resumed["steps"] == 6
    printed = capsys.readouterr().out
    assert "the cosine schedule spans the new budget: lr 0 -> 0.05 at this step" in printed, printed[printed.find("resumed at") - 50:][:400]


def test_resuming_with_another_process_count_says_so(tmp_path, capsys):
    # a run checkpointed by 2 torchrun processes and resumed by 1 continued without a word
    from inceptionlab.train.checkpoint import CheckpointDir

    train(tiny(tmp_path, steps=2))
    path = CheckpointDir(tmp_path / "run" / "checkpoints").latest()
    state = torch.load(path, weights_only=True)
    state["world_size"] = 2
    torch.save(state, path)
    train(resume=tmp_path / "run", budget=dict(steps=3), quiet=False)
    assert "checkpointed by 2 process(es), resumed by 1: the same global batch, but the images' order" \
        in capsys.readouterr().out
    # a finished run without a larger budget: refused (it ran to the same end again, exit 0, rewriting its files)
    before = (tmp_path / "run" / "summary.json").read_text()
    with pytest.raises(UserError, match=r"^the run already finished at step 3 \(--steps 3\); pass a larger budget"):
        train(resume=tmp_path / "run")
    assert (tmp_path / "run" / "summary.json").read_text() == before
    # but one that stopped after its last checkpoint, before summary.json, still completes
    (tmp_path / "run" / "summary.json").unlink()
    assert train(resume=tmp_path / "run")["status"] == "finished"


def test_a_non_finite_loss_stops_with_the_step_and_last_checkpoint(tmp_path):
    cfg = tiny(tmp_path, steps=30, opt="sgd", lr=1e12, clip_grad=0.0, checkpoint_every=1, eval_every=100,
               model_kwargs=dict(TINY, norm=False))
    summary = train(cfg)
    assert summary["status"] == "diverged"
    step = summary["steps"] + 1
    assert f"at step {step}" in summary["message"] and "last good checkpoint" in summary["message"]
    assert f"step_{summary['steps']:08d}.pt" in summary["message"] or summary["steps"] == 0
    # the failed step is not counted in the epochs either (1 step of 3 per epoch said 0.67 epochs)
    steps_per_epoch = 40 // 8  # limit_per_class=4 of 10 classes, batch 8
    assert summary["epochs"] == pytest.approx(summary["steps"] / steps_per_epoch, abs=1e-4)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_first_step_that_diverges_blames_the_starting_weights(tmp_path, capsys):
    # it said "lower --lr or --clip-grad" of a loss computed before any update, and "then 2s for
    # the final evaluation" of the failed step's time
    from safetensors.torch import save_file

    net = create_model("inception_v3", num_classes=10, **TINY)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    state["head.fc.weight"] = state["head.fc.weight"] * 1e9
    save_file(state, tmp_path / "huge.safetensors")
    summary = train(tiny(tmp_path, weights=str(tmp_path / "huge.safetensors"), freeze_bn=True, quiet=False))
    assert summary["status"] == "diverged" and summary["steps"] == 0
    assert re.fullmatch(rf"the first step's loss, before any update, was \S+ \(over 1000x the 2.30 of a uniform guess\): "
                        rf"the weights from {re.escape(str(tmp_path / 'huge.safetensors'))} do not suit this data or "
                        rf"its preprocessing; --freeze-bn keeps their batch norm statistics: try without it",
                        summary["message"]), summary["message"]
    assert "final evaluation" not in capsys.readouterr().out


def test_a_full_disk_fails_clearly_and_keeps_the_earlier_checkpoint(tmp_path, monkeypatch):
    real = checkpoint_module.atomic_save
    calls = []

    def fill_disk(obj, path):
        calls.append(path)
        if len(calls) >= 2:  # as torch's zip writer reports it: a RuntimeError raised while handling the OSError
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3387072") from None
        real(obj, path)

    monkeypatch.setattr(checkpoint_module, "atomic_save", fill_disk)
    summary = train(tiny(tmp_path, steps=6, checkpoint_every=2, eval_every=100))
    assert summary["status"] == "failed"
    assert summary["message"].startswith("cannot write checkpoint ") and "unexpected pos" not in summary["message"]
    assert "No space left on device" in summary["message"] and "step_00000002.pt is intact" in summary["message"]
    state = checkpoint_module.load_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000002.pt")
    assert state["position"]["step"] == 2


def test_wall_clock_budget_stops_at_the_end_of_a_step(tmp_path):
    summary = train(tiny(tmp_path, steps=None, minutes=0.03, sched="cosine", opt="sgd"))
    assert summary["status"] == "finished" and summary["steps"] >= 1
    assert summary["final_top1"] is not None and summary["seconds"] >= 0.03 * 60


def test_amp_channels_last_freeze_bn_and_aux_weight(tmp_path):
    base = create_model("inception_v3", num_classes=10, aux_logits=True, **TINY)
    summary = train(tiny(tmp_path, steps=2, amp=True, channels_last=True, freeze_bn=True, aux_weight=0.25,
                         model_kwargs=dict(TINY, aux_logits=True)))
    assert summary["status"] == "finished" and summary["aux_weight"] == 0.25
    trained = load_file(tmp_path / "run" / "model.safetensors")
    bn_keys = [k for k in trained if ".bn." in k or k.endswith(("running_mean", "running_var"))]
    assert bn_keys
    for key in bn_keys:  # frozen BN: statistics and affine parameters unchanged
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(trained[key], base.state_dict()[key]), key


def test_fine_tuning_replaces_a_classifier_of_another_size(tmp_path):
    from inceptionlab.models.weights import save_pretrained

    source = create_model("inception_v3", num_classes=4, **TINY)
    save_pretrained(source, tmp_path / "pretrained", classes=list("abcd"))
    summary = train(tiny(tmp_path, steps=1, lr=1e-12, opt="sgd", momentum=0.0, weight_decay=0.0,
                         weights=str(tmp_path / "pretrained" / "model.safetensors")))
    assert summary["status"] == "finished"
    trained = load_file(tmp_path / "run" / "model.safetensors")
    first_conv = next(k for k in trained if k.endswith("conv.weight"))
    assert torch.allclose(trained[first_conv], source.state_dict()[first_conv], atol=1e-6)
    assert trained["head.fc.weight"].shape[0] == 10


def test_fine_tuning_matches_a_named_classifier_by_class_name(tmp_path, capsys):
    # weights trained on bird/cat/dog were fine-tuned on cat/dog/frog with the bird row as "cat",
    # without a word: the rows now follow the names, and new classes start fresh
    from inceptionlab.models.weights import save_pretrained
    from inceptionlab.train.setup import _is_classifier, build_model

    kwargs = dict(TINY, aux_logits=True)
    source = create_model("inception_v3", num_classes=3, **kwargs)
    save_pretrained(source, tmp_path / "pre", classes=["bird", "cat", "dog"])
    cfg = TrainConfig(model="inception_v3", model_kwargs=kwargs, weights=str(tmp_path / "pre"))
    trained = source.state_dict()
    rows = [k for k in trained if _is_classifier(k)]
    assert {k.split(".")[0] for k in rows} == {"head", "aux_heads"}

    def built(classes):
        notes = []
        model = build_model(cfg, len(classes), classes=classes, notes=notes)
        return model.state_dict(), notes

    same, notes = built(["bird", "cat", "dog"])
    assert notes == [] and all(torch.equal(same[k], trained[k]) for k in trained)
    swapped, notes = built(["dog", "bird", "cat"])
    assert notes == ["classifier rows reordered by class name"]
    assert all(torch.equal(swapped[k], trained[k][[2, 0, 1]]) for k in rows)
    body = [k for k in trained if k not in rows]
    assert all(torch.equal(swapped[k], trained[k]) for k in body)
    mixed, notes = built(["cat", "dog", "frog"])
    assert notes == ["classifier keeps 2 of the 3 trained classes by name; new: frog"]
    for key in rows:
        assert torch.equal(mixed[key][:2], trained[key][1:])
        if key.endswith("weight"):  # frog: fresh (a bias starts at zero, like the trained one may)
            assert not any(torch.equal(mixed[key][2], trained[key][i]) for i in range(3))
    grown, notes = built(["ant", "bird", "cat", "dog"])
    assert notes == ["classifier keeps 3 of the 3 trained classes by name; new: ant"]
    assert torch.equal(grown["head.fc.weight"][1:], trained["head.fc.weight"])
    _, notes = built(["x", "y", "z"])
    assert notes == ["classifier starts fresh: model.safetensors was trained on other classes (bird, cat, dog)"]
    # the same count from weights that name no classes is kept by position, and now says so
    (tmp_path / "loose").mkdir()
    shutil.copy(tmp_path / "pre" / "model.safetensors", tmp_path / "loose" / "w.safetensors")
    notes = []
    build_model(cfg.replace(weights=str(tmp_path / "loose" / "w.safetensors")), 3, classes=["x", "y", "z"], notes=notes)
    assert notes == ["classifier kept by position: w.safetensors names no classes"]
    # a run with aux heads into a model without them: refused when the class count changed (absent here)
    plain = cfg.replace(model_kwargs=dict(TINY))
    notes = []
    model = build_model(plain, 4, classes=["ant", "bird", "cat", "dog"], notes=notes)
    assert not model.aux_heads and notes == ["classifier keeps 3 of the 3 trained classes by name; new: ant"]
    assert torch.equal(model.state_dict()["head.fc.weight"][1:], trained["head.fc.weight"])
    digits = create_model("inception_v3", num_classes=10, **TINY)
    save_pretrained(digits, tmp_path / "digits", classes=[str(d) for d in reversed(range(10))])
    summary = train(tiny(tmp_path, steps=1, quiet=False, weights=str(tmp_path / "digits")))
    assert summary["status"] == "finished"
    assert f"; from {tmp_path / 'digits'} (classifier rows reordered by class name); out" in capsys.readouterr().out


def test_fine_tuning_from_a_run_of_another_width_names_the_switch_to_pass(tmp_path):
    """A run's config.json builds the donor with the run's own switches; a model of another width
    then cannot take its body, and the error says which switch to pass (no traceback)."""
    from inceptionlab.models.weights import save_pretrained

    save_pretrained(create_model("inception_v3", num_classes=4, **{**TINY, "depth_multiplier": 0.2}),
                    tmp_path / "pretrained", classes=list("abcd"))
    weights = str(tmp_path / "pretrained" / "model.safetensors")
    with pytest.raises(UserError, match="the weights were trained with depth_multiplier=0.2: pass --model-kwargs "
                                        "depth_multiplier=0.2"):
        train(tiny(tmp_path, steps=1, weights=weights))  # depth_multiplier 0.1
    without = dict(TINY)
    without.pop("depth_multiplier")  # the width from the run's config.json, then the model's default
    with pytest.raises(UserError, match=r"blocks\.\S+ is \(\d+, 3, 3, 3\) there, \(\d+, 3, 3, 3\) here; "
                                        r"the weights were trained with depth_multiplier=0.2"):
        train(tiny(tmp_path, name="default", steps=1, weights=weights, model_kwargs=without))
    summary = train(tiny(tmp_path, name="wide", steps=1, weights=weights,
                         model_kwargs={**TINY, "depth_multiplier": 0.2}))
    assert summary["status"] == "finished"
    # weights of the data's own classes load whole, and said only "check the model name and switches"
    save_pretrained(create_model("inception_v3", num_classes=10, **{**TINY, "depth_multiplier": 0.2}),
                    tmp_path / "digits", classes=[str(d) for d in range(10)])
    with pytest.raises(UserError, match=rf"^{tmp_path / 'digits' / 'model.safetensors'} does not fit inception_v3 "
                                        r"with .*; the weights were trained with depth_multiplier=0.2: pass "
                                        r"--model-kwargs depth_multiplier=0.2"):
        train(tiny(tmp_path, name="same_classes", steps=1, weights=str(tmp_path / "digits")))
    # another architecture's run: named, as predict and eval name it (it was "missing keys ... num_classes")
    with pytest.raises(UserError, match=rf"^{tmp_path / 'digits' / 'model.safetensors'} was saved for inception_v3 "
                                        r"\(its config\.json says so\), not googlenet: use "):
        train(tiny(tmp_path, name="other", steps=1, model="googlenet", weights=str(tmp_path / "digits" /
                                                                                   "model.safetensors")))


def test_unreadable_files_are_skipped_and_listed(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "pics" / cls).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "pics" / cls / f"{i}.png")
    (tmp_path / "pics" / "cats" / "broken.png").write_bytes(b"\x89PNG truncated")
    summary = train(tiny(tmp_path, data=str(tmp_path / "pics"), steps=3, batch_size=4, limit_per_class=None,
                         val_split=0.25))
    assert summary["status"] == "finished" and summary["classes"] == ["cats", "dogs"]
    assert "; 1 unreadable file(s) skipped (listed in summary.json)" in capsys.readouterr().out
    assert [item["path"].endswith("broken.png") for item in summary["skipped_files"]] == [True]
    strict = tiny(tmp_path, "strict", data=str(tmp_path / "pics"), steps=3, batch_size=4, limit_per_class=None,
                  val_split=0.25, strict=True)
    result = train(strict)
    assert result["status"] == "failed" and "broken.png" in result["message"]


def test_a_run_whose_data_moved_resumes_with_data(tmp_path, capsys):
    # --data was refused with --resume, and the error named only the old path: no way to continue
    from inceptionlab.cli import main

    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "pics" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "pics" / cls / f"{i}.png")
    args = dict(data=str(tmp_path / "pics"), batch_size=4, limit_per_class=None, val_split=0.3)
    train(tiny(tmp_path, "moved", steps=2, **args))
    train(tiny(tmp_path, "stayed", steps=4, **args))
    (tmp_path / "pics").rename(tmp_path / "photos")
    run = str(tmp_path / "moved")
    assert main(["train", "--resume", run, "--steps", "4"]) == 2
    assert (f"the run's data folder {tmp_path / 'pics'} is gone; put it back there, or pass the folder's new place: "
            f"inceptionlab train --resume {run} --data NEW_PATH") in capsys.readouterr().err
    assert main(["eval", "--run", run]) == 2
    assert f"the run's data folder {tmp_path / 'pics'} is gone; pass --data with its new place" in capsys.readouterr().err
    assert main(["train", "--resume", run, "--steps", "4", "--data", str(tmp_path / "photos"), "--quiet"]) == 0
    assert yaml.safe_load((tmp_path / "moved" / "config.yaml").read_text())["data"] == str(tmp_path / "photos")
    losses = lambda name: [s["loss"] for s in read_steps(tmp_path / name)]  # noqa: E731
    assert losses("moved") == losses("stayed")  # the same files, the same split, the same steps


def test_resuming_a_run_that_failed_before_its_first_checkpoint_says_so(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "summary.json").write_text('{"status": "failed", "steps": 0}')
    with pytest.raises(UserError, match=r"the run there ended before its first one, so there is nothing to continue "
                                         r"\(summary.json says why\); start it again in another --out, or delete"):
        train(resume=tmp_path / "run")


def test_a_run_stopped_before_its_first_step_is_started_again_in_its_folder(tmp_path, monkeypatch, capsys):
    # killed while compiling: its config.yaml and empty logs refused the same command again ("already
    # holds config.yaml, ...") and --resume said only "no usable checkpoint"
    from inceptionlab.train.engine import Trainer

    def killed(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_step", killed)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, steps=2))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml", "metrics.csv", "steps.jsonl"]
    monkeypatch.undo()
    assert train(tiny(tmp_path, steps=2, quiet=False))["status"] == "finished"
    assert ("; new run (the run in that folder had stopped before its first step: its files are replaced); "
            in capsys.readouterr().out)
    assert len(read_steps(tmp_path / "run")) == 2
    (tmp_path / "mine").mkdir()  # a folder of the user's own that happens to hold such files stays refused
    (tmp_path / "mine" / "config.yaml").write_text("model: googlenet\n")
    with pytest.raises(UserError, match=r"mine already holds config.yaml \(a run without checkpoints, or other files\)"):
        train(tiny(tmp_path, "mine", steps=1))
    (tmp_path / "mine" / "steps.jsonl").write_text("")
    (tmp_path / "mine" / "metrics.csv").write_text("epoch,step,train_loss\n")  # not this tool's header
    with pytest.raises(UserError, match=r"mine already holds config.yaml, metrics.csv, steps.jsonl \(a run without"):
        train(tiny(tmp_path, "mine", steps=1))
    assert (tmp_path / "mine" / "config.yaml").read_text() == "model: googlenet\n"
    (tmp_path / "mine" / "steps.jsonl").write_text("my notes\n{}\n")  # no step log: named, with the fix
    with pytest.raises(UserError, match=r"steps.jsonl line 1 is not a step record; it is not this tool's log, or it "
                                        r"was edited: pass another --out, or move the file away$"):
        read_steps(tmp_path / "mine")
    # a last line cut short by a crash is left out (it was "Expecting ',' delimiter: line 1 column 24")
    (tmp_path / "run" / "steps.jsonl").write_text((tmp_path / "run" / "steps.jsonl").read_text() + '{"step": 3, "lo')
    assert [s["step"] for s in read_steps(tmp_path / "run")] == [1, 2]


@pytest.mark.parametrize("again", ["the same command", "--resume"])
def test_a_run_stopped_before_it_wrote_its_logs_is_started_again(tmp_path, monkeypatch, capsys, again):
    # a Ctrl-C in the first second left config.yaml alone: the same command said "already holds config.yaml
    # (a run without checkpoints, or other files)", and --resume "no usable checkpoint"
    from inceptionlab.train import engine

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "RunLog", killed)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, steps=2))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml"]
    monkeypatch.undo()
    summary = (train(tiny(tmp_path, steps=2, quiet=False)) if again == "the same command"
               else train(resume=tmp_path / "run", quiet=False))  # config.yaml holds the whole command
    assert (summary["status"], summary["steps"]) == ("finished", 2)
    assert "(the run in that folder had stopped before its first step: its files are replaced)" in capsys.readouterr().out


def test_an_input_too_small_for_the_aux_heads_is_refused_before_the_folder_is_touched(tmp_path):
    # it failed in the first step, after config.yaml and the logs were written
    with pytest.raises(UserError, match=r"^img_size 75 is below the 299x299 that inception_v3's aux heads need in "
                                        r"training: pass --img-size 299 or more, or leave out aux_logits=true$"):
        train(tiny(tmp_path, img_size=75, model_kwargs=dict(depth_multiplier=0.1, min_depth=8, aux_logits=True)))
    assert not (tmp_path / "run").exists()


def test_aux_weight_takes_one_weight_per_head(tmp_path):
    # InceptionLoss took a list, the config refused one ("aux_weight must be a finite number >= 0")
    switches = dict(TINY, aux_logits=True)
    size = create_model("googlenet", num_classes=10, **switches).min_train_size
    common = dict(model="googlenet", steps=2, img_size=size, model_kwargs=switches)
    same = train(tiny(tmp_path, "one", aux_weight=0.3, **common))
    listed = train(tiny(tmp_path, "each", aux_weight=[0.3, 0.3], **common))
    assert listed["aux_weight"] == [0.3, 0.3] and listed["final_train_loss"] == same["final_train_loss"]
    assert [s["loss"] for s in read_steps(tmp_path / "each")] == [s["loss"] for s in read_steps(tmp_path / "one")]
    other = train(tiny(tmp_path, "other", aux_weight=[0.3, 0.0], **common))
    assert other["final_train_loss"] != same["final_train_loss"]
    with pytest.raises(UserError, match=r"^aux_weight gives 3 weights for googlenet's 2 aux head\(s\); give one "
                                        r"number for all, or one per head$"):
        train(tiny(tmp_path, "three", aux_weight=[0.3, 0.3, 0.3], **common))
    assert not (tmp_path / "three").exists()
    with pytest.raises(UserError, match=r"aux_weight must be a finite number >= 0"):
        train(tiny(tmp_path, "negative", aux_weight=[0.3, -1.0], **common))


def test_resume_of_something_that_is_no_run_says_what_it_is(tmp_path):
    # an image folder was told "no usable checkpoint in DIR/checkpoints ... or delete DIR first"
    image_folder(tmp_path / "pics", ["a", "b"], 2)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=rf"^cannot resume: {re.escape(str(tmp_path / 'pics'))} is not a training run "
                                        r"\(no config.yaml or checkpoints/ in it\); pass the --out folder of an "
                                        r"earlier run$"):
        train(resume=tmp_path / "pics")
    with pytest.raises(UserError, match=r"^cannot resume: .*notes.txt is a file; pass the --out folder"):
        train(resume=tmp_path / "notes.txt")


def test_eval_out_inside_the_data_folder_is_refused(tmp_path):
    # eval.json and confusion_matrix.png went among the images (the next eval listed them as ignored)
    pics = image_folder(tmp_path / "pics", ["a", "b"], 4)
    train(tiny(tmp_path, steps=1, data=str(pics), limit_per_class=None, val_split=0.5, batch_size=4))
    test = image_folder(tmp_path / "test", ["a", "b"], 2, seed=1)
    with pytest.raises(UserError, match=rf"^the output folder {re.escape(str(test / 'scores'))} is inside the data "
                                        rf"folder {re.escape(str(test))}; pass an --out outside it$"):
        evaluate(run=tmp_path / "run", data=test, all_images=True, out=test / "scores")
    assert not (test / "scores").exists()


def test_weights_from_a_folder_that_holds_none_say_so(tmp_path):
    # it said "weights file empty/model.safetensors does not exist", with no fix
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=rf"^{re.escape(str(tmp_path / 'empty'))} holds no model.safetensors: it is "
                                        r"not a folder that training or save_pretrained wrote; it holds no weights "
                                        r"file \(.safetensors/.pth/.pt/.bin/.h5\); pass one, or a folder that "
                                        r"training or save_pretrained wrote$"):
        train(tiny(tmp_path, weights=str(tmp_path / "empty")))


def test_an_aux_weight_without_aux_heads_is_refused(tmp_path):
    # it was taken without a word, and summary.json said aux_weight 0.5
    with pytest.raises(UserError, match=r"^aux_weight 0.5 has no effect: inception_v3 has no aux heads here; add "
                                        r"--model-kwargs aux_logits=true, or leave aux_weight out$"):
        train(tiny(tmp_path, aux_weight=0.5))
    assert not (tmp_path / "run").exists()


def test_a_run_without_final_weights_as_a_model_names_its_checkpoint(tmp_path):
    # predict --model RUN said only "no config.json; not a directory written by save_pretrained"
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text("model: googlenet\n")
    for step in (2, 10):
        (tmp_path / "run" / "checkpoints" / f"step_{step:08d}.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"run is a training run without final weights \(interrupted, or still "
                                         r"running\); continue it with inceptionlab train --resume .*run, or use "
                                         r"its latest checkpoint: --weights .*step_00000010.pt"):
        create_model(str(tmp_path / "run"))


def test_bn_inception_from_scratch_gets_unit_scale_input(tmp_path):
    # the card's Caffe preprocessing (BGR in 0-255) is for Cadene's weights: without BN the network
    # started at loss 21.7 instead of ln(10), and the batchnorm study's no-BN arm "diverged" on it
    summary = train(tiny(tmp_path, model="bn_inception", steps=1, lr=1e-9, model_kwargs=dict(TINY, norm=False)))
    first = read_steps(tmp_path / "run")[0]["loss"]
    assert abs(first - math.log(10)) < 0.5, first
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["preprocessing"]
    assert (saved["input_space"], saved["input_range"], saved["mean"]) == ("RGB", [0, 1], [0.485, 0.456, 0.406])
    assert summary["status"] == "finished"
    # a run fine-tuned from a weights file keeps the card's Caffe input, through a resume (whose
    # config has no weights: the checkpoint holds them) and in eval --run
    weights = tmp_path / "caffe.pth"
    torch.save(create_model("bn_inception", num_classes=10, **TINY).state_dict(), weights)
    tuned = tiny(tmp_path, "tuned", model="bn_inception", steps=1, weights=str(weights))
    train(tuned)
    train(resume=tmp_path / "tuned", budget=dict(steps=2))
    saved = json.loads((tmp_path / "tuned" / "config.json").read_text())["preprocessing"]
    assert (saved["input_space"], saved["input_range"]) == ("BGR", [0, 255])
    assert yaml.safe_load((tmp_path / "tuned" / "config.yaml").read_text())["weights"] == str(weights)
    splits, net, _ = build_model_and_data(tuned.replace(weights=None), pretrained=True)
    assert tuple(net.pretrained_cfg["input_range"]) == (0, 255)  # as eval --run builds it
    assert tuple(build_model_and_data(tuned.replace(weights=None))[1].pretrained_cfg["input_range"]) == (0, 1)


def test_a_class_of_unreadable_files_is_named(tmp_path, capsys):
    # it trained silently to "top1 100%", with an output for dogs that never saw a dog
    rng = np.random.default_rng(0)
    (tmp_path / "pics" / "cats").mkdir(parents=True)
    (tmp_path / "pics" / "dogs").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "pics" / "cats" / f"{i}.png")
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / "pics" / "dogs" / name).write_text("not a picture")
    summary = train(tiny(tmp_path, data=str(tmp_path / "pics"), steps=6, batch_size=2, limit_per_class=None,
                         val_split=0.3, quiet=False))
    # then a warning at the end; now the first epoch, which tries every file, stops the run (it had "finished"
    # with 100% top-1 on the one readable class and exit status 0)
    assert summary["status"] == "failed" and summary["unreadable_classes"] == ["dogs"]
    assert summary["message"] == ("every training image of class dogs is unreadable (an epoch tried them all; see "
                                  "skipped_files in summary.json): the model would never learn it; fix or replace "
                                  "those files, or remove the class folder")
    assert summary["steps"] < 6 and summary["epochs"] == 1.0 and summary["weights"] is None
    # also when the budget ends with that epoch (--epochs 1: it "finished", exit 0)
    one_epoch = train(tiny(tmp_path, "one_epoch", data=str(tmp_path / "pics"), steps=None, epochs=1, batch_size=2,
                           limit_per_class=None, val_split=0.3))
    assert one_epoch["status"] == "failed" and one_epoch["message"] == summary["message"]


def test_cli_config_file_with_flags_overriding(tmp_path, capsys):
    from inceptionlab.cli import main

    (tmp_path / "recipe.yaml").write_text(
        "model: inception_v3\nsteps: 5\nlr: 0.01\nopt: sgd\nbatch_size: 8\nimg_size: 12\nlimit_per_class: 4\n"
        "val_split: 0.02\nmodel_kwargs: {stem: low_res, depth_multiplier: 0.1}\n")
    code = main(["train", "--config", str(tmp_path / "recipe.yaml"), "--steps", "2", "--out", str(tmp_path / "run"),
                 "--model-kwargs", "min_depth=8", "--quiet", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    import yaml
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (saved["steps"], saved["lr"], saved["opt"], saved["sched"]) == (2, 0.01, "sgd", "cosine")
    assert saved["model_kwargs"] == dict(stem="low_res", depth_multiplier=0.1, min_depth=8)
    assert main(["eval", "--run", str(tmp_path / "run"), "--threads", "2"]) == 0
    assert torch.get_num_threads() == 2  # eval takes --threads as train does
    torch.set_num_threads(1)
    assert "top1" in capsys.readouterr().out
    by_run = json.loads((tmp_path / "run" / "eval.json").read_text())
    # any weights file with its model, switches and data: the same numbers
    assert main(["eval", "--model", "inception_v3", "--weights", str(tmp_path / "run" / "model.safetensors"),
                 "--model-kwargs", "stem=low_res", "depth_multiplier=0.1", "min_depth=8", "--img-size", "12",
                 "--val-split", "0.02", "--out", str(tmp_path / "eval")]) == 0
    by_weights = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert (by_weights["top1"], by_weights["loss"]) == (by_run["top1"], by_run["loss"])
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()


def test_a_runs_config_reused_with_another_optimizer_takes_its_defaults(tmp_path, capsys):
    # config.yaml holds what rmsprop_tf filled in: `--config RUN/config.yaml --opt adamw` trained AdamW at lr
    # 0.045 with RMSProp's clipping and staircase, and `--sched cosine` was refused for its decay_epochs
    from inceptionlab.cli import build_parser
    from inceptionlab.commands.train import config_from_args
    from inceptionlab.train.config import write_yaml

    saved = tiny(tmp_path, steps=3, opt="rmsprop_tf", weight_decay=1e-3).resolved()  # the file changed the decay
    write_yaml(saved.to_dict(), tmp_path / "config.yaml")
    parse = lambda *flags: config_from_args(build_parser("train").parse_args(  # noqa: E731
        ["train", "--config", str(tmp_path / "config.yaml"), *flags])).resolved()
    adamw = parse("--opt", "adamw")
    assert (adamw.lr, adamw.sched, adamw.clip_grad, adamw.decay_epochs, adamw.weight_decay) == (1e-3, "cosine", 0.0,
                                                                                               None, 1e-3)
    assert ("note: --opt adamw: lr, sched, clip_grad, decay_epochs, decay_rate in " in capsys.readouterr().err)
    cosine = parse("--sched", "cosine")
    assert (cosine.opt, cosine.lr, cosine.sched, cosine.decay_rate) == ("rmsprop_tf", 0.045, "cosine", None)
    kept = parse("--opt", "sgd", "--lr", "0.2")  # a flag wins, and the file's own values stay
    assert (kept.lr, kept.sched, kept.weight_decay) == (0.2, "cosine", 1e-3)
    assert parse() == saved  # the file alone: the run as it was
    # a number as a switch name in the file's model_kwargs: one line (a TypeError traceback from difflib)
    from inceptionlab.train.setup import check_model_switches
    with pytest.raises(UserError, match=r"^inception_v3 has no switch 1 \(switches: "):
        check_model_switches(saved.replace(model_kwargs={1: 2}))
    # a switch the file turns off, turned on again by its flag (--hflip, --augment were not flags)
    write_yaml(dict(saved.to_dict(), hflip=False, augment=False, quiet=True), tmp_path / "config.yaml")
    flipped = parse("--hflip", "--augment", "--no-quiet", "--distort")
    assert (flipped.hflip, flipped.augment, flipped.quiet, flipped.distort) == (True, True, False, True)


def _zoo() -> list[str]:
    from inceptionlab import list_models
    return list_models()


@pytest.mark.parametrize("name", _zoo())
def test_every_model_of_the_zoo_trains(tmp_path, name):
    from inceptionlab.models.registry import model_entry

    switches = dict(TINY, **({"aux_logits": True} if "aux_logits" in model_entry(name).switches else {}))
    size = max(12, create_model(name, num_classes=10, **switches).min_input_size)
    summary = train(tiny(tmp_path, model=name, steps=2, img_size=size, model_kwargs=switches))
    assert summary["status"] == "finished", summary["message"]
    # (a model without aux heads has no aux weight: summary.json said 0.4 for them too)
    assert summary["aux_weight"] == (None if "aux_logits" not in switches else 0.3 if name.startswith("googlenet")
                                     else 0.4)
    assert 0 <= summary["final_top1"] <= 100 and math.isfinite(summary["final_train_loss"])


def test_fine_tuning_from_the_command_line_keeps_frozen_blocks_unchanged(tmp_path, capsys):
    from inceptionlab.cli import main

    source = create_model("inception_v3", num_classes=4, **TINY)
    source.save_pretrained(tmp_path / "pretrained", classes=list("abcd"))
    def args(out, block):
        return ["train", "--model", "inception_v3", "--weights", str(tmp_path / "pretrained"), "--out",
                str(tmp_path / out), "--steps", "3", "--batch-size", "8", "--img-size", "12",
                "--limit-per-class", "4", "--val-split", "0.02", "--opt", "sgd", "--lr", "0.5", "--quiet",
                "--threads", "1", "--freeze-until", block, "--freeze-bn",
                "--model-kwargs", "stem=low_res", "depth_multiplier=0.1", "min_depth=8"]

    assert main(args("tuned", "mixed_6e")) == 0
    tuned = load_file(tmp_path / "tuned" / "model.safetensors")
    before = source.state_dict()
    frozen = [k for k in tuned if k.startswith(("blocks.conv2d", "blocks.mixed_5", "blocks.mixed_6"))]
    assert frozen and all(torch.equal(tuned[k], before[k]) for k in frozen)  # weights and BN statistics
    later = [k for k in tuned if k.startswith("blocks.mixed_7") and k.endswith("conv.weight")]
    assert any(not torch.equal(tuned[k], before[k]) for k in later)
    assert main(args("bad", "mixed_6z")) == 2
    assert "inception_v3 has no block 'mixed_6z'; did you mean mixed_6e" in capsys.readouterr().err


@pytest.mark.parametrize("setting, expected", [(None, torch.channels_last), (True, torch.channels_last),
                                               (False, torch.contiguous_format)])
def test_channels_last_is_on_for_the_cpu_unless_turned_off(tmp_path, setting, expected):
    from inceptionlab.train.distributed import Distributed
    from inceptionlab.train.engine import Trainer

    dist = Distributed.from_env()
    try:
        trainer = Trainer(tiny(tmp_path, channels_last=setting).resolved(), dist)
    finally:
        dist.close()
    assert trainer.memory_format == expected
    weight = next(p for p in trainer.net.parameters() if p.dim() == 4 and p.shape[-1] > 1)
    assert weight.is_contiguous(memory_format=expected)
    assert weight.is_contiguous() == (expected == torch.contiguous_format)


def test_channels_last_flag_reaches_the_config(tmp_path, capsys):
    from inceptionlab.cli import main
    import yaml

    args = ["train", "--model", "inception_v3", "--steps", "1", "--batch-size", "8", "--img-size", "12",
            "--limit-per-class", "4", "--val-split", "0.02", "--model-kwargs", "stem=low_res", "depth_multiplier=0.1",
            "min_depth=8", "--quiet", "--threads", "1"]
    assert main(args + ["--out", str(tmp_path / "off"), "--no-channels-last"]) == 0, capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "default")]) == 0, capsys.readouterr().err
    assert yaml.safe_load((tmp_path / "off" / "config.yaml").read_text())["channels_last"] is False
    assert yaml.safe_load((tmp_path / "default" / "config.yaml").read_text())["channels_last"] is None


def test_the_fused_kernel_is_built_before_a_time_budget_starts(tmp_path, monkeypatch):
    """Its first build takes about 30 s; inside the budget it would cost the first of the lab's runs that
    much training time."""
    from inceptionlab.models import fused_norm
    built = fused_norm.kernel()
    calls = []

    def slow_first_build():
        calls.append(time.monotonic())
        time.sleep(2.0 if len(calls) == 1 else 0.0)
        return built
    monkeypatch.setattr(fused_norm, "kernel", slow_first_build)
    summary = train(tiny(tmp_path, steps=None, minutes=0.02, opt="sgd"))  # a 1.2 s budget
    assert summary["status"] == "finished" and calls
    assert summary["seconds"] < 2.0  # the 2 s build was not counted
    assert summary["steps"] >= 2  # and the budget went to training
    calls.clear()
    assert train(tiny(tmp_path, name="bf16", steps=1, amp=True))["status"] == "finished"
    assert calls == []  # under bf16 autocast the kernel never runs: no build


def test_a_run_with_steps_and_minutes_says_which_budget_ended_it(tmp_path, capsys):
    # --steps 100 --minutes 0.1 said "100 steps" and, stopped at step 8 by the clock, just "finished"
    summary = train(tiny(tmp_path, steps=10_000, minutes=0.01, quiet=False))
    out = capsys.readouterr().out
    assert "; 10000 steps or 0.01 minutes, whichever comes first (" in out
    assert 1 <= summary["steps"] < 10_000 and summary["status"] == "finished"
    assert summary["message"] == f"the --minutes 0.01 budget ran out first, at step {summary['steps']} of 10000"
    assert out.rstrip().splitlines()[-1].endswith(f"; {summary['message']}")
    assert train(tiny(tmp_path, name="steps_first", steps=1, minutes=5))["message"] == ""  # the steps ended it


def test_a_finished_run_gives_back_the_kernels_cached_blocks(tmp_path, monkeypatch):
    """The fused kernel keeps freed output blocks for the next step (hundreds of MiB at 299 px); when
    the run ends, the process (the lab's next run, an evaluation) gets that memory back."""
    from inceptionlab.models import fused_norm
    emptied = []
    real = fused_norm.empty_cache
    monkeypatch.setattr(fused_norm, "empty_cache", lambda: emptied.append(read_steps(tmp_path / "run")) or real())
    summary = train(tiny(tmp_path, steps=3))
    assert summary["status"] == "finished"
    assert len(emptied) == 1 and [s["step"] for s in emptied[0]] == [1, 2, 3]  # once, after the last step


def _in_thread(cfg, seconds=120):
    result = {}
    worker = threading.Thread(target=lambda: result.update(train(cfg)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "training hung"
    return result


def test_batches_with_no_readable_image_end_their_epoch(tmp_path):
    # a batch whose files were all unreadable did not move the epoch on, so the run re-read the
    # same (spent) epoch for ever at 100% CPU; a whole epoch of them now fails with one line
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "bad" / cls).mkdir(parents=True)
        (tmp_path / "mixed" / cls).mkdir(parents=True)
        for i in range(4):
            (tmp_path / "bad" / cls / f"{i}.jpg").write_text("not an image")
            (tmp_path / "mixed" / cls / f"junk{i}.jpg").write_text("not an image")
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "mixed" / cls / f"{i}.png")
    result = _in_thread(tiny(tmp_path, "bad_run", data=str(tmp_path / "bad"), steps=2, batch_size=2,
                             limit_per_class=None, val_split=0.25))
    assert result["status"] == "failed" and result["steps"] == 0
    assert result["message"].startswith("no image of a whole epoch could be read (")
    assert result["train_images_per_sec"] is None  # nothing was trained, so no speed (it said 0.0)
    mixed = _in_thread(tiny(tmp_path, "mixed_run", data=str(tmp_path / "mixed"), steps=None, epochs=2, batch_size=1,
                            limit_per_class=None, val_split=0.25))
    assert mixed["status"] == "finished" and mixed["epochs"] == pytest.approx(2.0)
    # an epoch is every batch, readable or not: 2 epochs are 2 x the readable training images of
    # the 12 (the seed-0 split), not the 24 steps of 12 batches an epoch that the run planned
    from inceptionlab.data import build_datasets
    train_files = build_datasets(str(tmp_path / "mixed"), train_transform=None, eval_transform=None, val_split=0.25,
                                 seed=0).train.samples
    readable = sum(not path.name.startswith("junk") for path, _ in train_files)
    assert len(train_files) == 12 and 0 < readable < 12 and mixed["steps"] == 2 * readable


def test_eval_refuses_data_of_other_classes(tmp_path):
    # the same number of classes under other names used to be scored by position (bird against frog)
    rng = np.random.default_rng(0)
    for folder, classes in (("trained", ("bird", "cat", "dog")), ("other", ("cat", "dog", "frog"))):
        for cls in classes:
            (tmp_path / folder / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                    tmp_path / folder / cls / f"{i}.png")
    run = tmp_path / "run"
    train(tiny(tmp_path, data=str(tmp_path / "trained"), steps=1, batch_size=4, limit_per_class=None, val_split=0.25))
    assert evaluate(run=run)["classes"] == ["bird", "cat", "dog"]
    other = str(tmp_path / "other")
    with pytest.raises(UserError, match=rf"^{other} has 1 class\(es\) that the weights were not trained on "
                                        rf"\(frog; they know bird, cat, dog\); evaluate on folders named after"):
        evaluate(run=run, data=other)
    with pytest.raises(UserError, match="not trained on \\(frog"):
        evaluate(model=str(run), data=other)   # the run folder as a saved model
    with pytest.raises(UserError, match="not trained on \\(frog"):
        evaluate(model="inception_v3", weights=run / "model.safetensors", data=other, model_kwargs=dict(TINY))
    # some of the trained classes (a test set without birds) are scored by name: it was refused
    for split in ("train", "val"):
        for cls in ("dog", "cat"):
            shutil.copytree(tmp_path / "trained" / cls, tmp_path / "some" / split / cls)
    assert evaluate(run=run, data=tmp_path / "some", out=tmp_path / "x")["images"] == 2  # the run's val_split
    report = evaluate(model=str(run), data=tmp_path / "some", out=tmp_path / "some_eval")  # all of val/
    assert report["classes"] == ["cat", "dog"] and report["model_classes"] == ["bird", "cat", "dog"]
    assert report["images"] == 8 and set(report["per_class"]) == {"cat", "dog"}
    from inceptionlab.tools.predict import predict
    val_images = sorted((tmp_path / "some" / "val").rglob("*.png"))
    answers = predict(create_model(str(run)), val_images, top_k=1, fast=False).results
    expected = {(p.path.parent.name, p.top[0][1]) for p in answers}  # (true, predicted) by name
    rows = list(csv.reader(open(tmp_path / "some_eval" / "confusion_matrix.csv")))
    assert rows[0] == ["true \\ predicted", "bird", "cat", "dog"] and [r[0] for r in rows[1:]] == ["cat", "dog"]
    counted = {(r[0], rows[0][j]) for r in rows[1:] for j in range(1, 4) if int(r[j])}
    assert counted == expected and sum(int(c) for r in rows[1:] for c in r[1:]) == 8
    correct = sum(p.top[0][1] == p.path.parent.name for p in answers)
    assert report["top1"] == pytest.approx(100 * correct / 8)
    from inceptionlab.cli import main
    for flag in (["--weights", str(run / "model.safetensors")], ["--img-size", "64"], ["--seed", "3"]):
        assert main(["eval", "--run", str(run)] + flag) == 2      # were silently ignored
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(UserError, match="afile is a file; pass --out a folder"):
        evaluate(run=run, out=tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "mine"


def test_eval_all_images_scores_a_test_folder_whole(tmp_path, capsys, monkeypatch):
    # `eval --run R --data test/` scored the test folder's 20% hold-out, and nothing scored it all;
    # unreadable files were left out of the image count without a word
    from inceptionlab.cli import main
    from inceptionlab.tools.predict import predict

    image_folder(tmp_path / "trained", ("cat", "dog"), 4)
    test = image_folder(tmp_path / "test", ("cat", "dog"), 5, seed=1, junk=1)
    run = tmp_path / "run"
    train(tiny(tmp_path, data=str(tmp_path / "trained"), steps=1, batch_size=4, limit_per_class=None, val_split=0.25))
    assert main(["eval", "--run", str(run), "--data", str(test), "--out", str(tmp_path / "part")]) == 0
    out = capsys.readouterr().out
    assert "(only its validation split was scored; --all-images scores every image of" in out
    part = json.loads((tmp_path / "part" / "eval.json").read_text())
    assert part["images"] + len(part["skipped_files"]) == 4  # a quarter of each class's 6 files
    import importlib  # a long evaluation says how far it is, every 30 s (here: every batch)
    progress = importlib.import_module("inceptionlab.train.evaluation")._Progress
    monkeypatch.setattr(progress.__init__, "__defaults__", (0.0,))
    assert main(["eval", "--run", str(run), "--data", str(test), "--all-images", "--out", str(tmp_path / "all"),
                 "--batch-size", "4"]) == 0
    out, err = capsys.readouterr()
    assert f"image folder {test}, every image: top1" in out and "validation split" not in out
    # (the seconds depend on the machine's load: a busy one took 1 s for a batch)
    assert re.fullmatch(r"  scoring 12 images: 1 of 3 batches in \d+s, about \d+s left\n"
                        r"  scoring 12 images: 2 of 3 batches in \d+s, about \d+s left\n", err)
    assert "  skipped 2 unreadable files: " in out and "junk0.png" in out
    report = json.loads((tmp_path / "all" / "eval.json").read_text())
    assert report["images"] == 10 and len(report["skipped_files"]) == 2
    # a quick look at a large test folder: at most N of each class
    assert main(["eval", "--model", str(run), "--data", str(tmp_path / "trained"), "--all-images",
                 "--limit-per-class", "3", "--out", str(tmp_path / "few")]) == 0
    assert "every image; at most 3 per class: top1" in capsys.readouterr().out
    few = json.loads((tmp_path / "few" / "eval.json").read_text())
    assert few["images"] == 6 and few["limit_per_class"] == 3
    answers = predict(create_model(str(run)), sorted(test.rglob("[0-9].png")), top_k=1, fast=False).results
    correct = sum(p.top[0][1] == p.path.parent.name for p in answers)
    assert len(answers) == 10 and report["top1"] == pytest.approx(100 * correct / 10)
    rows = list(csv.reader(open(tmp_path / "all" / "confusion_matrix.csv")))
    assert sum(int(c) for r in rows[1:] for c in r[1:]) == 10
    with pytest.raises(UserError, match="all_images scores every image, so a val_split would not be used"):
        evaluate(model=str(run), data=test, val_split=0.5, all_images=True)
    assert main(["eval", "--model", str(run), "--data", str(test), "--all-images", "--val-split", "0.5"]) == 2
    assert "--all-images scores every image, so --val-split would not be used" in capsys.readouterr().err
    bad = image_folder(tmp_path / "bad", ("cat", "dog"), 0, junk=2)
    with pytest.raises(UserError, match=rf"^no image of image folder {bad} could be read \(skipped 4"):
        evaluate(run=run, data=bad, all_images=True)
    # a folder of one trained class (new photos of cats): it was refused as "needs at least 2 classes"
    cats = image_folder(tmp_path / "cats", ("cat",), 3, seed=2)
    report = evaluate(run=run, data=cats, all_images=True, out=tmp_path / "cats_eval")
    assert report["classes"] == ["cat"] and report["model_classes"] == ["cat", "dog"] and report["images"] == 3
    answers = predict(create_model(str(run)), sorted(cats.rglob("*.png")), top_k=1, fast=False).results
    assert report["top1"] == pytest.approx(100 * sum(p.top[0][1] == "cat" for p in answers) / 3, abs=1e-3)  # (3 decimals)
    with pytest.raises(UserError, match=r"needs at least 2 classes, found 1 \(cat\)"):  # training still needs two
        train(tiny(tmp_path, data=str(cats), out=str(tmp_path / "one"), steps=1))


def test_every_image_of_arrays_keeps_their_order():
    from inceptionlab.data import build_datasets

    splits = build_datasets(None, train_transform=None, eval_transform=None, val_split=0.3)
    whole = splits.every_image()
    assert len(whole) == 5000 and whole.indices.tolist() == list(range(5000))
    assert whole.transform is splits.val.transform and splits.origin and "held out" not in splits.origin


def test_a_relative_data_path_is_saved_absolute_and_out_may_not_lie_in_data(tmp_path, monkeypatch, capsys):
    # `train --data data/x` saved the path as typed, so `--resume` from another folder could not find it
    image_folder(tmp_path / "data", ("a", "b"), 4)
    monkeypatch.chdir(tmp_path)
    train(tiny(tmp_path, data="data", out="runs/r", steps=1, batch_size=2, limit_per_class=None, val_split=0.25))
    monkeypatch.chdir(tmp_path / "runs")
    image_folder(tmp_path / "data", ("a",), 4, start=4, seed=1)  # files added since the checkpoint are named
    resumed = train(resume="r", budget=dict(steps=2), quiet=False)
    assert resumed["status"] == "finished" and resumed["steps"] == 2
    assert "(the data changed since the checkpoint: 6 -> 9 training and 2 -> 3 validation images)" in \
        capsys.readouterr().out
    with pytest.raises(UserError, match="the output folder data/run is inside the data folder data; pass an --out"):
        monkeypatch.chdir(tmp_path)
        train(tiny(tmp_path, data="data", out="data/run", steps=1))
    assert not (tmp_path / "data" / "run").exists()


def test_eval_of_a_runs_weights_file_uses_the_runs_config(tmp_path):
    # `eval --model NAME --weights RUN/model.safetensors` said "does not fit" where predict and export
    # picked up the run's config.json; a checkpoint of another build was a RuntimeError key dump
    train(tiny(tmp_path, steps=2, checkpoint_every=1))
    run = tmp_path / "run"
    by_folder = evaluate(model=str(run), out=tmp_path / "a")
    by_file = evaluate(model="inception_v3", weights=run / "model.safetensors", out=tmp_path / "b")
    assert by_file["top1"] == by_folder["top1"] and by_file["loss"] == by_folder["loss"]
    # a checkpoint of the run brings the run's config too (it pointed at --run, which takes no --weights)
    by_checkpoint = evaluate(model="inception_v3", weights=run / "checkpoints" / "step_00000002.pt", out=tmp_path / "c")
    assert by_checkpoint["top1"] == by_folder["top1"] and by_checkpoint["loss"] == by_folder["loss"]
    from inceptionlab.tools.predict import predict
    image = tmp_path / "one.png"
    Image.fromarray(np.full((28, 28, 3), 200, dtype=np.uint8)).save(image)
    answers = [predict(create_model("inception_v3", weights=w), [image], top_k=3, fast=False).results[0].top
               for w in (run / "model.safetensors", run / "checkpoints" / "step_00000002.pt")]
    assert answers[0] == answers[1]  # predict took the checkpoint too (it said "check the model name")
    lone = tmp_path / "lone" / "checkpoints"
    lone.mkdir(parents=True)
    shutil.copy(run / "checkpoints" / "step_00000002.pt", lone)
    with pytest.raises(UserError, match=r"checkpoint .*step_00000002.pt does not fit inception_v3 as built here: "
                                        r"it was trained as inception_v3 with stem=low_res depth_multiplier=0.1 "
                                        rf"min_depth=8; evaluate it with --model {tmp_path / 'lone'} --weights "):
        evaluate(model="inception_v3", weights=lone / "step_00000002.pt", out=tmp_path / "d")
    with pytest.raises(UserError, match="is an export; eval runs PyTorch weights"):
        evaluate(model=str(tmp_path / "x.onnx"), weights=run / "model.safetensors")


def test_a_non_finite_validation_loss_is_divergence_not_a_finished_run(tmp_path, monkeypatch):
    # a lab run with train loss 1e13 and val loss NaN was "finished", with a best top-1 the study
    # then judged, and summary.json held a bare NaN (not JSON)
    from inceptionlab.train import engine as engine_module
    from inceptionlab.train.evaluation import EvalResult

    real = engine_module.Trainer.evaluate

    def blown_up(self):
        result = real(self)
        return EvalResult(loss=float("nan"), top1=result.top1, top5=result.top5, count=result.count,
                          confusion=result.confusion) if self.pos.step >= 2 else result

    monkeypatch.setattr(engine_module.Trainer, "evaluate", blown_up)
    summary = train(tiny(tmp_path, steps=4, eval_every=1))
    assert summary["status"] == "diverged" and summary["steps"] == 2
    assert summary["message"].startswith("validation loss became nan at step 2 (epoch ")
    assert "last good checkpoint" in summary["message"]
    assert summary["best_step"] == 1 and not (tmp_path / "run" / "model.safetensors").exists()
    json.loads((tmp_path / "run" / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))


def test_the_saved_config_gives_the_size_and_crop_the_run_evaluated_at(tmp_path):
    # config.json said the model card's 32 px and crop 0.875 for a run at another size, so
    # `predict --model RUN_DIR` and `eval --model RUN_DIR` preprocessed unlike the run itself
    summary = train(tiny(tmp_path, steps=1, img_size=20, crop_pct=0.9))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["preprocessing"]
    assert saved["input_size"][1:] == [20, 20] and saved["crop_pct"] == 0.9
    assert evaluate(model=str(tmp_path / "run"))["img_size"] == 20   # not the digits' native 28
    assert evaluate(run=tmp_path / "run")["loss"] == pytest.approx(summary["final_val_loss"], abs=1e-5)


def test_an_out_folder_with_a_run_but_no_checkpoints_is_left_as_it_was(tmp_path):
    # bad input used to rewrite config.yaml first; a second run appended to the first one's logs
    run = tmp_path / "run"
    train(tiny(tmp_path, steps=1, keep_checkpoints=1))
    import shutil
    shutil.rmtree(run / "checkpoints")                      # to save space, say
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(UserError, match="does not exist"):
        train(tiny(tmp_path, steps=1, data=str(tmp_path / "typo")))
    with pytest.raises(UserError, match=r"run already holds config.yaml, config.json, metrics.csv, steps.jsonl, "
                                        r"summary.json, model.safetensors \(a run without checkpoints"):
        train(tiny(tmp_path, steps=1))
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_resume_after_the_classes_changed_is_a_one_line_error(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "pics" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "pics" / cls / f"{i}.png")
    train(tiny(tmp_path, data=str(tmp_path / "pics"), steps=1, batch_size=4, limit_per_class=None, val_split=0.25))
    import shutil
    shutil.copytree(tmp_path / "pics" / "dogs", tmp_path / "pics" / "frogs")
    (tmp_path / "run" / "summary.json").unlink()  # as if it had been interrupted
    with pytest.raises(UserError, match=r"^the data's classes changed since the checkpoint \(new: frogs; 2 then, "
                                        r"3 now\); resume with the same data, or fine-tune on the new classes with "
                                        rf"--weights {tmp_path / 'run'}$"):
        train(resume=tmp_path / "run")                      # was a state_dict size-mismatch traceback
    shutil.rmtree(tmp_path / "pics" / "dogs")  # the same count, another class: "(2 then, 2 now)" said nothing
    with pytest.raises(UserError, match=r"changed since the checkpoint \(gone: dogs; new: frogs; 2 then, 2 now\)"):
        train(resume=tmp_path / "run")
    # --threads changes results at rounding level only, so resume takes it (it was refused with the run's own value)
    from inceptionlab.cli import main
    shutil.copytree(tmp_path / "pics" / "frogs", tmp_path / "pics" / "dogs")
    shutil.rmtree(tmp_path / "pics" / "frogs")
    assert main(["train", "--resume", str(tmp_path / "run"), "--threads", "1", "--quiet"]) == 0


def test_an_out_that_is_a_file_is_named(tmp_path):
    # the OS says only "File exists" or "Not a directory"
    (tmp_path / "notes").write_text("mine")
    for out in ("notes", "notes/run"):
        with pytest.raises(UserError, match=rf"cannot write to output folder .*{out}: .*notes is a file, not a folder; "):
            train(tiny(tmp_path, steps=1, out=str(tmp_path / out)))
    assert (tmp_path / "notes").read_text() == "mine"


def test_a_freeze_until_typo_leaves_no_output_folder(tmp_path, capsys):
    # it was found after config.yaml was written, and that file then refused every retry in that --out
    with pytest.raises(UserError, match=r"inception_v3 has no block 'mixed_6x'; did you mean mixed_6"):
        train(tiny(tmp_path, steps=1, freeze_until="mixed_6x"))
    assert not (tmp_path / "run").exists()
    assert train(tiny(tmp_path, steps=1, freeze_until="mixed_6e", freeze_bn=True, quiet=False))["status"] == "finished"
    # the start line says what is trained (only config.yaml had said it)
    net = create_model("inception_v3", num_classes=10, **TINY)
    from inceptionlab.models.finetune import freeze_bn, freeze_until
    freeze_until(net, "mixed_6e")
    freeze_bn(net)
    trained = sum(p.numel() for p in net.parameters() if p.requires_grad)
    out = capsys.readouterr().out
    assert f"M params, {trained / 1e6:.2f}M trained: up to mixed_6e and batch norm frozen) on " in out
    # fine-tuning options without weights hold back random layers: said
    assert ("note: --freeze-bn and --freeze-until without --weights: they hold back randomly initialized layers"
            in out)
    # a classifier alone was "0.00M trained"
    train(tiny(tmp_path, "head", steps=1, freeze_until="mixed_7c", quiet=False))
    head = sum(p.numel() for p in net.head.parameters())
    assert f"M params, {head / 1e3:.1f}k trained: up to mixed_7c frozen) on " in capsys.readouterr().out


def test_no_top5_with_five_classes_or_fewer(tmp_path, capsys):
    # with 3 classes every image is in its top 5: "top5 100%" was in every line, table and summary
    from inceptionlab.cli import main
    from inceptionlab.lab.report import run_rows

    data = image_folder(tmp_path / "three", ("a", "b", "c"), 4)
    summary = train(tiny(tmp_path, data=str(data), steps=2, eval_every=1, batch_size=4, limit_per_class=None,
                         val_split=0.25))
    assert summary["status"] == "finished" and summary["best_top1"] is not None
    assert summary["best_top5"] is None and summary["final_top5"] is None
    rows = read_metrics(tmp_path / "run")
    assert [r["top5"] for r in rows] == ["", ""] and all(r["top1"] != "" for r in rows)
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "ev")]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert ": top1 " in line and "%  loss " in line and "%  top5 " not in line
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["top5"] is None
    # the lab's tables leave the column out when no run has it, and keep it when one has
    head, cells = run_rows(dict(runs=[dict(summary, name="r", model="inception_v3")]))
    assert "best top-5 %" not in head and "best top-1 %" in head and len(cells[0]) == len(head)
    head, _ = run_rows(dict(runs=[dict(summary, name="r", model="m"), dict(summary, name="s", model="m", best_top5=50.0)]))
    assert "best top-5 %" in head


def test_val_limit_per_class_and_the_time_the_final_evaluation_took(tmp_path, capsys, monkeypatch):
    # --limit-per-class limits training only: a 2-step fine-tune on CIFAR-10 then scored all 10,000
    # test images for 9 minutes, and its last line said "2 steps in 2s"
    import time

    from inceptionlab.data import build_datasets
    from inceptionlab.train import engine

    root = tmp_path / "data"
    image_folder(root / "train", ("a", "b"), 4)
    image_folder(root / "test", ("a", "b"), 6, seed=1)
    splits = build_datasets(str(root), train_transform=None, eval_transform=None, limit_per_class=3,
                            val_limit_per_class=2)
    assert (len(splits.train), len(splits.val)) == (6, 4)
    assert "; train limited to 3 per class; val limited to 2 per class (6 train / 4 val images)" in splits.source
    with pytest.raises(UserError, match="val_limit_per_class must be a positive integer, got 0"):
        build_datasets(str(root), train_transform=None, eval_transform=None, val_limit_per_class=0)
    slow = engine.run_eval

    def slow_eval(*args, **kwargs):
        time.sleep(1.2)
        return slow(*args, **kwargs)

    monkeypatch.setattr(engine, "run_eval", slow_eval)
    summary = train(tiny(tmp_path, data=str(root), steps=1, batch_size=4, limit_per_class=None,
                         val_split=None, val_limit_per_class=1, quiet=False))
    assert summary["status"] == "finished" and summary["seconds"] < 1.2
    out = capsys.readouterr().out
    assert "val limited to 1 per class (8 train / 2 val images)" in out
    assert re.search(r"finished: 1 step in \ds, then [12]s for the final evaluation, best top1", out), out


def test_a_one_channel_model_trains_on_gray_images_of_any_source(tmp_path, capsys):
    # in_chans=1 was refused ("the images have 3 channels"), on the embedded MNIST digits too
    from inceptionlab.cli import main

    summary = train(tiny(tmp_path, data=None, steps=1, model_kwargs=dict(TINY, in_chans=1)))
    assert summary["status"] == "finished"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["switches"]["in_chans"] == 1 and len(config["preprocessing"]["mean"]) == 1
    assert config["preprocessing"]["input_size"][0] == 1
    # a colour picture is made gray (PIL's luma) for it, in predict as in training
    photo = image_folder(tmp_path / "photos", ("a",), 1)
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "run"), str(photo), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 1
    from inceptionlab.data.transforms import ToNormalizedTensor
    from PIL import Image

    rgb = Image.new("RGB", (2, 1), (200, 100, 50))
    plane = ToNormalizedTensor([0.5], [0.5])(rgb)
    assert plane.shape == (1, 1, 2)
    assert plane[0, 0, 0].item() == pytest.approx((0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255 / 0.5 - 1, abs=1e-6)
    assert plane[0, 0, 0].item() == pytest.approx(rgb.convert("L").getpixel((0, 0)) / 255 / 0.5 - 1, abs=0.01)
    with pytest.raises(UserError, match="in_chans=2 but the images have 3 channels; drop in_chans, or pass in_chans=1"):
        train(tiny(tmp_path, name="two", data=None, steps=1, model_kwargs=dict(TINY, in_chans=2)))


def test_eval_on_other_data_writes_beside_the_runs_own_scores(tmp_path, capsys):
    # eval --model RUN --data OTHER overwrote RUN/eval.json (the run's own validation scores)
    from inceptionlab.cli import main

    data = image_folder(tmp_path / "trained", ("cat", "dog"), 4)
    other = image_folder(tmp_path / "other", ("cat", "dog"), 3, seed=1)
    train(tiny(tmp_path, data=str(data), steps=1, batch_size=4, limit_per_class=None, val_split=0.25))
    run = tmp_path / "run"
    assert main(["eval", "--run", str(run)]) == 0
    own = (run / "eval.json").read_text()
    for argv in (["--model", str(run)], ["--run", str(run)]):
        assert main(["eval", *argv, "--data", str(other), "--all-images"]) == 0
        assert f"wrote {run / 'eval_other_all' / 'eval.json'} and the confusion matrix beside it" in capsys.readouterr().out
        assert (run / "eval.json").read_text() == own
        assert json.loads((run / "eval_other_all" / "eval.json").read_text())["images"] == 6
    # another folder named other/ keeps the first one's scores (it replaced them without a word): its
    # parent's name joins, then a number; the same folder scored again replaces its own
    second = image_folder(tmp_path / "elsewhere" / "other", ("cat", "dog"), 2, seed=2)
    third = image_folder(tmp_path / "elsewhere2" / "x" / "other", ("cat", "dog"), 1, seed=3)
    third_named = image_folder(tmp_path / "elsewhere3" / "x" / "other", ("cat", "dog"), 1, seed=3)
    for folder, name, images in ((second, "eval_elsewhere_other_all", 4), (third, "eval_x_other_all", 2),
                                 (third_named, "eval_other_all_2", 2), (other, "eval_other_all", 6),
                                 (second, "eval_elsewhere_other_all", 4)):
        assert main(["eval", "--run", str(run), "--data", str(folder), "--all-images"]) == 0
        assert f"wrote {run / name / 'eval.json'} and" in capsys.readouterr().out
        report = json.loads((run / name / "eval.json").read_text())
        assert (report["images"], report["data"]) == (images, str(folder.resolve()))
    assert sorted(p.name for p in run.glob("eval_*")) == ["eval_elsewhere_other_all", "eval_other_all",
                                                          "eval_other_all_2", "eval_x_other_all"]


def test_a_signal_during_the_final_evaluation_is_kept_for_the_lab(tmp_path, monkeypatch):
    # Ctrl-C in a run's final evaluation was lost: the compare went on to train the next model
    import os
    import signal

    from inceptionlab.lab import runner
    from inceptionlab.train import engine

    evaluate_now = engine.run_eval

    def interrupted_eval(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the handler records it; the loop has no next step to stop at
        return evaluate_now(*args, **kwargs)

    monkeypatch.setattr(engine, "run_eval", interrupted_eval)
    summary = train(tiny(tmp_path, steps=1))
    assert summary["status"] == "finished" and summary["stop_signal"] == "SIGINT"
    assert summary["message"] == "SIGINT came after the last step: the run is complete, and a lab stops after it"
    monkeypatch.setattr("inceptionlab.train.train", lambda *a, **k: summary)
    run = types.SimpleNamespace(config=lambda *a, **k: None)
    with pytest.raises(KeyboardInterrupt, match="SIGINT came after the last step"):
        runner._train_one(run, tmp_path / "lab_run", types.SimpleNamespace(data=None), resume=False,
                          log=lambda line: None, quiet=True)


def test_the_run_decodes_large_jpegs_at_the_size_its_transforms_need(tmp_path):
    # the datasets get their transforms late (they depend on the model): the sizes must reach load_image
    image_folder(tmp_path / "pics", ("a", "b"), 2)
    splits, _, size = build_model_and_data(tiny(tmp_path, data=str(tmp_path / "pics"), limit_per_class=None,
                                                val_split=0.5))
    assert size == 12
    # 12 / sqrt(0.08 / (4/3)) for training; twice the evaluation resize, 2 x 12 (crop 1.0: the
    # pictures are 12x12 themselves)
    assert (splits.train.transform.decode_side, splits.val.transform.decode_side) == (49, 24)


@pytest.mark.parametrize("sides, low_res_size, crop", [((24, 24), 24, 1.0), ((48, 48), 32, 0.875),
                                                       ((24, 30), 32, 0.875)])
def test_a_folder_of_small_squares_of_one_size_trains_and_evaluates_at_it(tmp_path, sides, low_res_size, crop):
    # a CIFAR-10 folder of 32x32 JPEGs was evaluated at crop 0.875 (its centre 28x28 scaled up),
    # where the same pictures as CIFAR arrays were evaluated whole: 10.0 against 9.0 top-1
    for side, cls in zip(sides, ("a", "b")):
        image_folder(tmp_path / "pics", (cls,), 3, size=side)
    cfg = tiny(tmp_path, data=str(tmp_path / "pics"), limit_per_class=None, val_split=0.34, img_size=None)
    splits, net, size = build_model_and_data(cfg)
    assert splits.native_size == (sides[0] if sides[0] == sides[1] else None)
    # a low-res stem trains at the pictures' size, never above its card's 32 px; crop 1.0 at that size
    assert (size, net.pretrained_cfg["crop_pct"]) == (low_res_size, crop)
    assert build_model_and_data(cfg.replace(img_size=sides[0]))[1].pretrained_cfg["crop_pct"] == \
        (1.0 if sides[0] == sides[1] else 0.875)
    assert build_model_and_data(cfg.replace(img_size=sides[0], crop_pct=0.5))[1].pretrained_cfg["crop_pct"] == 0.5


def test_a_run_is_scored_at_the_crop_it_recorded_whatever_the_datas_size(tmp_path):
    # a run trained on mixed pictures (crop 0.875), scored on a folder of 24x24 ones, was evaluated at 1.0
    # (the data's own size) while predict used its config.json's 0.875
    image_folder(tmp_path / "mixed", ("a",), 3, size=24)
    image_folder(tmp_path / "mixed", ("b",), 3, size=30)
    square = image_folder(tmp_path / "square", ("a", "b"), 2, size=24)
    train(tiny(tmp_path, data=str(tmp_path / "mixed"), steps=1, batch_size=4, limit_per_class=None, val_split=0.34,
               img_size=24))
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["preprocessing"]["crop_pct"] == 0.875
    for kwargs in (dict(run=run), dict(model=str(run))):
        report = evaluate(**kwargs, data=square, all_images=True, out=tmp_path / "scores")
        assert (report["img_size"], report["crop_pct"]) == (24, 0.875)


def test_a_blown_up_finite_loss_is_divergence(tmp_path, monkeypatch):
    # lr=1e6 trained to the end at a loss of 1e23, chance accuracy, and the run said "finished"
    from inceptionlab.train.engine import Trainer

    real = Trainer.train_step

    def blowing_up(self, images, labels, lr):
        loss, correct = real(self, images, labels, lr)
        return (loss * 0 + 1e23 if self.pos.step >= 2 else loss), correct

    monkeypatch.setattr(Trainer, "train_step", blowing_up)
    summary = train(tiny(tmp_path, steps=6))
    assert summary["status"] == "diverged" and summary["steps"] == 2
    assert summary["message"].startswith("loss became 1e+23 (over 1000x the 2.30 of a uniform guess) at step 3 ")
    # rmsprop_tf clips at 2.0 already: "or with --clip-grad" misled
    assert summary["message"].endswith("; start a new run with a lower --lr or a smaller --clip-grad (it clipped at 2)")
    # the epoch where step 3 ends, as steps.jsonl counts them (it gave step 2's)
    from inceptionlab.train.logs import read_steps
    per_step = read_steps(tmp_path / "run")[0]["epoch"]
    assert f"at step 3 (epoch {3 * per_step:.2f});" in summary["message"]


def test_a_fine_tune_of_a_run_keeps_the_input_convention_the_run_trained_with(tmp_path):
    # bn_inception's card is Caffe's BGR 0-255: a fine-tune of a from-scratch run (unit-scale RGB) switched
    # to it without a word, inputs 255 times larger with the channels swapped; eval then followed it
    from inceptionlab.models.weights import trained_classes

    image_folder(tmp_path / "pics", ("a", "b", "c"), 4)
    bn = dict(stem="low_res", depth_multiplier=0.125, min_depth=8)
    common = dict(model="bn_inception", data=str(tmp_path / "pics"), steps=1, batch_size=4, limit_per_class=None,
                  val_split=0.25, model_kwargs=bn)
    train(tiny(tmp_path, name="scratch", **common))
    train(tiny(tmp_path, name="tuned", weights=str(tmp_path / "scratch"), **common))
    recorded = {run: json.loads((tmp_path / run / "config.json").read_text())["preprocessing"]
                for run in ("scratch", "tuned")}
    assert recorded["tuned"] == recorded["scratch"] and recorded["tuned"]["input_space"] == "RGB"
    assert recorded["tuned"]["input_range"] == [0, 1]
    tuned = TrainConfig.from_yaml(tmp_path / "tuned" / "config.yaml").replace(weights=None)
    _, net, _ = build_model_and_data(tuned, pretrained=tmp_path / "tuned")  # as eval --run builds it
    assert net.pretrained_cfg["input_space"] == "RGB" and list(net.pretrained_cfg["mean"]) == recorded["tuned"]["mean"]
    shutil.move(tmp_path / "scratch", tmp_path / "moved")  # a resume reads the convention from its checkpoint,
                                                           # not from the folder it started from
    train(resume=tmp_path / "tuned", budget=dict(steps=2))
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["preprocessing"] == recorded["scratch"]
    shutil.move(tmp_path / "moved", tmp_path / "scratch")
    # a checkpoint copied out of its run still names its classes (its rows were matched by position)
    copied = tmp_path / "best_copy.pt"
    shutil.copy(next((tmp_path / "scratch" / "checkpoints").glob("*.pt")), copied)
    assert trained_classes(copied) == ["a", "b", "c"]


def test_eval_refuses_what_it_would_ignore_or_overwrite(tmp_path, capsys):
    # found by a probe: the API ignored settings the CLI refused, any --amp (false too) meant bf16, --all-images
    # on the run's own data rewrote its eval.json with training images, and unnamed weights looped between fixes
    from inceptionlab.cli import main

    image_folder(tmp_path / "pics", ("cat", "dog"), 4)
    run = tmp_path / "run"
    train(tiny(tmp_path, data=str(tmp_path / "pics"), steps=1, batch_size=4, limit_per_class=None, val_split=0.25))
    for given in (dict(img_size=48), dict(weights=run / "model.safetensors"), dict(model_kwargs={"norm": False})):
        with pytest.raises(UserError, match=rf"^run= evaluates the run as it was trained; drop {next(iter(given))} "):
            evaluate(run=run, **given)
    with pytest.raises(UserError, match=r"^all_images scores every image of the data, and the run trained on"):
        evaluate(run=run, all_images=True)
    assert not (run / "eval.json").exists()
    plain = evaluate(run=run)
    for off in ("false", None, 0, "fp32"):
        assert evaluate(run=run, amp=off)["loss"] == plain["loss"]
    assert plain["amp"] is False and evaluate(run=run, amp="true")["amp"] is True
    with pytest.raises(UserError, match=r"^amp must be true, false, bf16 or fp16, got 'bogus'$"):
        evaluate(run=run, amp="bogus")
    with pytest.raises(UserError, match=rf"^{run} is a training run: eval --run {run} scores its own validation"):
        evaluate(model=str(run))
    with pytest.raises(UserError, match=rf"^{run} is a training run"):
        evaluate(model="inception_v3", weights=run / "model.safetensors", model_kwargs=dict(TINY))
    # a checkpoint's scores on other data go beside the run's, not into checkpoints/, named after it (the
    # scores of two checkpoints replaced each other)
    checkpoint = next((run / "checkpoints").glob("step_*.pt"))
    report = evaluate(model="inception_v3", weights=checkpoint, data=tmp_path / "pics", model_kwargs=dict(TINY),
                      all_images=True)
    assert report["confusion_csv"] == str(run / f"eval_pics_{checkpoint.stem}_all" / "confusion_matrix.csv")
    best = evaluate(model="inception_v3", weights=run / "checkpoints" / "best.pt", data=tmp_path / "pics",
                    model_kwargs=dict(TINY), all_images=True)
    assert best["confusion_csv"] == str(run / "eval_pics_best_all" / "confusion_matrix.csv")
    # unnamed weights of another class count: one message, not two fixes that refuse each other
    unnamed = tmp_path / "unnamed.pt"
    torch.save(create_model("inception_v3", num_classes=3, **TINY).state_dict(), unnamed)
    with pytest.raises(UserError, match=r"unnamed\.pt has a 3-class classifier without class names \(no config\.json "
                                        r"beside it\), and .* has 2 classes: unnamed classes are scored by position"):
        evaluate(model="inception_v3", weights=unnamed, data=tmp_path / "pics", model_kwargs=dict(TINY))
    assert main(["eval", "--run", str(run), "--model", "inception_v3"]) == 2
    assert "pass --run RUN_DIR (a training run) or --model NAME --weights FILE, not both" in capsys.readouterr().err


def test_an_epoch_budget_under_one_step_says_so(tmp_path, capsys):
    # --epochs 0.001 ran 1 step (a third of an epoch here) without a word
    summary = train(tiny(tmp_path, steps=None, epochs=0.001, quiet=False))
    assert summary["steps"] == 1
    assert "1 steps (--epochs 0.001 is less than one step; one step is the least) (5/epoch)" in capsys.readouterr().out


def test_images_left_out_of_every_epoch_are_named_in_the_start_line(tmp_path, capsys):
    # 50 images at batch 32: one step an epoch, and 18 images unseen each epoch without a word
    train(tiny(tmp_path, steps=1, limit_per_class=5, batch_size=32, val_split=0.1, quiet=False))
    assert ("(1/epoch, 18 of the 50 images left out of each epoch: the last partial batch, other images each "
            "epoch)") in capsys.readouterr().out
    # a few images short of a whole batch are not worth a word
    train(tiny(tmp_path, "run2", steps=1, limit_per_class=4, batch_size=8, val_split=0.02, quiet=False))
    assert "left out" not in capsys.readouterr().out


def test_a_checkpoint_of_another_run_is_refused_and_nothing_is_touched(tmp_path):
    # one dropped into checkpoints/ was resumed as this run: another model, and this run's later
    # checkpoints and metrics deleted
    import shutil

    train(tiny(tmp_path, "mine", steps=4, eval_every=2))
    train(tiny(tmp_path, "other", steps=4, eval_every=2, model_kwargs=dict(TINY, depth_multiplier=0.2)))
    mine, other = tmp_path / "mine" / "checkpoints", tmp_path / "other" / "checkpoints"
    before = sorted(p.name for p in mine.iterdir()), (tmp_path / "mine" / "metrics.csv").read_text()
    shutil.copy(other / "step_00000004.pt", mine / "step_00000009.pt")
    with pytest.raises(UserError, match=r"step_00000009.pt holds step 4, not step 9: it is not this run's checkpoint; "
                                        r"move it out of \S+, then --resume again$"):
        train(resume=tmp_path / "mine", budget={"steps": 12})
    (mine / "step_00000009.pt").unlink()
    (mine / "step_00000004.pt").replace(tmp_path / "own4.pt")
    shutil.copy(other / "step_00000004.pt", mine / "step_00000004.pt")  # named as this run's would be
    with pytest.raises(UserError, match=r"step_00000004.pt was written by another run \(model_kwargs .*'depth_multiplier': "
                                        r"0.2.*; this run's config.yaml says .*\); move it out of"):
        train(resume=tmp_path / "mine", budget={"steps": 12})
    (tmp_path / "own4.pt").replace(mine / "step_00000004.pt")
    assert (sorted(p.name for p in mine.iterdir()), (tmp_path / "mine" / "metrics.csv").read_text()) == before
    # best.pt gone: linked again to the best step's file (it would be pruned next without a word)
    (mine / "best.pt").unlink()
    summary = train(resume=tmp_path / "mine", budget={"steps": 6}, quiet=False)
    best = summary["best_step"]
    assert (mine / "best.pt").is_file() and torch.load(mine / "best.pt", weights_only=True)["position"]["step"] == best
    # checkpoints/ removed from a finished run: not "it ended before its first one", and not "delete the run"
    shutil.rmtree(mine)
    with pytest.raises(UserError, match=r"checkpoints holds no checkpoint \(it was emptied or removed\), so the run "
                                        r"cannot go on exactly; its final weights are in \S+model.safetensors: train "
                                        r"on from them in a new run, inceptionlab train --weights \S+mine --out NEW_DIR"):
        train(resume=tmp_path / "mine", budget={"steps": 8})


def test_model_kwargs_of_a_config_file_that_are_no_mapping_beside_the_flag(tmp_path, capsys):
    # `model_kwargs: [stem=low_res]` with --model-kwargs on the command line raised a TypeError traceback
    from inceptionlab.cli import main

    (tmp_path / "listed.yaml").write_text("steps: 2\nmodel_kwargs: [stem=low_res]\n")
    assert main(["train", "--config", str(tmp_path / "listed.yaml"), "--model-kwargs", "min_depth=8",
                 "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (f"inceptionlab train: error: model_kwargs in {tmp_path / 'listed.yaml'} must "
                                       f"be a mapping of switch: value, got ['stem=low_res']; e.g. model_kwargs: "
                                       f"{{stem: low_res}}\n")


def test_training_accuracy_is_logged_for_the_images_since_the_last_evaluation(tmp_path, monkeypatch):
    # metrics.csv had the training loss but not the training accuracy: overfitting was invisible
    from inceptionlab.train.engine import Trainer
    from inceptionlab.train.logs import OLDER_METRIC_COLUMNS, RunLog

    right, seen = [], []
    real = Trainer.train_step

    def counting(self, images, labels, lr):
        # without batch norm or dropout the forward pass is the step's own: count its right answers here
        with torch.no_grad():
            logits = self.model(images.contiguous(memory_format=self.memory_format))
        right.append(int((logits.argmax(1) == labels).sum()))
        seen.append(len(labels))
        return real(self, images, labels, lr)

    monkeypatch.setattr(Trainer, "train_step", counting)
    train(tiny(tmp_path, steps=6, eval_every=4, lr=0.01, model_kwargs=dict(TINY, norm=False, drop_rate=0.0)))
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == ["4", "6"]
    assert float(rows[0]["train_top1"]) == round(100 * sum(right[:4]) / sum(seen[:4]), 3)
    assert float(rows[1]["train_top1"]) == round(100 * sum(right[4:]) / sum(seen[4:]), 3)
    # a run begun before the column existed goes on with its own columns when resumed
    older = tmp_path / "older"
    older.mkdir()
    (older / "metrics.csv").write_text(",".join(OLDER_METRIC_COLUMNS) + "\n2,4,2.1,2.2,10.0,50.0,0.1,99.0,3.0\n")
    log = RunLog(older, resume_step=4)
    log.metrics(dict(epoch=3, step=6, train_loss=2.0, val_loss=2.1, top1=20.0, top5=60.0, lr=0.1,
                     images_per_sec=98.0, seconds=5.0, train_top1=25.0))
    log.close()
    assert (older / "metrics.csv").read_text().splitlines()[1:] == ["2,4,2.1,2.2,10.0,50.0,0.1,99.0,3.0",
                                                                   "3,6,2.0,2.1,20.0,60.0,0.1,98.0,5.0"]


def test_body_lr_scale_slows_all_but_the_classifier(tmp_path):
    # fine-tuning with a lower rate for the pretrained body than for the new classifier
    from inceptionlab.train.optim import param_groups

    model = create_model("googlenet", num_classes=10, aux_logits=True, **TINY)
    head, body, scaled = param_groups(model, 1e-4), param_groups(model, 1e-4, 0.1), None
    assert len(head) == 2 and [g.get("lr_scale") for g in body] == [None, None, 0.1, 0.1]
    names = {id(p): n for n, p in model.named_parameters()}
    scaled = {names[id(p)] for g in body[2:] for p in g["params"]}
    assert scaled and not any(n.startswith(("head.fc.", "aux_heads.")) for n in scaled)
    assert {n for n in names.values() if n not in scaled} == {n for n in names.values()
                                                           if n.startswith(("head.fc.", "aux_heads."))}
    facenet = create_model("inception_resnet_v1", num_classes=10, **TINY)  # its embedding layer is body
    names = {id(p): n for n, p in facenet.named_parameters()}
    head = {names[id(p)] for g in param_groups(facenet, 0.0, 0.1)[:2] for p in g["params"]}
    assert head == {"head.fc.weight", "head.fc.bias"}
    with pytest.raises(UserError, match=r"^body_lr_scale must be a number > 0, got None"):
        tiny(tmp_path, body_lr_scale=None).resolved()  # (null in a config file crashed the run it had begun)
    # beyond float32, lr x body_lr_scale was a traceback inside the optimizer step
    with pytest.raises(UserError, match=r"^body_lr_scale must be a finite number > 0 and <= 1e\+06, got 1e\+40"):
        tiny(tmp_path, body_lr_scale=1e40).resolved()
    with pytest.raises(UserError, match=r"^lr must be a finite number > 0 and <= 1e\+15, got 1e\+300"):
        tiny(tmp_path, lr=1e300).resolved()
    # one plain SGD step from the same start: the body moves a tenth as far, the classifier as far
    from safetensors.torch import save_file

    start = {k: v.contiguous() for k, v in create_model("inception_v3", num_classes=10, **TINY).state_dict().items()}
    save_file(start, tmp_path / "start.safetensors")
    moved = {}
    for scale in (1.0, 0.1):
        summary = train(tiny(tmp_path, f"s{scale}", steps=1, opt="sgd", momentum=0.0, weight_decay=0.0, clip_grad=0.0,
                             sched="constant", lr=0.01, body_lr_scale=scale, weights=str(tmp_path / "start.safetensors")))
        assert summary["status"] == "finished", summary["message"]
        end = load_file(tmp_path / f"s{scale}" / "model.safetensors")
        moved[scale] = {k: end[k] - v for k, v in start.items() if v.is_floating_point() and "running" not in k}
    assert all(d.abs().max() > 1e-5 for k, d in moved[1.0].items() if k.endswith(".conv.weight"))
    for key, delta in moved[1.0].items():
        torch.testing.assert_close(moved[0.1][key], delta if key.startswith("head.") else 0.1 * delta,
                                   rtol=1e-4, atol=2e-7)  # (float32 rounding of w + delta)


def test_freeze_bn_on_a_model_without_batch_norm_is_refused(tmp_path):
    # it trained, and the start line said "batch norm frozen" of a network that has none
    with pytest.raises(UserError, match=r"^--freeze-bn: inception_v3 with stem=low_res depth_multiplier=0.1 "
                                        r"min_depth=8 norm=False has no batch norm to freeze; drop --freeze-bn$"):
        train(tiny(tmp_path, freeze_bn=True, model_kwargs=dict(TINY, norm=False)))
    assert not (tmp_path / "run").exists()


def test_a_fine_tune_of_a_run_trains_at_the_runs_size(tmp_path, capsys):
    # without --img-size it trained at the stem's default (the digits' 28 px) where eval and predict of the
    # run used its own 16
    train(tiny(tmp_path, "first", steps=1, img_size=16))
    tuned = train(tiny(tmp_path, "tuned", steps=1, img_size=None, weights=str(tmp_path / "first"), quiet=False))
    assert tuned["img_size"] == 16
    assert "(16px, the size those weights were trained at; --img-size for another)" in capsys.readouterr().out
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["preprocessing"]["input_size"] == [3, 16, 16]
    assert train(resume=tmp_path / "tuned", budget=dict(steps=2))["img_size"] == 16  # from its checkpoint
    other = train(tiny(tmp_path, "other", steps=1, img_size=20, weights=str(tmp_path / "first" / "model.safetensors")))
    assert other["img_size"] == 20  # --img-size wins


def test_a_fine_tune_from_keras_weights_keeps_their_average_pools(tmp_path):
    # a classifier of another size: the model took the donor's tensors only, and trained, saved and
    # evaluated with the card's count_include_pad=True pools the Keras weights were not trained with
    from test_weights_keras import keras_inception_v3, write_keras2

    write_keras2(tmp_path / "k_v3.h5", keras_inception_v3(torch.randn(1, 3, 75, 75), seed=1, width=0.25, classes=10))
    image_folder(tmp_path / "pics", ("a", "b", "c"), 4, size=75)
    cfg = tiny(tmp_path, model_kwargs=dict(depth_multiplier=0.25), weights=str(tmp_path / "k_v3.h5"), img_size=75,
               data=str(tmp_path / "pics"), limit_per_class=None, val_split=0.25, batch_size=3, steps=1)
    assert train(cfg)["status"] == "finished"
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["switches"]["avg_pool_count_pad"] is False
    pools = lambda net: {m.count_include_pad for m in net.modules() if isinstance(m, torch.nn.AvgPool2d)  # noqa: E731
                         and m.padding != 0}
    assert pools(create_model(str(tmp_path / "run"))) == {False}
    train(resume=tmp_path / "run", budget=dict(steps=2))  # the checkpoint keeps them
    assert json.loads((tmp_path / "run" / "config.json").read_text())["switches"]["avg_pool_count_pad"] is False


def test_a_fine_tune_from_facenet_weights_keeps_their_preprocessing(tmp_path):
    # facenet's (x - 127.5) / 128 on 160 px faces, crop 1.0, was lost with the donor of another class count
    from facenet_pytorch import InceptionResnetV1
    from inceptionlab.train.setup import load_initial_weights, preprocessing

    torch.save(InceptionResnetV1(classify=True, num_classes=7).state_dict(), tmp_path / "facenet.pt")
    cfg = TrainConfig(model="inception_resnet_v1", steps=1, weights=str(tmp_path / "facenet.pt"))
    for size, expected in ((None, 160), (96, 96)):  # its 160 px only as the default
        model = create_model("inception_resnet_v1", num_classes=3, embedding_dim=512)
        assert load_initial_weights(model, cfg.weights, cfg.model, dict(embedding_dim=512), ["a", "b", "c"]) == \
            "classifier starts fresh (7 classes in facenet.pt, 3 here)"
        img_size, _, _ = preprocessing(cfg.replace(img_size=size), model, None)
        card = model.pretrained_cfg
        assert (img_size, card["input_size"], card["std"], card["mean"], card["crop_pct"]) == (
            expected, (3, expected, expected), (128 / 255,) * 3, (0.5,) * 3, 1.0)


def test_a_bad_kernel_switch_is_a_one_line_error_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """INCEPTIONLAB_POINTWISE=mkl had failed the run inside its first step ("failed: ...", exit 1);
    then it (and INCEPTIONLAB_FUSED_NORM=maybe) came after the run's header and folder."""
    from inceptionlab import cpus
    from inceptionlab.cli import main
    monkeypatch.setenv("INCEPTIONLAB_POINTWISE", "mkl")
    cpus.pointwise_path.cache_clear()
    message = ("error: INCEPTIONLAB_POINTWISE='mkl' is not a path for 1x1 convolutions; set it to gemm or onednn, "
               "or unset it to let the CPU decide")
    try:
        code = main(["train", "--model", "googlenet", "--model-kwargs", "depth_multiplier=0.125", "stem=low_res",
                     "min_depth=8", "--steps", "2", "--threads", "1", "--quiet", "--out", str(tmp_path / "run")])
        assert code == 2
        assert capsys.readouterr() == ("", f"inceptionlab train: {message}\n")  # before the run's header
        assert not (tmp_path / "run").exists()  # and before its folder
        for command in (["compare", "--models", "googlenet"], ["study", "batchnorm"]):
            assert main([*command, "--steps", "1", "--out", str(tmp_path / "lab")]) == 2
            assert capsys.readouterr().err == f"inceptionlab {command[0]}: {message}\n"
        assert not (tmp_path / "lab").exists()
        monkeypatch.setenv("INCEPTIONLAB_POINTWISE", "gemm")
        monkeypatch.setenv("INCEPTIONLAB_FUSED_NORM", "maybe")
        assert main(["train", "--steps", "1", "--out", str(tmp_path / "run")]) == 2
        assert capsys.readouterr().err.startswith("inceptionlab train: error: INCEPTIONLAB_FUSED_NORM='maybe' is "
                                                  "neither on nor off")
        assert not (tmp_path / "run").exists()
        monkeypatch.setenv("INCEPTIONLAB_POINTWISE", "mkl")
        monkeypatch.delenv("INCEPTIONLAB_FUSED_NORM")
        # the benchmark: before its CSV is created and its peak measured
        code = main(["benchmark", "--models", "googlenet", "--mode", "train", "--img-size", "96", "--batch-size", "2",
                     "--out", str(tmp_path / "b.csv")])
        assert code == 2
        assert capsys.readouterr() == ("", f"inceptionlab benchmark: {message}\n")
        assert not (tmp_path / "b.csv").exists()
    finally:
        cpus.pointwise_path.cache_clear()
