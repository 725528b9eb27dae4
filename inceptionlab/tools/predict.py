"""Top-k classes for image files, with class names.

Class names come, in this order, from: the ``classes`` saved with weights our training produced
(``config.json`` of a `save_pretrained` directory, which `create_model` puts in
``model.pretrained_cfg["classes"]``); the 1000 ImageNet-1k names shipped with the package
(``imagenet_classes.txt``, standard sorted-wnid order) for a 1000-class model; else "class <i>".

Images are decoded by `inceptionlab.data.images.load_image` (any mode: grayscale, palette, alpha,
CMYK, 16-bit; EXIF rotation), preprocessed as the model's configuration says (resize the shorter
side to size / crop_pct, centre crop, normalize), and run in batches through the model prepared by
`optimize_for_inference`. A file that cannot be decoded is reported and skipped.
"""
from __future__ import annotations

import os

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import torch
import torch.nn as nn

from inceptionlab.errors import UserError

CLASS_FILE = Path(__file__).with_name("imagenet_classes.txt")


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, index order (sorted wnids), as torchvision and timm use."""
    names = tuple(line.strip() for line in CLASS_FILE.read_text().splitlines() if line.strip())
    assert len(names) == 1000, f"{CLASS_FILE} should hold 1000 names, holds {len(names)}"
    return names


def class_names(model: nn.Module) -> list[str]:
    """The names of ``model``'s classes: saved with the weights, ImageNet's for 1000 classes, or
    "class <i>"."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    num_classes = int(getattr(model, "num_classes", 0) or cfg.get("num_classes", 0))
    saved = cfg.get("classes")
    if saved:
        if len(saved) != num_classes:
            raise UserError(f"the weights list {len(saved)} class names for a {num_classes}-class model; "
                            f"fix 'classes' in config.json")
        return [str(c) for c in saved]
    if num_classes == 1000:
        return list(imagenet_classes())
    return [f"class {i}" for i in range(num_classes)]


def find_images(paths: Iterable) -> list[Path]:
    """The files named, and every file (not hidden) under the folders named, sorted per folder,
    linked folders followed as training follows them (each real folder once), linked files under
    each of their names. Whether each is an image is decided by
    decoding it, not by its name."""
    from inceptionlab.data.folders import files_in

    found = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found += sorted(files_in(p, every_name=True))  # r.bmp and a link to it: an answer for each
        elif p.is_file() or os.path.lexists(p):  # a FIFO, a broken link, a link loop: skipped with the
            found.append(p)                        # reason decoding gives, as inside a folder (it stopped the run)
        else:
            raise UserError(f"{p} does not exist; name image files or folders of images")
    return found


@dataclass
class Prediction:
    path: Path
    top: list  # [(class index, name, probability)], most probable first

    def as_dict(self) -> dict:
        return {"image": str(self.path),
                "predictions": [{"index": i, "class": name, "probability": round(p, 6)} for i, name, p in self.top]}


@dataclass
class Predictions:
    results: list = field(default_factory=list)   # Prediction per readable image, input order
    skipped: list = field(default_factory=list)   # (path, reason) per file that is not a readable image


def preprocessor(model: nn.Module, size: int | None = None):
    """The evaluation transform of ``model``'s configuration: PIL image -> normalized tensor."""
    from inceptionlab.data.transforms import eval_transform

    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = int(size or cfg.get("input_size", (3, 299, 299))[-1])
    return eval_transform(size, cfg.get("mean", (0.5, 0.5, 0.5)), cfg.get("std", (0.5, 0.5, 0.5)),
                          crop_pct=float(cfg.get("crop_pct", 0.875)),
                          interpolation=cfg.get("interpolation", "bilinear"),
                          input_space=cfg.get("input_space", "RGB"))


def iter_predictions(model: nn.Module, paths: Iterable, *, top_k: int = 5, batch_size: int = 16,
                     size: int | None = None, classes: list[str] | None = None, fast: bool = True):
    """Yields a `Prediction` for every readable image under ``paths`` (the ``top_k`` classes, with
    probabilities), batch by batch as each is done, and ``(path, reason)`` for every file that is
    not a readable image, as soon as it is met (so before the answers of a batch still filling).
    The answers keep the input order. A folder of 60,000 images shows its first answers in
    seconds instead of after the last batch.

    ``model`` is any image classifier with a ``pretrained_cfg`` (an `InceptionNet`, or a model
    from `create_model`); ``fast`` runs it through `optimize_for_inference`."""
    from inceptionlab.data.images import load_image

    if top_k < 1:
        raise UserError(f"top_k must be >= 1, got {top_k}")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    if size is not None and size < 1:
        raise UserError(f"size must be >= 1 pixel, got {size}")
    from inceptionlab.models.base import FeatureExtractor

    if isinstance(model, FeatureExtractor):  # (a traceback: "'list' object has no attribute 'float'")
        raise UserError("a features_only model gives a list of feature maps, not class scores; predict needs the "
                        "model with its classifier: drop features_only")
    if getattr(model, "num_classes", None) == 0:
        raise UserError(f"{getattr(model, 'name', 'the model')} has no classifier (num_classes=0): its outputs are "
                        f"pooled features, not class scores; predict needs a model with a classifier")
    names = classes if classes is not None else class_names(model)
    transform = preprocessor(model, size)
    gray = getattr(model, "in_chans", 3) == 1  # a grayscale model: the images as L
    from inceptionlab.models.base import InceptionNet

    if fast and isinstance(model, InceptionNet):  # (an export runs as it was exported: it is optimized already)
        from inceptionlab.tools.fast import optimize_for_inference
        runner = optimize_for_inference(model)
    else:
        runner = model.eval()
    batch: list = []

    def answers():
        with torch.inference_mode():
            probs = torch.softmax(runner(torch.stack([t for _, t in batch])).float(), dim=1)
        values, indices = probs.topk(min(top_k, probs.shape[1]), dim=1)
        done = [Prediction(path, [(c, names[c] if c < len(names) else f"class {c}", p) for c, p in zip(i, v)])
                for (path, _), v, i in zip(batch, values.tolist(), indices.tolist())]
        batch.clear()
        return done

    for path in find_images(paths):
        try:
            picture = load_image(path, min_side=transform.decode_side)
        except UserError as exc:  # UnreadableImage, with the reason
            yield path, getattr(exc, "reason", str(exc))
            continue
        batch.append((path, transform(picture.convert("L") if gray else picture)))
        if len(batch) == batch_size:
            yield from answers()
    if batch:
        yield from answers()


def predict(model: nn.Module, paths: Iterable, **options) -> Predictions:
    """Every answer of `iter_predictions` (same options), collected."""
    out = Predictions()
    for item in iter_predictions(model, paths, **options):
        if isinstance(item, Prediction):
            out.results.append(item)
        else:
            out.skipped.append(item)
    return out


def format_prediction(p: Prediction) -> str:
    return "\n".join([str(p.path)] + [f"  {prob:7.2%}  {name}  ({index})" for index, name, prob in p.top])


def format_predictions(preds: Predictions) -> str:
    return "\n".join(format_prediction(p) for p in preds.results)
