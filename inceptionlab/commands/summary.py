"""``inceptionlab summary``: blocks, output shapes, parameters and multiply-adds of a model.

    inceptionlab summary inception_v3                     # per block, at the model's input size
    inceptionlab summary inception_v3 --size 512 --model-kwargs depth_multiplier=0.5 stem=low_res
    inceptionlab summary --all                            # one row per registered model
    inceptionlab summary inception_v3_paper --explain-factorization
"""
from __future__ import annotations

import argparse
import dataclasses
import json

from inceptionlab.errors import UserError
from inceptionlab.train.config import parse_model_kwargs  # noqa: F401 - the one key=value parser


def image_size(text: str) -> int:
    """An argparse type: an image side from 1 to MAX_IMG_SIZE (20000 allocated 4.5 GB per image)."""
    from inceptionlab.train.config import MAX_IMG_SIZE

    value = positive_int(text)
    if value > MAX_IMG_SIZE:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_IMG_SIZE}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (a size, batch, count or thread number of 0 used to
    mean "the default" without a word)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_threads(parser: argparse.ArgumentParser, onnxruntime: bool = False) -> None:
    """--threads; ``onnxruntime``: the command also runs exports there, with as many threads (eval,
    which runs PyTorch weights only, promised onnxruntime too)."""
    runtimes = "for PyTorch and onnxruntime alike" if onnxruntime else "for PyTorch"
    parser.add_argument("--threads", type=positive_int, default=None,
                        help=f"CPU threads, {runtimes} (default: PyTorch's, $OMP_NUM_THREADS or one per core; "
                             f"pass 1 on a busy machine)")


def apply_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        from inceptionlab.cpus import set_threads

        set_threads(args.threads, processes=1)


def check_size_flag(model, size: int | None, suggest_low_res: bool = False) -> None:
    """``--size`` below the model's smallest input: the fix is a larger --size (predict and export
    resize the images themselves), where the model's own error says to resize the images."""
    smallest = getattr(model, "min_input_size", None)
    if size is not None and isinstance(smallest, int) and size < smallest:
        hint = ""
        if suggest_low_res and getattr(getattr(model, "switches", None), "stem", None) == "imagenet":
            hint = ", or --model-kwargs stem=low_res for small images"  # (summary said "use stem='low_res'")
        raise UserError(f"--size {size} is below {getattr(model, 'name', 'the model')}'s smallest input, "
                        f"{smallest}x{smallest}: pass --size {smallest} or more{hint}")


def add_model_kwargs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-kwargs", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help="switches passed to create_model, e.g. depth_multiplier=0.5 stem=low_res")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="a registered model name (see --all)")
    parser.add_argument("--size", "--img-size", type=image_size, default=None,
                        help="input height and width (default: the model's input size; --img-size as train and "
                             "eval name it)")
    add_model_kwargs(parser)
    parser.add_argument("--all", action="store_true", help="one row per registered model")
    parser.add_argument("--markdown", action="store_true", help="with --all: a Markdown table (the README's)")
    parser.add_argument("--json", action="store_true", help="the same numbers as one JSON document, for scripts")
    parser.add_argument("--explain-factorization", action="store_true",
                        help="each factorized convolution against the unfactorized one, next to the papers' savings")


def run(args: argparse.Namespace) -> int:
    from inceptionlab.tools import summary

    if args.all and (args.model or args.explain_factorization or args.model_kwargs or args.size):
        raise UserError("--all summarizes every model at its own size and defaults; drop the model name, "
                        "--size, --model-kwargs and --explain-factorization (or drop --all)")
    if args.markdown and not args.all:
        raise UserError("--markdown makes the --all table; pass --all too")
    if args.markdown and args.json:
        raise UserError("--markdown and --json are two formats of one table; pick one")
    if args.all:
        rows = summary.zoo_summary()
        print(json.dumps(rows, indent=1) if args.json else summary.format_zoo(rows, markdown=args.markdown))
        return 0
    if not args.model:
        raise UserError("name a model (e.g. inceptionlab summary inception_v3) or pass --all")
    if args.size is not None and args.size < 1:
        raise UserError(f"--size must be a positive number of pixels, got {args.size}")
    switches = parse_model_kwargs(args.model_kwargs)
    if switches.get("features_only"):  # (it said "model_summary takes a model of the zoo", Python advice)
        raise UserError("summary counts the whole network, whose block rows are the feature maps features_only "
                        "would give; drop features_only")
    if args.explain_factorization:
        explained = summary.explain_factorization(args.model, args.size, **switches)
        print(json.dumps(dict(explained.as_dict(), switches=switches), indent=1) if args.json
              else summary.format_factorization(explained))
        return 0
    model = summary.build_on_meta(args.model, **switches)
    check_size_flag(model, args.size, suggest_low_res=True)  # (another network, where no weights are involved)
    size = args.size or model.pretrained_cfg["input_size"][-1]
    rows = summary.model_summary(model, size)
    aux_note = None
    if len(model.aux_heads) and not summary.aux_rows_fit(model, size):
        aux_note = (f"aux heads not counted: they run in training from {model.min_train_size}x{model.min_train_size}"
                    if model.num_classes else "aux heads not counted: with num_classes=0 they give no output")
    if args.json:
        doc = dict(model=args.model, architecture=model.name, size=size, switches=switches,
                   rows=[dataclasses.asdict(r) for r in rows], totals=summary.totals(rows), note=aux_note)
        print(json.dumps(doc, indent=1))
        return 0
    extra = "".join(f", {k}={v}" for k, v in switches.items())
    name = args.model if args.model == model.name else f"{args.model} ({model.name})"  # a saved folder
    print(summary.format_summary(rows, title=f"{name} at {size}x{size}{extra}"))
    if aux_note:
        print(f"({aux_note})")
    return 0
