"""benchmarks/gpu_targets.py, the prepared GPU run, exercised on the CPU at toy sizes so that it
works the day a device is lent (no device here: its CUDA numbers are not measured by CI)."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import gpu_targets  # noqa: E402


def test_gpu_script_checks_and_times_on_the_cpu(tmp_path, capsys):
    pytest.importorskip("timm")
    out = tmp_path / "out"
    code = gpu_targets.main(["--device", "cpu", "--quick", "--families", "googlenet",
                             "--results-dir", str(tmp_path / "results"), "--out", str(out)])
    assert code == 0, capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["gpu_correctness.md", "gpu_targets.csv", "gpu_targets.json"]
    table = (out / "gpu_correctness.md").read_text()
    assert "9 of 9 checks passed." in table  # (one family: the others' paths are checked by the tool tests)
    assert "| googlenet | optimize_for_inference vs eager (allclose 1e-4: <= 1) |" in table
    assert "| googlenet | fp64 train step, channels-last on the device vs NCHW on the CPU: gradients" in table
    rows = list(csv.DictReader((out / "gpu_targets.csv").open()))
    assert [(r["model"], r["mode"], r["precision"], r["reference"]) for r in rows] == [
        ("inception_v3", "infer", "bf16", "timm"), ("inception_v3", "train", "bf16", "timm")]
    assert all(float(r["ratio"]) > 0 for r in rows)


def test_gpu_script_catches_a_wrong_channels_last_path(monkeypatch):
    """The float64 layout check fails when the channels-last training path computes something else."""
    import torch
    from inceptionlab.models import layers

    right = layers.pointwise_matmul
    monkeypatch.setattr(layers, "pointwise_matmul", lambda x, w, b: right(x, w, b) * 1.001)
    rows = gpu_targets.check_family("googlenet", torch.device("cpu"), 64, 4, [])
    failed = [r["check"] for r in rows if not r["ok"]]
    assert failed == ["fp64 train step, channels-last on the device vs NCHW on the CPU: gradients (relative)"]


def test_gpu_script_says_when_there_is_no_gpu(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert gpu_targets.main(["--device", "cuda"]) == 2
    assert "no CUDA device here" in capsys.readouterr().err
