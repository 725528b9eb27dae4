"""Writes inceptionlab/models/reference_layouts.json: the key order of each reference state dict.

safetensors files store tensors sorted by name, which loses the order that the weight loader
matches in. This records, for each reference implementation, its state-dict keys in registration
(= forward) order: names only, no weights. Needs torchvision and timm (the test extra):

    .venv/bin/python scripts/make_reference_layouts.py
"""
import json
from pathlib import Path

import timm
import torchvision

MODELS = {
    "torchvision.googlenet": lambda: torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False),
    "torchvision.inception_v3": lambda: torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False),
    "timm.inception_v4": lambda: timm.create_model("inception_v4"),
    "timm.inception_resnet_v2": lambda: timm.create_model("inception_resnet_v2"),
}

layouts = {name: [k for k in make().state_dict() if not k.endswith("num_batches_tracked")]
           for name, make in MODELS.items()}
out = Path(__file__).resolve().parents[1] / "inceptionlab" / "models" / "reference_layouts.json"
out.write_text(json.dumps(layouts, separators=(",", ":")) + "\n")
print(f"wrote {out} ({', '.join(f'{k}: {len(v)} keys' for k, v in layouts.items())})")
