"""``inceptionlab export``: a model as ONNX or a ``torch.export`` program, batch norm folded.

    inceptionlab export inception_v3 --weights v3.safetensors --format onnx --out v3.onnx
    inceptionlab export runs/cifar --format pt2 --out model.pt2     # a directory from training
    inceptionlab export runs/flowers_v4 --format timm --out v4.safetensors   # weights for timm's own model

The batch size of the exported model is dynamic; the image size is fixed (``--size``, default the
model's). After an ONNX export the file is run in onnxruntime (when installed) and its logits are
compared with PyTorch's.

``--format timm|torchvision`` writes the weights as a state dict in that library's key layout instead
(nothing folded, aux heads kept), for its own model of the architecture and class count; when the
library is installed, its model loads the file (strict) and its logits are compared with ours.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from inceptionlab.commands.predict import add_no_ema
from inceptionlab.commands.summary import add_model_kwargs, add_threads, apply_threads, check_size_flag, image_size
from inceptionlab.errors import UserError
from inceptionlab.files import why_not_writable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a registered model name, or a directory written by training (save_pretrained)")
    parser.add_argument("--weights", default=None,
                        help="a state dict (.pth/.safetensors; ours, torchvision's or timm's), or a training "
                             "checkpoint (RUN/checkpoints/best.pt; one that kept an EMA means its EMA weights, "
                             "--no-ema its raw ones); without it the model keeps its random initialization")
    parser.add_argument("--format", choices=("onnx", "pt2", "timm", "torchvision"), default=None,
                        help="default: by --out's suffix (.pt2 a torch.export program, else ONNX); timm or "
                             "torchvision: the weights as a state dict (.pth or .safetensors) in that library's "
                             "key layout, for its own model (timm: inception_v3/v4/resnet_v2; torchvision: "
                             "googlenet, inception_v3)")
    parser.add_argument("--out", required=True, help="the file to write (.onnx, .pt2; .pth or .safetensors with "
                                                     "--format timm|torchvision)")
    parser.add_argument("--size", "--img-size", type=image_size, default=None,
                        help="input height and width (default: the model's; --img-size as train and eval name it)")
    parser.add_argument("--no-check", action="store_true", help="skip running the exported file against PyTorch")
    parser.add_argument("--overwrite", action="store_true", help="replace a file already at --out (after the "
                                                                 "new one passed its check)")
    add_no_ema(parser)
    add_threads(parser, onnxruntime=True)
    add_model_kwargs(parser)


def run(args: argparse.Namespace) -> int:
    from inceptionlab.commands.predict import load_model, note_other_size
    from inceptionlab.models.registry import is_saved_folder
    from inceptionlab.tools import export

    apply_threads(args)
    args.format = export.format_of(args.out, args.format)
    export.output_path(args.out, args.format)  # a wrong --out fails now, not after the export
    state_dict = args.format in export.STATE_DICT_FORMATS
    if state_dict and args.size is not None:
        raise UserError(f"--size sets an export's fixed input size; a {args.format} state dict has none: drop --size")
    folder = Path(args.out).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write in {folder}: {why_not_writable(folder, exc)}; "
                        f"pass an --out in a writable folder") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write in {folder}: permission denied; pass an --out in a writable folder")
    if Path(args.out).exists() and not args.overwrite:
        raise UserError(f"{args.out} already exists; pass --overwrite to replace it (the new file replaces it only "
                        f"after passing its check), or another --out")
    if args.weights is not None and not Path(args.weights).exists():
        raise UserError(f"weights file {args.weights} does not exist; pass a .safetensors/.pth/.pt file or a run "
                        f"folder")
    model, used = load_model(args)
    model.eval()
    export.check_exportable(model)  # (before the random-weights note: a features_only model was refused after it)
    check_size_flag(model, args.size)
    if args.weights is not None or is_saved_folder(args.model):  # (random weights have no size of their own)
        note_other_size(model, args.size, trained=args.weights is None, what_for="its answers")
    if state_dict:
        from inceptionlab.models.layouts.reference import reference_name
        reference_name(model, args.format)  # another architecture or switches fail now, before any writing
    if args.weights is None and not is_saved_folder(args.model):
        print(f"note: no --weights given, exporting {args.model} with random weights", file=sys.stderr)
    from inceptionlab.train.evaluation import weights_kept_ema
    # the file says whether it holds a run's EMA or its raw weights (predict --json repeats it), and
    # whether they are random (predict refuses such a file, as it refuses a model name without --weights)
    model.pretrained_cfg = {**model.pretrained_cfg, "ema": None if used is None else
                            weights_kept_ema(used) if args.ema else False, "random_weights": used is None}
    checked = [] if not args.no_check else ["not checked (--no-check): the file was not run against PyTorch"]

    def check(written: Path) -> None:
        """Runs the written file against PyTorch before it replaces anything at --out."""
        if state_dict:
            theirs = _reference_runner(model, args.format, written)
            if theirs is None:
                checked.append(f"not checked: {args.format} is not installed here")
                return
            what = f"{args.format}'s {theirs.__class__.__name__} with the file loaded (strict)"

            def runner(x):  # (timm's inception_v3 with aux heads gives (logits, aux) in eval mode too)
                out = theirs(x)
                return out[0] if isinstance(out, tuple) else out
        elif args.format == "onnx":
            try:
                runner = export.OnnxModel(written)
            except UserError as exc:
                checked.append(f"not checked: {exc}")
                return
            what = "onnxruntime"
        else:
            runner, _ = export.load_pt2(written)
            what = "the loaded program"
        diff, largest = export.logit_difference(runner, model, args.size)
        allowed = export.allowed_difference(largest)
        output = export.output_name(model)[:-1] if export.output_name(model) == "features" else "logit"
        checked.append(f"checked: {what} against PyTorch, max |{output} difference| {diff:.2e} (largest |{output}| "
                       f"{largest:.3g}, allowed {allowed:.1e})")
        if diff > allowed:
            raise UserError(f"the exported file's {output}s differ from PyTorch's by {diff:.2e} (> {allowed:.1e}); "
                            f"nothing was written to {args.out}")
    path = export.export(model, args.out, args.format, args.size, check=None if args.no_check else check)
    size = args.size or model.pretrained_cfg["input_size"][-1]
    if state_dict:
        from inceptionlab.models.layouts.reference import reference_constructor, reference_name
        name = reference_name(model, args.format)[1]
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {args.format}'s {name} state dict, "
              f"{model.num_classes} classes, input {size}x{size}, mean "
              f"{_rounded(model.pretrained_cfg.get('mean'))}, std {_rounded(model.pretrained_cfg.get('std'))} (not in "
              f"the file: give them to {args.format}'s preprocessing)")
        # (torchvision's defaults, aux heads on, refused the file in a strict load)
        print(f"load it into {reference_constructor(model, args.format)}")
    else:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {args.format}, input N x {model.in_chans} x "
              f"{size} x {size} (N dynamic), batch norm folded")
    for line in checked:
        print(line)
    return 0


def _rounded(values) -> str:
    return "-" if not values else "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _reference_runner(model, library: str, written: Path):
    """``library``'s own model with the written state dict loaded (strict), in eval mode, or None
    when the library is not installed."""
    from inceptionlab.models.layouts.reference import reference_model
    from inceptionlab.models.weights import read_state_dict

    try:
        __import__(library)
    except ImportError:
        return None
    theirs = reference_model(model, library).eval()
    theirs.load_state_dict(read_state_dict(written), strict=True)
    return theirs
