"""The fast paths (BN folding, fused inference, training setup), the benchmark, and predict."""
from __future__ import annotations

import csv
import os
import warnings
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import inceptionlab
from inceptionlab import create_model
from inceptionlab.cli import main
from inceptionlab.errors import UserError
from inceptionlab.models.layers import ConvBN, ScaledResidual
from inceptionlab.tools import benchmark as bench
from inceptionlab.tools.fast import (FusedResidual, PerImage, fold_batchnorm, make_optimizer, mkldnn_fusion_available,
                                     optimize_for_inference)
from inceptionlab.tools.predict import class_names, find_images, imagenet_classes, predict
from helpers import randomize_bn

FAMILIES = ["googlenet", "bn_inception", "inception_v3", "inception_v4", "inception_resnet_v1",
            "inception_resnet_v2"]
# small and quick: a quarter of the width, near the smallest input each family takes
TINY = dict(depth_multiplier=0.25, num_classes=10)
SIZE = {"googlenet": 64, "bn_inception": 64}
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"{SAMPLES} is absent (no ../shared checkout)")


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name: str, **kw) -> nn.Module:
    """A small model with batch norm statistics far from identity, so that folding is exercised."""
    torch.manual_seed(0)
    model = create_model(name, **{**TINY, **kw})
    return randomize_bn(model).eval()


def batch(name: str, n: int = 2) -> torch.Tensor:
    size = SIZE.get(name, 75)
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n))


# ------------------------------------------------------------------ fast paths
@pytest.mark.parametrize("name", FAMILIES)
def test_optimize_for_inference_equals_the_eager_model(name):
    model = tiny(name)
    fast = optimize_for_inference(model)
    with torch.no_grad():
        for n in (1, 3):
            x = batch(name, n)
            torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the model itself is left alone
    if name.startswith("inception_resnet") and mkldnn_fusion_available():
        assert any(isinstance(m, FusedResidual) for m in fast.model.modules())


def test_stem_runs_image_by_image_on_its_large_grids():
    model = tiny("inception_v3")
    fast = optimize_for_inference(model)
    # at the default 299 px the blocks before the 35x35 modules see grids >= 64: one group, named
    # after its last block, whose output it gives
    stem = ["conv2d_1a_3x3", "conv2d_2a_3x3", "conv2d_2b_3x3", "maxpool_3a_3x3", "conv2d_3b_1x1", "conv2d_4a_3x3",
            "maxpool_5a_3x3"]
    first_name, first = next(iter(fast.model.blocks.items()))
    assert first_name == "maxpool_5a_3x3" and isinstance(first, PerImage)
    assert list(first.blocks._modules) == stem == list(model.blocks)[:7]
    assert list(fast.model.blocks)[1:] == list(model.blocks)[7:]
    x = batch("inception_v3", 3)
    with torch.no_grad():
        torch.testing.assert_close(first(x), first.blocks(x))
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    small = optimize_for_inference(tiny("inception_v3", stem="low_res"))  # 32 px: nothing to group
    assert not any(isinstance(m, PerImage) for m in small.modules())


def test_large_batches_run_in_chunks_with_the_same_outputs(monkeypatch):
    model = tiny("inception_v3")
    fast = optimize_for_inference(model, chunk_size=2)
    whole = optimize_for_inference(model, chunk_size=0)
    sizes = []
    fast.model.register_forward_pre_hook(lambda module, args: sizes.append(
        (args[0].shape[0], args[0].is_contiguous(memory_format=torch.channels_last))))
    x = batch("inception_v3", 5)
    torch.testing.assert_close(fast(x), whole(x))
    assert sizes == [(2, True), (2, True), (1, True)]  # each chunk laid out as it goes in
    assert optimize_for_inference(model).chunk_size == inceptionlab.tools.fast.CPU_CHUNK == 8
    with pytest.raises(ValueError, match="chunk_size must be 0"):
        optimize_for_inference(model, chunk_size=-1)
    with pytest.raises(ValueError, match=r"dtype must be a floating-point type .*, got torch.int8"):
        optimize_for_inference(model, dtype=torch.int8)  # was nn.Module.to's TypeError after the whole fold


@pytest.mark.skipif(not mkldnn_fusion_available(), reason="needs oneDNN's fused convolutions")
@pytest.mark.parametrize("path", ["gemm", "onednn"])  # addmm into the input, or oneDNN's conv then add_
def test_residual_up_projection_adds_itself_into_the_block_input(path, monkeypatch):
    import inceptionlab.tools.fast as fast_module
    monkeypatch.setattr(fast_module, "pointwise_path", lambda: path)
    model = tiny("inception_resnet_v2")
    fast = optimize_for_inference(model)
    residuals = [m for m in fast.model.modules() if isinstance(m, FusedResidual)]
    assert residuals and all(m.inplace for m in residuals)
    x = batch("inception_resnet_v2", 3)
    kept = x.clone()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    assert torch.equal(x, kept)  # the caller's input is never written to
    contiguous = optimize_for_inference(model, channels_last=False)  # NCHW maps: the fused addition instead
    with torch.no_grad():
        torch.testing.assert_close(contiguous(x), model(x), rtol=1e-4, atol=1e-4)
    block = residuals[0]
    block_input = torch.randn(2, block.up_project.weight.shape[0], 9, 9).contiguous(memory_format=torch.channels_last)
    branch_out = torch.randn(2, block.up_project.weight.shape[1], 9, 9).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = block.up_project(branch_out, residual=block_input)
        out = block.up_project.accumulate_into(block_input, branch_out)
    assert out is block_input
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_folds_bn_and_residual_scale():
    model = tiny("inception_resnet_v2")
    x = batch("inception_resnet_v2")
    with torch.no_grad():
        expected = model(x)
        folded = fold_batchnorm(model)
        torch.testing.assert_close(folded(x), expected, rtol=1e-4, atol=1e-5)
    assert all(m.bn is None and m.conv.bias is not None for m in folded.modules() if isinstance(m, ConvBN))
    assert all(m.scale == 1.0 for m in folded.modules() if isinstance(m, ScaledResidual))


def test_optimized_model_keeps_the_model_api_and_any_input_layout():
    model = tiny("inception_v3")
    fast = optimize_for_inference(model)
    assert fast.num_classes == 10 and fast.pretrained_cfg["num_classes"] == 10
    assert not fast.model.aux_heads and not fast.training
    x = batch("inception_v3")
    out = fast(x.contiguous(memory_format=torch.channels_last))
    assert out.is_inference() and out.shape == (2, 10)
    torch.testing.assert_close(fast(x), out)
    with torch.no_grad():  # the fused convolutions fall back to F.conv2d where oneDNN is not used
        torch.testing.assert_close(fast.model(x), out, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="at least"):
        fast(torch.randn(1, 3, 32, 32))


def test_optimized_endpoints_features_and_what_it_refuses(tmp_path):
    # the in-place residuals overwrote the endpoints that forward_endpoints returned (4.8 off);
    # features_only batches over the chunk size failed in torch.cat; save_pretrained wrote folded
    # weights that create_model refused
    model = tiny("inception_resnet_v2", num_classes=0)
    fast = optimize_for_inference(model)
    assert any(getattr(m, "writes_into_input", False) for m in fast.model.blocks.values())
    x = batch("inception_resnet_v2")
    names = ["block35_1", "block35_2", "mixed_6a"]
    with torch.no_grad():
        expected = model.forward_endpoints(x, names)
        features = model.forward_features(x)
    got = fast.forward_endpoints(x, names)
    for name in names:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.forward_features(x), features, rtol=1e-4, atol=1e-4)
    extractor = create_model("inception_v3", features_only=True, depth_multiplier=0.25, min_depth=8).eval()
    levels = optimize_for_inference(extractor, chunk_size=2)(batch("inception_v3", n=5))
    with torch.no_grad():
        for ours, eager in zip(levels, extractor(batch("inception_v3", n=5)), strict=True):
            torch.testing.assert_close(ours, eager, rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError, match="batch norms folded into other weights, which create_model cannot load; "
                                        "save the model you optimized"):
        fast.save_pretrained(tmp_path / "folded")
    assert not (tmp_path / "folded").exists()
    with pytest.raises(UserError, match="an optimize_for_inference model is for inference only"):
        fast.train()
    assert optimize_for_inference(model, dtype="bf16").dtype == torch.bfloat16
    for bad in (dict(dtype="int8"), dict(dtype=torch.int8), dict(chunk_size=1.5), dict(chunk_size=True)):
        with pytest.raises(ValueError, match="must be"):
            optimize_for_inference(model, **bad)


def test_optimize_for_inference_without_fusion_and_in_bf16():
    model = tiny("googlenet")
    x = batch("googlenet")
    with torch.no_grad():
        expected = model(x)
    plain = optimize_for_inference(model, fuse=False, channels_last=False)
    torch.testing.assert_close(plain(x), expected, rtol=1e-4, atol=1e-4)
    half = optimize_for_inference(model, dtype=torch.bfloat16)
    out = half(x)
    assert out.dtype == torch.bfloat16
    assert (out.float() - expected).abs().max() < 0.1 * expected.abs().max() + 0.1


def test_optimize_for_inference_is_exported_at_top_level():
    assert inceptionlab.optimize_for_inference is optimize_for_inference


@pytest.mark.slow
def test_optimize_for_inference_compiled():
    model = tiny("googlenet")
    fast = optimize_for_inference(model, compile=True)
    x = batch("googlenet")
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)


def test_training_fast_path_uses_the_fused_optimizer_step():
    model = tiny("googlenet").train()
    opt = make_optimizer(model.parameters())
    assert opt.defaults.get("fused") or opt.defaults.get("foreach")
    loss = model(batch("googlenet")).sum()
    loss.backward()
    before = next(model.parameters()).detach().clone()
    opt.step()
    assert not torch.equal(before, next(model.parameters()))


# ------------------------------------------------------------------ benchmark
def test_benchmark_counts_what_each_mode_runs():
    # a train row counted the aux heads' parameters but not their multiply-adds; an infer row the
    # parameters of heads that never run; and gmacs kept 3 places (0.027 of 26.614 MMACs)
    from inceptionlab.tools.summary import build_on_meta, model_summary

    switches = dict(stem="low_res", depth_multiplier=0.125, min_depth=8, aux_logits=True, num_classes=10)
    rows = {mode: bench.run_config(bench.Config("googlenet", 32, 2, mode, model_kwargs=switches),
                                   peak=100.0, warmup=0, iters=1) for mode in ("infer", "train")}
    summary = model_summary(build_on_meta("googlenet", **switches), 32)
    aux = [r for r in summary if r.name.startswith("aux")]
    inference = [r for r in summary if not r.name.startswith("aux")]
    assert len(aux) == 2
    assert rows["infer"]["param_count"] == sum(r.params for r in inference)
    assert rows["train"]["param_count"] == sum(r.params for r in summary)
    assert rows["infer"]["gmacs"] == round(sum(r.macs for r in inference) / 1e9, 6)
    assert rows["train"]["gmacs"] == round(sum(r.macs for r in summary) / 1e9, 6) > rows["infer"]["gmacs"]


def test_measure_peak_is_positive():
    assert bench.measure_peak(repeats=1) > 0


def test_benchmark_infer_and_train_rows_with_reference(tmp_path):
    configs = [bench.Config("googlenet", 64, 2, "infer", reference="torchvision"),
               bench.Config("googlenet", 64, 2, "train", reference="torchvision")]
    rows, info = bench.benchmark(configs, warmup=1, iters=1, log=None)
    assert info["threads"] == torch.get_num_threads() and info["peak_gflops_fp32"] > 0
    infer, train = rows
    assert infer["infer_samples_per_sec"] > 0 and infer["train_samples_per_sec"] is None
    assert train["train_samples_per_sec"] > 0 and train["infer_samples_per_sec"] is None
    for r in rows:
        assert r["param_count"] == 6_624_904 and r["ratio"] > 0 and r["ref_samples_per_sec"] > 0
        assert 0 < r["fraction_of_peak"] and r["gmacs"] == pytest.approx(1.498 * (64 / 224) ** 2, rel=0.1)
    path = bench.write_csv(rows, tmp_path / "b.csv")
    back = bench.read_csv(path)
    assert [r["mode"] for r in back] == ["infer", "train"]
    for column in ("infer_samples_per_sec", "infer_step_time_ms", "train_samples_per_sec", "param_count",
                   "gmacs", "gflops_per_sec", "fraction_of_peak", "ratio", "threads"):
        assert column in back[0]
    assert "googlenet" in bench.format_rows(back) and bench.format_rows(back, markdown=True).startswith("| model")


def test_benchmark_training_memory_in_fresh_processes():
    cfg = bench.Config("googlenet", 64, 2, "train", model_kwargs=dict(TINY))
    ours = bench.training_peak_rss(cfg)
    assert ours["peak_rss_mb"] >= ours["model_rss_mb"] > 10


def test_reference_names_are_checked():
    with pytest.raises(ValueError, match="timm has no googlenet"):
        bench.reference_model("timm", "googlenet")
    with pytest.raises(ValueError, match="unknown reference"):
        bench.reference_model("keras", "inception_v3")


def test_reference_refuses_switches_it_cannot_mirror():
    """A ratio against timm's standard v3 means nothing for our half-width v3."""
    assert bench.check_reference("timm", "inception_v3", {"num_classes": 10, "in_chans": 3, "drop_rate": 0.2}) == \
        bench.REFERENCES["timm"]["inception_v3"]
    with pytest.raises(UserError, match=r"--reference timm builds the standard inception_v3, not one with "
                                        r"depth_multiplier=0.5 stem=low_res: drop --reference, or those switches"):
        bench.check_reference("timm", "inception_v3", {"depth_multiplier": 0.5, "stem": "low_res"})


def test_cli_benchmark_of_a_training_run(tmp_path, capsys):
    """``--models RUN_DIR``: the run's architecture, switches and input size (its config.json)."""
    from inceptionlab.models.weights import save_pretrained

    run = save_pretrained(tiny("googlenet", stem="low_res"), tmp_path / "run", classes=list("abcdefghij"))
    out = tmp_path / "bench.csv"
    assert main(["benchmark", "--models", str(run), "--batch-size", "2", "--warmup", "0", "--iters", "1",
                 "--out", str(out)]) == 0
    row = bench.read_csv(out)[0]
    assert row["model"] == str(run) and row["img_size"] == "32"
    assert int(row["param_count"]) == sum(p.numel() for p in tiny("googlenet", stem="low_res").parameters())
    assert main(["benchmark", "--models", str(run), "--reference", "torchvision"]) == 2
    assert "not one with depth_multiplier=0.25 stem=low_res" in capsys.readouterr().err


def test_cli_benchmark_writes_csv(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    assert main(["benchmark", "--models", "googlenet", "--img-size", "64", "--batch-size", "1", "2",
                 "--warmup", "0", "--iters", "1", "--out", str(out), "--model-kwargs", "depth_multiplier=0.25"]) == 0
    text = capsys.readouterr().out
    # one thread (the fixture's) is "1 thread", not "1 threads"
    assert ", 1 torch thread, " in text and "GFLOP/s on 1 thread\n" in text and str(out) in text
    rows = list(csv.DictReader(out.open()))
    assert [r["batch"] for r in rows] == ["1", "2"] and all(float(r["infer_samples_per_sec"]) > 0 for r in rows)
    # the switches are in the CSV and the printed model: a quarter-width googlenet is not the standard one
    assert [r["model_kwargs"] for r in rows] == ["depth_multiplier=0.25"] * 2
    assert text.count("\ngooglenet (depth_multiplier=0.25)  ") == 2
    # a second benchmark adds its rows (it replaced the file, losing the first one's)
    assert main(["benchmark", "--models", "googlenet", "--img-size", "64", "--batch-size", "3", "--warmup", "0",
                 "--iters", "1", "--out", str(out), "--model-kwargs", "depth_multiplier=0.25"]) == 0
    assert "(1 row added to its 2)" in capsys.readouterr().out
    assert [r["batch"] for r in csv.DictReader(out.open())] == ["1", "2", "3"]
    # a file that is not a benchmark CSV, a folder or an unwritable place: refused before any timing
    (tmp_path / "notes.csv").write_text("name,value\nx,1\n")
    for target, expected in ((tmp_path / "notes.csv", "is not a benchmark CSV of these columns"),
                             (tmp_path, "is a folder; pass --out a CSV file"),
                             (Path("/dev/null/b.csv"), "cannot write in /dev/null: /dev/null is a file, not a folder")):
        assert main(["benchmark", "--models", "googlenet", "--out", str(target)]) == 2
        out_text, err = capsys.readouterr()
        assert expected in err and "peak" not in out_text, err
    assert (tmp_path / "notes.csv").read_text() == "name,value\nx,1\n"
    for extra, expected in ((["--memory"], "--memory measures the peak memory of a training step"),
                            (["--mode", "train", "--batch-size", "1"], "needs at least 2 images per batch"),
                            (["--runtime", "onnxruntime", "--precision", "bf16"], "runs fp32 only"),
                            (["--runtime", "onnxruntime", "--compile"], "onnxruntime runs the exported graph; drop "
                                                                       "--compile")):
        assert main(["benchmark", "--models", "googlenet"] + extra) == 2
        assert expected in capsys.readouterr().err


def test_benchmark_sizes_classes_and_peaks_follow_the_model(monkeypatch):
    # stem=low_res was timed at the card's 224 px: a network about 48x larger than the one deployed
    assert bench.architecture("googlenet", {"stem": "low_res"})[2]["input_size"] == (3, 32, 32)
    assert bench.architecture("googlenet")[2]["input_size"] == (3, 224, 224)
    # torchvision's models have no num_classes: targets up to 999 for a 10-class fc raised IndexError
    ref = bench.reference_model("torchvision", "googlenet", num_classes=10)
    cfg = bench.Config("googlenet", 64, 2, "train", reference="torchvision")
    bench.train_step(ref, cfg, False, torch.device("cpu"))()
    # the peak the fractions are of, where it is not the precision's native one
    assert bench._peak_note("fp16") == " (fp32's: this CPU emulates fp16 convolutions)"
    monkeypatch.setattr("inceptionlab.tools.fast.cpu_has_bf16", lambda: False)
    assert "emulated: this CPU has no native bf16" in bench._peak_note("bf16")
    assert bench._peak_note("fp32") == ""


def test_cli_benchmark_bad_input(capsys):
    for option in ("--batch-size", "--img-size", "--threads"):
        assert main(["benchmark", "--models", "googlenet", option, "0"]) == 2
        assert f"argument {option}: must be >= 1, got 0" in capsys.readouterr().err
    # an image side of 20000 asked for 4.5 GB per image; every command with a size refuses it
    for argv in (["benchmark", "--models", "googlenet", "--img-size"], ["summary", "googlenet", "--size"],
                 ["eval", "--model", "googlenet", "--img-size"], ["predict", "x.jpg", "--model", "googlenet", "--size"],
                 ["export", "googlenet", "--out", "x.onnx", "--size"]):
        assert main(argv + ["20000"]) == 2
        assert "must be <= 4096, got 20000" in capsys.readouterr().err, argv
    assert main(["train", "--steps", "1", "--img-size", "20000", "--out", "unused"]) == 2
    assert "img_size must be an integer >= 1 and <= 4096, got 20000" in capsys.readouterr().err
    # summary, predict and export take --img-size too, as train and eval name it (it was "did you mean --size?")
    for argv in (["summary", "googlenet"], ["predict", "x.jpg", "--model", "googlenet"],
                 ["export", "googlenet", "--out", "x.onnx"]):
        assert main(argv + ["--img-size", "20000"]) == 2
        assert "argument --size/--img-size: must be <= 4096, got 20000" in capsys.readouterr().err, argv
    assert main(["benchmark", "--models", "googlenet", "--mode", "train", "--runtime", "onnxruntime"]) == 2
    capsys.readouterr()
    # a name the reference lacks fails before the peak is measured
    assert main(["benchmark", "--models", "inception_v3", "googlenet", "--reference", "timm"]) == 2
    out, err = capsys.readouterr()
    assert "timm has no googlenet; it has inception_v3" in err and out == ""  # (not after the machine line)
    # an exported file is timed itself (it said "unknown model 'x.onnx'"), when there is one
    assert main(["benchmark", "--models", "x.onnx", "--runtime", "onnxruntime"]) == 2
    assert "exported file x.onnx does not exist" in capsys.readouterr().err


def _no_timing(monkeypatch):
    """The benchmark without its timing: a peak of 100 GFLOP/s, and one of these rows per configuration."""
    def fake_row(cfg, peak, warmup, iters):
        return {"model": cfg.model, "img_size": cfg.img_size, "batch": cfg.batch, "mode": cfg.mode,
                "precision": cfg.precision, "channels_last": cfg.channels_last, "compile": cfg.compile,
                "runtime": cfg.runtime, "fast": cfg.fast, "model_kwargs": bench.switches_text(cfg.model_kwargs),
                "infer_samples_per_sec": 10.0, "infer_step_time_ms": 100.0, "gflops_per_sec": 50.0,
                "fraction_of_peak": 0.5}
    monkeypatch.setattr(bench, "measure_peak", lambda precision: 100.0)
    monkeypatch.setattr(bench, "run_config", fake_row)
    return fake_row


def test_cli_benchmark_checks_names_sizes_and_switches_before_any_output(tmp_path, capsys, monkeypatch):
    def no_peak(precision):
        raise AssertionError("the peak was measured before the check")
    monkeypatch.setattr(bench, "measure_peak", no_peak)
    out = tmp_path / "b.csv"
    for argv, expected in (
            # the fix in command-line terms, before the peak (it came after it, as stem='low_res')
            (["--img-size", "8"], "--img-size 8 is below googlenet's smallest input, 15x15: pass --img-size 15 "
                                  "or more, or --model-kwargs stem=low_res for small images"),
            # a reference takes no switches: no low_res hint there
            (["--img-size", "8", "--reference", "torchvision"],
             "--img-size 8 is below googlenet's smallest input, 15x15: pass --img-size 15 or more"),
            (["--img-size", "8", "--model-kwargs", "stem=low_res"], None),  # 8 px is fine at low_res: no error
            # a switch without its value went to --models ("unknown model 'depth_multiplier'")
            (["--model-kwargs", "depth_multiplier"],
             "--model-kwargs takes KEY=VALUE, got 'depth_multiplier'; write depth_multiplier=VALUE"),
            (["--model-kwargs", "stem=low_res", "depth_multiplier"],
             "--model-kwargs takes KEY=VALUE, got 'depth_multiplier'; write depth_multiplier=VALUE"),
            (["depth_multiplier"], "'depth_multiplier' is a model switch, not a model; pass --model-kwargs "
                                   "depth_multiplier=VALUE"),
            (["--model-kwargs"], "--model-kwargs takes KEY=VALUE, got nothing; e.g. --model-kwargs stem=low_res, "
                                 "or drop it"),
            (["--img-size", "8", "--mode", "train", "--model-kwargs", "aux_logits=true"], "smallest input"),
    ):
        if expected is None:
            assert bench.check_configs([bench.Config("googlenet", 8, model_kwargs={"stem": "low_res"})]) is None
            continue
        assert main(["benchmark", "--out", str(out), "--models", "googlenet"] + argv) == 2, argv
        text, err = capsys.readouterr()
        assert text == "" and err.startswith("inceptionlab benchmark: error: ") and expected in err, (argv, err)
        assert not out.exists()
    # commas split --models as they do in compare and demo; each name is still checked
    assert main(["benchmark", "--models", "googlenet,nope", "--out", str(out)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    # a reference library that is not installed is said before any output, not after the peak
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    assert main(["benchmark", "--models", "inception_v3", "--reference", "timm", "--out", str(out)]) == 2
    text, err = capsys.readouterr()
    assert text == "" and "error: --reference timm needs timm: pip install timm" in err and not out.exists()


def test_cli_benchmark_models_take_commas_and_rows_say_their_switches(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "measure_peak", lambda precision: 100.0)  # the rows are timed, not the peak
    out = tmp_path / "b.csv"
    assert main(["benchmark", "--models", "googlenet,bn_inception", "--img-size", "32", "--batch-size", "2",
                 "--warmup", "0", "--iters", "1", "--no-fast", "--out", str(out),
                 "--model-kwargs", "stem=low_res", "depth_multiplier=0.125", "min_depth=8"]) == 0
    text = capsys.readouterr().out
    rows = bench.read_csv(out)
    assert [r["model"] for r in rows] == ["googlenet", "bn_inception"]
    assert [r["model_kwargs"] for r in rows] == ["stem=low_res depth_multiplier=0.125 min_depth=8"] * 2
    assert [r["fast"] for r in rows] == ["False", "False"]
    assert "\ngooglenet (stem=low_res depth_multiplier=0.125 min_depth=8, no-fast) infer b2 32px fp32: " in text
    assert "\nbn_inception (stem=low_res depth_multiplier=0.125 min_depth=8, no-fast)  " in text  # the table
    assert bench.format_rows(rows).splitlines()[2].startswith("googlenet (stem=low_res depth_multiplier=0.125 "
                                                               "min_depth=8, no-fast)  ")
    # a row of the defaults shows the bare name
    assert bench._model_cell({"model": "googlenet", "model_kwargs": "", "fast": "True"}) == "googlenet"
    assert bench.switches_text({"norm": False, "residual_scale": [0.1, 0.2], "x": None}) == \
        "norm=false residual_scale=0.1,0.2 x=none"


def test_cli_benchmark_writes_each_row_as_it_finishes(tmp_path, capsys, monkeypatch):
    fake_row = _no_timing(monkeypatch)
    argv = ["benchmark", "--models", "googlenet", "bn_inception", "--img-size", "64"]

    def stop_at(model, stop=KeyboardInterrupt):
        def run_config(cfg, *args):
            if cfg.model == model:
                raise stop()
            return fake_row(cfg, *args)
        monkeypatch.setattr(bench, "run_config", run_config)

    # Ctrl-C (or a timeout) in the second row: the first is in the CSV already
    out = tmp_path / "stopped.csv"
    stop_at("bn_inception")
    assert main(argv + ["--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"{out} keeps the 1 row measured before the stop" in err
    assert [(r["model"], r["infer_samples_per_sec"]) for r in bench.read_csv(out)] == [("googlenet", "10.0")]
    # stopped before any row: the file this run created is not left behind, and one that was there is kept
    stop_at("googlenet")
    fresh = tmp_path / "fresh.csv"
    assert main(argv + ["--out", str(fresh)]) == 130 and not fresh.exists()
    before = out.read_text()
    assert main(argv + ["--out", str(out)]) == 130 and out.read_text() == before
    capsys.readouterr()
    # a write that fails in the middle (a full disk): one line, and the rows written before it stay
    _no_timing(monkeypatch)
    write_csv, calls = bench.write_csv, []

    def full_disk(rows, path, append=False):
        calls.append(len(rows))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return write_csv(rows, path, append)
    monkeypatch.setattr(bench, "write_csv", full_disk)
    full = tmp_path / "full.csv"
    assert main(argv + ["--out", str(full)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"inceptionlab benchmark: error: cannot write {full}: No space left on device; " \
                                   f"pass another --out"
    assert calls == [1, 1] and [r["model"] for r in bench.read_csv(full)] == ["googlenet"]


def test_cli_benchmark_out_that_cannot_be_written_is_refused_before_timing(tmp_path, capsys, monkeypatch):
    """/proc passes os.access as root, and the file could not be made: said after the whole run, as
    "[Errno 2] ...", and every row lost. The file is opened before the timing now."""
    _no_timing(monkeypatch)
    assert main(["benchmark", "--models", "googlenet", "--out", "/proc/inceptionlab-bench.csv"]) == 2
    text, err = capsys.readouterr()
    assert text == "" and err.startswith("inceptionlab benchmark: error: cannot write /proc/inceptionlab-bench.csv: ")
    assert err.rstrip().endswith("; pass another --out") and "Errno" not in err
    # a new file is made at once (and filled a row at a time)
    assert bench.check_csv_target(tmp_path / "new.csv") is True and (tmp_path / "new.csv").read_text() == ""
    assert bench.check_csv_target(tmp_path / "new.csv") is False


def test_benchmark_csv_of_the_older_columns(tmp_path):
    """benchmarks/results/*.csv have no model_kwargs column: they are read as they are, rows of the
    defaults are added in their columns, and rows with switches (which would lose them) are refused."""
    committed = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "cpu_targets.csv"
    old = tmp_path / "old.csv"
    old.write_text(committed.read_text())
    header = old.read_text().splitlines()[0]
    assert header.split(",") == bench.OLD_COLUMNS and bench.COLUMNS == bench.OLD_COLUMNS + ["model_kwargs"]
    rows = bench.read_csv(old)
    assert "model_kwargs" not in rows[0] and bench.format_rows(rows).splitlines()[2].startswith("inception_v3  ")
    assert bench.check_csv_target(old) is False
    row = {**rows[0], "batch": "99", "model_kwargs": ""}
    bench.write_csv([row], old, append=True)
    lines = old.read_text().splitlines()
    assert lines[0] == header and len(lines) == len(rows) + 2 and lines[-1].split(",")[2] == "99"
    assert len(lines[-1].split(",")) == len(bench.OLD_COLUMNS)
    before = old.read_text()
    message = (f"{old} is a benchmark CSV without the model_kwargs column (written before it was added), so "
               f"these rows' --model-kwargs would be lost; pass another --out")
    with pytest.raises(UserError) as caught:
        bench.check_csv_target(old, {"stem": "low_res"})
    assert str(caught.value) == message
    with pytest.raises(UserError) as caught:
        bench.write_csv([{**row, "model_kwargs": "stem=low_res"}], old, append=True)
    assert str(caught.value) == message and old.read_text() == before


def test_cli_benchmark_refuses_compile_without_warmup(tmp_path, capsys, monkeypatch):
    """--compile --warmup 0 timed the compilation as the step (0.02 img/s into the CSV, exit 0)."""
    with pytest.raises(UserError, match="--compile with --warmup 0"):  # the Python API too, before building
        bench.run_config(bench.Config("googlenet", 64, 2, compile=True), peak=100.0, warmup=0)
    _no_timing(monkeypatch)
    out = tmp_path / "b.csv"
    assert main(["benchmark", "--models", "googlenet", "--compile", "--warmup", "0", "--out", str(out)]) == 2
    text, err = capsys.readouterr()
    assert text == "" and not out.exists()
    assert err == ("inceptionlab benchmark: error: --compile with --warmup 0 would time the compilation as the step "
                   "(the first call compiles); pass --warmup 1 or more\n")


def test_cli_benchmark_warmup_0_warns_that_setup_is_timed(tmp_path, capsys, monkeypatch):
    """The first call packs our weights for oneDNN (and allocates): under --warmup 0 it is a timed
    step (0.19x against timm where warm runs give 1.2x), which the warning says, on stderr."""
    _no_timing(monkeypatch)
    argv = ["benchmark", "--models", "googlenet", "--img-size", "64", "--out", str(tmp_path / "b.csv")]
    assert main(argv + ["--warmup", "0"]) == 0
    text, err = capsys.readouterr()
    assert err.splitlines() == [bench.WARMUP_0_WARNING] and "warning" not in text
    assert bench.WARMUP_0_WARNING.startswith("warning: with --warmup 0 the first timed step includes one-time setup")
    assert main(argv + ["--warmup", "1"]) == 0
    assert capsys.readouterr().err == ""


def test_benchmark_builds_the_fused_kernel_before_any_timed_step(monkeypatch):
    """The fused batch norm kernel's one-time build (up to 30 s) was in the first timed training step."""
    from inceptionlab.models import fused_norm

    built = []
    monkeypatch.setattr(fused_norm, "kernel", lambda: built.append("built"))
    cfg = bench.Config("googlenet", 32, 2, "train", model_kwargs=dict(stem="low_res", depth_multiplier=0.125,
                                                                      min_depth=8, num_classes=10))
    bench.train_step(bench._our_model(cfg), cfg, True, torch.device("cpu"))  # made, not run
    assert built == ["built"]
    bench.train_step(bench._our_model(cfg), cfg, False, torch.device("cpu"))  # a reference's step: not ours
    bench.train_step(bench._our_model(cfg), bench.replace(cfg, precision="bf16"), True, torch.device("cpu"))
    assert built == ["built"]


def test_benchmark_gflops_keep_three_significant_digits(monkeypatch):
    """gflops_per_sec was rounded to one decimal: 0.9455 was 0.9, a tiny model's 0.0."""
    assert [bench.significant(v) for v in (0.9455, 0.001234, 12.345, 125.64, 1234.56, 0.0)] == \
        [0.946, 0.00123, 12.3, 125.6, 1234.6, 0.0]
    cfg = bench.Config("googlenet", 32, 2, model_kwargs=dict(stem="low_res", depth_multiplier=0.125, min_depth=8))
    monkeypatch.setattr(bench, "time_alternating", lambda steps, warmup, iters, device: {"ours": [0.5]})
    row = bench.run_config(cfg, peak=100.0, warmup=1, iters=1)
    exact = 2 * row["gmacs"] * 1e9 * 2 / 0.5 / 1e9  # 2 FLOPs per MAC, batch 2, 0.5 s
    assert exact < 1 and row["gflops_per_sec"] == pytest.approx(exact, rel=5e-3) and row["gflops_per_sec"] != round(exact, 1)
    assert row["gflops_per_sec"] == float(f"{exact:.3g}")
    # the printed table too (GFLOP/s showed one decimal: 0.0)
    assert [bench._gflops(v) for v in (0.9456, "0.00123", 12.34, "125.6", None)] == ["0.946", "0.00123", "12.3",
                                                                                  "125.6", "-"]
    assert f"  {bench._gflops(row['gflops_per_sec'])}  " in bench.format_rows([row])
    # the published CSVs (one decimal, all above 100 GFLOP/s) read and show as they did
    committed = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "cpu_targets.csv"
    rows = bench.read_csv(committed)
    assert all(f"  {r['gflops_per_sec']}  " in bench.format_rows([r]) for r in rows)


def test_cli_benchmark_help_states_defaults_and_the_flop_count(capsys):
    assert main(["benchmark", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, default in (("--models", "inception_v3"), ("--batch-size", "8"), ("--mode", "infer"),
                            ("--precision", "fp32"), ("--warmup", "2"), ("--iters", "5")):
        start = text.index(f" {option} ", text.index("options:"))
        assert f"(default: {default})" in text[start:text.index(" --", start + len(option) + 2)], option
    assert "GFLOP/s counts 2 FLOPs per multiply-add of the forward pass, per image; a training step counts 3x " \
           "the forward pass" in text


# ------------------------------------------------------------------ predict
def test_imagenet_class_names_ship_with_the_package():
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[999] == "toilet tissue"
    assert class_names(tiny("googlenet", num_classes=1000)) == list(names)
    assert class_names(tiny("googlenet")) == [f"class {i}" for i in range(10)]


@needs_samples
def test_shipped_names_match_the_imagenet_class_list():
    rows = [line.split("\t") for line in (SAMPLES / "classes.tsv").read_text().splitlines() if line.strip()]
    assert [int(r[0]) for r in rows] == list(range(1000))
    assert [r[2].strip().replace("_", " ") for r in rows] == list(imagenet_classes())


def _some_samples(k: int = 6) -> list[Path]:
    gray = ["n04008634_projectile.JPEG", "n04090263_rifle.JPEG", "n04254120_soap_dispenser.JPEG"]
    others = sorted(p.name for p in SAMPLES.glob("*.JPEG"))[:k - len(gray)]
    return [SAMPLES / n for n in gray + others]


@needs_samples
def test_predict_sample_images_any_mode_and_size_batched():
    model = tiny("googlenet", num_classes=1000)
    files = _some_samples() + [SAMPLES / "classes.tsv"]
    one = predict(model, files, top_k=3, batch_size=1)
    many = predict(model, files, top_k=3, batch_size=4)
    assert [p.path for p in one.results] == [p.path for p in many.results] == files[:-1]
    assert [(path, "not an image" in reason) for path, reason in one.skipped] == [(files[-1], True)]
    for a, b in zip(one.results, many.results):
        assert [i for i, _, _ in a.top] == [i for i, _, _ in b.top]
        assert [p for *_, p in a.top] == pytest.approx([p for *_, p in b.top], abs=1e-5)
        assert len(a.top) == 3 and a.top[0][2] >= a.top[1][2] >= a.top[2][2]
        assert all(name == imagenet_classes()[i] for i, name, _ in a.top)


def test_cli_predict_json_and_text(tmp_path, capsys):
    from PIL import Image

    from inceptionlab.models.weights import save_pretrained

    run = save_pretrained(tiny("googlenet", num_classes=3), tmp_path / "run", classes=["cat", "dog", "emu"])
    pics = tmp_path / "pics"
    pics.mkdir()
    Image.new("L", (40, 90), 128).save(pics / "gray.png")
    Image.new("RGBA", (300, 200), (10, 200, 30, 128)).save(pics / "alpha.png")
    (pics / "notes.txt").write_text("not an image")
    assert main(["predict", "--model", str(run), str(pics), "--json", "--top-k", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [Path(r["image"]).name for r in doc["results"]] == ["alpha.png", "gray.png"]
    assert all({p["class"] for p in r["predictions"]} <= {"cat", "dog", "emu"} for r in doc["results"])
    assert all(len(r["predictions"]) == 2 for r in doc["results"])
    assert [Path(s["image"]).name for s in doc["skipped"]] == ["notes.txt"]
    assert main(["predict", "--model", str(run), str(pics / "gray.png"), str(pics / "notes.txt")]) == 0
    captured = capsys.readouterr()
    assert "gray.png" in captured.out and any(c in captured.out for c in ("cat", "dog", "emu"))
    assert "skipped" in captured.err and "notes.txt" in captured.err
    # another size than the run's answers, with a note (it was silent)
    assert main(["predict", "--model", str(run), str(pics / "gray.png"), "--size", "64"]) == 0
    assert ("note: --size 64: the model's input size is 224x224 (its config.json's, the size it was trained at); "
            "predictions at another size may be worse: drop --size to use it") in capsys.readouterr().err
    assert main(["predict", "--model", str(run), str(pics / "gray.png"), "--size", "224"]) == 0
    assert "note: --size" not in capsys.readouterr().err


def test_weights_file_of_a_training_run_brings_its_classes_and_switches(tmp_path, capsys):
    """``--model NAME --weights RUN/model.safetensors`` (the issue's form) reads the run's config.json
    beside the file: its class count and names and the switches it was trained with."""
    from PIL import Image

    from inceptionlab.models.weights import save_pretrained

    trained = tiny("googlenet", num_classes=3)  # depth_multiplier 0.25: not the default width
    run = save_pretrained(trained, tmp_path / "run", classes=["cat", "dog", "emu"])
    Image.new("RGB", (50, 70), (200, 30, 30)).save(tmp_path / "red.png")
    args = ["predict", str(tmp_path / "red.png"), "--top-k", "3", "--json"]
    assert main(args + ["--model", "googlenet", "--weights", str(run / "model.safetensors")]) == 0
    by_file = json.loads(capsys.readouterr().out)["results"][0]["predictions"]
    assert main(args + ["--model", str(run)]) == 0
    assert by_file == json.loads(capsys.readouterr().out)["results"][0]["predictions"]
    assert sorted(p["class"] for p in by_file) == ["cat", "dog", "emu"]
    model = create_model("googlenet", weights=run / "model.safetensors")
    assert model.num_classes == 3 and model.pretrained_cfg["classes"] == ["cat", "dog", "emu"]
    # another architecture's run: the error names the one it was saved for
    with pytest.raises(UserError, match=r"was saved for googlenet \(its config.json says so\), not inception_v3: "
                                        r"use create_model\('googlenet', weights=\.\.\.\), or the directory "):
        create_model("inception_v3", weights=run / "model.safetensors")
    # on the command line the fix is named once (it said "use --model googlenet (--model googlenet)")
    assert main(args + ["--model", "inception_v3", "--weights", str(run / "model.safetensors")]) == 2
    assert capsys.readouterr().err == (f"inceptionlab predict: error: {run / 'model.safetensors'} was saved for "
                                       f"googlenet (its config.json says so), not inception_v3: use --model googlenet, "
                                       f"or the directory {run} as the model\n")


def test_cli_predict_bad_input(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["predict", "--model", "googlenet", str(tmp_path)]) == 2
    assert "--weights" in capsys.readouterr().err
    weights = tmp_path / "w.pth"
    torch.save(tiny("googlenet").state_dict(), weights)
    args = ["--model", "googlenet", "--weights", str(weights), "--model-kwargs", "depth_multiplier=0.25",
            "num_classes=10"]
    assert main(["predict", str(tmp_path / "notes.txt")] + args) == 2
    assert "readable image" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing.jpg")] + args) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty")] + args) == 2
    assert "empty holds no files (hidden files are left out)" in capsys.readouterr().err
    # a corrupt export is one line (protobuf and zip tracebacks before), as is a folder named .onnx
    (tmp_path / "fake.onnx").write_text("not a protobuf")
    (tmp_path / "fake.pt2").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "dir.onnx").mkdir()
    for model, expected in (("fake.onnx", "cannot load {} as an ONNX file (truncated, or not an export"),
                            ("fake.pt2", "cannot load {} as a torch.export program (.pt2) (truncated"),
                            ("dir.onnx", "{} is a folder; pass the exported .onnx or .pt2 file")):
        assert main(["predict", "--model", str(tmp_path / model), str(tmp_path / "notes.txt")]) == 2
        err = capsys.readouterr().err
        assert expected.format(tmp_path / model) in err and err.count("\n") == 1, err


def test_predict_with_a_grayscale_model_and_without_a_classifier(tmp_path):
    # an in_chans=1 model could not predict at all (the images came as RGB), and a model without a
    # classifier printed a softmax over its pooled features as class probabilities
    from PIL import Image

    Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / "rgb.png")
    Image.new("L", (30, 40), 120).save(tmp_path / "gray.png")
    gray = tiny("googlenet", in_chans=1, stem="low_res", num_classes=3).eval()
    results = predict(gray, [tmp_path / "rgb.png", tmp_path / "gray.png"], fast=False).results
    assert len(results) == 2
    from inceptionlab.data.images import load_image
    from inceptionlab.tools.predict import preprocessor
    x = preprocessor(gray)(load_image(tmp_path / "rgb.png").convert("L"))  # 1 x 32 x 32
    with torch.no_grad():
        expected = torch.softmax(gray(x[None]), dim=1)[0]
    assert x.shape == (1, 32, 32)
    assert results[0].top[0][2] == pytest.approx(expected.max().item(), abs=1e-6)
    with pytest.raises(UserError, match=r"has no classifier \(num_classes=0\): its outputs are pooled features"):
        predict(tiny("googlenet", num_classes=0), [tmp_path / "rgb.png"])


def test_cli_predict_switches_before_the_images_and_bad_numbers(tmp_path, capsys):
    """``--model-kwargs k=v IMAGE`` used to give the image to the switches (argparse takes every
    word up to the next option) and fail with "IMAGE_OR_DIR required"; a 0 size or batch used to
    mean "the default" without a word; an unknown model was reported as missing --weights."""
    from PIL import Image

    Image.new("RGB", (50, 70), (200, 30, 30)).save(tmp_path / "red.png")
    weights = tmp_path / "w.pth"
    torch.save(tiny("googlenet").state_dict(), weights)
    head = ["predict", "--model", "googlenet", "--weights", str(weights), "--json"]
    switches = ["--model-kwargs", "depth_multiplier=0.25", "num_classes=10"]
    assert main(head + switches + [str(tmp_path / "red.png"), "--top-k", "2"]) == 0
    first = json.loads(capsys.readouterr().out)["results"]
    assert main(head + [str(tmp_path / "red.png"), "--top-k", "2"] + switches) == 0
    assert first == json.loads(capsys.readouterr().out)["results"] and len(first[0]["predictions"]) == 2
    for option, named in (("--size", "--size/--img-size"), ("--batch-size", "--batch-size"), ("--top-k", "--top-k")):
        assert main(head + switches + [str(tmp_path / "red.png"), option, "0"]) == 2
        assert f"argument {named}: must be >= 1, got 0" in capsys.readouterr().err
    assert main(["predict", "--model", "googlenett", str(tmp_path / "red.png")]) == 2
    assert "unknown model 'googlenett'; did you mean googlenet" in capsys.readouterr().err
    assert main(head + switches + [str(tmp_path / "red.png"), "--size", "3", "--threads", "1"]) == 2
    assert "error: --size 3 is below googlenet's smallest input, 15x15: pass --size 15 or more" in capsys.readouterr().err
    assert main(["predict", "--model", "runs/flowers/best", str(tmp_path / "red.png")]) == 2
    assert "error: runs/flowers/best does not exist: pass a folder that training" in capsys.readouterr().err


def test_cli_stops_quietly_when_the_reader_goes_away(tmp_path):
    """``inceptionlab predict ... | head -1``: the later batches meet a closed pipe. That was a
    BrokenPipeError traceback; now the command stops with the shell's SIGPIPE status."""
    import subprocess
    import sys

    from PIL import Image

    for i in range(12):  # the later ones are written well after the reader has gone
        Image.new("RGB", (40, 40), (20 * i, 0, 0)).save(tmp_path / f"{i:02d}.png")
    weights = tmp_path / "w.pth"
    torch.save(tiny("googlenet").state_dict(), weights)
    command = [sys.executable, "-m", "inceptionlab", "predict", str(tmp_path), "--model", "googlenet",
               "--weights", str(weights), "--batch-size", "1", "--model-kwargs", "depth_multiplier=0.25",
               "num_classes=10"]
    reader = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip().endswith("00.png")
    reader.stdout.close()  # the reader goes away after the first line
    err = reader.stderr.read()
    assert reader.wait(timeout=120) == 141 and "Traceback" not in err and "BrokenPipe" not in err


def test_cli_unrecognized_option_names_the_command_and_the_closest(capsys):
    """The command's own name (it was the top-level "inceptionlab [-h] COMMAND"), and a hint for a
    misspelt option; argparse's errors are one line, without its usage block."""
    assert main(["predict", "--model", "googlenet", "a.jpg", "--topk", "3"]) == 2
    assert capsys.readouterr().err == ("inceptionlab predict: error: unrecognized arguments: --topk 3; did you mean "
                                       "--top-k? (options: inceptionlab predict --help)\n")
    assert main(["eval", "--frobnicate", "3"]) == 2
    assert capsys.readouterr().err == ("inceptionlab eval: error: unrecognized arguments: --frobnicate 3 "
                                       "(options: inceptionlab eval --help)\n")
    # a train flag given to a lab command: its --set form (it was only "unrecognized")
    assert main(["compare", "--models", "googlenet", "--body-lr-scale", "0.1"]) == 2
    assert "unrecognized arguments: --body-lr-scale 0.1; did you mean --set body_lr_scale=0.1?" in \
        capsys.readouterr().err
    # an option of one value given twice: argparse kept the last without a word (`--set lr=1 lr=2` is refused)
    assert main(["train", "--steps", "3", "--steps", "4"]) == 2
    assert "inceptionlab train: error: --steps is given twice; keep one" in capsys.readouterr().err
    assert main(["train", "--steps", "3", "--strict", "--no-strict"]) == 2
    assert "--strict and --no-strict are both given; keep one" in capsys.readouterr().err
    assert main(["compare", "--models", "googlenet", "--seeds", "0,0"]) == 2
    assert capsys.readouterr().err == ("inceptionlab compare: error: argument --seeds: invalid int value: '0,0' "
                                       "(options: inceptionlab compare --help)\n")
    assert main(["predict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("inceptionlab predict: error: the following arguments are required") and err.count("\n") == 1
    assert main(["unknown-command"]) == 2
    assert "unknown command 'unknown-command'" in capsys.readouterr().err


def test_a_model_switch_without_its_value_is_named(capsys):
    # argparse said "unrecognized arguments: stem": the group of switches ends at a word without "="
    for argv, key in ((["summary", "inception_v3", "--model-kwargs", "depth_multiplier"], "depth_multiplier"),
                      (["train", "--out", "x", "--model-kwargs", "depth_multiplier=0.1", "stem", "--steps", "1"], "stem"),
                      (["train", "--model-kwargs", "stem", "--out", "x"], "stem")):  # ("expected at least one argument")
        assert main(argv) == 2
        assert capsys.readouterr().err == (f"inceptionlab {argv[0]}: error: --model-kwargs takes KEY=VALUE, got "
                                           f"'{key}'; write {key}=VALUE (options: inceptionlab {argv[0]} --help)\n")


def test_an_empty_word_as_a_value_is_refused(capsys):
    # `predict ""` walked the current folder, `compare --out ""` trained into the default folder
    for argv, name in ((["predict", "--model", "x", ""], "IMAGE_OR_DIR"), (["compare", "--out", ""], "--out"),
                       (["train", "--data", "", "--out", "r"], "--data")):
        assert main(argv) == 2
        assert capsys.readouterr().err == (f"inceptionlab {argv[0]}: error: {name} is an empty string; give it a "
                                           f"value (options: inceptionlab {argv[0]} --help)\n")


def test_ctrl_c_while_a_command_loads_is_one_line(capsys, monkeypatch):
    # importing torch takes the first seconds of every command; a Ctrl-C then printed a traceback
    import inceptionlab.cli as cli

    def interrupted_import(name):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_command_module", interrupted_import)
    assert main(["train", "--epochs", "1"]) == 130
    assert capsys.readouterr().err.strip() == "inceptionlab train: interrupted"
    # (the entry point itself, inceptionlab.cli, does not import torch: see the next test)


def test_every_commands_help_is_parsed_without_torch():
    """`summary --help` took 6-10 s (28 s on a busy machine): its options came from the train package,
    whose init imported the engine and torch. The entry point and every command's parser are now
    built without torch (a Ctrl-C while torch loads reaches the CLI's handler), and the train package
    still hands out its functions, not its submodules."""
    import subprocess
    import sys

    from inceptionlab.cli import COMMANDS

    code = ("import sys; from inceptionlab.cli import build_parser\n"
            f"for name in {list(COMMANDS)!r}: build_parser(name)\n"
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    import inceptionlab.train.engine  # noqa: F401 - its submodules imported first, as the CLI's train does
    import inceptionlab.train.evaluation  # noqa: F401
    from inceptionlab.train import evaluate, train
    assert (evaluate.__module__, train.__module__) == ("inceptionlab.train.evaluation", "inceptionlab.train.engine")


def test_predictions_come_batch_by_batch(tmp_path, monkeypatch):
    """The CLI prints each batch as it is done: the first answer comes before the later images are read."""
    from PIL import Image

    from inceptionlab.data import images
    from inceptionlab.tools.predict import Prediction, iter_predictions

    for i in range(5):
        Image.new("RGB", (40, 40), (50 * i, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "5.txt").write_text("x")
    read = []
    real_load = images.load_image
    monkeypatch.setattr(images, "load_image", lambda path, **kw: read.append(path) or real_load(path, **kw))
    answers = iter_predictions(tiny("googlenet"), [tmp_path], top_k=1, batch_size=2)
    first = next(answers)
    assert isinstance(first, Prediction) and first.path.name == "0.png" and len(read) == 2
    rest = list(answers)
    assert [a.path.name for a in rest if isinstance(a, Prediction)] == ["1.png", "2.png", "3.png", "4.png"]
    skipped = [item for item in rest if not isinstance(item, Prediction)]
    assert [(path.name, "not an image" in reason) for path, reason in skipped] == [("5.txt", True)]
    assert len(read) == 6


def test_find_images_walks_folders_and_skips_hidden(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "y.jpg").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in find_images([tmp_path])] == ["a/x.jpg", "b.png"]
    (tmp_path / "linked").symlink_to(tmp_path / "a")  # a linked folder is followed, as training follows it,
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")  # and a link to itself does not loop
    assert [p.relative_to(tmp_path).as_posix() for p in find_images([tmp_path])] == ["a/x.jpg", "b.png"]
    assert [p.name for p in find_images([tmp_path / "linked"])] == ["x.jpg"]
    (tmp_path / "a" / "z_same.jpg").symlink_to("x.jpg")  # a file under a second name: answered under both
    assert [p.relative_to(tmp_path).as_posix() for p in find_images([tmp_path])] == ["a/x.jpg", "a/z_same.jpg",
                                                                                    "b.png"]
    (tmp_path / "_link").symlink_to(tmp_path / "a")  # sorts first: a folder reached both ways keeps its own path
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "w.jpg").write_bytes(b"")
    (tmp_path / "0_only_linked").symlink_to(tmp_path / "c" / ".", target_is_directory=True)
    (tmp_path / "c" / ".hide").mkdir()
    assert [p.relative_to(tmp_path).as_posix() for p in find_images([tmp_path])] == [
        "a/x.jpg", "a/z_same.jpg", "b.png", "c/w.jpg"]  # (they were _link/x.jpg, _link/z_same.jpg ...)


def test_odd_files_named_on_the_command_line_are_skipped_with_their_reason(tmp_path):
    # a FIFO, a broken link or a link loop named directly was "does not exist" and stopped the run
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 0, 0)).save(tmp_path / "ok.png")
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    named = [tmp_path / n for n in ("fifo.jpg", "broken.jpg", "loop_a", "ok.png")]
    assert find_images(named) == named
    out = predict(tiny("googlenet"), named, top_k=1)
    assert [p.path.name for p in out.results] == ["ok.png"]
    reasons = {path.name: reason for path, reason in out.skipped}
    assert reasons["fifo.jpg"].endswith("not a regular file (a pipe, socket or device)")
    assert reasons["broken.jpg"].endswith(f"broken symbolic link to {tmp_path / 'gone.jpg'}")
    assert "Too many levels of symbolic links" in reasons["loop_a"]
    with pytest.raises(UserError, match=rf"^{tmp_path / 'missing.jpg'} does not exist; name image files or folders"):
        find_images([tmp_path / "missing.jpg"])


@pytest.mark.slow
@needs_samples
def test_cli_predict_whole_sample_folder(tmp_path, capsys):
    weights = tmp_path / "g.pth"
    torch.save(tiny("googlenet", num_classes=1000).state_dict(), weights)
    assert main(["predict", str(SAMPLES), "--model", "googlenet", "--weights", str(weights), "--json",
                 "--batch-size", "32", "--model-kwargs", "depth_multiplier=0.25"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["results"]) == 250 and [Path(s["image"]).name for s in doc["skipped"]] == ["classes.tsv"]


def test_bf16_inference_on_a_cpu_without_onednn_bf16(monkeypatch):
    # on an AVX2-only CPU oneDNN's bf16 weight reorder raised "bf16 path needs the cpu support
    # avx_ne_convert or avx512bw, avx512vl and avx512dq"; those convolutions now run unfused
    import inceptionlab.tools.fast as fast_module

    monkeypatch.setattr(fast_module, "cpu_has_bf16", lambda: False)
    model = tiny("inception_v3")
    x = batch("inception_v3")
    out = optimize_for_inference(model, dtype=torch.bfloat16)(x)
    assert out.dtype == torch.bfloat16
    with torch.no_grad():
        expected = model.eval()(x)
    assert (out.float() - expected).abs().max().item() < 0.1 * expected.abs().max().item()


def test_more_threads_than_cpus_warns_in_one_line(tmp_path, capsys, monkeypatch):
    from inceptionlab import cpus

    monkeypatch.setattr(cpus, "usable_cpus", lambda: 2)
    with pytest.warns(UserWarning, match=r"^4 threads in each of 2 processes on 2 CPUs: .* use --threads 1$"):
        cpus.set_threads(4, processes=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cpus.set_threads(2, processes=1)  # as many as there are CPUs: no warning
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun's processes on this machine count
    with pytest.warns(UserWarning, match="2 threads in each of 2 processes"):
        cpus.set_threads(2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    # in the CLI: our warnings print as one line, then the command goes on (here to its error)
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # put back after the test
    with pytest.warns(UserWarning, match="3 threads on 2 CPUs") as caught:
        assert main(["eval", "--model", "googlenet", "--threads", "3", "--data", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("inceptionlab eval: error:")
    w = caught[0]
    assert warnings.formatwarning(w.message, w.category, w.filename, w.lineno) == (
        "inceptionlab eval: warning: 3 threads on 2 CPUs: they take turns on the cores and run slower, not faster; "
        "use --threads 2\n")
    assert "UserWarning" in warnings.formatwarning("torch's own", UserWarning, torch.__file__, 1)  # as Python prints it


def test_an_optimized_model_copies_and_pickles_after_it_ran():
    # its packed oneDNN weights (opaque tensors) made deepcopy and pickle raise NotImplementedError
    import copy
    import pickle

    fast = optimize_for_inference(tiny("inception_resnet_v2"))
    x = torch.randn(2, 3, 75, 75)
    y = fast(x)  # packs the weights
    for other in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        torch.testing.assert_close(other(x), y, rtol=0, atol=0)
    torch.testing.assert_close(fast(x), y, rtol=0, atol=0)  # the original keeps its packed weights


def test_benchmark_refuses_settings_it_would_ignore_or_cannot_time(tmp_path, capsys):
    """One line each, naming the option and its value, before any timing; no CSV left behind.
    (--runtime onnxruntime --channels-last was accepted, and the row said ch-last no.)"""
    tiny_kwargs = ["--model-kwargs", "depth_multiplier=0.125", "stem=low_res", "min_depth=8", "--img-size", "32"]
    for extra, message in (
            (["--runtime", "onnxruntime", "--channels-last"],
             "--channels-last lays out PyTorch's maps, and onnxruntime chooses its own layout; drop --channels-last"),
            (["--iters", "0"], "--iters must be 1 or more timed iterations, got 0"),
            (["--warmup", "-1"], "--warmup must be 0 or more untimed steps, got -1")):
        code = main(["benchmark", "--models", "googlenet", *tiny_kwargs, *extra, "--out", str(tmp_path / "b.csv")])
        assert code == 2
        assert capsys.readouterr() == ("", f"inceptionlab benchmark: error: {message}\n")
    assert not (tmp_path / "b.csv").exists()
