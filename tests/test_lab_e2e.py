"""End to end with the real engine: a compare of two tiny models on a few embedded digits (slow),
and the demo's plan checked without training (fast)."""
from __future__ import annotations

import csv
import json
import re

import pytest

from inceptionlab.cli import main
from inceptionlab.lab import check_plan
from inceptionlab.lab.demo import DEMO_MINUTES, demo_plan
from inceptionlab.models import create_model
from inceptionlab.tools.summary import count_macs


@pytest.fixture
def one_thread():
    """One CPU thread: on a shared machine two threads per process can be many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield ["--set", "threads=1"]
    torch.set_num_threads(before)


def test_demo_plan_is_four_small_families_on_the_digits():
    plan = demo_plan()
    check = check_plan(plan)
    families = {v.model for v in plan.variants}
    assert len(families) >= 4 and plan.data is None and len(check.classes) == 10
    assert plan.budget == {"minutes": DEMO_MINUTES} and DEMO_MINUTES * len(plan.variants) <= 3.5
    assert plan.model_kwargs["stem"] == "low_res" and plan.model_kwargs["depth_multiplier"] < 1


@pytest.mark.slow
def test_compare_two_tiny_models_end_to_end(tmp_path, capsys, one_thread):
    out = tmp_path / "lab"
    argv = ["compare", "--models", "googlenet,inception_v3", "--steps", "10", "--eval-every", "5",
            "--model-kwargs", "stem=low_res", "depth_multiplier=0.125", "min_depth=8",
            "--limit-per-class", "8", "--val-split", "0.02", "--opt", "adamw", "--lr", "0.002",
            "--quiet", "--out", str(out)] + one_thread
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "report: " in printed and "googlenet" in printed and "inception_v3" in printed
    results = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in results["runs"]] == ["finished", "finished"]
    for run in results["runs"]:
        with open(out / run["dir"] / "metrics.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["step"] for r in run["metrics"]] == [5.0, 10.0] == [float(r["step"]) for r in rows]
        assert run["metrics"][-1]["top1"] == float(rows[-1]["top1"]) == pytest.approx(run["final_top1"], abs=1e-3)
        assert run["steps"] == 10 and run["img_size"] == 28 and len(run["train_curve"]) == 10
        model = create_model(run["model"], num_classes=10, **run["model_kwargs"])
        assert run["macs"] == count_macs(model, 28) and run["infer_images_per_sec"] > 0
    html = (out / "report.html").read_text()
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == len(results["plots"]) >= 4


@pytest.mark.slow
def test_interrupted_compare_resumes_with_the_real_engine(tmp_path, capsys, monkeypatch, one_thread):
    import os
    import signal

    from inceptionlab.train.logs import RunLog

    original = RunLog.step

    def step_then_interrupt(self, record):  # Ctrl-C during the second run, after its step 3
        original(self, record)
        if record["step"] == 3 and self.steps_path.parent.name == "inception_v3":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(RunLog, "step", step_then_interrupt)
    out = tmp_path / "lab"
    argv = ["compare", "--models", "googlenet,inception_v3", "--steps", "8", "--eval-every", "4",
            "--model-kwargs", "stem=low_res", "depth_multiplier=0.125", "min_depth=8",
            "--limit-per-class", "8", "--val-split", "0.02", "--opt", "adamw", "--quiet", "--out", str(out)] + one_thread
    assert main(argv) == 130
    printed = capsys.readouterr()
    assert f"inceptionlab compare --resume {out}" in printed.out
    # the run's own line named `train --resume`, which finished that run and left the lab's others undone
    assert "train --resume" not in printed.out + printed.err
    stopped = json.loads((out / "runs" / "inception_v3" / "summary.json").read_text())["message"]
    assert stopped.endswith(f"continue with inceptionlab compare --resume {out}")
    first = (out / "runs" / "googlenet" / "summary.json").stat().st_mtime_ns
    monkeypatch.setattr(RunLog, "step", original)
    assert main(["compare", "--resume", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "googlenet (stem=low_res, depth_multiplier=0.125, min_depth=8) - kept from before" in printed
    assert "inception_v3 (stem=low_res, depth_multiplier=0.125, min_depth=8) - resuming from its checkpoint" in printed
    assert (out / "runs" / "googlenet" / "summary.json").stat().st_mtime_ns == first
    results = json.loads((out / "results.json").read_text())
    v3 = results["runs"][1]
    assert v3["status"] == "finished" and v3["steps"] == 8
    assert [p["step"] for p in v3["train_curve"]] == list(range(1, 9))
    assert v3["metrics"][-1]["step"] == 8.0 and v3["final_top1"] == v3["metrics"][-1]["top1"]
