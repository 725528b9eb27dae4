"""Weights: Cadene's and facenet-pytorch's layouts with exact parity, TF-slim's 1001 classes, safe
loading (a crafted pickle never runs), one-line errors, our own format, and fine-tuning helpers.

References are built with random weights and randomized BN statistics; parity is
allclose(rtol=1e-4, atol=1e-5) in eval mode. (torchvision/timm parity: tests/test_models.py;
Keras: tests/test_weights_keras.py.)
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import helpers
import torch
import torch.nn as nn

import inceptionlab as il
from inceptionlab import UserError, create_model
from inceptionlab.models.finetune import freeze_bn, freeze_until, unfreeze_bn
from inceptionlab.models.weights import classifier_size, load_weights, read_state_dict


def cadene(module: str, cls: str, **kwargs) -> nn.Module:
    """A pretrainedmodels class from its module file (the package's __init__ needs more packages)."""
    root = Path(list(importlib.util.find_spec("pretrainedmodels").submodule_search_locations)[0])
    spec = importlib.util.spec_from_file_location(f"_cadene_{module}", root / "models" / f"{module}.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return getattr(loaded, cls)(**kwargs)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """The shared BN randomizer, in eval mode (parity is compared in eval)."""
    return helpers.randomize_bn(model, seed).eval()


def save(state: dict, path: Path) -> Path:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def close(a: torch.Tensor, b: torch.Tensor) -> float:
    assert b.std() > 1e-3
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    return float((a - b).abs().max())


# ------------------------------------------------------------------ Cadene's pretrainedmodels
def test_cadene_bninception_parity_and_caffe_convention(tmp_path):
    torch.manual_seed(0)
    ref = randomize_bn(cadene("bninception", "BNInception", num_classes=1000))
    path = save(ref.state_dict(), tmp_path / "bn_inception-52deb4733.pth")
    ours = create_model("bn_inception", weights=path).eval()
    x = torch.randn(1, 3, 224, 224) * 60  # BGR pixels minus the channel means
    with torch.no_grad():
        print(f"cadene bninception max abs diff {close(ours(x), ref(x)):.2e}")
    cfg = ours.pretrained_cfg
    assert cfg["input_space"] == "BGR" and tuple(cfg["input_range"]) == (0, 255)
    assert [round(m * 255) for m in cfg["mean"]] == [104, 117, 128] and [s * 255 for s in cfg["std"]] == [1, 1, 1]


@pytest.mark.slow
def test_cadene_inceptionv4_1001_classes(tmp_path):
    """Cadene's files keep TF-slim's 1001 classes (background first): dropped for 1000, kept for 1001.
    (.safetensors: the loader restores the reference's key order, which the file sorts.)"""
    torch.manual_seed(1)
    ref = randomize_bn(cadene("inceptionv4", "InceptionV4", num_classes=1001), seed=1)
    path = save(ref.state_dict(), tmp_path / "inceptionv4-8e4777a0.safetensors")
    x = torch.randn(1, 3, 299, 299)
    with torch.no_grad():
        expected = ref(x)
        diff = close(create_model("inception_v4", weights=path).eval()(x), expected[:, 1:])
        close(create_model("inception_v4", num_classes=1001, weights=path).eval()(x), expected)
    print(f"cadene inceptionv4 max abs diff {diff:.2e}")
    assert classifier_size(path) == 1001


def test_cadene_inceptionresnetv2_parity(tmp_path):
    torch.manual_seed(2)
    ref = randomize_bn(cadene("inceptionresnetv2", "InceptionResNetV2", num_classes=1001), seed=2)
    path = save(ref.state_dict(), tmp_path / "inceptionresnetv2-520b38e4.safetensors")
    x = torch.randn(1, 3, 299, 299)
    with torch.no_grad():
        diff = close(create_model("inception_resnet_v2", weights=path).eval()(x), ref(x)[:, 1:])
    print(f"cadene inceptionresnetv2 max abs diff {diff:.2e}")


# ------------------------------------------------------------------ facenet-pytorch
def _facenet(**kwargs):
    from facenet_pytorch import InceptionResnetV1
    return randomize_bn(InceptionResnetV1(**kwargs), seed=3)


def test_facenet_embedding_parity_and_convention(tmp_path):
    torch.manual_seed(3)
    ref = _facenet(classify=False)
    path = save(ref.state_dict(), tmp_path / "20180402-114759-vggface2.pt")
    ours = create_model("inception_resnet_v1", embedding_dim=512, num_classes=0, weights=path).eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    print(f"facenet embedding max abs diff {close(a, b):.2e}")
    torch.testing.assert_close(a.norm(dim=1), torch.ones(2))
    cfg = ours.pretrained_cfg  # facenet's fixed_image_standardization on 160x160 faces
    assert cfg["input_size"] == (3, 160, 160) and cfg["mean"] == (0.5,) * 3 and cfg["std"] == (128 / 255,) * 3


def test_facenet_logits_parity(tmp_path):
    torch.manual_seed(4)
    ref = _facenet(classify=True, num_classes=7)
    path = save(ref.state_dict(), tmp_path / "facenet.safetensors")
    ours = create_model("inception_resnet_v1", embedding_dim=512, num_classes=7, weights=path).eval()
    embeddings = []  # the 512-d embeddings (last_bn's output), caught on the way
    ref.last_bn.register_forward_hook(lambda m, i, out: embeddings.append(out))
    ours.head.norm.register_forward_hook(lambda m, i, out: embeddings.append(out))
    x = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        print(f"facenet logits max abs diff {close(ours(x), ref(x)):.2e}")
    torch.testing.assert_close(embeddings[0], embeddings[1], rtol=1e-4, atol=1e-5)
    # fine-tuning to new identities: a new classifier on the 512-d embedding
    ours.reset_classifier(3)
    assert ours.get_classifier().in_features == 512
    assert ours.forward_head(torch.randn(2, ours.num_features, 3, 3)).shape == (2, 3)


def test_facenet_file_needs_the_embedding_head(tmp_path):
    from facenet_pytorch import InceptionResnetV1
    path = save(InceptionResnetV1(classify=False).state_dict(), tmp_path / "facenet.pt")
    with pytest.raises(UserError, match=r"facenet-pytorch's InceptionResnetV1 with a 512-d embedding head: "
                                        r"use create_model\('inception_resnet_v1', embedding_dim=512, num_classes=0"):
        create_model("inception_resnet_v1", weights=path)


def test_a_facenet_file_with_logits_counts_whole_heads_and_names_flags_on_the_command_line(tmp_path, capsys):
    # "its head has 5 tensors, the model's 0" (the embeddings alone were counted), and a Python call as the CLI's fix
    from facenet_pytorch import InceptionResnetV1
    from PIL import Image

    from inceptionlab.cli import main
    path = save(InceptionResnetV1(classify=True, num_classes=10).state_dict(), tmp_path / "facenet.pth")
    head = ("its head has 7 tensors, the model's 2; first difference at tensor 0: its last_linear.weight (512, 1792) "
            "vs the model's head.fc.weight (1000, 1792); it is facenet-pytorch's InceptionResnetV1 with a 512-d "
            "embedding head: ")
    with pytest.raises(UserError) as err:
        create_model("inception_resnet_v1", weights=path)
    assert _one_line(err) == (f"{path} does not fit inception_resnet_v1: {head}use create_model('inception_resnet_v1', "
                              f"embedding_dim=512, num_classes=10, weights=...)")
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    assert main(["predict", "--model", "inception_resnet_v1", "--weights", str(path), str(tmp_path / "a.png")]) == 2
    assert capsys.readouterr().err == (f"inceptionlab predict: error: {path} does not fit inception_resnet_v1: {head}use "
                                       f"--model inception_resnet_v1 --model-kwargs embedding_dim=512 num_classes=10\n")
    # train takes the class count from the data, and refused the num_classes=10 its fix named
    from helpers import image_folder
    data = image_folder(tmp_path / "faces", ("ann", "bob"), 2, size=16)
    train = ["train", "--model", "inception_resnet_v1", "--weights", str(path), "--data", str(data), "--steps", "1",
             "--batch-size", "2", "--img-size", "75", "--val-split", "0.5", "--quiet", "--out"]
    assert main(train + [str(tmp_path / "run")]) == 2
    head = head.replace("(1000, 1792)", "(10, 1792)")  # (train builds the file's 10 classes, then replaces them)
    assert capsys.readouterr().err == (f"inceptionlab train: error: {path} does not fit inception_resnet_v1: {head}use "
                                       f"--model inception_resnet_v1 --model-kwargs embedding_dim=512\n")
    assert main(train + [str(tmp_path / "run"), "--model-kwargs", "embedding_dim=512"]) == 0  # the fix works


# ------------------------------------------------------------------ safety
class Payload:
    """Unpickling this calls os.mkdir(marker): a stand-in for any code a file could run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    # the payload is live: plain unpickling runs it
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(Payload(live)))
    assert live.exists()
    marker = tmp_path / "pwned"
    state = create_model("googlenet", num_classes=3, depth_multiplier=0.1, min_depth=8).state_dict()
    files = {"torch.pth": lambda p: torch.save({"state_dict": state, "x": Payload(marker)}, p),
             "plain.pkl": lambda p: p.write_bytes(pickle.dumps({"w": Payload(marker)})),
             "model.bin": lambda p: torch.save(Payload(marker), p)}
    for name, write in files.items():
        write(tmp_path / name)
        why = (r"it holds pickled code, not only tensors \(it asks for posix\.mkdir\)" if name != "plain.pkl"
               else r"it is a raw pickle, which only an unsafe load \(one that can run code\) reads")
        for load in (lambda p: create_model("googlenet", num_classes=3, depth_multiplier=0.1, min_depth=8, weights=p),
                     read_state_dict, classifier_size):
            with pytest.raises(UserError, match=rf"refusing to load .*{name}: {why}; nothing in it was run") as err:
                load(tmp_path / name)
            assert "\n" not in str(err.value)
    assert not marker.exists()


def test_training_checkpoints_with_plain_extras_load(tmp_path):
    model = create_model("googlenet", num_classes=3, depth_multiplier=0.1, min_depth=8)
    torch.save({"epoch": 3, "arch": "googlenet", "state_dict": model.state_dict(),
                "args": argparse.Namespace(lr=0.1, model="googlenet"), "metric": np.float64(0.5),
                "optimizer": torch.optim.SGD(model.parameters(), lr=0.1).state_dict()}, tmp_path / "ckpt.pth.tar")
    other = create_model("googlenet", num_classes=3, depth_multiplier=0.1, min_depth=8,
                         weights=tmp_path / "ckpt.pth.tar")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


# ------------------------------------------------------------------ one-line errors
def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_truncated_and_corrupt_files(tmp_path):
    model = create_model("googlenet", num_classes=3, depth_multiplier=0.1, min_depth=8)
    save(model.state_dict(), tmp_path / "good.pth")
    save(model.state_dict(), tmp_path / "good.safetensors")
    for name in ("good.pth", "good.safetensors"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut{Path(name).suffix}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(UserError, match=rf"cannot read weights file .*{cut.name}: truncated or corrupt .*; copy "
                                            rf"or save it again") as err:
            load_weights(model, cut)
        _one_line(err)
        cut.write_bytes(b"")
        with pytest.raises(UserError, match=rf"^weights file .*{cut.name} is empty \(0 bytes\): copy or save it again$"):
            load_weights(model, cut)
    # binary noise, even noise that starts like JSON, is a corrupt file (a random "{" made this flaky)
    noise = random.Random(0).randbytes(1000)
    (tmp_path / "noise.pt").write_bytes(b"\x00" + noise[1:])
    with pytest.raises(UserError, match=r"noise\.pt: truncated or corrupt"):
        load_weights(model, tmp_path / "noise.pt")
    (tmp_path / "noise.pt").write_bytes(b"{\x00" + noise[2:])
    with pytest.raises(UserError, match=r"noise\.pt: truncated or corrupt"):
        load_weights(model, tmp_path / "noise.pt")
    with pytest.raises(UserError, match=r"missing\.pth does not exist"):
        load_weights(model, tmp_path / "missing.pth")
    torch.save({"not": "tensors"}, tmp_path / "dict.pth")
    with pytest.raises(UserError, match=r"dict\.pth is not a state dict of tensors"):
        load_weights(model, tmp_path / "dict.pth")
    # files that are no weights at all are named as what they are ("Unsupported operand 123" before)
    (tmp_path / "config.json").write_text('{"architecture": "googlenet"}')
    np.save(tmp_path / "arr.npy", np.zeros(3))
    for name, kind in (("config.json", "a JSON/text file"), ("arr.npy", "a NumPy array file")):
        with pytest.raises(UserError, match=rf"{name} is {kind}, not a weights file; pass a"):
            load_weights(model, tmp_path / name)


def test_another_architecture_is_named(tmp_path, capsys):
    import torchvision
    ref = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    path = save(ref.state_dict(), tmp_path / "googlenet-1378be20.pth")
    with pytest.raises(UserError) as err:
        create_model("inception_v3", weights=path)
    text = _one_line(err)
    assert text.startswith(f"{path} does not fit inception_v3: its body has 285 tensors, the model's 470; "
                           "first difference at tensor 0: its conv1.conv.weight (64, 3, 7, 7) vs the model's "
                           "blocks.conv2d_1a_3x3.conv.weight (32, 3, 3, 3); the file holds googlenet weights: "
                           "use create_model('googlenet', weights=...)"), text
    from inceptionlab.cli import main  # on the command line, in its terms
    from PIL import Image
    Image.new("RGB", (80, 80)).save(tmp_path / "a.png")
    assert main(["predict", "--model", "inception_v3", "--weights", str(path), str(tmp_path / "a.png")]) == 2
    assert capsys.readouterr().err.strip().endswith("the file holds googlenet weights: use --model googlenet")
    # our own layout: missing and unexpected keys, and the model they belong to
    ours = create_model("googlenet", num_classes=10)
    save(ours.state_dict(), tmp_path / "ours.safetensors")
    with pytest.raises(UserError) as err:
        create_model("bn_inception", num_classes=10, weights=tmp_path / "ours.safetensors")
    text = _one_line(err)
    assert "does not fit bn_inception: 159 missing keys (blocks.conv2d_1a_7x7.conv.bias, " in text
    assert text.endswith("the file holds googlenet weights: use create_model('googlenet', weights=...) "
                         "(or --model googlenet)"), text
    # other switches of the same architecture
    with pytest.raises(UserError, match=r"first difference at tensor 0: .* \(64, 3, 7, 7\) vs the model's "
                                        r"blocks\.conv2d_1a_7x7\.conv\.weight \(16, 3, 7, 7\)"):
        create_model("googlenet", num_classes=10, depth_multiplier=0.25, weights=tmp_path / "ours.safetensors")


def test_class_count_and_aux_heads(tmp_path):
    small = dict(depth_multiplier=0.25, stem="low_res")
    ours = create_model("inception_v3", num_classes=10, aux_logits=True, **small)
    path = save(ours.state_dict(), tmp_path / "v3.pth")
    with pytest.raises(UserError, match=r"v3\.pth has a 10-class classifier, the model 4 classes; pass "
                                        r"num_classes=10 \(then reset_classifier"):
        create_model("inception_v3", num_classes=4, **small, weights=path)
    # without aux heads: the file's are not needed; with aux heads and a file without: a warning
    create_model("inception_v3", num_classes=10, **small, weights=path)
    no_aux = save(create_model("inception_v3", num_classes=10, **small).state_dict(), tmp_path / "no_aux.pth")
    with pytest.warns(UserWarning, match="aux heads keep their initial weights"):
        create_model("inception_v3", num_classes=10, aux_logits=True, **small, weights=no_aux)
    # num_classes=0 (features): the classifier is skipped
    features = create_model("inception_v3", num_classes=0, **small, weights=path)
    assert features.num_classes == 0
    assert classifier_size(path) == 10 and classifier_size(save(features.state_dict(), tmp_path / "f.pth")) is None


def test_the_command_line_fix_for_a_class_count_names_what_was_given(tmp_path, capsys):
    # `predict --model googlenet --weights 1000-class.pth --model-kwargs num_classes=3` was told to "use
    # them with a model name", which it had done; the fix is to drop the switch
    from inceptionlab.cli import main
    from PIL import Image

    small = ["stem=low_res", "depth_multiplier=0.125", "min_depth=8"]
    files = {n: save(create_model("googlenet", num_classes=n, stem="low_res", depth_multiplier=0.125,
                                  min_depth=8).state_dict(), tmp_path / f"g{n}.pth") for n in (1000, 5)}
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    fixes = {}
    for n, given in ((1000, ["num_classes=3"]), (5, ["num_classes=3"]), (5, [])):
        assert main(["predict", "--model", "googlenet", "--weights", str(files[n]), str(tmp_path / "a.png"),
                     "--model-kwargs", *small, *given]) == 2
        fixes[n, bool(given)] = capsys.readouterr().err.strip().rsplit("; ", 1)[-1]
    assert fixes == {(1000, True): "drop --model-kwargs num_classes=3",
                     (5, True): "pass --model-kwargs num_classes=5 instead of num_classes=3",
                     (5, False): "use them with a model name (not a run folder, which has its own classes) and "
                                 "--model-kwargs num_classes=5"}


def test_switches_given_against_a_saved_folder_name_only_what_was_given(tmp_path, capsys):
    # `predict --model RUN --model-kwargs depth_multiplier=0.5` said "this model has in_chans=3 aux_logits=False
    # depth_multiplier=0.5: leave those out" (two of them the folder's), and num_classes=5 "reset_classifier(5)"
    from PIL import Image

    from inceptionlab.cli import main
    from inceptionlab.models.weights import save_pretrained
    folder = save_pretrained(create_model("googlenet", num_classes=3, stem="low_res", depth_multiplier=0.125,
                                          min_depth=8), tmp_path / "saved")
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    api, cli = {}, {}
    for given in ("stem=imagenet depth_multiplier=0.5", "min_depth=16", "num_classes=5"):
        switches = dict(kv.split("=") for kv in given.split())
        switches = {k: float(v) if k == "depth_multiplier" else int(v) if v.isdigit() else v for k, v in switches.items()}
        with pytest.raises(UserError) as err:
            create_model(str(folder), **switches)
        api[given] = _one_line(err)
        assert main(["predict", "--model", str(folder), str(tmp_path / "a.png"), "--model-kwargs", *given.split()]) == 2
        cli[given] = capsys.readouterr().err.removeprefix("inceptionlab predict: error: ").strip()
    assert api["min_depth=16"] == f"{folder} holds weights trained with min_depth=8; leave min_depth out (the folder sets it)"
    assert cli["min_depth=16"] == (f"{folder} holds weights trained with min_depth=8; drop --model-kwargs min_depth=16 "
                                   f"(the folder sets it)")
    assert api["num_classes=5"] == (f"{folder} holds weights trained with num_classes=3; leave num_classes out (the "
                                    f"folder sets it), then reset_classifier(5) for a new classifier")
    assert cli["num_classes=5"] == (f"{folder} holds weights trained with num_classes=3; drop --model-kwargs "
                                    f"num_classes=5 (the folder sets it); for a new 5-class classifier fine-tune it: "
                                    f"inceptionlab train --weights {folder} --data DIR")
    assert cli["stem=imagenet depth_multiplier=0.5"] == (
        f"{folder} holds weights trained with stem=low_res depth_multiplier=0.125; drop --model-kwargs stem=imagenet "
        f"depth_multiplier=0.5 (the folder sets them)")
    # a switch the folder does not record (its default) counts too
    default = save_pretrained(create_model("googlenet", num_classes=3, stem="low_res"), tmp_path / "default")
    with pytest.raises(UserError) as err:
        create_model(str(default), depth_multiplier=0.5)
    assert _one_line(err) == (f"{default} holds weights trained with depth_multiplier=1.0; leave depth_multiplier "
                              f"out (the folder sets it)")


def test_1001_class_files_of_our_layout(tmp_path):
    small = dict(depth_multiplier=0.25, stem="low_res")
    src = create_model("inception_v4", num_classes=1001, **small)
    path = save(src.state_dict(), tmp_path / "slim.safetensors")
    dst = create_model("inception_v4", **small, weights=path)
    assert torch.equal(dst.head.fc.weight, src.head.fc.weight[1:])
    assert torch.equal(dst.head.fc.bias, src.head.fc.bias[1:])
    kept = create_model("inception_v4", num_classes=1001, **small, weights=path)
    assert torch.equal(kept.head.fc.weight, src.head.fc.weight)


# ------------------------------------------------------------------ our own format
def test_weights_of_a_run_name_the_switch_they_were_trained_with(tmp_path):
    # config.json holds the switches given; a changed factorize_nxn, factorize_5x5 or norm was
    # "0 missing keys (-), 65 unexpected (...); check the model name and switches (...)"
    small = dict(num_classes=3, stem="low_res", depth_multiplier=0.125, min_depth=8)
    create_model("inception_v3", **small).save_pretrained(tmp_path / "run", classes=["a", "b", "c"])
    weights, config = tmp_path / "run" / "model.safetensors", tmp_path / "run" / "config.json"
    for switch, fix in (("factorize_nxn", "the default factorize_nxn .*: leave factorize_nxn out"),
                        ("factorize_5x5", "the default factorize_5x5 .*: leave factorize_5x5 out")):
        with pytest.raises(UserError, match=rf"does not fit inception_v3: .*; the weights were trained with {fix}$") as info:
            create_model("inception_v3", weights=weights, **small, **{switch: False})
        assert f"({config})" in str(info.value)
    # a switch the folder's weights were trained with at another value: what was given, and that the folder sets it
    with pytest.raises(UserError, match=r"run holds weights trained with norm=True; leave norm out \(the folder sets "
                                        r"it\)$"):
        create_model("inception_v3", weights=weights, **small, norm=False)


def test_reference_weights_in_a_network_that_uses_them_otherwise_warn(tmp_path):
    # grid_reduction, avg_pool_count_pad and residual_scale keep every tensor's shape: torchvision's
    # weights loaded without a word into a network whose logits were 1e5 away from torchvision's
    import warnings

    import torchvision
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).state_dict(),
               tmp_path / "tv.pth")
    for switches, warned in (({}, None), ({"stem": "low_res"}, None),
                             ({"grid_reduction": "pool_then_conv"}, "grid_reduction=pool_then_conv"),
                             ({"avg_pool_count_pad": False}, "avg_pool_count_pad=False")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            create_model("inception_v3", weights=tmp_path / "tv.pth", **switches)
        messages = [str(w.message) for w in caught if "reference network" in str(w.message)]
        assert messages == ([] if warned is None else [
            f"{tmp_path / 'tv.pth'} holds the reference network's weights, and this model has {warned}, which uses "
            f"them in another network: its outputs are not the reference's until it is trained"]), switches


def test_save_pretrained_restores_exactly(tmp_path):
    model = create_model("inception_resnet_v1", num_classes=4, depth_multiplier=0.2, min_depth=8,
                         stem="low_res", embedding_dim=32, residual_scale=0.3)
    randomize_bn(model, seed=5)
    model.pretrained_cfg["mean"] = (0.5, 0.5, 0.5)
    model.pretrained_cfg["std"] = (128 / 255,) * 3
    directory = model.save_pretrained(tmp_path / "run", classes=["ann", "bob", "cy", "dee"])
    assert {p.name for p in directory.iterdir()} == {"config.json", "model.safetensors"}
    x = torch.randn(2, 3, 32, 32)
    for restored in (create_model(str(directory)), il.from_pretrained(directory)):
        restored.eval()
        assert type(restored.head).__name__ == "EmbeddingHead" and restored.switches.residual_scale == (0.3,) * 3
        assert list(restored.state_dict()) == list(model.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(restored.state_dict().values(), model.state_dict().values()))
        with torch.no_grad():
            assert torch.equal(restored(x), model(x))
        cfg = restored.pretrained_cfg
        assert cfg["classes"] == ["ann", "bob", "cy", "dee"] and cfg["std"] == (128 / 255,) * 3
    # the weights file is readable by others, as the umask says (safetensors wrote 0600)
    mask = os.umask(0)
    os.umask(mask)
    assert (directory / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask
    # weights= beside a saved directory loads that file (another checkpoint of the run); it was ignored
    other = create_model("inception_resnet_v1", num_classes=4, depth_multiplier=0.2, min_depth=8,
                         stem="low_res", embedding_dim=32, residual_scale=0.3)
    torch.save(other.state_dict(), tmp_path / "other.pth")
    swapped = create_model(str(directory), weights=tmp_path / "other.pth").eval()
    assert all(torch.equal(a, b) for a, b in zip(swapped.state_dict().values(), other.state_dict().values()))
    assert swapped.pretrained_cfg["classes"] == ["ann", "bob", "cy", "dee"]  # the directory's config still
    with pytest.raises(UserError, match="weights file .*nowhere.pth does not exist"):
        create_model(str(directory), weights=tmp_path / "nowhere.pth")
    with pytest.raises(UserError, match="3 class names for a 4-class model"):
        model.save_pretrained(tmp_path / "wrong", classes=["ann", "bob", "cy"])
    for names, message in (("abcd", "classes must be a list of class names"), ([1, 2, 3, 4], "list of class names"),
                           (["a", "b", "a", "c"], "classes must be distinct names; a appear")):
        with pytest.raises(UserError, match=message):
            model.save_pretrained(tmp_path / "wrong", classes=names)
    assert not (tmp_path / "wrong").exists()
    # a torch.compile'd model's state dict (keys under _orig_mod.) loads as the network's own
    compiled_keys = {f"_orig_mod.{k}": v for k, v in other.state_dict().items()}
    torch.save(compiled_keys, tmp_path / "compiled.pth")
    assert all(torch.equal(a, b) for a, b in zip(create_model(str(directory), weights=tmp_path / "compiled.pth")
                                                 .state_dict().values(), other.state_dict().values()))
    (directory / "model.safetensors").unlink()
    with pytest.raises(UserError, match="no model.safetensors"):
        il.from_pretrained(directory)
    (directory / "checkpoints").mkdir()
    with pytest.raises(UserError, match="no model.safetensors; a run's checkpoints are in .*checkpoints: pass one"):
        il.from_pretrained(directory)
    with pytest.raises(UserError, match="has no config.json"):
        il.from_pretrained(tmp_path)


# ------------------------------------------------------------------ fine-tuning
def _steps(model: nn.Module, n: int = 2, classes: int = 3) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(n):
        x, y = torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, classes, (4,), generator=g)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _snapshot(module: nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_freeze_bn_keeps_statistics_and_affine_fixed():
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=3, depth_multiplier=0.1, min_depth=8, stem="low_res")
    keys = list(model.state_dict())
    n = freeze_bn(model)
    assert n == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    before = {name: _snapshot(m) for name, m in norms.items()}
    convs = _snapshot(model.blocks.conv2d_1a_7x7.conv)
    _steps(model)
    assert model.training and not any(m.training for m in norms.values())   # model.train() kept them in eval
    assert all(_same(before[name], m.state_dict()) for name, m in norms.items())
    assert not _same(convs, model.blocks.conv2d_1a_7x7.conv.state_dict())  # the rest trains
    assert list(model.state_dict()) == keys
    copy.deepcopy(model)
    pickle.loads(pickle.dumps(model))
    assert unfreeze_bn(model) == n
    model.train()
    assert all(m.training and m.weight.requires_grad for m in norms.values())


def test_freeze_until_fine_tuning_from_a_saved_model(tmp_path):
    torch.manual_seed(0)
    base = create_model("googlenet", num_classes=5, depth_multiplier=0.1, min_depth=8, stem="low_res")
    base.save_pretrained(tmp_path / "base")
    model = il.from_pretrained(tmp_path / "base")
    model.reset_classifier(3)  # new classes
    frozen = freeze_until(model, "mixed_3c")
    assert frozen == ["conv2d_1a_7x7", "conv2d_2b_1x1", "conv2d_2c_3x3", "mixed_3b", "mixed_3c"]
    _steps(model)
    saved = read_state_dict(tmp_path / "base" / "model.safetensors")
    for name in model.blocks:
        prefix = f"blocks.{name}."
        same = all(torch.equal(v, saved[k]) for k, v in model.state_dict().items() if k.startswith(prefix))
        assert same == (name in frozen or not any(k.startswith(prefix) for k in saved)), name
    with pytest.raises(UserError, match=r"googlenet has no block 'mixed_3d'; did you mean .*mixed_3c.* \(blocks: "
                                        r"conv2d_1a_7x7, "):
        freeze_until(model, "mixed_3d")
    with pytest.raises(UserError, match=r"no block 'inception4e'; did you mean mixed_4f \(torchvision's inception4e\)\?"):
        freeze_until(model, "inception4e")


def test_rgb_weights_load_into_a_model_of_other_input_channels(tmp_path):
    # in_chans=1 with RGB weights was refused, naming switches that were not the cause
    rgb = create_model("inception_v3", num_classes=5, depth_multiplier=0.125, min_depth=8, stem="low_res").eval()
    randomize_bn(rgb)
    save(rgb.state_dict(), tmp_path / "rgb.pth")
    with pytest.warns(UserWarning, match=r"rgb\.pth takes RGB input; its first convolution \(\S+\) is summed over its "
                                         r"RGB channels for in_chans=1"):
        gray = create_model("inception_v3", num_classes=5, depth_multiplier=0.125, min_depth=8, stem="low_res",
                            in_chans=1, weights=tmp_path / "rgb.pth").eval()
    g = torch.randn(2, 1, 32, 32)
    with torch.no_grad():  # a gray image: what the RGB weights give for that gray in every channel
        torch.testing.assert_close(gray(g), rgb(g.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)
    with pytest.warns(UserWarning, match=r"repeated over 4 channels, scaled by 3/4 for in_chans=4"):
        four = create_model("inception_v3", num_classes=5, depth_multiplier=0.125, min_depth=8, stem="low_res",
                            in_chans=4, weights=tmp_path / "rgb.pth").eval()
    first = lambda m: next(p for p in m.parameters() if p.dim() == 4)  # noqa: E731
    torch.testing.assert_close(first(four), torch.cat([first(rgb), first(rgb)[:, :1]], dim=1) * 0.75)
    # the other way, a gray model's weights into an RGB model: the hint names in_chans, not four other switches
    save(gray.state_dict(), tmp_path / "gray.pth")
    with pytest.raises(UserError, match=r"gray\.pth does not fit inception_v3: .* \(8, 1, 3, 3\) vs the model's "
                                        r"\S+ \(8, 3, 3, 3\); the file's first convolution takes 1 input channel, "
                                        r"the model's 3: pass in_chans=1$"):
        create_model("inception_v3", num_classes=5, depth_multiplier=0.125, min_depth=8, stem="low_res",
                     weights=tmp_path / "gray.pth")


# ------------------------------------------------------------------ state dicts in memory
def test_a_state_dict_in_memory_loads_as_its_file_would():
    # weights=<state dict> put the whole dict's repr (352,090 characters) in its error, and advised
    # model.load_state_dict, which a torchvision state dict does not fit
    import torchvision
    torch.manual_seed(0)
    ref = randomize_bn(torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True,
                                                    transform_input=False))
    ours = create_model("googlenet", weights=ref.state_dict()).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        close(ours(x), ref(x))
    # a checkpoint around it, and DDP's prefixes, as from a file
    wrapped = {"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}
    again = create_model("googlenet", weights=wrapped).eval()
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))
    # our own layout, and the same checks as a file's
    small = dict(depth_multiplier=0.125, min_depth=8, stem="low_res", num_classes=3)
    src = create_model("googlenet", **small)
    dst = create_model("googlenet", **small, weights=src.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(dst.state_dict().values(), src.state_dict().values()))
    with pytest.raises(UserError, match=r"^the state dict passed as weights= has a 3-class classifier, the model 4 "
                                        r"classes; pass num_classes=3 \(then reset_classifier"):
        create_model("googlenet", **{**small, "num_classes": 4}, weights=src.state_dict())


def test_weights_of_the_wrong_kind_are_described_not_printed():
    small = dict(depth_multiplier=0.125, min_depth=8, stem="low_res")
    takes = r"^weights= takes the path of a weights file or a state dict \(a dict of tensors, as model.state_dict\(\) gives\), got "
    for value, described in (([1, 2, 3], "a list of 3 items"), (3.5, "float 3.5"),
                              (torch.zeros(2, 5), r"a tensor of shape \(2, 5\)"),
                              (object(), "object <object object at 0x[0-9a-f]+>")):
        with pytest.raises(UserError, match=takes + described + "$"):
            create_model("googlenet", **small, weights=value)
    state = {**create_model("googlenet", **small).state_dict(), "epoch": 3}
    with pytest.raises(UserError) as err:
        create_model("googlenet", **small, weights=state)
    n = len(state) - 1
    assert _one_line(err) == (f"the state dict passed as weights= is not a state dict of tensors (got a dict of {n} "
                              f"tensors and 1 other entry (the first: 'epoch', int)); save model.state_dict() instead")


def test_a_file_that_lacks_tensors_is_called_incomplete(tmp_path):
    # a file missing fc.weight got "its head has 1 tensors, the model's 0 ... check the model name
    # and switches": a wrong count and a misleading fix
    import torchvision
    state = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).state_dict()
    no_fc = save({k: v for k, v in state.items() if k != "fc.weight"}, tmp_path / "no_fc.pth")
    with pytest.raises(UserError) as err:
        create_model("googlenet", weights=no_fc)
    assert _one_line(err) == (f"{no_fc} lacks 1 tensor the model needs (fc.weight): the file is incomplete "
                              f"(truncated, or saved from part of a model); save or copy it again")
    cut = {k: v for k, v in state.items() if not k.startswith("inception5b.")}
    with pytest.raises(UserError) as err:
        create_model("googlenet", weights=cut)
    assert _one_line(err) == ("the state dict passed as weights= lacks 30 tensors the model needs, from inception5b "
                              "on (inception5b.branch1.conv.weight, ...): the state dict is incomplete (taken from "
                              "part of a model?); pass the whole model.state_dict()")
    # our own layout (safetensors sorts the keys: named in the model's order)
    small = dict(depth_multiplier=0.125, min_depth=8, stem="low_res", num_classes=3)
    ours = create_model("googlenet", **small).state_dict()
    partial = save({k: v for k, v in ours.items() if k != "head.fc.weight"}, tmp_path / "p.safetensors")
    with pytest.raises(UserError, match=r"p\.safetensors lacks 1 tensor the model needs \(head\.fc\.weight\): the "
                                        r"file is incomplete"):
        create_model("googlenet", **small, weights=partial)
    # a head without its classifier's weight and something else: no strict part; counted whole
    odd = {**{k: v for k, v in state.items() if k != "fc.weight"}, "fc.scale": torch.ones(1000)}
    with pytest.raises(UserError) as err:
        create_model("googlenet", weights=odd)
    assert ": its head differs from the model's; first difference at tensor 0: its fc.bias (1000,) vs the model's " \
           "head.fc.weight (1000, 1024); " in _one_line(err)
