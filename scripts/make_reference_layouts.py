"""Writes inceptionlab/models/reference_layouts.json: the key order of each reference state dict.

safetensors files store tensors sorted by name, which loses the order that the weight loader
matches in. This records, for each reference implementation, its state-dict keys in registration
(= forward) order: names only, no weights. Needs torchvision, timm, pretrainedmodels and
facenet-pytorch (the test extra):

    .venv/bin/python scripts/make_reference_layouts.py
"""
import importlib.util
import json
from pathlib import Path

import timm
import torchvision
from facenet_pytorch import InceptionResnetV1


def cadene(module: str, cls: str, **kwargs):
    """A pretrainedmodels model class, from its module file (the package's __init__ imports more)."""
    root = Path(list(importlib.util.find_spec("pretrainedmodels").submodule_search_locations)[0])
    spec = importlib.util.spec_from_file_location(f"_cadene_{module}", root / "models" / f"{module}.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return getattr(loaded, cls)(**kwargs)


MODELS = {
    "torchvision.googlenet": lambda: torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False),
    "torchvision.inception_v3": lambda: torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False),
    "timm.inception_v4": lambda: timm.create_model("inception_v4"),
    "timm.inception_resnet_v2": lambda: timm.create_model("inception_resnet_v2"),
    "cadene.bninception": lambda: cadene("bninception", "BNInception"),
    "cadene.inceptionv4": lambda: cadene("inceptionv4", "InceptionV4"),
    "cadene.inceptionresnetv2": lambda: cadene("inceptionresnetv2", "InceptionResNetV2"),
    "facenet.inception_resnet_v1": lambda: InceptionResnetV1(classify=True, num_classes=2),
}

layouts = {name: [k for k in make().state_dict() if not k.endswith("num_batches_tracked")]
           for name, make in MODELS.items()}
out = Path(__file__).resolve().parents[1] / "inceptionlab" / "models" / "reference_layouts.json"
out.write_text(json.dumps(layouts, separators=(",", ":")) + "\n")
print(f"wrote {out} ({', '.join(f'{k}: {len(v)} keys' for k, v in layouts.items())})")
