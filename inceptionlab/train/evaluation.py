"""Evaluation: top-1, top-5, loss, per-class accuracy and the confusion matrix.

``evaluate(run="runs/x")`` evaluates a training run (its final weights, which are the EMA
weights when the run kept an average; else its latest checkpoint) on the run's validation data;
``ema=False`` scores the raw weights of a run that kept an average instead (they are only in its
checkpoints: the latest one). eval.json names the file scored and whether it was the EMA.
``evaluate(model="inception_v3", weights="file.safetensors", data="photos/")`` evaluates any
weights on data of their classes, all or some of them (matched by folder name). Both write ``confusion_matrix.csv`` and
``confusion_matrix.png`` (rows: true class, columns: predicted) and ``eval.json``.

The loss is the plain cross-entropy (no label smoothing), comparable across runs.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from inceptionlab.errors import UserError, listed


@dataclass
class EvalResult:
    loss: float
    top1: float               # percent
    top5: float | None        # percent; None for 5 classes or fewer, where every image is in its top 5
    count: int
    confusion: torch.Tensor   # K x K counts, rows true, columns predicted

    def per_class_accuracy(self) -> list[float | None]:
        """Percent of each true class's images predicted right (None for a class with none), unrounded:
        rounding here and again for printing showed 11/13 = 84.6154% as 84.61."""
        totals = self.confusion.sum(dim=1)
        return [100.0 * float(self.confusion[k, k]) / float(n) if n else None
                for k, n in enumerate(totals.tolist())]


@torch.no_grad()
def run_eval(model: nn.Module, loader, device: torch.device, *, num_classes: int, amp_dtype=None,
             memory_format=torch.contiguous_format, dist=None, label_map: torch.Tensor | None = None,
             progress=None) -> EvalResult:
    """Evaluates ``model`` over ``loader`` (this process's share; summed over ``dist``'s processes).
    ``label_map[data label]`` is the model's output index of that class, where the two differ;
    ``progress(batches done)`` is called after each batch."""
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, top-k correct, images
    k = min(5, num_classes)  # top-5 is reported only above 5 classes; the top k still give top-1
    for done, (images, labels, _n_skipped) in enumerate(loader, 1):
        if progress is not None:
            progress(done - 1)
        if images.numel() == 0:
            continue
        images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)                                     # N x K
        logits, labels = logits.float().cpu(), labels.cpu()
        if label_map is not None:
            labels = label_map[labels]
        top = logits.topk(k, dim=1).indices                            # N x k
        totals[0] += F.cross_entropy(logits, labels, reduction="sum").item()
        totals[1] += (top == labels[:, None]).any(dim=1).sum().item()
        totals[2] += labels.numel()
        confusion.index_put_((labels, top[:, 0]), torch.ones_like(labels), accumulate=True)
    if dist is not None and dist.enabled:
        dist.sum(totals)
        dist.sum(confusion)
    model.train(was_training)
    n = max(totals[2].item(), 1.0)
    top1 = 100.0 * confusion.diagonal().sum().item() / n
    top5 = 100.0 * totals[1].item() / n if num_classes > 5 else None
    return EvalResult(loss=totals[0].item() / n, top1=top1, top5=top5,
                      count=int(totals[2].item()), confusion=confusion)


class _Progress:
    """A line on stderr every `every` seconds of a long evaluation (10,000 test images had printed
    nothing for minutes): how many batches are done, of how many."""

    def __init__(self, batches: int, images: int, every: float = 30.0) -> None:
        self.batches, self.images, self.every = batches, images, every
        self.started = self.last = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every and done:
            self.last = now
            left = (now - self.started) / done * (self.batches - done)
            print(f"  scoring {self.images:,} images: {done} of {self.batches} batches in {now - self.started:.0f}s, "
                  f"about {left:.0f}s left", file=sys.stderr, flush=True)


def _same_folder(data, trained_on) -> bool:
    """Whether ``data`` (None: the run's own) is the folder a run trained on (None: the digits)."""
    if data is None:
        return True
    resolved = lambda folder: Path(str(folder)).expanduser().resolve()  # noqa: E731
    return trained_on is not None and resolved(data) == resolved(trained_on)


def _other_data_folder(base: Path, data, all_images: bool = False, raw: bool = False, weights=None) -> Path:
    """Where a run's (or a weights file's) scores on another data folder go by default, inside
    ``base``: ``eval_<folder name>``, ``eval_<folder name>_all`` for every image (they had overwritten the
    run's own eval.json, then each other); the name of the weights file scored, where it is not the
    run's final model.safetensors (``eval_cifar10_best``: two checkpoints' scores replaced each
    other); ``_raw`` for the raw weights of a run that kept an EMA (``ema=False``), beside the EMA's
    scores rather than over them. ``data`` None: the run's own data (``eval_raw``; the EMA's scores
    are the run's own eval.json). Scores of another folder of the same name already there (two
    ``test/`` folders) are kept: the name takes the folder's parent too (``eval_cifar10_test``), then
    a number; the same data scored again replaces its own scores."""
    def name(folder: str, number: int = 1) -> str:
        parts = ["eval", folder]
        if weights is not None and Path(str(weights)).name != "model.safetensors":
            parts.append(Path(str(weights)).stem)
        return "_".join(parts + ["all"] * all_images + ["raw"] * raw + [str(number)] * (number > 1))

    if data is None:
        return base / "_".join(["eval"] + ["all"] * all_images + ["raw"] * raw)
    scored = Path(str(data)).expanduser().resolve()
    own = scored.name or "data"
    names = [name(own), name(f"{scored.parent.name}_{own}")] + [name(own, n) for n in range(2, 100)]
    for candidate in dict.fromkeys(names):
        folder = base / candidate
        if not (folder / "eval.json").exists() or _scored_data(folder) == str(scored):
            return folder
    raise UserError(f"{base} holds 99 score folders of other data named {own}; pass --out")


def _scored_data(folder: Path) -> str | None:
    """The data folder whose scores ``folder``'s eval.json holds (None: not known)."""
    try:
        return json.loads((folder / "eval.json").read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        return None


def _run_folder(path) -> Path | None:
    """The training run that ``path`` (a run folder, its model.safetensors or one of its
    checkpoints) is, or belongs to; None for anything else (a registered name, a loose file)."""
    path = Path(str(path))
    if path.is_dir():
        folder = path
    elif path.name == "model.safetensors":
        folder = path.parent
    elif path.parent.name == "checkpoints":
        folder = path.parent.parent
    else:
        return None
    return folder if (folder / "config.yaml").is_file() and (folder / "checkpoints").is_dir() else None


def evaluate(run: str | Path | None = None, *, model: str | None = None, weights: str | Path | None = None,
             data: str | Path | None = None, out: str | Path | None = None, batch_size: int = 64,
             img_size: int | None = None, model_kwargs: dict | None = None, workers: int = 0,
             val_split: float | None = None, seed: int = 0, amp: bool | str = False,
             all_images: bool = False, limit_per_class: int | None = None, ema: bool = True,
             quiet: bool = True) -> dict:
    """Evaluates a run (``run=``) or a model and weights (``model=``, ``weights=``) on ``data``'s
    validation split, or on every image of ``data`` with ``all_images`` (a test folder); returns
    top1, top5, loss, per-class accuracy and where the outputs went. ``limit_per_class`` scores at
    most that many images of each class (chosen by the seed, as training's limit chooses them): a
    quick look at a 10,000-image test folder. ``ema=False`` scores a checkpoint's raw weights where it
    kept an EMA too (a run's latest checkpoint for ``run=`` or a run folder as ``model``; else
    ``weights`` must be a checkpoint): the final model.safetensors of such a run is the EMA.
    eval.json's ``weights`` is the file scored, ``ema`` whether its EMA weights were (None: unknown,
    weights from elsewhere)."""
    from inceptionlab.models.registry import is_saved_folder
    from inceptionlab.models.weights import trained_classes
    from inceptionlab.train.config import TrainConfig
    from inceptionlab.train.engine import build_model_and_data
    from inceptionlab.train.setup import amp_dtype, amp_setting

    if (run is None) == (model is None):
        raise UserError("evaluate needs either run=RUN_DIR or model=NAME (with weights=FILE), "
                        + ("not both" if run is not None else "got neither"))
    amp = amp_setting(amp)  # before the work: any value had meant bf16, "false" too
    if all_images and val_split is not None:
        raise UserError("all_images scores every image, so a val_split would not be used; drop one of them")
    other_data = False  # a run scored on a folder it was not trained on
    if run is not None:
        # the run's own weights, switches, size, split and seed: refused rather than ignored (they were,
        # in Python, where the command line refused them)
        given = [name for name, value in (("weights", weights), ("model_kwargs", model_kwargs or None),
                                          ("img_size", img_size), ("val_split", val_split),
                                          ("seed", seed or None)) if value is not None]
        if given:
            raise UserError(f"run= evaluates the run as it was trained; drop {given[0]} (or evaluate "
                            f"model={str(run)!r} with your own settings)")
        cfg, weights_file, used = _run_weights(Path(run), data, ema)
        other_data = not _same_folder(data, TrainConfig.from_yaml(Path(run) / "config.yaml").data)
        if all_images and not other_data:
            raise UserError("all_images scores every image of the data, and the run trained on most of this data; "
                            "pass a test folder as data (the run's own val split is what it scores without "
                            "all_images)")
        # scores of other data go beside the run's own, not over them
        out = (Path(out) if out is not None else
               _other_data_folder(Path(run), data if other_data else None, all_images, raw=not ema)
               if other_data or not ema else Path(run))
    else:
        if Path(str(model)).suffix.lower() in (".onnx", ".pt2"):
            raise UserError(f"{model} is an export; eval runs PyTorch weights: pass the run folder or weights "
                            f"file it was exported from (predict runs exports)")
        if weights is None and not is_saved_folder(model):
            folder = f"; ./{model} is a folder here: pass ./{model} to use it" if Path(str(model)).is_dir() else ""
            raise UserError(f"evaluating {model} needs its weights, --weights FILE (random weights would mean "
                            f"nothing){folder}")
        trained_run = (_run_folder(weights) if weights is not None else
                       _run_folder(model) if is_saved_folder(model) else None)
        if not ema:  # the raw weights are only in checkpoints, which keep both
            weights = _raw_weights_checkpoint(model, weights, trained_run)
        if data is None and trained_run is not None and \
                TrainConfig.from_yaml(trained_run / "config.yaml").data is not None:  # it was scored on the digits
            raise UserError(f"{trained_run} is a training run: eval --run {trained_run} scores its own validation "
                            f"split; to score other images, pass them as data")
        if weights is not None and not is_saved_folder(model):
            from inceptionlab.models.registry import saved_directory
            # the model.safetensors of a saved run brings its config.json (switches, classes, size), as
            # in predict and export: eval failed with "does not fit" where predict worked
            model = str(saved_directory(model, weights) or model)
        cfg = TrainConfig(model=str(model), data=None if data is None else str(data), epochs=1,
                          model_kwargs=dict(model_kwargs or {}), img_size=img_size, val_split=val_split,
                          seed=seed, weights=None if weights is None else str(weights)).resolved()
        weights_file, used = cfg.weights, "weights file" if weights is not None else "pretrained directory"
        if weights is None and trained_run is not None:  # a run folder as the model: its final weights
            used = "training run's final weights" + (" (EMA)" if _run_kept_ema(trained_run) else "")
        base = Path(weights).parent if weights is not None else Path(model)
        if base.name == "checkpoints":  # a run's checkpoint: its scores go beside the run's, not among checkpoints
            base = base.parent
        out = (Path(out) if out is not None else
               _other_data_folder(base, data, all_images, raw=not ema, weights=weights)
               if data is not None or not ema else base)
    if out.exists() and not out.is_dir():  # before the evaluation, not after it
        raise UserError(f"{out} is a file; pass --out a folder for eval.json and the confusion matrix")
    # a folder that cannot be made was Python's "[Errno 2] ...", after the evaluation; checked without
    # making it (a failed evaluation leaves no empty folder)
    existing = next(part for part in (out.absolute(), *out.absolute().parents) if part.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = f"{existing} is a file, not a folder" if not existing.is_dir() else f"{existing} is not writable"
        raise UserError(f"cannot write to output folder {out}: {why}; pass a writable --out")
    if cfg.data is not None:  # (its eval.json and confusion_matrix.png went among the images)
        folder = Path(str(cfg.data)).expanduser().resolve()
        if out.expanduser().resolve() == folder or folder in out.expanduser().resolve().parents:
            raise UserError(f"the output folder {out} is inside the data folder {cfg.data}; pass an --out outside it")
    # a run's own config.json records the input convention it trained with (a fine-tune of a run kept that
    # run's, not the card's); without it, whether its config.yaml names weights it started from
    pretrained = Path(run) if run is not None and (Path(run) / "config.json").is_file() else cfg.weights is not None
    cfg = cfg.replace(weights=None, augment=False)
    trained_from = weights_file if weights_file is not None else (model if is_saved_folder(model) else None)
    trained = trained_classes(Path(trained_from)) if trained_from is not None else None
    # (a save_pretrained folder as --model too: it was built with the data's class count, and its
    # config.json's num_classes=1000 refused that as "drop --model-kwargs num_classes=4")
    count = _unnamed_classifier_size(trained_from) if trained_from is not None and trained is None else None
    source = str(cfg.data) if cfg.data else "the embedded digits"

    def model_classes(splits) -> list[str]:
        """The weights' classes, named as the data names them where it has them."""
        if count == 1000:  # ImageNet's classifier: its classes by the names predict prints
            return _imagenet_classes_of(splits.classes, source)
        if count is not None and count != len(splits.classes):  # its fix, num_classes, met "taken from the data"
            beside = "no class names in its config.json" if is_saved_folder(trained_from) else "no config.json beside it"
            raise UserError(f"{trained_from} has a {count}-class classifier without class names ({beside}), and "
                            f"{source} has {len(splits.classes)} classes: unnamed classes are scored by position, so "
                            f"the data must hold the {count} classes it learned, in that order")
        return _check_classes(trained, splits.classes, source) or splits.classes
    # weights of named classes: the model keeps all of them, and the data's classes (all of them, or
    # some, in any order) are scored by name
    named = trained is not None or count == 1000
    # (--all-images holds nothing out: a test folder of one image per class was refused, "too few images to
    # hold out a validation split")
    splits, net, size = build_model_and_data(
        cfg, classes_of=lambda splits: len(model_classes(splits)), pretrained=pretrained,
        min_classes=1 if named else 2, hold_out=not all_images, scoring=True)  # named classes: a folder of one is a test
    classes = model_classes(splits)
    label_map = None
    if classes != splits.classes:
        label_map = torch.tensor([classes.index(name) for name in splits.classes])
    scored_file, scored_ema = weights_file, None  # what eval.json says was scored
    if weights_file is not None:
        scored_ema = _load_eval_weights(net, weights_file, cfg, len(classes), ema)
        if scored_ema is not None and run is None:  # a checkpoint given as --weights: which of its weights
            used = ("checkpoint, EMA weights" if scored_ema else
                    "checkpoint, raw weights (not the EMA)" if not ema else "checkpoint")
    else:  # a folder written by save_pretrained or training: its model.safetensors
        scored_file = Path(str(model)) / "model.safetensors"
    if scored_ema is None:  # a run's model.safetensors: the EMA where the run kept one
        folder = _run_folder(scored_file) if scored_file is not None else None
        scored_ema = _run_kept_ema(folder) if folder is not None else None
    if scored_ema and "EMA" not in used:
        used += " (EMA)"
    from inceptionlab.data import make_loader

    scored, source = splits.val, splits.source
    if all_images:
        scored = splits.every_image()
        source = f"{splits.origin}, every image"  # (a count here included the unreadable files)
    if limit_per_class is not None:
        from inceptionlab.data.datasets import limited

        scored = limited(scored, limit_per_class, cfg.seed)
        source += f"; at most {limit_per_class} per class"
    loader = make_loader(scored, batch_size, train=False, workers=workers, seed=cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = run_eval(net.to(device), loader, device, num_classes=len(classes), amp_dtype=amp_dtype(amp, device),
                      label_map=label_map, progress=None if quiet else _Progress(len(loader), len(scored)))
    skipped = getattr(scored, "skipped", None)
    if result.count == 0:
        raise UserError(f"no image of {splits.origin if all_images else source} could be read ({skipped.summary() if skipped else 'none'}); "
                        f"check the data folder")
    accuracy = dict(zip(classes, result.per_class_accuracy()))
    # the classes the data has; eval.json keeps 3 places, the lines printed below the unrounded values
    per_class = {name: None if accuracy[name] is None else round(accuracy[name], 3) for name in splits.classes}
    try:
        csv_path, png_path = write_confusion(result.confusion, classes, out, rows=splits.classes)
    except OSError as exc:  # (an unwritable place was Python's "[Errno 2] ...")
        from inceptionlab.files import why_not_writable
        raise UserError(f"cannot write to output folder {out}: {why_not_writable(out, exc)}; pass a writable "
                        f"--out") from None
    report = dict(top1=round(result.top1, 3), top5=None if result.top5 is None else round(result.top5, 3), loss=round(result.loss, 6),
                  images=result.count, per_class=per_class, classes=splits.classes, model=cfg.model,
                  model_classes=classes,
                  weights=str(scored_file) if scored_file else None, weights_kind=used, ema=scored_ema,
                  img_size=size, crop_pct=(getattr(net, "pretrained_cfg", None) or {}).get("crop_pct"),
                  data_source=source, data=str(Path(str(cfg.data)).expanduser().resolve()) if cfg.data else None,
                  confusion_csv=str(csv_path), confusion_png=str(png_path),
                  skipped_files=[dict(path=path, reason=reason) for path, reason in (skipped or ())],
                  architecture=getattr(net, "name", cfg.model), all_images=all_images, amp=amp, batch_size=batch_size,
                  limit_per_class=limit_per_class)
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    if not quiet:
        subset = (f"; {len(splits.classes)} of its {len(classes)} classes, matched by name"
                  if len(classes) != len(splits.classes) else "")
        top5 = f"top5 {result.top5:.2f}%  " if result.top5 is not None else ""  # none with <= 5 classes
        print(f"{report['architecture']} on {source}: top1 {result.top1:.2f}%  {top5}"
              f"loss {result.loss:.4f}  ({result.count} image{'s' if result.count != 1 else ''}, {used}{subset})")
        if other_data and not all_images:
            print(f"  (only its validation split was scored; --all-images scores every image of {data})")
        if skipped:  # not scored, and said so: the image count alone hid them
            print(f"  {skipped.summary()} (listed in eval.json)")
        print(f"  wrote {out / 'eval.json'} and the confusion matrix beside it")
        width = max(len(name) for name in splits.classes)
        for name in splits.classes:
            shown = "-" if accuracy[name] is None else f"{accuracy[name]:6.2f}%"
            print(f"  {name:<{width}}  {shown}")
    return report


def _unnamed_classifier_size(weights_file) -> int | None:
    """The class count of a weights file's classifier (None: it has none), 1000 for TF-slim's 1001
    (its background class is dropped on load)."""
    from inceptionlab.models.weights import classifier_size

    count = classifier_size(Path(weights_file) / "model.safetensors" if Path(weights_file).is_dir() else weights_file)
    return 1000 if count == 1001 else count


def _imagenet_key(name: str) -> str:
    """A class name as folders and ImageNet's list both write it: case, "_" and " " aside."""
    return name.replace("_", " ").casefold()


def _imagenet_classes_of(data_classes: list[str], source: str) -> list[str]:
    """ImageNet's 1000 class names (those predict prints), each of the data's class folders in its
    place under the folder's own name (great_white_shark for "great white shark"); a one-line error
    for folders of no ImageNet name, or of a name ImageNet gives two classes (crane, maillot)."""
    from inceptionlab.tools.predict import imagenet_classes

    names = list(imagenet_classes())
    unknown, twice = [], []
    for folder in data_classes:
        places = [i for i, name in enumerate(names) if name == folder] or \
                 [i for i, name in enumerate(names) if _imagenet_key(name) == _imagenet_key(folder)]
        if len(places) == 1:
            names[places[0]] = folder
        else:
            (twice if places else unknown).append(folder)
    if unknown:
        raise UserError(f"{source} has {len(unknown)} class folder(s) that are no ImageNet class ({listed(unknown)}); "
                        f"the weights have ImageNet's 1000-class classifier without class names, so folders must be "
                        f"named by the ImageNet class names as predict prints them (e.g. great_white_shark or "
                        f"'great white shark'; WordNet ids such as n01440764 are not known here)")
    if twice:
        raise UserError(f"{source} has class folder(s) named like two ImageNet classes ({listed(twice)}), which "
                        f"cannot be told apart by name; leave them out of the data")
    return names


def _run_weights(run: Path, data, ema: bool = True) -> tuple:
    """(config, weights file, which weights) of a run directory; with ``ema=False`` its latest
    checkpoint, whose raw weights the final model.safetensors (the EMA) does not hold."""
    from inceptionlab.train.checkpoint import CheckpointDir
    from inceptionlab.train.config import TrainConfig

    if not (run / "config.yaml").is_file():
        raise UserError(f"{run} is not a training run (no config.yaml); pass the --out folder of `inceptionlab train`")
    cfg = TrainConfig.from_yaml(run / "config.yaml")
    if data is not None:
        cfg = cfg.replace(data=str(data))
    elif cfg.data is not None and not Path(str(cfg.data)).expanduser().exists():
        raise UserError(f"the run's data folder {cfg.data} is gone; pass --data with its new place (or other "
                        f"images of the same classes)")
    if not ema:
        return cfg, _raw_weights_checkpoint(run, None, run), "latest checkpoint, raw weights (not the EMA)"
    final = run / "model.safetensors"
    if final.is_file():
        return cfg, final, "final weights (EMA)" if cfg.ema_decay else "final weights"
    latest = CheckpointDir(run / "checkpoints").latest()
    if latest is None:
        raise UserError(f"{run} has neither model.safetensors nor a checkpoint; train it first")
    return cfg, latest, "latest checkpoint (EMA)" if cfg.ema_decay else "latest checkpoint"


def _check_classes(trained: list[str] | None, data_classes: list[str], source: str) -> list[str] | None:
    """The weights' classes (None for weights of unnamed classes), when each of the data's classes
    is one of them: scored by name, in any order, all or some. A class the weights never saw cannot
    be scored (folders of other names were once scored by position, bird against frog)."""
    if trained is None:
        return None
    only_data = [c for c in data_classes if c not in trained]
    if not only_data:
        return list(trained)
    raise UserError(f"{source} has {len(only_data)} class(es) that the weights were not trained on "
                    f"({listed(only_data)}; they know {listed(trained)}); evaluate on folders named after "
                    f"the model's classes")


def _run_kept_ema(run: Path) -> bool:
    """Whether the training run ``run`` kept an EMA of its weights (its model.safetensors is then the EMA)."""
    from inceptionlab.train.config import TrainConfig

    return bool(TrainConfig.from_yaml(run / "config.yaml").ema_decay)


def _is_checkpoint(path) -> bool:
    """A run's checkpoint (RUN/checkpoints/*.pt), which holds the raw weights and the EMA's, if any."""
    path = Path(str(path))
    return path.suffix == ".pt" and path.parent.name == "checkpoints"


def _raw_weights_checkpoint(model, weights, trained_run: Path | None):
    """The checkpoint whose raw weights ``ema=False`` scores: ``weights`` when it is a checkpoint, the
    latest checkpoint of a run folder given as ``model``; a one-line error for anything else (a
    weights file or a save_pretrained folder holds one set of weights)."""
    from inceptionlab.train.checkpoint import CheckpointDir

    if weights is not None:
        if not _is_checkpoint(weights):
            raise UserError(f"--no-ema takes the raw weights of a checkpoint (RUN/checkpoints/*.pt keeps them "
                            f"beside the EMA); {weights} holds one set of weights: drop --no-ema, or pass a checkpoint")
        return weights
    if trained_run is None:
        raise UserError(f"--no-ema takes the raw weights of a checkpoint, and {model} is not a training run; "
                        f"pass --weights RUN/checkpoints/FILE.pt, or drop --no-ema")
    if not _run_kept_ema(trained_run):
        raise UserError(f"{trained_run} kept no EMA (it trained without ema_decay), so its weights are the raw "
                        f"ones already; drop --no-ema")
    latest = CheckpointDir(trained_run / "checkpoints").latest()
    if latest is None:
        raise UserError(f"{trained_run} has no checkpoint, and only checkpoints keep the raw weights beside the "
                        f"EMA (model.safetensors is the EMA); drop --no-ema to use the EMA weights")
    return latest


def _load_eval_weights(net: nn.Module, path, cfg, num_classes: int, ema: bool = True) -> bool | None:
    """Loads ``path`` into ``net``; for a checkpoint, returns whether its EMA weights were loaded (they
    are, where it kept them, unless ``ema`` is False); None for a weights file, which holds one set."""
    from inceptionlab.models.weights import classifier_required, load_weights
    from inceptionlab.train.checkpoint import load_checkpoint

    path = Path(path)
    if _is_checkpoint(path):
        state = load_checkpoint(path)
        use_ema = ema and state.get("ema") is not None
        if not ema:
            _check_kept_ema(state, path)
        try:
            net.load_state_dict(state["ema"] if use_ema else state["model"])
        except RuntimeError:  # (a dump of every mismatched key before)
            run = path.parent.parent
            trained = (state.get("config") or {}).get("model_kwargs") or {}
            switches = " ".join(f"{k}={v}" for k, v in trained.items())
            raise UserError(f"checkpoint {path} does not fit {cfg.model} as built here: it was trained as "
                            f"{(state.get('config') or {}).get('model', '?')}" + (f" with {switches}" if switches else "")
                            + f"; evaluate it with --model {run} --weights {path} (and --data)") from None
        return use_ema
    file = path / "model.safetensors" if path.is_dir() else path
    with classifier_required():  # (a file without one was scored on a random classifier, with a warning)
        load_weights(net, file)
    return None


def _check_kept_ema(state: dict, path) -> None:
    """A one-line error for ``ema=False`` on a checkpoint that kept no EMA: its weights are the raw ones."""
    if state.get("ema") is None:
        raise UserError(f"checkpoint {path} kept no EMA (its run trained without ema_decay), so its weights "
                        f"are the raw ones already; drop --no-ema")


def raw_weights(model, weights) -> tuple[Path, dict]:
    """(checkpoint, its raw weights, not the EMA) that ``ema=False`` (--no-ema) means for ``model``
    (a run folder: its latest checkpoint) or ``weights`` (a checkpoint), as eval takes them; a
    one-line error where they are not beside an EMA. For predict and export, which loaded a
    checkpoint's EMA whenever it had one."""
    from inceptionlab.train.checkpoint import load_checkpoint

    trained_run = _run_folder(weights) if weights is not None else _run_folder(model)
    path = Path(_raw_weights_checkpoint(model, weights, trained_run))
    state = load_checkpoint(path)
    _check_kept_ema(state, path)
    return path, state["model"]


def weights_kept_ema(path) -> bool | None:
    """Whether the weights in ``path`` are an EMA: a checkpoint's where it kept one (they are the
    ones loaded), a run's model.safetensors where the run kept one; None for weights from elsewhere."""
    from inceptionlab.train.checkpoint import load_checkpoint

    path = Path(str(path))
    if _is_checkpoint(path):
        return load_checkpoint(path).get("ema") is not None
    run = _run_folder(path)
    return _run_kept_ema(run) if run is not None else None


PLOTTED_COLUMNS = 40  # more predicted classes than this: the plot keeps the rows' and the most predicted others


def _plotted_columns(confusion: torch.Tensor, classes: list[str], rows: list[str]) -> tuple[list[str], torch.Tensor]:
    """The columns the plot shows: all of them when few; else the true classes' own, then the other
    classes predicted most while they fit, then one "other" column for the rest. (Three ImageNet
    folders against 1000 columns drew a hairline strip without a name.)"""
    if len(classes) <= PLOTTED_COLUMNS or len(rows) >= PLOTTED_COLUMNS:
        return classes, confusion
    keep = [classes.index(name) for name in rows]
    counts = confusion.sum(dim=0)
    others = [j for j in counts.argsort(descending=True, stable=True).tolist() if counts[j] and j not in keep]
    keep += others[:PLOTTED_COLUMNS - 1 - len(keep)]
    rest = [j for j in range(len(classes)) if j not in keep]
    columns = [confusion[:, keep], confusion[:, rest].sum(dim=1, keepdim=True)]
    return [classes[j] for j in keep] + [f"other ({len(rest)})"], torch.cat(columns, dim=1)


def write_confusion(confusion: torch.Tensor, classes: list[str], out, rows: list[str] | None = None) -> tuple[Path, Path]:
    """``confusion_matrix.csv`` and ``confusion_matrix.png`` in ``out``: a row per true class of
    ``rows`` (default: all), a column per predicted class of ``classes``."""
    rows = list(classes) if rows is None else list(rows)
    confusion = confusion[[classes.index(name) for name in rows]]  # len(rows) x len(classes)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "confusion_matrix.csv", out / "confusion_matrix.png"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["true \\ predicted", *classes])
    for name, row in zip(rows, confusion.tolist()):
        writer.writerow([name, *row])
    csv_path.write_text(buffer.getvalue())

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes, confusion = _plotted_columns(confusion, classes, rows)
    k, r = len(classes), len(rows)
    size = min(4 + 0.35 * k, 24)
    fig, ax = plt.subplots(figsize=(size, min(4 + 0.35 * r, 24)))
    rates = confusion.float() / confusion.sum(dim=1, keepdim=True).clamp(min=1)
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    if k <= 40:
        ax.set_xticks(range(k), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(r), rows, fontsize=8)
    if k <= 20:
        for i in range(r):
            for j in range(k):
                if confusion[i, j]:
                    ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row-normalized colour, counts)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return csv_path, png_path
