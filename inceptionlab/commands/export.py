"""``inceptionlab export``: a model as ONNX or a ``torch.export`` program, batch norm folded.

    inceptionlab export inception_v3 --weights v3.safetensors --format onnx --out v3.onnx
    inceptionlab export runs/cifar/best --format pt2 --out model.pt2     # a directory from training

The batch size of the exported model is dynamic; the image size is fixed (``--size``, default the
model's). After an ONNX export the file is run in onnxruntime (when installed) and its logits are
compared with PyTorch's.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from inceptionlab.commands.summary import add_model_kwargs, image_size, parse_model_kwargs, positive_int
from inceptionlab.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a registered model name, or a directory written by training (save_pretrained)")
    parser.add_argument("--weights", default=None,
                        help="a state dict (.pth/.safetensors; ours, torchvision's or timm's); "
                             "without it the model keeps its random initialization")
    parser.add_argument("--format", choices=("onnx", "pt2"), default=None,
                        help="default: by --out's suffix (.pt2 a torch.export program, else ONNX)")
    parser.add_argument("--out", required=True, help="the file to write (.onnx or .pt2)")
    parser.add_argument("--size", type=image_size, default=None, help="input height and width (default: the model's)")
    parser.add_argument("--no-check", action="store_true", help="skip running the exported file against PyTorch")
    add_model_kwargs(parser)


def run(args: argparse.Namespace) -> int:
    from inceptionlab.models.registry import create_model
    from inceptionlab.tools import export

    args.format = export.format_of(args.out, args.format)
    export.output_path(args.out, args.format)  # a wrong --out fails now, not after the export
    if args.weights is not None and not Path(args.weights).is_file():
        raise UserError(f"weights file {args.weights} does not exist")
    model = create_model(args.model, weights=args.weights, **parse_model_kwargs(args.model_kwargs)).eval()
    if args.weights is None and not Path(args.model).is_dir():
        print(f"note: no --weights given, exporting {args.model} with random weights")
    path = export.export(model, args.out, args.format, args.size)
    size = args.size or model.pretrained_cfg["input_size"][-1]
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {args.format}, input N x {model.in_chans} x "
          f"{size} x {size} (N dynamic), batch norm folded")
    if args.no_check:
        return 0
    if args.format == "onnx":
        try:
            runner = export.OnnxModel(path)
        except UserError as exc:
            print(f"not checked: {exc}")
            return 0
        what = "onnxruntime"
    else:
        runner, _ = export.load_pt2(path)
        what = "the loaded program"
    diff, largest = export.logit_difference(runner, model, args.size)
    allowed = export.allowed_difference(largest)
    print(f"checked: {what} against PyTorch, max |logit difference| {diff:.2e} (largest |logit| {largest:.3g}, "
          f"allowed {allowed:.1e})")
    if diff > allowed:
        raise UserError(f"the exported file's logits differ from PyTorch's by {diff:.2e} (> {allowed:.1e}); "
                        f"{path} is kept, but do not deploy it")
    return 0
