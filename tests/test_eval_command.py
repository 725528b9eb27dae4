"""``inceptionlab eval``: what it prints (per-class accuracy, --json), which weights it scores
(--no-ema) and what eval.json says it scored. One tiny run with an EMA, trained once for the module
(2 steps of a low-res Inception-v3 at 12 px on 40 of the embedded digits)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from helpers import ema_run
from inceptionlab import create_model
from inceptionlab.cli import main
from inceptionlab.errors import UserError
from inceptionlab.train import evaluate
from inceptionlab.train import evaluation as evaluation_module
from inceptionlab.train.evaluation import EvalResult

TINY = dict(stem="low_res", depth_multiplier=0.1, min_depth=8)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run that kept an EMA: model.safetensors is the EMA, checkpoints hold both."""
    return ema_run(tmp_path_factory.mktemp("eval") / "run", "inception_v3", 12, TINY)


def test_per_class_accuracy_is_printed_from_the_unrounded_value(run, tmp_path, capsys, monkeypatch):
    # 11 of 13 is 84.6154%: rounded to 3 places, then printed to 2, it showed as 84.61
    confusion = torch.zeros(10, 10, dtype=torch.int64)
    confusion[0, 0], confusion[0, 1] = 11, 2
    confusion[1, 1] = 3
    assert EvalResult(1.0, 50.0, None, 16, confusion).per_class_accuracy()[:3] == [100 * 11 / 13, 100.0, None]
    monkeypatch.setattr(evaluation_module, "run_eval",
                        lambda *a, **k: EvalResult(loss=1.0, top1=87.5, top5=100.0, count=16, confusion=confusion))
    assert main(["eval", "--run", str(run), "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  0   84.62%" in lines and "  1  100.00%" in lines and "  2  -" in lines
    assert json.loads((tmp_path / "eval.json").read_text())["per_class"]["0"] == 84.615  # eval.json keeps 3 places


def test_eval_json_prints_eval_json_alone(run, tmp_path, capsys):
    assert main(["eval", "--run", str(run), "--out", str(tmp_path), "--json"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)  # stdout is the document and nothing else
    assert doc == json.loads((tmp_path / "eval.json").read_text())
    assert doc["images"] == 100 and doc["weights"] == str(run / "model.safetensors") and doc["ema"] is True
    assert "top1" in err and "wrote" in err  # what a person reads went to stderr


def test_no_ema_scores_the_raw_weights_of_the_latest_checkpoint(run, capsys):
    latest = run / "checkpoints" / "step_00000002.pt"
    ema = evaluate(run=run)
    assert (ema["weights"], ema["weights_kind"], ema["ema"]) == (str(run / "model.safetensors"),
                                                                  "final weights (EMA)", True)
    assert main(["eval", "--run", str(run), "--no-ema"]) == 0
    assert "(100 images, latest checkpoint, raw weights (not the EMA))" in capsys.readouterr().out
    raw = json.loads((run / "eval_raw" / "eval.json").read_text())  # beside the EMA's eval.json, not over it
    assert (raw["weights"], raw["weights_kind"], raw["ema"]) == (str(latest), "latest checkpoint, raw weights "
                                                                              "(not the EMA)", False)
    assert json.loads((run / "eval.json").read_text())["ema"] is True
    # the raw weights are other weights than the EMA's (2 steps at decay 0.9): another loss
    state = torch.load(latest, weights_only=True)
    assert any(not torch.equal(state["model"][k], state["ema"][k]) for k in state["model"])
    assert raw["loss"] != ema["loss"]
    # a checkpoint as --weights: its raw weights with --no-ema, its EMA without (as before), and said so
    by_file = evaluate(model=str(run), weights=latest, ema=False, val_split=0.02, out=run / "by_file")
    assert (by_file["ema"], by_file["weights_kind"]) == (False, "checkpoint, raw weights (not the EMA)")
    by_file_ema = evaluate(model=str(run), weights=latest, val_split=0.02, out=run / "by_file_ema")
    assert (by_file_ema["ema"], by_file_ema["weights_kind"]) == (True, "checkpoint, EMA weights")
    assert by_file["images"] == by_file_ema["images"] and by_file["loss"] != by_file_ema["loss"]
    # a run folder as --model takes --no-ema too: its latest checkpoint's raw weights
    as_model = evaluate(model=str(run), ema=False, val_split=0.02, out=run / "as_model")
    assert as_model["weights"] == str(latest) and as_model["loss"] == by_file["loss"]

def test_no_ema_is_refused_where_there_are_no_raw_weights_to_score(run, tmp_path, capsys):
    no_ema = tmp_path / "no_ema"
    shutil.copytree(run, no_ema)
    config = yaml.safe_load((no_ema / "config.yaml").read_text())
    (no_ema / "config.yaml").write_text(yaml.safe_dump({**config, "ema_decay": None}))
    no_checkpoint = tmp_path / "no_checkpoint"
    shutil.copytree(run, no_checkpoint)
    for path in (no_checkpoint / "checkpoints").iterdir():
        path.unlink()
    for argv, expected in (
            (["--run", str(no_ema)], f"{no_ema} kept no EMA (it trained without ema_decay), so its weights are the "
                                     f"raw ones already; drop --no-ema"),
            (["--run", str(no_checkpoint)], f"{no_checkpoint} has no checkpoint, and only checkpoints keep the raw "
                                            f"weights beside the EMA (model.safetensors is the EMA); drop --no-ema to "
                                            f"use the EMA weights"),
            (["--model", "inception_v3", "--weights", str(run / "model.safetensors")],
             f"--no-ema takes the raw weights of a checkpoint (RUN/checkpoints/*.pt keeps them beside the EMA); "
             f"{run / 'model.safetensors'} holds one set of weights: drop --no-ema, or pass a checkpoint")):
        assert main(["eval", *argv, "--no-ema"]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == f"inceptionlab eval: error: {expected}\n", err
    # a checkpoint that kept no EMA: its weights are the raw ones
    lone = tmp_path / "lone" / "checkpoints"
    lone.mkdir(parents=True)
    state = torch.load(run / "checkpoints" / "step_00000002.pt", weights_only=True)
    torch.save({**state, "ema": None}, lone / "step_00000002.pt")
    with pytest.raises(UserError, match=r"checkpoint .*step_00000002.pt kept no EMA \(its run trained without "
                                        r"ema_decay\), so its weights are the raw ones already; drop --no-ema"):
        evaluate(model=str(run), weights=lone / "step_00000002.pt", ema=False, out=tmp_path / "x")


def test_eval_json_names_the_file_of_a_run_or_saved_folder(run, tmp_path):
    # `eval --model RUN_DIR` wrote "weights": null, "weights_kind": "pretrained directory"
    report = evaluate(model=str(run), val_split=0.02, out=tmp_path / "a")
    assert (report["weights"], report["weights_kind"], report["ema"]) == (
        str(run / "model.safetensors"), "training run's final weights (EMA)", True)
    saved = tmp_path / "saved"  # a save_pretrained folder (no config.yaml, no checkpoints) is one
    saved.mkdir()
    for name in ("model.safetensors", "config.json"):
        shutil.copy(run / name, saved / name)
    report = evaluate(model=str(saved), val_split=0.02, out=tmp_path / "b")
    assert (report["weights"], report["weights_kind"], report["ema"]) == (
        str(saved / "model.safetensors"), "pretrained directory", None)
    with pytest.raises(UserError, match="is not a training run; pass --weights RUN/checkpoints/FILE.pt, or drop "
                                        "--no-ema"):
        evaluate(model=str(saved), ema=False)


def test_an_export_given_as_the_model_is_named_as_one(tmp_path):
    # `eval --model run.onnx` said it "needs its weights, --weights FILE": an export holds them
    with pytest.raises(UserError, match=r"^x\.onnx is an export; eval runs PyTorch weights: pass the run folder"):
        evaluate(model="x.onnx", data=tmp_path)


def test_an_output_folder_that_cannot_be_made_is_one_line(run, tmp_path):
    # it was Python's "[Errno 2] No such file or directory", after the evaluation
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match=r"^cannot write to output folder \S+/afile/scores: \S+/afile is a file, "
                                        r"not a folder; pass a writable --out$"):
        evaluate(run=run, out=tmp_path / "afile" / "scores")


def test_all_images_scores_a_test_folder_of_one_image_per_class(run, tmp_path, capsys):
    # it held out a validation split first: "too few images to hold out a validation split: no class has 2 images"
    from helpers import image_folder

    test = image_folder(tmp_path / "test1", ["0", "1", "2"], 1, size=12)
    assert main(["eval", "--run", str(run), "--data", str(test), "--all-images", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 3 and report["classes"] == ["0", "1", "2"] and report["all_images"] is True
    assert report["data_source"] == f"image folder {test}, every image"
    assert main(["eval", "--run", str(run), "--data", str(test)]) == 2  # without it: the fix is named
    assert capsys.readouterr().err.rstrip().endswith("provide a val/ folder (eval: or --all-images, to score every "
                                                      "image)")
    # without --all-images a split is still needed, and one image is "1 image", not "1 images"
    lone = image_folder(tmp_path / "lone", ["0"], 1, size=12)
    with pytest.raises(UserError, match=r"no class has 2 images \(the most is 1, 1 image in all\)"):
        evaluate(run=run, data=lone)


def test_the_confusion_plot_of_many_classes_keeps_the_data_s_and_the_most_predicted():
    """Three ImageNet folders against 1000 columns: the plot shows the true classes, those predicted
    most, and the rest as one column (it drew a hairline strip without a name); the CSV keeps all."""
    from inceptionlab.train.evaluation import PLOTTED_COLUMNS, _plotted_columns

    classes = [f"c{i}" for i in range(1000)]
    confusion = torch.zeros(3, 1000, dtype=torch.long)
    confusion[0, 0], confusion[1, 500], confusion[2, 7], confusion[2, 999] = 1, 2, 4, 1
    confusion[0, 100:150] = 1  # 50 other classes predicted once each
    confusion[1, 300] = 3
    labels, plotted = _plotted_columns(confusion, classes, ["c0", "c7", "c500"])
    assert len(labels) == PLOTTED_COLUMNS and labels[:4] == ["c0", "c7", "c500", "c300"]
    assert labels[-1] == f"other ({1000 - PLOTTED_COLUMNS + 1})"
    assert plotted.sum() == confusion.sum() and torch.equal(plotted.sum(dim=1), confusion.sum(dim=1))
    few = _plotted_columns(confusion[:, :10], classes[:10], ["c0"])
    assert few[0] == classes[:10] and torch.equal(few[1], confusion[:, :10])


def _tiny_googlenet(num_classes: int):
    return create_model("googlenet", num_classes=num_classes, stem="low_res", depth_multiplier=0.125, min_depth=8)


def test_weights_without_a_classifier_are_refused_not_scored_on_a_random_one(tmp_path):
    from helpers import image_folder

    state = {k: v for k, v in _tiny_googlenet(3).state_dict().items() if not k.startswith("head.fc.")}
    path = tmp_path / "embedding.pth"
    torch.save(state, path)
    data = image_folder(tmp_path / "data", ["a", "b", "c"], 1, size=16)
    with pytest.raises(UserError, match=rf"^{path} has no classifier \(an embedding or include_top=False file\), so "
                                        rf"its class scores would be random; fine-tune it with train --weights, or "
                                        rf"pass weights with a classifier$"):
        evaluate(model="googlenet", weights=path, data=data, all_images=True, img_size=16, out=tmp_path / "out",
                 model_kwargs=dict(stem="low_res", depth_multiplier=0.125, min_depth=8))
    assert not (tmp_path / "out").exists()
    # training keeps the file's body and a fresh classifier, with a warning: that is fine-tuning
    with pytest.warns(UserWarning, match="has no classifier .*: the model's classifier keeps its initial weights"):
        create_model("googlenet", num_classes=3, stem="low_res", depth_multiplier=0.125, min_depth=8, weights=path)


def test_imagenet_weights_without_names_score_folders_named_by_imagenet_classes(tmp_path):
    # "has a 1000-class classifier without class names ..., and inw has 3 classes": the package knows the names
    from helpers import image_folder

    model = _tiny_googlenet(1000)
    with torch.no_grad():
        model.head.fc.bias[2] = 100.0  # every image: class 2, ImageNet's "great white shark"
    path = tmp_path / "imagenet.pth"  # no config.json beside it: no class names
    torch.save(model.state_dict(), path)
    data = image_folder(tmp_path / "inw", ["great_white_shark", "tench", "Tiger Shark"], 1, size=16)
    kwargs = dict(model="googlenet", weights=path, all_images=True, img_size=16,
                  model_kwargs=dict(stem="low_res", depth_multiplier=0.125, min_depth=8))
    report = evaluate(data=data, out=tmp_path / "out", **kwargs)
    assert report["per_class"] == {"Tiger Shark": 0.0, "great_white_shark": 100.0, "tench": 0.0}
    assert report["model_classes"][:5] == ["tench", "goldfish", "great_white_shark", "Tiger Shark", "hammerhead"]
    assert len(report["model_classes"]) == 1000 and report["top1"] == pytest.approx(100 / 3, abs=1e-3)
    bad = image_folder(tmp_path / "wnids", ["n01440764", "tench", "kitty"], 1, size=16)
    with pytest.raises(UserError, match=rf"^{bad} has 2 class folder\(s\) that are no ImageNet class \(kitty, "
                                        r"n01440764\); the weights have ImageNet's 1000-class classifier without class "
                                        r"names, so folders must be named by the ImageNet class names as predict "
                                        r"prints them \(e\.g\. great_white_shark or 'great white shark'; WordNet ids "
                                        r"such as n01440764 are not known here\)$"):
        evaluate(data=bad, out=tmp_path / "bad", **kwargs)
    # the same weights as a save_pretrained folder given as the model: it was built with the data's 3
    # classes and refused as "drop --model-kwargs num_classes=3", a flag nobody passed
    model.save_pretrained(tmp_path / "saved")
    by_folder = evaluate(model=str(tmp_path / "saved"), data=data, out=tmp_path / "out2", all_images=True, img_size=16)
    assert by_folder["per_class"] == report["per_class"] and len(by_folder["model_classes"]) == 1000
    two = _tiny_googlenet(2)
    two.save_pretrained(tmp_path / "saved2")
    with pytest.raises(UserError, match=rf"^{tmp_path / 'saved2'} has a 2-class classifier without class names \(no "
                                        rf"class names in its config\.json\), and {data} has 3 classes: unnamed "
                                        r"classes are scored by position, so the data must hold the 2 classes it "
                                        r"learned, in that order$"):
        evaluate(model=str(tmp_path / "saved2"), data=data, out=tmp_path / "out3", all_images=True, img_size=16)


def test_eval_threads_help_names_only_the_runtime_eval_has(capsys):
    # eval --help said "for PyTorch and onnxruntime alike", and eval refuses exports
    from inceptionlab.cli import main

    for command, runtimes in (("eval", "for PyTorch (default"), ("predict", "for PyTorch and onnxruntime alike")):
        assert main([command, "--help"]) == 0
        assert f"CPU threads, {runtimes}" in " ".join(capsys.readouterr().out.split())
