"""benchmarks/report.py: the targets table and the peak it divides by; the scripts' --results-dir
and their one-line errors."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import _against_best_peak, _targets  # noqa: E402


def _row(**kw):
    row = {"model": "inception_v3", "img_size": "299", "batch": "8", "mode": "infer", "precision": "fp32",
           "reference": "timm", "ratio": "1.3", "gflops_per_sec": "100.0", "fraction_of_peak": "0.8"}
    return {**row, **kw}


def test_share_of_peak_uses_the_best_peak_of_the_run():
    machine = {"peak_gflops_fp32": 125.0, "peak_gflops_fp32_at_end": 150.0, "peak_gflops_bf16": 900.0}
    rows = _against_best_peak([_row(), _row(precision="bf16", gflops_per_sec="450.0")], machine)
    assert rows[0]["fraction_of_peak"] == "0.667"  # 100 / 150, not 100 / 125
    assert rows[1]["fraction_of_peak"] == "0.5"  # bf16 rows against the bf16 peak
    assert _against_best_peak([_row()], {})[0]["fraction_of_peak"] == "0.8"  # no peak recorded: as measured


def test_targets_table_judges_each_row():
    lines = _targets([_row(fraction_of_peak="0.667"), _row(mode="train", ratio="1.05", peak_rss_mb="1800",
                                                          ref_peak_rss_mb="1900"),
                      _row(precision="bf16", ratio="3.0"),  # not judged: the targets are fp32
                      _row(runtime="onnxruntime", ratio="0.5")])  # nor onnxruntime's: they are PyTorch's
    assert lines[2:] == [  # (the last column: 1.30 / 0.667, what the same operations give at the whole peak)
        "| inception_v3 | 8 | infer | >= 1.25x timm (channels-last) | 1.30x | yes | 1.95x |",
        "| inception_v3 | 8 | infer | >= 80% of the convolution peak | 67% | no | - |",
        "| inception_v3 | 8 | train | >= 1.10x timm (channels-last) | 1.05x | no | - |",
        "| inception_v3 | 8 | train | peak RSS <= timm's (1900 MiB) | 1800 MiB | yes | - |",
    ]


def test_training_breakdown_sorts_operations_into_categories():
    from benchmarks.train_breakdown import category

    assert category("aten::convolution_backward") == "convolutions (oneDNN)"
    assert category("aten::mm") == category("aten::_slow_conv2d_backward") == "1x1 convolutions (GEMM, im2col)"
    assert category("aten::native_batch_norm_backward") == "batch norm"
    assert category("aten::threshold_backward") == "ReLU"
    assert category("aten::max_pool2d_with_indices_backward") == "pooling"
    assert category("aten::cat") == "concatenation, copies"
    assert category("aten::_foreach_add_") == "optimizer"
    assert category("aten::empty_strided") == "the rest (allocation, dispatch, autograd)"


def test_training_breakdown_says_how_far_the_rest_must_fall():
    from benchmarks.train_breakdown import table

    ours = {"convolutions (oneDNN)": 600.0, "1x1 convolutions (GEMM, im2col)": 200.0, "batch norm": 200.0}
    theirs = {"convolutions (oneDNN)": 600.0, "1x1 convolutions (GEMM, im2col)": 410.0, "batch norm": 200.0}
    lines = table("inception_v3", 8, ours, theirs)
    assert "| **total** | **1000** | **1210** | | +210 (ratio 1.210x) |" in lines
    assert "| batch norm | 200 | 200 | 20.0% | +0 |" in lines
    # 1.10x is a step of 1210 / 1.1 = 1100 ms; with 800 ms of convolutions the rest may take 300 ms
    assert lines[-2] == ("Convolutions are 800 ms (80%) of our step, the rest 200 ms. For 1.10x timm's step "
                         "(1100 ms) with the convolutions as they are, the rest would have to fall to 300 ms (+50%).")


def test_a_script_section_names_its_command_and_machine(tmp_path, monkeypatch):
    import benchmarks.report as report
    from benchmarks.report import write_section
    reports = []
    monkeypatch.setattr(report, "write_report", lambda: reports.append(1))
    info = {"cpu": "Some CPU", "cores": 2, "threads": 1, "torch": "2.14.1", "load_average": "0.5 0.4 0.3"}
    path = write_section("fused_norm", "python benchmarks/fused_norm.py --repeats 3 ", info, "What was timed.",
                         ["| a | b |", "|---|---:|", "| x | 1.0 |"], folder=tmp_path)
    assert path == tmp_path / "fused_norm.md"
    lines = path.read_text().splitlines()
    assert lines[:3] == ["## fused_norm", "", "Command: `python benchmarks/fused_norm.py --repeats 3`"]
    assert lines[4].startswith("Machine: Some CPU, 2 cores, 1 torch threads; torch 2.14.1; load average at start "
                               "0.5 0.4 0.3; measured ")
    assert lines[5:] == ["", "What was timed.", "", "| a | b |", "|---|---:|", "| x | 1.0 |"]
    assert reports == []  # BENCHMARKS.md is regenerated only from benchmarks/results/
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    write_section("fused_norm", "python x.py", info, "", [], folder=tmp_path)
    assert reports == [1]
    path = write_section("fused_norm", "python x.py", {**info, "isa": "AVX512+BF16"}, "", [], folder=tmp_path)
    assert path.read_text().splitlines()[4].startswith("Machine: Some CPU (AVX512+BF16), 2 cores, 1 torch threads;")


def test_the_machine_names_its_vector_instructions(monkeypatch, tmp_path):
    """Two machines that both call themselves "AMD EPYC" measured a 3x3 convolution peak of 64 and
    of 225 GFLOP/s: AVX2 against AVX-512. The benchmark's machine says which."""
    import torch

    from inceptionlab import cpus
    from inceptionlab.tools import benchmark as bench
    cpuinfo = tmp_path / "cpuinfo"
    real = cpus.cpu_identity
    monkeypatch.setattr(cpus, "cpu_identity", lambda: real(str(cpuinfo)))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    cpuinfo.write_text("vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    assert cpus.vector_isa() == "AVX512+BF16"
    assert bench.machine()["isa"] == "AVX512+BF16"
    cpuinfo.write_text("vendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512f amx_tile avx512_bf16\n")
    assert cpus.vector_isa() == "AVX512+AMX+BF16"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    cpuinfo.write_text("flags\t\t: fpu avx2\n")
    assert cpus.vector_isa() == "AVX2"


SCRIPTS = ["build_time", "cpu_targets", "fused_norm", "gpu_targets", "grad_checkpointing", "infer_conv_paths",
           "pointwise_paths", "train_breakdown", "train_memory_format"]


def test_a_user_error_in_a_script_is_one_line_and_exit_2(capsys, monkeypatch):
    """`infer_conv_paths.py --models googlenet` ended in a traceback (UserError: timm has no googlenet)."""
    import os
    import subprocess

    from benchmarks.report import run_script
    from inceptionlab.errors import UserError

    def main():
        raise UserError("timm has no googlenet; it has inception_v3")
    monkeypatch.setattr(sys, "argv", ["benchmarks/infer_conv_paths.py"])
    with pytest.raises(SystemExit) as stopped:
        run_script(main)
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "infer_conv_paths.py: error: timm has no googlenet; it has inception_v3\n"
    with pytest.raises(SystemExit) as stopped:
        run_script(lambda: 0)
    assert stopped.value.code == 0
    # the script itself, checked before any timing
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "infer_conv_paths.py"), "--models", "googlenet",
                           "--results-dir", "unused"], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("infer_conv_paths.py: error: timm has no googlenet; it has inception_v3, inception_v4, "
                           "inception_resnet_v2\n")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_takes_results_dir_and_exits_through_run_script(script, capsys):
    import importlib

    from benchmarks.report import RESULTS

    module = importlib.import_module(f"benchmarks.{script}")
    with pytest.raises(SystemExit):
        module.main(["--help"])
    assert "--results-dir DIR" in capsys.readouterr().out
    source = Path(module.__file__).read_text()
    assert source.rstrip().endswith('if __name__ == "__main__":\n    run_script(main)')  # one-line errors
    import argparse

    from benchmarks.report import add_results_dir
    parser = argparse.ArgumentParser()
    add_results_dir(parser)
    assert parser.parse_args([]).results_dir == RESULTS  # the default: BENCHMARKS.md's commands reproduce it


def test_a_script_run_into_another_results_dir_leaves_the_published_results(tmp_path, monkeypatch, capsys):
    """A BENCHMARKS.md command rerun elsewhere overwrote benchmarks/results (and cpu_targets.py
    regenerated BENCHMARKS.md from it): with --results-dir, only that folder is written."""
    import benchmarks.report as report
    from benchmarks import cpu_targets, train_memory_format
    from inceptionlab.lab.demo import SMALL_MODEL_KWARGS

    published = {p.name: p.read_bytes() for p in report.RESULTS.iterdir()}
    regenerated = []
    monkeypatch.setattr(report, "write_report", lambda: regenerated.append(1) or report.REPORT)
    monkeypatch.setattr(cpu_targets, "write_report", lambda: regenerated.append(1) or report.REPORT)
    # a real (tiny) run of the cheapest script: one model, one setting, one step of each layout
    monkeypatch.setattr(train_memory_format, "DEMO_MODELS", ["googlenet"])
    monkeypatch.setattr(train_memory_format, "SETTINGS", {"demo (28 px, 1/8 width)": (28, SMALL_MODEL_KWARGS)})
    assert train_memory_format.main(["--batch", "2", "--iters", "1", "--warmup", "0",
                                     "--results-dir", str(tmp_path / "mine")]) == 0
    section = (tmp_path / "mine" / "train_memory_format.md").read_text()
    assert "| demo (28 px, 1/8 width) | googlenet | " in section
    assert "Command: `python benchmarks/train_memory_format.py --batch 2 --iters 1 --warmup 0 --results-dir " in section
    # cpu_targets, its timing faked: its CSV and JSON in the folder given, BENCHMARKS.md left alone
    from inceptionlab.tools import benchmark as bench

    row = {"model": "inception_v3", "img_size": 299, "batch": 1, "mode": "infer", "precision": "fp32",
           "channels_last": True, "compile": False, "runtime": "torch", "fast": True, "model_kwargs": "",
           "infer_samples_per_sec": 10.0, "infer_step_time_ms": 100.0, "gflops_per_sec": 1.23, "fraction_of_peak": 0.5}
    monkeypatch.setattr(bench, "benchmark", lambda configs, warmup, iters, on_row: ([row], bench.machine()))
    monkeypatch.setattr(bench, "measure_peak", lambda precision: 100.0)
    assert cpu_targets.main(["--models", "inception_v3", "--infer-batches", "1", "--train-batches", "--no-memory",
                             "--results-dir", str(tmp_path / "mine")]) == 0
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["cpu_targets.csv", "cpu_targets.json",
                                                                      "train_memory_format.md"]
    assert "BENCHMARKS.md, made from benchmarks/results, is left as it was" in capsys.readouterr().out
    assert regenerated == []
    assert {p.name: p.read_bytes() for p in report.RESULTS.iterdir()} == published
    # the default folder is the published one, and regenerates BENCHMARKS.md (here a stand-in for it)
    monkeypatch.setattr(report, "RESULTS", tmp_path / "published")
    assert cpu_targets.main(["--models", "inception_v3", "--infer-batches", "1", "--train-batches", "--no-memory",
                             "--results-dir", str(tmp_path / "published")]) == 0
    assert regenerated == [1] and (tmp_path / "published" / "cpu_targets.csv").is_file()


def test_pointwise_paths_times_each_1x1_convolution_on_both_paths(tmp_path, monkeypatch, capsys):
    """A real (tiny) run of benchmarks/pointwise_paths.py: a table row per distinct 1x1 convolution,
    and the path that training takes here named; the process's own path is left as it was."""
    import os
    import re

    from benchmarks import pointwise_paths
    from inceptionlab import cpus, create_model

    tiny = dict(stem="low_res", depth_multiplier=0.125, min_depth=8, num_classes=10)
    monkeypatch.setattr(pointwise_paths, "create_model", lambda name: create_model(name, **tiny))
    monkeypatch.setenv("INCEPTIONLAB_POINTWISE", "gemm")
    cpus.pointwise_path.cache_clear()
    assert pointwise_paths.main(["--models", "inception_v3", "--batch", "2", "--iters", "1", "--no-steps",
                                 "--results-dir", str(tmp_path)]) == 0
    text = (tmp_path / "pointwise_paths.md").read_text()
    assert "On this machine training takes the **gemm** path by default (`inceptionlab.cpus.pointwise_path`, " \
           "from INCEPTIONLAB_POINTWISE)." in text
    model = create_model("inception_v3", **tiny)
    shapes = {(c.in_channels, c.out_channels, s[2:]) for c, s in pointwise_paths.convolutions(model, 32)
              if pointwise_paths.is_pointwise(c)}
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ -> \d+, \d+x\d+ \|", line)]
    assert len(rows) == len(shapes) > 5
    assert all(len(row.split("|")) == 10 for row in rows)  # 8 columns, each filled
    assert sum(int(r.split("|")[2]) for r in rows) == int(next(line for line in text.splitlines()
                                                             if line.startswith("| **all**")).split("|")[2])
    assert "whole training step" not in text  # --no-steps
    assert os.environ["INCEPTIONLAB_POINTWISE"] == "gemm" and cpus.pointwise_path() == "gemm"
    cpus.pointwise_path.cache_clear()
