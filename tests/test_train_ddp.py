"""Multi-process training on the CPU (gloo): torchrun with 2 processes gives the weights of a
single-process run with the same global batch, survives SIGTERM, and resumes; SyncBatchNorm's
gradients are those of one big batch."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.multiprocessing as mp
from safetensors.torch import load_file

from helpers import image_folder, train_in_process
from inceptionlab.train import TrainConfig
from inceptionlab.train.distributed import SyncBatchNorm
from inceptionlab.train.logs import read_steps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reference_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5, dtype=torch.float64)
    upstream = torch.randn(8, 3, 5, 5, dtype=torch.float64)
    bn = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    return x, upstream, bn


def _sync_bn_worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        x, upstream, bn = _reference_batchnorm()
        whole = x.clone().requires_grad_(True)
        (bn(whole) * upstream).sum().backward()                 # one process, the whole batch
        _, _, fresh = _reference_batchnorm()
        sync = SyncBatchNorm.convert(fresh)
        half = slice(rank * 4, rank * 4 + 4)
        mine = x[half].clone().requires_grad_(True)
        (sync(mine) * upstream[half]).sum().backward()          # each process, half the batch
        for param in sync.parameters():                         # as DDP would (sum, not mean, here)
            dist.all_reduce(param.grad)
        results[rank] = max((mine.grad - whole.grad[half]).abs().max().item(),
                            (sync.weight.grad - bn.weight.grad).abs().max().item(),
                            (sync.bias.grad - bn.bias.grad).abs().max().item(),
                            (sync.running_mean - bn.running_mean).abs().max().item(),
                            (sync.running_var - bn.running_var).abs().max().item())
    finally:
        dist.destroy_process_group()


def test_sync_batchnorm_on_cpu_gives_the_gradients_of_one_big_batch():
    results = mp.Manager().dict()
    mp.spawn(_sync_bn_worker, args=(_free_port(), results), nprocs=2)
    assert max(results.values()) < 1e-12


# the same global batch of 8, on 2 processes of 4; no BN (its batch statistics would differ per
# process), no dropout and no random crops (their random streams differ per process)
ARGS = dict(steps=12, batch_size=8, img_size=12, limit_per_class=4, val_split=0.02, augment=False,
            checkpoint_every=2, eval_every=6, threads=1, quiet=True,
            model_kwargs=dict(stem="low_res", depth_multiplier=0.1, min_depth=8, norm=False, drop_rate=0.0))


def _cli(out) -> list[str]:
    return ["--out", str(out), "--steps", "12", "--batch-size", "8", "--img-size", "12", "--limit-per-class", "4",
            "--val-split", "0.02", "--no-augment", "--checkpoint-every", "2", "--eval-every", "6", "--threads", "1",
            "--quiet", "--model-kwargs", "stem=low_res", "depth_multiplier=0.1", "min_depth=8", "norm=false",
            "drop_rate=0"]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_and_resume_after_sigterm(tmp_path):
    single = train_in_process(TrainConfig(model="inception_v3", out=str(tmp_path / "single"), **ARGS))
    assert single["status"] == "finished"

    env = dict(os.environ, OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "inceptionlab", "train"]
    run = tmp_path / "ddp"
    process = subprocess.Popen(torchrun + _cli(run), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if (run / "steps.jsonl").exists() and len((run / "steps.jsonl").read_text().splitlines()) >= 3:
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)      # torchrun passes it on to both processes
    output = process.communicate(timeout=120)[0]
    # the hint continues it as it ran (a plain `train --resume` had made it a 1-process run)
    assert f"continue with torchrun --nproc_per_node=2 -m inceptionlab train --resume {run}" in output, output[-3000:]
    assert not (run / "model.safetensors").exists()

    resumed = subprocess.run(torchrun + ["--resume", str(run)], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]

    steps = read_steps(run)
    assert [s["step"] for s in steps] == list(range(1, 13))        # written once: by rank 0 only
    a, b = load_file(tmp_path / "single" / "model.safetensors"), load_file(run / "model.safetensors")
    # float32 sums in another order (two half-batch gradients averaged, not one batch's) move
    # weights by up to 1.2e-5 in 12 steps (an AVX-512 EPYC, family 26); one process training on the
    # half batch (4) alone ends 3e-2 away
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    assert [s["loss"] for s in steps] == pytest.approx([s["loss"] for s in read_steps(tmp_path / "single")],
                                                       abs=1e-5)
    # extended in one process: summary.json keeps both parts (world_size alone said 1 for all 14 steps)
    from inceptionlab.train import train
    extended = train(resume=run, budget={"steps": 14})
    assert extended["world_size"] == 1 and extended["processes"] == [
        {"from_step": 1, "processes": 2}, {"from_step": 13, "processes": 1}]


def test_a_bad_setting_under_torchrun_is_said_by_the_first_process_alone(monkeypatch, capsys, tmp_path):
    # every process printed the same one-line error (then torchrun its report)
    from inceptionlab.cli import main

    for local_rank, said in (("1", ""), ("0", "inceptionlab train: error: lr must be")):
        monkeypatch.setenv("LOCAL_RANK", local_rank)
        assert main(["train", "--steps", "2", "--lr", "-1", "--out", str(tmp_path / "run")]) == 2
        assert capsys.readouterr().err.startswith(said)
    assert not (tmp_path / "run").exists()
    # argparse's own errors too (each process printed "argument --steps: invalid int value")
    for local_rank, said in (("1", ""), ("0", "inceptionlab train: error: argument --steps: invalid int value")):
        monkeypatch.setenv("LOCAL_RANK", local_rank)
        assert main(["train", "--steps", "abc"]) == 2
        assert capsys.readouterr().err.startswith(said)


def _batch_messages_worker(rank: int, port: int, small: str, odd_run: str, results) -> None:
    from inceptionlab.errors import UserError
    from inceptionlab.train import TrainConfig, train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    said = []
    for run in (lambda: train(TrainConfig(model="googlenet", data=small, out=f"{small}-run", steps=2, batch_size=6,
                                          img_size=16, val_split=0.25, threads=1, quiet=True,
                                          model_kwargs=dict(stem="low_res", depth_multiplier=0.125, min_depth=8))),
                lambda: train(resume=odd_run)):
        try:
            run()
        except UserError as exc:
            said.append(str(exc))
    results[rank] = said


def test_batch_size_errors_under_torchrun_name_a_fix_that_works(tmp_path):
    """Too few images for one batch per process named no size that works ("lower --batch-size"); an
    uneven batch on a resume suggested --batch-size, which a resume refuses."""
    small = image_folder(tmp_path / "small", ("a", "b"), 2)  # 2 training images after the split
    odd_run = tmp_path / "odd"
    train_in_process(TrainConfig(model="googlenet", data=str(small), out=str(odd_run), steps=1, batch_size=3,
                                 img_size=16, val_split=0.25, threads=1, quiet=True,
                                 model_kwargs=dict(stem="low_res", depth_multiplier=0.125, min_depth=8)))
    results = mp.Manager().dict()
    mp.spawn(_batch_messages_worker, nprocs=2, join=True, args=(_free_port(), str(small), str(odd_run), results))
    assert results[0] == results[1] == [
        "the training set (2 images, 1 for each of 2 processes) is smaller than one batch per process (3); pass "
        "--batch-size 2 or less",
        "batch_size 3 (the global batch) must divide evenly over 2 processes; resume it with a process count that "
        "divides 3 (e.g. --nproc_per_node=1), or in one process"]


def test_more_processes_than_cpus_are_told_to_start_fewer(monkeypatch):
    from inceptionlab import cpus

    monkeypatch.setattr(cpus, "usable_cpus", lambda: 2)
    before = torch.get_num_threads()
    try:
        with pytest.warns(UserWarning, match=r"^1 thread in each of 4 processes on 2 CPUs: .*; start at most "
                                             r"--nproc_per_node=2 processes$"):
            cpus.set_threads(1, processes=4)  # "use --threads 1" was what it had been given
        with pytest.warns(UserWarning, match=r"^2 threads in each of 2 processes on 2 CPUs: .*; use --threads 1$"):
            cpus.set_threads(2, processes=2)
    finally:
        torch.set_num_threads(before)


def _buffers_worker(rank: int, port: int, results) -> None:
    from inceptionlab.train.distributed import Distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        bn = torch.nn.BatchNorm2d(3)
        bn(torch.randn(4, 3, 5, 5) + rank)                      # each process's own running statistics
        Distributed(rank, 2, rank, torch.device("cpu"), False).broadcast_buffers(bn)  # (without: differ)
        results[rank] = torch.cat([bn.running_mean, bn.running_var, bn.num_batches_tracked.float().view(1)]).tolist()
    finally:
        dist.destroy_process_group()


def test_evaluation_uses_process_0s_batch_norm_statistics():
    # under torchrun each process evaluated with its own running statistics, so the numbers logged
    # during training differed from `eval --run` of the saved model (process 0's)
    results = mp.Manager().dict()
    mp.spawn(_buffers_worker, args=(_free_port(), results), nprocs=2, join=True)
    assert results[0] == results[1]


def _on_main_worker(rank: int, port: int, results) -> None:
    from inceptionlab.errors import UserError
    from inceptionlab.train.checkpoint import CheckpointError
    from inceptionlab.train.distributed import Distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        d = Distributed(rank, 2, rank, torch.device("cpu"), False)
        got = [d.on_main(lambda: f"written by {rank}")]

        def refuse():
            raise UserError("runs/x already holds config.yaml; pass another --out")

        def disk_full():
            raise CheckpointError("cannot write checkpoint step_00000004.pt: No space left on device")
        for fn in (refuse, disk_full):
            try:
                d.on_main(fn)
            except UserError as exc:  # every process gets process 0's error, class and message
                got.append(f"{type(exc).__name__}: {exc}")
        d.barrier()  # and the process group is still usable
        results[rank] = got
    finally:
        dist.destroy_process_group()


def test_an_error_on_process_0_reaches_every_process():
    # the output folder and checkpoints are written by process 0 alone; its error used to leave
    # process 1 dying in the next barrier with a gloo traceback that buried the message
    results = mp.Manager().dict()
    mp.spawn(_on_main_worker, args=(_free_port(), results), nprocs=2, join=True)
    assert results[0] == results[1] == [
        "written by 0", "UserError: runs/x already holds config.yaml; pass another --out",
        "CheckpointError: cannot write checkpoint step_00000004.pt: No space left on device"]


def _junk_batches_worker(rank: int, port: int, data: str, out: str, results) -> None:
    from inceptionlab.train import TrainConfig, train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    summary = train(TrainConfig(model="inception_v3", data=data, out=out, epochs=2, batch_size=2, img_size=12,
                                val_split=0.25, threads=1, quiet=True,
                                model_kwargs=dict(stem="low_res", depth_multiplier=0.1, min_depth=8)))
    results[rank] = (summary["status"], summary["steps"], summary["message"])


def test_a_batch_unreadable_in_one_process_is_skipped_by_all(tmp_path):
    # one image per process and step, half the files junk: some steps have an image in one process
    # and none in the other. The empty one skipped alone, pairing its next gradient all-reduce with
    # the other's current one: the processes fell out of step
    image_folder(tmp_path / "data", ("a", "b"), 8, junk=8)
    results = mp.Manager().dict()
    context = mp.start_processes(_junk_batches_worker, nprocs=2, join=False, start_method="spawn",
                                 args=(_free_port(), str(tmp_path / "data"), str(tmp_path / "run"), results))
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the processes hung")
    assert results[0] == results[1] and results[0][0] == "finished", dict(results)
    steps = read_steps(tmp_path / "run")
    # every logged step trained both processes' images; the skipped ones are not steps
    assert [s["images"] for s in steps] == [2 * (i + 1) for i in range(len(steps))]
    assert 0 < len(steps) < 12  # 2 epochs of 12 batches, some of them skipped


def _dies_worker(rank: int, port: int, out: str, results) -> None:
    from inceptionlab.train import TrainConfig, engine, train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    count_step = engine.Trainer._count_step

    def count_then_die(self, *args):
        count_step(self, *args)
        if rank == 1 and self.pos.step == 3:
            os._exit(9)  # as kill -9 would: no goodbye to the other process

    engine.Trainer._count_step = count_then_die
    summary = train(TrainConfig(model="googlenet", out=out, steps=8, batch_size=4, img_size=12, checkpoint_every=1,
                                limit_per_class=2, threads=1, quiet=True,
                                model_kwargs=dict(stem="low_res", depth_multiplier=0.125, min_depth=8)))
    results[rank] = (summary["status"], summary["message"])


def test_a_process_that_dies_ends_the_run_as_failed_with_its_summary(tmp_path):
    # kill -9 of one worker gave a page of gloo tracebacks, and no summary.json: writing it ran a
    # collective with the dead process too
    results = mp.Manager().dict()
    context = mp.start_processes(_dies_worker, nprocs=2, join=False, start_method="spawn",
                                 args=(_free_port(), str(tmp_path / "run"), results))
    # process 0 is waited for directly: context.join() stops the others (SIGTERM) once one has failed
    main_process = context.processes[0]
    main_process.join(timeout=120)
    hung = main_process.is_alive()
    for process in context.processes:
        if process.is_alive():
            process.kill()
    if hung:
        pytest.fail("process 0 hung after process 1 died")
    status, message = results[0]
    assert status == "failed" and message.startswith("another process of the run stopped ("), message
    assert message.endswith(f": continue with torchrun --nproc_per_node=2 -m inceptionlab train --resume "
                            f"{tmp_path / 'run'}") and "(latest: step_0000000" in message
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["steps"] >= 3


def test_sync_bn_leaves_frozen_layers_frozen():
    # under torchrun --sync-bn, the CPU's SyncBatchNorm replaced the layers --freeze-bn had frozen (it
    # was converted first, and the freezing knew only torch's classes): scale, shift and statistics trained
    from inceptionlab.models import create_model
    from inceptionlab.models.finetune import freeze_until, is_frozen_norm
    from inceptionlab.train.distributed import convert_sync_batchnorm

    model = create_model("googlenet", stem="low_res", depth_multiplier=0.125, min_depth=8, num_classes=3)
    freeze_until(model, "mixed_3b")
    frozen = {name for name, m in model.named_modules() if is_frozen_norm(m)}
    trained = {name for name, m in model.named_modules()
               if isinstance(m, nn.BatchNorm2d) and name not in frozen}
    assert frozen and trained
    converted = convert_sync_batchnorm(model, torch.device("cpu"))
    kinds = {name: type(m) for name, m in converted.named_modules()}
    assert all(is_frozen_norm(converted.get_submodule(name)) for name in frozen)
    assert {kinds[name] for name in trained} == {SyncBatchNorm}
    converted.train()
    assert not any(converted.get_submodule(name).training for name in frozen)
    assert not any(p.requires_grad for name in frozen for p in converted.get_submodule(name).parameters())
