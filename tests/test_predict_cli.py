"""``inceptionlab predict`` and ``export`` on the command line: weights without a classifier are
refused, a Keras file of another model is fixed with a flag, and --no-ema takes a checkpoint's raw
weights. One tiny googlenet run with an EMA (2 steps at 16 px on 40 of the embedded digits)."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from helpers import ema_run
from inceptionlab import create_model
from inceptionlab.cli import main

TINY = dict(stem="low_res", depth_multiplier=0.125, min_depth=8)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run that kept an EMA: model.safetensors is the EMA, checkpoints hold both."""
    return ema_run(tmp_path_factory.mktemp("predict") / "run", "googlenet", 16, TINY)


@pytest.fixture
def image(tmp_path):
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "a.png")
    return tmp_path / "a.png"


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    return err.strip().split(": error: ", 1)[1]


def test_predict_refuses_weights_without_a_classifier(tmp_path, image, capsys):
    # it warned "keeps its initial weights" and printed the predictions of a random classifier
    state = {k: v for k, v in create_model("googlenet", **TINY).state_dict().items() if not k.startswith("head.fc.")}
    torch.save(state, tmp_path / "embedding.pth")
    argv = ["predict", "--model", "googlenet", "--weights", str(tmp_path / "embedding.pth"), str(image),
            "--model-kwargs", "stem=low_res", "depth_multiplier=0.125", "min_depth=8"]
    assert _error(capsys, argv) == (f"{tmp_path / 'embedding.pth'} has no classifier (an embedding or include_top=False "
                                    f"file), so its class scores would be random; fine-tune it with train --weights, "
                                    f"or pass weights with a classifier")


def test_a_keras_file_of_another_model_names_the_flag(tmp_path, image, capsys):
    # "use create_model('inception_v3', weights=...)" where PyTorch files said "use --model googlenet"
    from test_weights_keras import keras_inception_v3, write_keras2

    write_keras2(tmp_path / "k_v3.h5", keras_inception_v3(torch.randn(1, 3, 75, 75), classes=1000))
    message = _error(capsys, ["predict", "--model", "inception_v4", "--weights", str(tmp_path / "k_v3.h5"), str(image)])
    assert message.endswith("; the file holds inception_v3 weights: use --model inception_v3"), message


def _predict_json(capsys, *argv) -> dict:
    assert main(["predict", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_no_ema_predicts_with_a_checkpoints_raw_weights(run, image, capsys):
    latest, best = run / "checkpoints" / "step_00000002.pt", run / "checkpoints" / "best.pt"
    ema = _predict_json(capsys, "--model", str(run), str(image))
    raw = _predict_json(capsys, "--model", str(run), str(image), "--no-ema")
    assert (ema["weights"], ema["ema"]) == (str(run / "model.safetensors"), True)
    assert (raw["weights"], raw["ema"]) == (str(latest), False)
    probabilities = lambda doc: [p["probability"] for p in doc["results"][0]["predictions"]]  # noqa: E731
    state = torch.load(latest, weights_only=True)  # the raw weights are other weights than the EMA's
    assert any(not torch.equal(state["model"][k], state["ema"][k]) for k in state["model"])
    assert probabilities(raw) != probabilities(ema)
    # a checkpoint as --weights: its EMA without --no-ema (as before, and now said), its raw weights with it
    by_file = _predict_json(capsys, "--model", "googlenet", "--weights", str(best), str(image), "--no-ema")
    assert (by_file["weights"], by_file["ema"], probabilities(by_file)) == (str(best), False, probabilities(raw))
    assert _predict_json(capsys, "--model", str(run), "--weights", str(best), str(image))["ema"] is True
    # the run folder as --model with its checkpoint, the form --help names (it said "unknown model 'run'")
    in_run = _predict_json(capsys, "--model", str(run), "--weights", str(best), str(image), "--no-ema")
    assert (in_run["weights"], in_run["ema"], probabilities(in_run)) == (str(best), False, probabilities(raw))
    assert _error(capsys, ["predict", "--model", str(run), "--weights", str(run / "model.safetensors"), str(image),
                           "--no-ema"]) == (f"--no-ema takes the raw weights of a checkpoint (RUN/checkpoints/*.pt "
                                            f"keeps them beside the EMA); {run / 'model.safetensors'} holds one set of "
                                            f"weights: drop --no-ema, or pass a checkpoint")


def test_no_ema_exports_a_checkpoints_raw_weights(run, image, tmp_path, capsys):
    from inceptionlab.tools.export import ExportedClassifier

    x = torch.rand(1, 3, 16, 16)
    logits = {}
    for name, flags in (("ema", []), ("raw", ["--no-ema"])):
        assert main(["export", str(run), "--out", str(tmp_path / f"{name}.onnx"), "--no-check", *flags]) == 0
        logits[name] = ExportedClassifier(tmp_path / f"{name}.onnx")(x)
    capsys.readouterr()
    raw = create_model(str(run), weights=torch.load(run / "checkpoints" / "step_00000002.pt",
                                                    weights_only=True)["model"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(logits["raw"], raw(x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(logits["raw"], logits["ema"])
    # the file says which weights it holds (it did not), and predict --json of it repeats that
    for name, ema in (("ema", True), ("raw", False)):
        assert ExportedClassifier(tmp_path / f"{name}.onnx").pretrained_cfg["ema"] is ema
        assert _predict_json(capsys, "--model", str(tmp_path / f"{name}.onnx"), str(image))["ema"] is ema
    assert main(["export", "googlenet", "--out", str(tmp_path / "random.pt2"), "--no-check",
                 "--model-kwargs", "stem=low_res", "depth_multiplier=0.125", "min_depth=8"]) == 0
    assert ExportedClassifier(tmp_path / "random.pt2").pretrained_cfg["ema"] is None
    capsys.readouterr()
    no_ema_run = tmp_path / "x.onnx"
    assert _error(capsys, ["export", "googlenet", "--out", str(no_ema_run), "--no-ema"]) == (
        "--no-ema takes the raw weights of a checkpoint, and googlenet is not a training run; pass --weights "
        "RUN/checkpoints/FILE.pt, or drop --no-ema")


def test_features_only_and_another_size_on_the_command_line(run, image, tmp_path, capsys):
    """A features_only model is refused in one line by predict (it was a traceback) and by export
    (before its random-weights note); an export at another size than the run's says so."""
    weights = str(run / "model.safetensors")
    for argv in (["predict", "--model", "googlenet", "--weights", weights, str(image)],
                 ["export", "googlenet", "--weights", weights, "--out", str(tmp_path / "f.onnx")]):
        assert main(argv + ["--model-kwargs", "features_only=true"]) == 2, argv
        err = capsys.readouterr().err
        assert "a features_only model" in err and len(err.strip().splitlines()) == 1, err
    assert main(["export", str(run), "--out", str(tmp_path / "r.pt2"), "--size", "32"]) == 0
    assert ("note: --size 32: the model's input size is 16x16 (its config.json's, the size it was trained at); its "
            "answers at another size may be worse: drop --size to use it") in capsys.readouterr().err


def test_predict_refuses_an_export_of_random_weights(tmp_path, image, capsys, monkeypatch):
    """An export without --weights says so in its metadata, and predict refuses it as it refuses a model
    name without --weights (it printed the predictions of random weights, exit 0, without a word); an
    export with --weights, and one written before the field, still predict; the benchmark still times it."""
    import onnx

    from inceptionlab.tools import benchmark as bench
    from inceptionlab.tools.export import read_metadata

    switches = ["--model-kwargs", "stem=low_res", "depth_multiplier=0.125", "min_depth=8", "num_classes=5"]
    torch.save(create_model("googlenet", **TINY, num_classes=5).state_dict(), tmp_path / "w.pth")
    for suffix in ("onnx", "pt2"):
        random, trained = tmp_path / f"random.{suffix}", tmp_path / f"trained.{suffix}"
        assert main(["export", "googlenet", "--out", str(random), "--no-check", *switches]) == 0
        assert "note: no --weights given, exporting googlenet with random weights" in capsys.readouterr().err
        assert main(["export", "googlenet", "--weights", str(tmp_path / "w.pth"), "--out", str(trained),
                     "--no-check", *switches]) == 0
        assert (read_metadata(random)["random_weights"], read_metadata(trained)["random_weights"]) == (True, False)
        capsys.readouterr()
        assert main(["predict", "--model", str(random), str(image)]) == 2
        assert capsys.readouterr() == ("", f"inceptionlab predict: error: {random} holds random weights (exported "
                                           f"without --weights; predictions of random weights mean nothing); export "
                                           f"it again with --weights FILE\n")
        assert main(["predict", "--model", str(trained), str(image), "--top-k", "2"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 3  # the image, its 2 classes
    # a file exported before the field: it predicts as it did
    proto = onnx.load(str(tmp_path / "random.onnx"))
    entry = next(p for p in proto.metadata_props if p.key == "inceptionlab")
    entry.value = json.dumps({k: v for k, v in json.loads(entry.value).items() if k != "random_weights"})
    onnx.save(proto, str(tmp_path / "before.onnx"))
    assert main(["predict", "--model", str(tmp_path / "before.onnx"), str(image), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 1
    # timing needs no real weights
    monkeypatch.setattr(bench, "measure_peak", lambda precision: 100.0)
    assert main(["benchmark", "--models", str(tmp_path / "random.onnx"), "--batch-size", "1", "--warmup", "1",
                 "--iters", "1", "--out", str(tmp_path / "b.csv")]) == 0
    assert len(bench.read_csv(tmp_path / "b.csv")) == 1
