"""``inceptionlab predict``: the top-k classes of images, with class names.

    inceptionlab predict --model inception_v3 --weights v3.pth photo.jpg holidays/
    inceptionlab predict --model runs/flowers holidays/ --top-k 3 --json   # a run: its final weights
    inceptionlab predict --model runs/flowers --weights runs/flowers/checkpoints/best.pt holidays/
    inceptionlab predict --model flowers.onnx holidays/        # an export: onnxruntime, its own metadata

``--model`` is a registered name (then ``--weights`` gives a state dict: ours, torchvision's or
timm's), a directory written by training, whose config.json holds the class names, or a file
that ``inceptionlab export`` wrote, whose metadata holds the preprocessing and class names (an export of
random weights, written without ``--weights``, is refused, as a model name without ``--weights`` is). Files
that are not readable images are reported (stderr, or ``"skipped"`` in the JSON) and skipped.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from inceptionlab.commands.summary import (add_model_kwargs, add_threads, apply_threads, check_size_flag, image_size,
                                          parse_model_kwargs, positive_int)
from inceptionlab.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files and folders of images")
    parser.add_argument("--model", required=True,
                        help="a registered model name, a directory written by training (save_pretrained), "
                             "or a file that inceptionlab export wrote (.onnx, run in onnxruntime, or .pt2)")
    parser.add_argument("--weights", default=None,
                        help="a state dict file (.pth/.safetensors) for --model NAME, or a training checkpoint "
                             "(RUN/checkpoints/best.pt: the best evaluation's weights; a checkpoint that kept an "
                             "EMA means its EMA weights, --no-ema its raw ones; --model RUN alone uses the "
                             "run's final weights)")
    parser.add_argument("--top-k", type=positive_int, default=5, help="classes shown per image (default: 5)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default: 16)")
    parser.add_argument("--size", "--img-size", type=image_size, default=None,
                        help="input size (default: the model's; --img-size as train and eval name it)")
    parser.add_argument("--json", action="store_true",
                        help='one JSON document on stdout, for machines: {"model", "weights" (the file used), '
                             '"ema" (whether its EMA weights were used; null: not known, weights from elsewhere), '
                             '"results": [{"image", "predictions": [{"index", "class", "probability"}]}], '
                             '"skipped": [{"image", "error"}]}, in the order given; probabilities to 6 places')
    add_no_ema(parser)
    add_threads(parser, onnxruntime=True)
    add_model_kwargs(parser)


def add_no_ema(parser: argparse.ArgumentParser) -> None:
    """--no-ema, as eval has it: a checkpoint's raw weights (--weights meant its EMA whenever it kept one)."""
    parser.add_argument("--no-ema", dest="ema", action="store_false",
                        help="use the raw weights, not the EMA, of a run that kept one (train --ema-decay): a "
                             "checkpoint's 'model' weights. With --model RUN_DIR its latest checkpoint, the final "
                             "step of a finished run (model.safetensors holds that step's EMA); for another, e.g. "
                             "the best, pass --weights RUN_DIR/checkpoints/best.pt --no-ema")


def load_model(args: argparse.Namespace, classifier: bool = False):
    """(model, weights file used: None for none) of --model, --weights, --no-ema and --model-kwargs
    (the CLI's error handler words their errors in flags). ``classifier``: weights without one are refused (its class
    scores would be random)."""
    from inceptionlab.models.registry import saved_directory, create_model, is_saved_folder
    from inceptionlab.models.weights import classifier_required
    from inceptionlab.train.evaluation import raw_weights

    name, weights = args.model, args.weights
    used = weights if weights is not None else Path(name) / "model.safetensors" if is_saved_folder(name) else None
    with classifier_required() if classifier else contextlib.nullcontext():
        if not args.ema:  # the checkpoint's 'model' entry, in memory: the file itself loads as its EMA
            used, weights = raw_weights(args.model, args.weights)
            # (a run folder as --model with its checkpoint as --weights: "unknown model 'run1'")
            name = args.model if is_saved_folder(args.model) else str(saved_directory(args.model, args.weights)
                                                                        or args.model)
        model = create_model(name, weights=weights, **parse_model_kwargs(args.model_kwargs))
    return model, None if used is None else str(used)


def note_other_size(model, size: int | None, trained: bool, what_for: str = "predictions") -> None:
    """A note on stderr for ``--size`` other than the model's own input size (it was silent: a run
    trained at 28x28 and asked at 64x64 answers, often worse). ``what_for``: what will run at that size."""
    own = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    if size is None or not own or tuple(own[-2:]) == (size, size):
        return
    what = "its config.json's, the size it was trained at" if trained else "its configured input size"
    print(f"note: --size {size}: the model's input size is {own[-2]}x{own[-1]} ({what}); {what_for} at another "
          f"size may be worse: drop --size to use it", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from inceptionlab.models.registry import create_model, is_saved_folder, list_models
    from inceptionlab.tools.export import EXPORTED_SUFFIXES, ExportedClassifier
    from inceptionlab.tools.predict import Prediction, format_prediction, iter_predictions, predict

    apply_threads(args)
    exported = Path(args.model).suffix.lower() in EXPORTED_SUFFIXES
    if exported:  # an export holds its weights, switches, preprocessing and class names
        if args.weights is not None or args.model_kwargs or not args.ema:
            raise UserError(f"{args.model} is an export: it holds its weights and switches; drop --weights"
                            f"{', --no-ema' if not args.ema else ''} and --model-kwargs")
        model, used = ExportedClassifier(args.model), args.model
        if model.pretrained_cfg.get("random_weights") is True:  # (it printed their predictions without a word)
            raise UserError(f"{args.model} holds random weights (exported without --weights; predictions of random "
                            f"weights mean nothing); export it again with --weights FILE")
    elif args.weights is None and not is_saved_folder(args.model):
        if args.model not in list_models():
            create_model(args.model)  # an unknown name: its error, with the closest names
        folder = (f"; ./{args.model} is a folder here: pass --model ./{args.model} to use it"
                  if Path(args.model).is_dir() else ", or pass a directory written by training as --model")
        raise UserError(f"--model {args.model} needs --weights FILE (predictions of random weights mean "
                        f"nothing){folder}")
    else:  # (weights without a classifier ran on a random one, with a warning)
        model, used = load_model(args, classifier=True)
    check_size_flag(model, args.size)
    if not exported:  # (an export refuses another size itself)
        note_other_size(model, args.size, trained=args.weights is None)
    options = dict(top_k=args.top_k, batch_size=args.batch_size, size=args.size, fast=not exported)
    classes = getattr(model, "num_classes", None)
    if classes and args.top_k > classes:  # (it showed fewer rows without a word)
        print(f"note: --top-k {args.top_k}: the model has {classes} classes; all of them are shown",
              file=sys.stderr)
    if args.json:
        preds = predict(model, args.images, **options)
        from inceptionlab.train.evaluation import weights_kept_ema

        # as eval.json says it; an exported file, as its export recorded it
        ema = model.pretrained_cfg.get("ema") if exported else weights_kept_ema(used) if args.ema else False
        doc = {"model": args.model, "weights": used, "ema": ema,
               "results": [p.as_dict() for p in preds.results],
               "skipped": [{"image": str(path), "error": reason} for path, reason in preds.skipped]}
        print(json.dumps(doc, indent=1))
        answered, skipped = len(preds.results), len(preds.skipped)
    else:  # each batch printed as it is done
        answered = skipped = 0
        for item in iter_predictions(model, args.images, **options):
            if isinstance(item, Prediction):
                print(format_prediction(item), flush=True)
                answered += 1
            else:
                print(f"skipped {item[0]}: {item[1]}", file=sys.stderr, flush=True)
                skipped += 1
    if not answered:
        if not skipped:
            raise UserError(f"{' '.join(args.images)} holds no files (hidden files are left out); name image files "
                            f"or folders of images")
        raise UserError(f"none of the {skipped} files given is a readable image")
    return 0
