"""Export: ONNX (run in onnxruntime) and torch.export programs, dynamic batch, batch norm folded."""
from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from inceptionlab import create_model
from inceptionlab.cli import main
from inceptionlab.tools.export import (OnnxModel, export_onnx, export_pt2, load_pt2, max_abs_difference,
                                       prepare_for_export)
from helpers import randomize_bn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

FAMILIES = ["googlenet", "bn_inception", "inception_v3", "inception_v4", "inception_resnet_v1",
            "inception_resnet_v2"]
TINY = dict(depth_multiplier=0.25, num_classes=10)
SIZE = {"googlenet": 64, "bn_inception": 64}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, **{**TINY, **kw})
    return randomize_bn(model).eval()


@pytest.mark.parametrize("name", FAMILIES)
def test_onnx_logits_equal_pytorch_for_every_family(name, tmp_path):
    model = tiny(name, aux_logits=True) if name == "inception_v3" else tiny(name)
    size = SIZE.get(name, 75)
    path = export_onnx(model, tmp_path / f"{name}.onnx", size)
    runner = OnnxModel(path)
    assert max_abs_difference(runner, model, size, batches=(1, 3)) <= 1e-4
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops  # folded
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, size, size]  # dynamic batch
    assert runner.metadata["num_classes"] == 10 and runner.metadata["input_size"] == [3, size, size]
    assert [o.name for o in graph.output] == ["logits"] and runner.metadata["output_name"] == "logits"


def test_onnx_of_a_low_resolution_model_without_classifier(tmp_path):
    # a model without classifier gives pooled features, and its output says so (it was named "logits")
    model = tiny("inception_v3", stem="low_res", depth_multiplier=0.125, num_classes=0)
    path = export_onnx(model, tmp_path / "low.onnx", 32)
    assert max_abs_difference(OnnxModel(path), model, 32) <= 1e-4
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["features"]
    assert OnnxModel(path).metadata["output_name"] == "features"


@pytest.mark.slow
def test_onnx_full_size_inception_v3(tmp_path):
    model = tiny("inception_v3", depth_multiplier=1.0, num_classes=1000)
    path = export_onnx(model, tmp_path / "v3.onnx")
    assert max_abs_difference(OnnxModel(path), model, 299, batches=(2,)) <= 1e-4


@pytest.mark.parametrize("name", ["googlenet"])  # (the ONNX parity tests cover every family's graph)
def test_pt2_program_equals_pytorch_with_dynamic_batch(name, tmp_path):
    model = tiny(name)
    size = SIZE.get(name, 75)
    path = export_pt2(model, tmp_path / f"{name}.pt2", size)
    program, meta = load_pt2(path)
    assert max_abs_difference(program, model, size, batches=(1, 4)) <= 1e-4
    assert meta["architecture"] == name and meta["mean"] == list(model.pretrained_cfg["mean"])


def test_prepare_for_export_leaves_the_model_alone():
    model = tiny("inception_v3", aux_logits=True).train()
    net = prepare_for_export(model)
    assert model.training and len(model.aux_heads) == 1
    assert not net.training and len(net.aux_heads) == 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_export_refuses_a_too_small_size(tmp_path):
    with pytest.raises(ValueError, match="at least"):
        export_onnx(tiny("inception_v3"), tmp_path / "x.onnx", 32)


def test_cli_export_onnx_and_pt2_with_weights(tmp_path, capsys):
    weights = tmp_path / "w.pth"
    torch.save(tiny("googlenet").state_dict(), weights)
    common = ["--weights", str(weights), "--size", "64", "--model-kwargs", "depth_multiplier=0.25", "num_classes=10"]
    assert main(["export", "googlenet", "--format", "onnx", "--out", str(tmp_path / "g.onnx")] + common) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "checked: onnxruntime" in out and "N dynamic" in out
    meta = json.loads(dict((p.key, p.value) for p in onnx.load(str(tmp_path / "g.onnx")).metadata_props)["inceptionlab"])
    assert meta["input_size"] == [3, 64, 64]
    assert main(["export", "googlenet", "--out", str(tmp_path / "g.pt2")] + common) == 0  # pt2 by the suffix
    out = capsys.readouterr().out
    assert ": pt2, input" in out and "checked: the loaded program" in out
    assert sorted(f.name for f in tmp_path.iterdir()) == ["g.onnx", "g.pt2", "w.pth"]  # no temporary left


def test_cli_export_judges_large_logits_relative_to_their_size(tmp_path, capsys, monkeypatch):
    """A trained run's logits can be in the thousands, where float32 alone rounds by more than 1e-4;
    the check then allows 1e-5 of the largest logit. A real difference still fails, and the file
    already at --out stays as it was (the check runs before the new file replaces it)."""
    from inceptionlab.tools import export

    assert export.allowed_difference(8.0) == 1e-4 and export.allowed_difference(3000.0) == pytest.approx(0.03)
    model = tiny("googlenet")
    with torch.no_grad():
        model.head.fc.weight.mul_(1e4)  # logits of order 1e3-1e4
    weights = tmp_path / "w.pth"
    torch.save(model.state_dict(), weights)
    args = ["export", "googlenet", "--weights", str(weights), "--size", "64", "--out", str(tmp_path / "g.onnx"),
            "--model-kwargs", "depth_multiplier=0.25", "num_classes=10"]
    assert main(args) == 0
    checked = re.search(r"max \|logit difference\| (\S+) \(largest \|logit\| (\S+), allowed (\S+)\)",
                        capsys.readouterr().out)
    diff, largest, allowed = map(float, checked.groups())
    assert largest > 1000 and allowed == pytest.approx(1e-5 * largest, rel=0.05) and diff <= allowed
    assert main(args) == 2  # the file exists now
    assert "g.onnx already exists; pass --overwrite to replace it" in capsys.readouterr().err
    good = (tmp_path / "g.onnx").read_bytes()
    monkeypatch.setattr(export, "logit_difference", lambda *a: (0.5, 3000.0))
    assert main(args + ["--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "differ from PyTorch's by 5.00e-01 (> 3.0e-02); nothing was written to" in err
    assert (tmp_path / "g.onnx").read_bytes() == good  # the earlier export, untouched
    assert sorted(f.name for f in tmp_path.iterdir()) == ["g.onnx", "w.pth"]  # no temporary left


def test_cli_export_bad_input(tmp_path, capsys):
    assert main(["export", "googlenet", "--weights", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "g.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    weights = tmp_path / "w.pth"
    torch.save(tiny("googlenet").state_dict(), weights)
    assert main(["export", "inception_v3", "--weights", str(weights), "--out", str(tmp_path / "g.onnx")]) == 2
    assert "does not fit" in capsys.readouterr().err
    assert main(["export", "googlenet", "--format", "pt2", "--out", str(tmp_path / "g.onnx")]) == 2
    assert "file name ends in .pt2 (torch.export.load refuses others); name it" in capsys.readouterr().err
    assert main(["export", "googlenet", "--format", "onnx", "--out", str(tmp_path / "g.pt2")]) == 2
    assert "names a torch.export program but the format is onnx" in capsys.readouterr().err
    assert main(["export", "googlenet", "--out", str(tmp_path)]) == 2
    assert f"{tmp_path} is a folder; name the file to write, e.g. {tmp_path / 'model.onnx'}" in capsys.readouterr().err
    # `--out run/model.safetensors` wrote ONNX over the trained weights
    assert main(["export", "googlenet", "--weights", str(weights), "--out", str(tmp_path / "model.safetensors")]) == 2
    assert ("model.safetensors names a state dict: pass --format timm or --format torchvision for one in their key "
            "layout, or name a .onnx or .pt2 file to export the network") in capsys.readouterr().err
    assert main(["export", "googlenet", "--out", "/dev/null/g.onnx", "--no-check"]) == 2
    assert "cannot write in /dev/null" in capsys.readouterr().err
    # the fixes of the command line, not of the API: a larger --size (not "resize the images up"), a model
    # of the file's class count (not reset_classifier), a path that does not exist (not "unknown model")
    assert main(["export", "googlenet", "--size", "1", "--out", str(tmp_path / "s.onnx")]) == 2
    assert capsys.readouterr().err == ("inceptionlab export: error: --size 1 is below googlenet's smallest input, "
                                       "15x15: pass --size 15 or more\n")
    assert main(["export", "googlenet", "--weights", str(weights), "--out", str(tmp_path / "c.onnx"),
                 "--model-kwargs", "depth_multiplier=0.25", "num_classes=7"]) == 2
    assert capsys.readouterr().err.endswith(" has a 10-class classifier, the model 7 classes; pass --model-kwargs "
                                            "num_classes=10 instead of num_classes=7\n")
    assert main(["export", "runs/best", "--out", str(tmp_path / "r.onnx")]) == 2
    assert ("error: runs/best does not exist: pass a folder that training or save_pretrained wrote, or a model "
            "name such as bn_inception\n") in capsys.readouterr().err
    assert main(["export", "googlenet", "--size", "64", "--no-check", "--threads", "1", "--out",
                 str(tmp_path / "n.onnx"), "--model-kwargs", "depth_multiplier=0.25"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == "not checked (--no-check): the file was not run against PyTorch"
    assert err.startswith("note: no --weights given, exporting googlenet with random weights")
    from inceptionlab.errors import UserError
    from inceptionlab.tools.export import export_onnx
    with pytest.raises(UserError, match="a features_only model returns a list of feature maps"):
        export_onnx(create_model("googlenet", features_only=True), tmp_path / "f.onnx")
    (tmp_path / "g.onnx").write_bytes(b"onnx bytes")
    assert main(["predict", "--model", "googlenet", "--weights", str(tmp_path / "g.onnx"), str(weights)]) == 2
    assert "g.onnx is an ONNX file (an export), not weights: pass the state dict" in capsys.readouterr().err


def test_predict_runs_the_export_itself_with_its_metadata(tmp_path, capsys):
    """``predict --model run.onnx|run.pt2``: the export's preprocessing and class names, the same
    answers as the PyTorch run it came from."""
    from PIL import Image

    from inceptionlab.models.weights import save_pretrained

    run = save_pretrained(tiny("googlenet", stem="low_res"), tmp_path / "run", classes=list("abcdefghij"))
    for suffix in ("onnx", "pt2"):
        assert main(["export", str(run), "--out", str(tmp_path / f"run.{suffix}")]) == 0
    for i in range(3):
        Image.new("RGB", (50 + 10 * i, 40), (60 * i, 90, 200 - 50 * i)).save(tmp_path / f"{i}.png")
    images = [str(tmp_path / f"{i}.png") for i in range(3)]
    answers = {}
    for model in (run, tmp_path / "run.onnx", tmp_path / "run.pt2"):
        capsys.readouterr()
        assert main(["predict", "--model", str(model), *images, "--json", "--top-k", "3"]) == 0
        doc = json.loads(capsys.readouterr().out)
        answers[Path(model).name] = doc["results"]
        # the file used ("weights": null for a folder or an export)
        assert doc["weights"] == str(model if Path(model).suffix else run / "model.safetensors")
    # the Python API runs an export as it is (it tried to optimize the ONNX session, and crashed deep in deepcopy)
    from inceptionlab.tools.export import ExportedClassifier
    from inceptionlab.tools.predict import predict

    api = predict(ExportedClassifier(tmp_path / "run.onnx"), images, top_k=3).results
    assert [p.as_dict() for p in api] == answers["run.onnx"]
    # more classes asked for than the model has: all of them, and a note
    assert main(["predict", "--model", str(tmp_path / "run.onnx"), images[0], "--top-k", "50"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 11 and "note: --top-k 50: the model has 10 classes; all of them are shown" in err
    for name in ("run.onnx", "run.pt2"):
        for ours, theirs in zip(answers["run"], answers[name]):
            assert [p["class"] for p in ours["predictions"]] == [p["class"] for p in theirs["predictions"]]
            assert [p["probability"] for p in theirs["predictions"]] == pytest.approx(
                [p["probability"] for p in ours["predictions"]], abs=1e-5)
    assert {p["class"] for r in answers["run.onnx"] for p in r["predictions"]} <= set("abcdefghij")
    # the size is fixed at export; weights and switches belong to the export
    assert main(["predict", "--model", str(tmp_path / "run.onnx"), images[0], "--size", "64"]) == 2
    assert "was exported for 32x32 input, got 64x64; drop --size" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path / "run.pt2"), images[0], "--weights", "w.pth"]) == 2
    assert "is an export: it holds its weights and switches" in capsys.readouterr().err
    # an ONNX file without our metadata: its preprocessing is unknown
    proto = onnx.load(str(tmp_path / "run.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    assert main(["predict", "--model", str(tmp_path / "bare.onnx"), images[0]]) == 2
    assert "bare.onnx has no inceptionlab metadata" in capsys.readouterr().err
    # metadata damaged by hand or by another tool: one line naming the file (a traceback before)
    for key, value in (("input_size", "3x32x32"), ("mean", ["red", 0, 0]), ("classes", ["a", "b"])):
        proto = onnx.load(str(tmp_path / "run.onnx"))
        entry = next(p for p in proto.metadata_props if p.key == "inceptionlab")
        entry.value = json.dumps({**json.loads(entry.value), key: value})
        onnx.save(proto, str(tmp_path / "edited.onnx"))
        assert main(["predict", "--model", str(tmp_path / "edited.onnx"), images[0]]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'edited.onnx'} has damaged inceptionlab metadata (" in err and len(err.splitlines()) == 1, err


def test_export_metadata_says_the_channel_order():
    """BN-Inception's Caffe weights take BGR in 0-255: a runtime that reads only mean and std would
    feed RGB."""
    from inceptionlab.tools.export import metadata

    assert metadata(tiny("bn_inception"), 64)["input_space"] == "BGR"
    assert metadata(tiny("bn_inception"), 64)["input_range"] == [0, 255]
    assert metadata(tiny("inception_v3"), 75)["input_space"] == "RGB"


def test_a_failed_export_leaves_the_file_already_there(tmp_path, monkeypatch):
    """The export is written beside the target and moved over it only when whole."""
    from inceptionlab.tools import export

    target = tmp_path / "g.pt2"
    target.write_bytes(b"the export of yesterday")

    def half_written(program, path, extra_files):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt
    monkeypatch.setattr(torch.export, "save", half_written)
    with pytest.raises(KeyboardInterrupt):
        export.export(tiny("googlenet"), target, size=64)
    assert target.read_bytes() == b"the export of yesterday" and [f.name for f in tmp_path.iterdir()] == ["g.pt2"]


def test_benchmark_times_onnxruntime(tmp_path, monkeypatch):
    from inceptionlab.tools import benchmark as bench

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cfg = bench.Config("googlenet", 64, 2, "infer", runtime="onnxruntime", model_kwargs=dict(TINY))
    row = bench.run_config(cfg, peak=100.0, warmup=1, iters=2)
    assert row["runtime"] == "onnxruntime" and row["infer_samples_per_sec"] > 0
    assert row["channels_last"] is False  # onnxruntime is given NCHW input (the row said channels-last)
    times = [float(t) for t in row["step_times_ms"].split()]
    assert len(times) == 2 and all("." in t for t in row["step_times_ms"].split() if float(t) < 100)  # (said "14 1")
    assert statistics.median(times) == pytest.approx(row["infer_step_time_ms"], abs=0.051)
    assert list(tmp_path.glob("inceptionlab-bench-*")) == []  # the exported copy is not left behind


def test_benchmark_times_an_exported_file_as_it_is(tmp_path, capsys, monkeypatch):
    """``benchmark --models run.onnx run.pt2``: the file itself (onnxruntime for ONNX, PyTorch for
    .pt2), at its input size, with the parameters and multiply-adds of the network it holds (it said
    "x.onnx is an exported file" and exported the model again)."""
    from inceptionlab.tools import benchmark as bench
    from inceptionlab.tools.summary import count_macs

    monkeypatch.setattr(bench, "measure_peak", lambda precision: 100.0)
    model = tiny("googlenet", stem="low_res")
    files = [export_onnx(model, tmp_path / "g.onnx", 40), export_pt2(model, tmp_path / "g.pt2", 40)]
    out = tmp_path / "b.csv"
    argv = ["benchmark", "--models", *map(str, files), "--batch-size", "1", "3", "--warmup", "1", "--iters", "2",
            "--out", str(out)]
    assert main(argv) == 0
    rows = bench.read_csv(out)
    assert [(Path(r["model"]).name, r["runtime"], r["batch"], r["img_size"]) for r in rows] == [
        ("g.onnx", "onnxruntime", "1", "40"), ("g.onnx", "onnxruntime", "3", "40"),
        ("g.pt2", "torch", "1", "40"), ("g.pt2", "torch", "3", "40")]
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("aux_heads."))
    assert {int(r["param_count"]) for r in rows} == {params}
    assert {float(r["gmacs"]) for r in rows} == {round(count_macs(model, 40) / 1e9, 6)}
    assert all(float(r["infer_samples_per_sec"]) > 0 and len(r["step_times_ms"].split()) == 2 for r in rows)

    # an exported file last in a comma-separated list is split off like any name (it was kept whole)
    from argparse import Namespace

    from inceptionlab.commands.benchmark import _model_names
    both = f"{files[0]},{files[1]}"
    assert _model_names(Namespace(models=[both], model_kwargs=None)) == [str(files[0]), str(files[1])]

    # what an export cannot be timed as: one line each, before any timing, nothing written
    onnx_file, pt2_file = map(str, files)
    for extra, message in (
            ([onnx_file, "--img-size", "64"], "g.onnx was exported for 40x40 input, not 64x64: drop --img-size, "
                                              "or export it again with --size 64"),
            ([onnx_file, "--runtime", "torch"], "g.onnx is an ONNX file, which runs in onnxruntime: drop --runtime torch"),
            ([pt2_file, "--runtime", "onnxruntime"], "g.pt2 is a torch.export program, which runs in PyTorch"),
            ([pt2_file, "--mode", "train"], "g.pt2 is an inference export; it cannot be trained: use --mode infer"),
            ([pt2_file, "--mode", "train", "--batch-size", "1"], "g.pt2 is an inference export"),  # (said batch 2)
            ([pt2_file, "--precision", "bf16"], "g.pt2 is timed as exported, in fp32: drop --precision bf16"),
            ([pt2_file, "--compile"], "g.pt2 is timed as exported: drop --compile"),
            ([pt2_file, "--model-kwargs", "norm=false"], "g.pt2 is an exported network, fixed at export: drop "
                                                         "--model-kwargs norm=false"),
            ([str(tmp_path / "missing.onnx")], "exported file " + str(tmp_path / "missing.onnx") + " does not exist")):
        capsys.readouterr()
        assert main(["benchmark", "--models", *extra, "--out", str(tmp_path / "refused.csv")]) == 2, extra
        out_text, err = capsys.readouterr()
        assert message in err and len(err.strip().splitlines()) == 1 and out_text == "", (extra, err)
    assert not (tmp_path / "refused.csv").exists()

    # an ONNX file another tool wrote has no metadata: its network (and so its multiply-adds) is unknown
    torch.onnx.export(prepare_for_export(model), (torch.randn(1, 3, 40, 40),), str(tmp_path / "other.onnx"),
                      dynamo=True, verbose=False)
    assert main(["benchmark", "--models", str(tmp_path / "other.onnx")]) == 2
    assert "other.onnx has no inceptionlab metadata (another tool exported it)" in capsys.readouterr().err


@pytest.mark.parametrize("library,name,switches,size", [
    ("torchvision", "googlenet", {"aux_logits": True}, 64), ("torchvision", "inception_v3", {}, 96),
    ("timm", "inception_v3", {"in_chans": 1, "aux_logits": True}, 299), ("timm", "inception_v4", {}, 96),
    ("timm", "inception_resnet_v2", {}, 96)])
def test_weights_written_in_a_reference_layout_load_strictly_into_its_model(library, name, switches, size):
    """``reference_state_dict``: our weights under timm's or torchvision's keys; their own model
    loads them with strict=True (batch norm counters and aux heads included) and gives our logits."""
    import timm
    import torchvision

    from inceptionlab.models.layouts.reference import reference_constructor, reference_state_dict

    torch.manual_seed(0)
    model = randomize_bn(create_model(name, num_classes=7, **switches)).eval()
    state = reference_state_dict(model, library)
    built = reference_constructor(model, library)  # what export prints: the call that takes the file
    assert built.startswith({"timm": f"timm.create_model('{name}', num_classes=7",
                             "torchvision": f"torchvision.models.{name}(num_classes=7"}[library])
    theirs = eval(built, {"timm": timm, "torchvision": torchvision}).eval()
    theirs.load_state_dict(state, strict=True)
    assert list(state) == list(theirs.state_dict())  # their keys, in their order
    x = torch.randn(2, switches.get("in_chans", 3), size, size)
    with torch.no_grad():
        out = theirs(x)  # (timm's inception_v3 with aux heads gives (logits, aux) in eval mode too)
        assert torch.equal(out[0] if isinstance(out, tuple) else out, model(x))


def test_cli_export_weights_for_timm(tmp_path, capsys):
    """``export RUN --format timm --out FILE``: a state dict timm's model loads; what cannot be
    written in a layout is one line, before anything is written."""
    import timm

    from inceptionlab.models.weights import read_state_dict, save_pretrained

    run = save_pretrained(randomize_bn(create_model("inception_v4", num_classes=3)).eval(), tmp_path / "run",
                          classes=["a", "b", "c"])
    out = tmp_path / "v4.safetensors"
    assert main(["export", str(run), "--format", "timm", "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"wrote {out} (") and printed[0].endswith(
        "MB): timm's inception_v4 state dict, 3 classes, input 299x299, mean (0.5, 0.5, 0.5), std (0.5, 0.5, 0.5) "
        "(not in the file: give them to timm's preprocessing)")
    assert printed[1] == "load it into timm.create_model('inception_v4', num_classes=3)"
    assert printed[2].startswith("checked: timm's InceptionV4 with the file loaded (strict) against PyTorch, "
                                 "max |logit difference| 0.00e+00")
    theirs = timm.create_model("inception_v4", num_classes=3)
    theirs.load_state_dict(read_state_dict(out), strict=True)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # (safetensors wrote 0600: a serving user could not read it)
    assert torch.equal(theirs.last_linear.weight, create_model(str(run)).head.fc.weight)

    for argv, message in (
            (["googlenet", "--format", "timm", "--out", "g.pth"],
             "timm has no googlenet; it has inception_v3, inception_v4, inception_resnet_v2"),
            (["inception_v4", "--model-kwargs", "depth_multiplier=0.5", "--format", "timm", "--out", "v.pth"],
             "timm's inception_v4 is the standard network, not one with depth_multiplier=0.5"),
            (["inception_v4", "--format", "timm", "--out", "v.onnx"],
             "a timm state dict is written as .safetensors, or by torch.save as .pth, .pt or .bin; got v.onnx: name it"),
            (["inception_v4", "--out", "v.pth"], "v.pth names a state dict: pass --format timm or --format torchvision"),
            (["inception_v4", "--format", "timm", "--out", "v.pth", "--size", "160"],
             "--size sets an export's fixed input size; a timm state dict has none: drop --size")):
        argv[argv.index("--out") + 1] = str(tmp_path / argv[argv.index("--out") + 1])
        assert main(["export", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["run", "v4.safetensors"]
