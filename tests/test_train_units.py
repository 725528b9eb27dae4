"""Unit tests of the training engine's pieces: loss, optimizer, schedules, parameter groups, EMA,
checkpoints, random state, config and command-line errors, distributed sharding."""
from __future__ import annotations

import errno
import math
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from inceptionlab.errors import UserError
from inceptionlab.models import InceptionOutput
from inceptionlab.train import TrainConfig
from inceptionlab.train import checkpoint as checkpoint_module
from inceptionlab.train.checkpoint import (CheckpointDir, CheckpointError, atomic_save, load_checkpoint, rng_state,
                                           set_rng_state)
from inceptionlab.train.config import parse_model_kwargs, parse_value
from inceptionlab.train.distributed import ShardedEpochSampler
from inceptionlab.data.loader import EpochSampler
from inceptionlab.train.loss import InceptionLoss, default_aux_weight, smoothed_cross_entropy
from inceptionlab.train.optim import LRSchedule, ModelEMA, RMSpropTF, param_groups


# ------------------------------------------------------------------ loss
def test_smoothed_cross_entropy_matches_a_hand_computation():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    target = torch.tensor([2, 0])
    eps = 0.1
    expected = 0.0
    for row, y in zip(logits.tolist(), target.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        log_p = [v - log_z for v in row]
        expected += (1 - eps) * -log_p[y] + eps * sum(-lp for lp in log_p) / len(row)
    expected /= 2
    assert smoothed_cross_entropy(logits, target, eps).item() == pytest.approx(expected, abs=1e-6)
    assert smoothed_cross_entropy(logits, target, eps).item() == pytest.approx(
        F.cross_entropy(logits, target, label_smoothing=eps).item(), abs=1e-6)
    assert smoothed_cross_entropy(logits, target, 0.0).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), abs=1e-6)


def test_aux_losses_are_added_with_their_weights():
    torch.manual_seed(0)
    main, aux1, aux2 = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    target = torch.tensor([0, 1, 2, 3])
    ce = lambda x: smoothed_cross_entropy(x, target, 0.1)  # noqa: E731
    assert InceptionLoss(0.1, 0.4)(main, target).item() == pytest.approx(ce(main).item())
    one_head = InceptionLoss(0.1, 0.4)(InceptionOutput(main, (aux1,)), target)
    assert one_head.item() == pytest.approx((ce(main) + 0.4 * ce(aux1)).item(), abs=1e-6)
    googlenet = InceptionLoss(0.1, default_aux_weight("googlenet"))(InceptionOutput(main, (aux1, aux2)), target)
    assert googlenet.item() == pytest.approx((ce(main) + 0.3 * ce(aux1) + 0.3 * ce(aux2)).item(), abs=1e-6)
    per_head = InceptionLoss(0.1, [0.2, 0.5])(InceptionOutput(main, (aux1, aux2)), target)
    assert per_head.item() == pytest.approx((ce(main) + 0.2 * ce(aux1) + 0.5 * ce(aux2)).item(), abs=1e-6)
    assert default_aux_weight("inception_v3") == 0.4 and default_aux_weight("googlenet_paper") == 0.3
    with pytest.raises(UserError, match=r"aux_weight gives 1 weight\(s\) for 2 auxiliary head\(s\)"):
        InceptionLoss(0.1, [0.2])(InceptionOutput(main, (aux1, aux2)), target)  # zip dropped the second head


# ------------------------------------------------------------------ optimizer
def test_rmsprop_tf_follows_tensorflows_formula():
    lr, decay, momentum, eps, wd = 0.1, 0.9, 0.9, 1.0, 0.01
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    opt = RMSpropTF([w], lr=lr, decay=decay, momentum=momentum, eps=eps, weight_decay=wd)
    ref_w = [1.0, -2.0, 0.5]
    ms, mom = [1.0] * 3, [0.0] * 3            # TF: the mean square starts at one
    grads = [[0.3, -1.0, 2.0], [0.1, 0.2, -0.5], [-4.0, 0.0, 1.0]]
    for g in grads:
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        for i in range(3):
            gi = g[i] + wd * ref_w[i]           # L2 term added to the gradient
            ms[i] = decay * ms[i] + (1 - decay) * gi * gi
            mom[i] = momentum * mom[i] + lr * gi / math.sqrt(ms[i] + eps)   # epsilon inside the root
            ref_w[i] -= mom[i]
        assert w.detach().tolist() == pytest.approx(ref_w, rel=1e-12, abs=1e-12)


def test_no_weight_decay_on_batchnorm_and_biases():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = param_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == ids([model[0].weight, model[3].weight])
    assert ids(no_decay["params"]) == ids([model[0].bias, model[1].weight, model[1].bias, model[3].bias])
    # in a zoo model: every 1-d parameter (BN, biases) is undecayed, and nothing is left out
    from inceptionlab import create_model
    net = create_model("inception_v3", num_classes=3, stem="low_res", depth_multiplier=0.1, min_depth=8)
    decay, no_decay = param_groups(net, 4e-5)
    assert all(p.ndim <= 1 for p in no_decay["params"]) and all(p.ndim > 1 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))


# ------------------------------------------------------------------ schedules
def test_exponential_staircase_decays_0_94_every_two_epochs():
    schedule = LRSchedule("exp_staircase", 0.045, steps_per_epoch=10, decay_epochs=2.0, decay_rate=0.94)
    assert schedule(0) == schedule(19) == pytest.approx(0.045)
    assert schedule(20) == schedule(39) == pytest.approx(0.045 * 0.94)
    assert schedule(40) == pytest.approx(0.045 * 0.94 ** 2)
    assert schedule(1000) == pytest.approx(0.045 * 0.94 ** 50)


def test_step_cosine_constant_and_warmup():
    step = LRSchedule("step", 0.1, steps_per_epoch=5, decay_epochs=3, decay_rate=0.1)
    assert [step(s) for s in (0, 14, 15, 30)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    cosine = LRSchedule("cosine", 1.0, steps_per_epoch=10, total_steps=100)
    assert [cosine(s) for s in (0, 50, 100)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-12)
    assert cosine(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    timed = LRSchedule("cosine", 1.0, steps_per_epoch=10, total_steps=None)  # a wall-clock budget
    assert timed(7, progress=0.5) == pytest.approx(0.5)
    warm = LRSchedule("cosine", 1.0, steps_per_epoch=10, total_steps=110, warmup_steps=10)
    assert [warm(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert warm(10) == pytest.approx(1.0) and warm(60) == pytest.approx(0.5)
    const = LRSchedule("constant", 0.3, steps_per_epoch=10, warmup_steps=3)
    assert [const(s) for s in (0, 2, 3, 500)] == pytest.approx([0.1, 0.3, 0.3, 0.3])


# ------------------------------------------------------------------ EMA
def test_ema_averages_weights_and_buffers_with_tf_warmup():
    model = nn.BatchNorm1d(2)
    ema = ModelEMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.running_mean.fill_(1.0)
    ema.update(model, num_updates=100)            # decay min(0.5, 101/110) = 0.5
    assert ema.module.weight.tolist() == pytest.approx([2.0, 2.0])
    assert ema.module.running_mean.tolist() == pytest.approx([0.5, 0.5])
    ema.update(model, num_updates=100)
    assert ema.module.weight.tolist() == pytest.approx([2.5, 2.5])
    model.num_batches_tracked.fill_(7)
    ema.update(model, num_updates=100)
    assert int(ema.module.num_batches_tracked) == 7
    slow = ModelEMA(model, decay=0.9999)          # early on, TF's (1 + n) / (10 + n) rules
    with torch.no_grad():
        model.weight.fill_(13.0)
    slow.update(model, num_updates=0)             # decay 0.1: ema = 0.1 * 3 + 0.9 * 13
    assert slow.module.weight.tolist() == pytest.approx([12.0, 12.0])
    assert not any(p.requires_grad for p in slow.module.parameters())


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_survives_a_crash_mid_write(tmp_path, monkeypatch):
    folder = CheckpointDir(tmp_path / "checkpoints", keep=2)
    folder.save({"step": 1, "w": torch.arange(4.0)}, 1)
    real_save = torch.save

    def crash_half_way(obj, handle):
        real_save(obj, handle)
        handle.truncate(10)  # half a file on disk, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash_half_way)
    with pytest.raises(CheckpointError, match=r"No space left on device.*step_00000001\.pt is intact"):
        folder.save({"step": 2, "w": torch.zeros(4)}, 2)
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert folder.steps() == [1]
    assert not [n for n in os.listdir(folder.folder) if n.endswith(".tmp")]
    state, path = folder.load_latest()
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(4.0))
    # a writer killed (SIGKILL) mid-write leaves only a temporary file: it is never taken for a checkpoint
    (folder.folder / ".step_00000003.pt.99999.tmp").write_bytes(b"\x80garbage")
    assert folder.latest() == folder.path(1)
    # a newer file that does not load is passed over for the previous one, said, and kept aside
    # (it was passed over without a word, then deleted as "newer than the resume point")
    folder.path(4).write_bytes(b"not a checkpoint")
    state, path = folder.load_latest()
    assert path == folder.path(1) and folder.steps() == [1]
    assert (folder.folder / "step_00000004.pt.unreadable").read_bytes() == b"not a checkpoint"
    [(name, problem)] = folder.passed_over
    assert name == "step_00000004.pt.unreadable" and problem.startswith("cannot read checkpoint ")
    # none loads: the fix given works (a new run in the same --out is refused while checkpoints are there)
    folder.path(1).write_bytes(b"x" * 2000)
    with pytest.raises(UserError, match=r"no usable checkpoint in .*: cannot read checkpoint .*; start a new run in "
                                        r"another --out \(or delete \S+ first\)$"):
        folder.load_latest()


def test_checkpoints_keep_the_latest_k_and_the_best(tmp_path):
    folder = CheckpointDir(tmp_path, keep=2)
    for step in range(1, 6):
        folder.save({"step": step}, step, best=step == 2)
    assert folder.steps() == [4, 5]
    assert load_checkpoint(folder.best)["step"] == 2
    with pytest.raises(UserError, match="no usable checkpoint"):
        CheckpointDir(tmp_path / "empty").load_latest()


def test_random_state_round_trips_through_a_safe_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    atomic_save({"rng": rng_state()}, tmp_path / "r.pt")
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])   # weights_only=True load
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0]) and (first[1] == second[1]).all() and first[2] == second[2]


# ------------------------------------------------------------------ config and command line
@pytest.mark.parametrize("changes, message", [
    (dict(epochs=None), "no training budget"),
    (dict(opt="rmsprop"), "unknown opt 'rmsprop'; did you mean rmsprop_tf"),
    (dict(sched="cosin"), "did you mean cosine"),
    (dict(lr=-1.0), "lr must be a finite number > 0"),
    (dict(lr=float("inf")), "lr must be a finite number > 0 and <= 1e\\+15, got inf"),
    (dict(epochs=float("inf")), "epochs must be a finite number > 0, got inf"),   # was an OverflowError
    (dict(smoothing=1.0), "smoothing must be a finite number >= 0 and < 1"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(ema_decay=1.0), "ema_decay"),
    (dict(amp="fp8"), "amp must be true, false, bf16 or fp16"),
    (dict(channels_last="yes"), "channels_last must be true, false or null"),
    (dict(crop_scale=(0.5, 0.2)), "crop_scale"),
    (dict(epochs=2, steps=2.5), "steps must be an integer"),
    (dict(weights="/no/such/file.pth"), "does not exist"),
    # YAML values of the wrong shape: each was a TypeError traceback
    (dict(crop_scale=0.5), r"crop_scale must be \(low, high\) with 0 < low <= high <= 1, got 0.5; e.g. \[0.08, 1.0\]"),
    (dict(crop_scale=["a", 1]), "crop_scale must be"),
    (dict(model_kwargs=[1, 2]), r"model_kwargs must be a mapping of switch: value, got \[1, 2\]"),
    (dict(freeze_until=5), "freeze_until must be a non-empty string, got 5"),
    (dict(weights=5), "weights must be a non-empty string, got 5"),
    # settings that do nothing with the others given: each was taken and written to config.yaml
    (dict(sched="cosine", decay_epochs=3.0), r"^decay_epochs applies to the staircase schedules \(exp_staircase, "
                                             r"step\), not cosine; leave it out, or pass --sched exp_staircase or step$"),
    (dict(opt="sgd", decay_rate=0.5), r"^decay_rate applies to the staircase schedules .*, not cosine;"),
    (dict(opt="adamw", momentum=0.5), r"^momentum 0.5 does not apply to adamw \(its betas are 0.9 and 0.999\); "
                                      r"leave it out, or use --opt sgd or rmsprop_tf$"),
    (dict(compile=True, grad_checkpointing=True), r"^compile and grad_checkpointing do not go together"),  # (dynamo)
])
def test_bad_config_values_are_one_line_errors(changes, message):
    with pytest.raises(UserError, match=message) as info:
        TrainConfig(**{"epochs": 1, **changes}).resolved()
    assert "\n" not in str(info.value)


def test_recipe_defaults_follow_the_optimizer():
    paper = TrainConfig(epochs=1).resolved()
    assert (paper.lr, paper.sched, paper.clip_grad, paper.decay_epochs, paper.decay_rate) == \
        (0.045, "exp_staircase", 2.0, 2.0, 0.94)
    modern = TrainConfig(epochs=1, opt="adamw").resolved()
    assert (modern.sched, modern.clip_grad, modern.weight_decay) == ("cosine", 0.0, 0.05)


def test_yaml_unknown_key_and_value_parsing(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: inception_v3\nbatch-size: 16\nlearning_rate: 0.1\n")
    with pytest.raises(UserError, match=r"unknown key 'learning_rate'; did you mean lr\?$"):  # (it said decay_rate)
        TrainConfig.from_yaml(path)
    path.write_text("qqqq: 1\n")  # nothing close: the settings are listed
    with pytest.raises(UserError, match=r"unknown key 'qqqq'; settings are amp, augment, aux_weight, "):
        TrainConfig.from_yaml(path)
    path.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        TrainConfig.from_yaml(path)
    assert [parse_value(v) for v in ("true", "False", "3", "0.25", "1e-3", "none", "low_res", "[1,2]", "3,4.5")] == \
        [True, False, 3, 0.25, 1e-3, None, "low_res", [1, 2], [3, 4.5]]
    assert parse_model_kwargs(["stem=low_res", "depth-multiplier=0.25", "norm=false"]) == \
        dict(stem="low_res", depth_multiplier=0.25, norm=False)
    with pytest.raises(UserError, match="not key=value"):
        parse_model_kwargs(["low_res"])
    with pytest.raises(UserError, match=r"^model switch norm= has no value; give one, or leave norm out for its default$"):
        parse_model_kwargs(["stem=low_res", "norm="])
    from inceptionlab.lab import parse_variant
    with pytest.raises(UserError, match="lr= has no value"):
        parse_variant("x:googlenet:lr=")  # it trained at the default while the report said lr=None


def test_cli_errors_are_one_line_before_training(tmp_path, capsys):
    from inceptionlab.cli import main

    out = str(tmp_path / "run")
    cases = [
        (["train", "--out", out, "--steps", "2", "--opt", "adam"], "unknown opt 'adam'"),
        (["train", "--out", out], "no training budget"),
        (["train", "--out", out, "--steps", "2", "--model", "inception_v9"], "unknown model 'inception_v9'"),
        (["train", "--out", out, "--steps", "2", "--model-kwargs", "depth_multipler=0.5"],
         "no switch 'depth_multipler'; did you mean depth_multiplier"),
        (["train", "--out", out, "--steps", "2", "--data", str(tmp_path / "nowhere")], "does not exist"),
        (["train", "--resume", str(tmp_path / "nowhere")], "cannot resume"),
        (["train", "--resume", out, "--lr", "0.1"], "drop --lr"),
        (["train", "--out", out, "--steps", "2", "--warmup-steps", "-1"], "e.g. --warmup-steps 500"),
        (["train", "--out", out, "--steps", "2", "--seed", "-1"], "seed must be an integer >= 0, got -1"),
        (["eval"], "pass --run RUN_DIR (a training run) or --model NAME --weights FILE, one of them"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unwritable_output_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    cfg = TrainConfig(out=str(blocker / "run"), steps=1, model_kwargs=dict(stem="low_res"))
    from inceptionlab.train import train
    with pytest.raises(UserError, match="cannot write to output folder .*pass a writable --out"):
        train(cfg)


# ------------------------------------------------------------------ distributed sharding
def test_sharded_sampler_gives_each_process_its_share_of_the_global_batches():
    size, batch, world = 23, 8, 2
    single = list(EpochSampler(size, shuffle=True, seed=5).__iter__())
    shards = []
    for rank in range(world):
        sampler = ShardedEpochSampler(size, rank=rank, world_size=world, shuffle=True, seed=5)
        sampler.set_epoch(0)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler) == size // world
    local = batch // world
    for i in range(len(single) // batch):  # each global batch is the union of the processes' batches
        union = sorted(shards[0][i * local:(i + 1) * local] + shards[1][i * local:(i + 1) * local])
        assert union == sorted(single[i * batch:(i + 1) * batch])


def test_the_training_pieces_refuse_nonsense_in_python_too():
    # the CLI's TrainConfig checked these; the functions themselves took them
    from inceptionlab.train.loss import InceptionLoss, smoothed_cross_entropy
    from inceptionlab.train.optim import LRSchedule, RMSpropTF, build_optimizer

    logits, target = torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    for bad in (1.5, -1, "0.1"):
        with pytest.raises(UserError, match=r"^smoothing must be a number in \[0, 1\)"):
            smoothed_cross_entropy(logits, target, bad)
        with pytest.raises(UserError, match="smoothing must be"):
            InceptionLoss(smoothing=bad)
    # a tensor of aux weights made the loss a vector (backward() then failed)
    out = InceptionOutput(logits, (torch.randn(4, 10), torch.randn(4, 10)))
    loss = InceptionLoss(0.1, torch.tensor([0.3, 0.3]))(out, target)
    assert loss.shape == () and loss.item() == pytest.approx(InceptionLoss(0.1, [0.3, 0.3])(out, target).item())
    with pytest.raises(UserError, match="aux_weight must be a number >= 0"):
        InceptionLoss(0.1, -0.4)
    w = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="RMSpropTF: lr must be a number >= 0, got -1"):
        RMSpropTF([w], lr=-1)
    with pytest.raises(ValueError, match="RMSpropTF: eps must be a number > 0"):
        RMSpropTF([w], eps=0)
    with pytest.raises(UserError, match="unknown schedule 'bogus'; choose from exp_staircase, step, cosine, constant"):
        LRSchedule("bogus", 0.1, 10)  # it gave a constant lr
    with pytest.raises(UserError, match="the exp_staircase schedule needs decay_epochs and decay_rate"):
        LRSchedule("exp_staircase", 0.1, 10)  # a TypeError at the first step
    # a config not yet resolved: its lr was None inside the optimizer
    opt = build_optimizer(TrainConfig(steps=1), nn.Linear(2, 2))
    assert isinstance(opt, RMSpropTF) and opt.param_groups[0]["lr"] == 0.045


def test_progress_stops_writing_when_the_reader_goes_away(tmp_path):
    # `train ... | head -1`: the closed pipe raised in a progress line and failed the run after its last step
    from inceptionlab.train.logs import Progress

    class ClosedPipe:
        def __init__(self):
            self.writes = 0
            self.sink = open(tmp_path / "sink", "w")

        def write(self, text):
            self.writes += 1
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            return self.sink.fileno()

    pipe = ClosedPipe()
    progress = Progress(total_steps=3, budget_seconds=None, stream=pipe)
    progress.line("first line")           # the reader is gone: no exception
    progress.line("finished: 3 steps")    # and nothing more is tried
    assert pipe.writes == 1 and progress.enabled is False


def test_a_budget_flag_replaces_the_config_files_budget(tmp_path, capsys):
    # `--config RUN/config.yaml --epochs 1` kept the file's steps: 30, which capped the new budget
    from inceptionlab.cli import build_parser
    from inceptionlab.commands.train import config_from_args
    from inceptionlab.train.config import write_yaml

    write_yaml(TrainConfig(steps=30, minutes=5.0).resolved().to_dict(), tmp_path / "config.yaml")
    parse = lambda *flags: config_from_args(build_parser("train").parse_args(  # noqa: E731
        ["train", "--config", str(tmp_path / "config.yaml"), *flags]))
    cfg = parse("--epochs", "1")
    assert (cfg.epochs, cfg.steps, cfg.minutes) == (1.0, None, None)
    assert (f"note: --epochs 1 replaces the budget in {tmp_path / 'config.yaml'} (steps 30, minutes 5.0 dropped)"
            in capsys.readouterr().err)
    kept = parse("--lr", "0.01")  # no budget flag: the file's budget
    assert (kept.epochs, kept.steps, kept.minutes) == (None, 30, 5.0)


def test_weights_none_in_yaml_names_null(tmp_path):
    # a plan's `weights: none` (what --variant ...:weights=none means) was "weights file none does not exist"
    with pytest.raises(UserError, match=r"^weights file none does not exist; pass a \.safetensors/\.pth file or a "
                                        r"directory written by save_pretrained; for no weights \(from scratch\) write "
                                        r"weights: null in YAML$"):
        TrainConfig(weights="none", steps=1, out=str(tmp_path / "run")).resolved()
