"""``inceptionlab benchmark``: images/s, step time and GFLOP/s against this machine's peak.

    inceptionlab benchmark --models inception_v3 inception_v4 --batch-size 8 32 --mode infer --reference timm
    inceptionlab benchmark --models inception_v3 --mode train --batch-size 8 --reference timm --memory
    inceptionlab benchmark --models googlenet --img-size 224 --runtime onnxruntime
    inceptionlab benchmark --models inception_v3.onnx --batch-size 1 8     # an exported file, in onnxruntime

Prints one row per configuration (model x batch size) and writes each to the CSV (``--out``) as it
finishes, so that a stopped run keeps the rows it measured.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inceptionlab.commands.summary import add_threads, apply_threads, image_size, parse_model_kwargs, positive_int
from inceptionlab.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("GFLOP/s counts 2 FLOPs per multiply-add of the forward pass, per image; a training step "
                     "counts 3x the forward pass (the backward pass costs about twice the forward). 'of peak' "
                     "divides it by this machine's peak, a large 3x3 convolution timed first in the same "
                     "precision.")
    parser.add_argument("--models", nargs="+", default=["inception_v3"],
                        help="registered model names, directories written by training, or files written by "
                             "inceptionlab export (.onnx, .pt2: timed as exported, at their input size), "
                             "separated by spaces or commas (default: inception_v3)")
    parser.add_argument("--img-size", type=image_size, default=None, help="input size (default: each model's)")
    parser.add_argument("--batch-size", type=positive_int, nargs="+", default=[8],
                        help="one or more batch sizes (default: 8)")
    parser.add_argument("--mode", choices=("infer", "train"), default="infer",
                        help="infer: forward passes; train: training steps (forward, loss, backward, SGD step) "
                             "(default: infer)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="number format (default: fp32)")
    parser.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                        help="channels-last memory format (the default; PyTorch only)")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--compile", action="store_true", help="torch.compile both models (slow first step)")
    parser.add_argument("--reference", choices=("timm", "torchvision"), default=None,
                        help="time the same architecture from this library in alternation, and show the ratio")
    parser.add_argument("--runtime", choices=("torch", "onnxruntime"), default=None,
                        help="run our model in PyTorch, or export it to ONNX and run it in onnxruntime "
                             "(default: torch; an exported .onnx file runs in onnxruntime, a .pt2 in PyTorch)")
    parser.add_argument("--no-fast", dest="fast", action="store_false",
                        help="our plain eager model, without optimize_for_inference / the training fast path "
                             "(the row says no-fast)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps before the timed ones (default: 2); --compile needs 1 or more (its "
                             "first call compiles), and with 0 the first timed step includes one-time setup")
    parser.add_argument("--iters", type=int, default=5,
                        help="timed iterations, the median is reported (default: 5)")
    add_threads(parser, onnxruntime=True)
    parser.add_argument("--memory", action="store_true",
                        help="train mode: also the peak resident memory of a training step (fresh processes), in "
                             "each row's progress line and the CSV's peak_rss_mb (ref_peak_rss_mb for --reference)")
    parser.add_argument("--out", default="benchmark.csv", help="the CSV file to write (default: benchmark.csv "
                                                               "in the current folder), a row as each finishes; "
                                                               "the rows are added to an existing benchmark CSV")
    # (default None, not []: given without a KEY=VALUE, its word went to --models; see _model_names)
    parser.add_argument("--model-kwargs", nargs="*", action="extend", default=None, metavar="KEY=VALUE",
                        help="switches passed to create_model, e.g. depth_multiplier=0.5 stem=low_res; "
                             "the CSV's model_kwargs column and the printed model say them")


def _model_names(args: argparse.Namespace) -> list[str]:
    """--models split at commas too (as compare and demo take them), with a one-line error for a
    word that is a --model-kwargs switch without its value (the command line gives a word without
    "=" after --model-kwargs to the option before it, here --models)."""
    from inceptionlab.models.registry import is_saved_folder, list_models, model_entry
    from inceptionlab.tools.export import is_exported_file

    names = []
    for word in args.models:
        # (an exported file last in "run1,r1.pt2" kept the word whole: "exported file run1,r1.pt2 does not exist")
        names += [word] if is_saved_folder(word) or (is_exported_file(word) and Path(word).exists()) else [n.strip() for n in word.split(",") if n.strip()]
    if not names:
        raise UserError("--models names no model; pass e.g. --models inception_v3 googlenet")
    registered = list_models()
    switches = {s for m in registered for s in model_entry(m).switches}
    for name in names:
        if name in registered or is_saved_folder(name) or "=" in name:
            continue
        if is_exported_file(name):  # (its metadata is read, and checked, with the other rows')
            continue
        if args.model_kwargs == [] or (args.model_kwargs is not None and name in switches):
            raise UserError(f"--model-kwargs takes KEY=VALUE, got {name!r}; write {name}=VALUE")
        if name in switches:
            raise UserError(f"{name!r} is a model switch, not a model; pass --model-kwargs {name}=VALUE")
    if args.model_kwargs == []:
        raise UserError("--model-kwargs takes KEY=VALUE, got nothing; e.g. --model-kwargs stem=low_res, or drop it")
    return names


def _runtime(args: argparse.Namespace, name: str) -> str:
    """--runtime, or by default what runs ``name``: onnxruntime for an exported .onnx file, else PyTorch
    (a runtime that cannot run an exported file is refused with the other rows' checks)."""
    if args.runtime:
        return args.runtime
    return "onnxruntime" if name.lower().endswith(".onnx") else "torch"


def run(args: argparse.Namespace) -> int:
    from inceptionlab.tools import benchmark

    apply_threads(args)
    if args.warmup < 0:
        raise UserError(f"--warmup must be 0 or more untimed steps, got {args.warmup}")
    if args.iters < 1:
        raise UserError(f"--iters must be 1 or more timed iterations, got {args.iters}")
    if args.runtime == "onnxruntime" and args.mode == "train":
        raise UserError("--runtime onnxruntime times inference only; use --mode infer")
    if args.runtime == "onnxruntime" and args.precision != "fp32":
        raise UserError("--runtime onnxruntime runs fp32 only; drop --precision")
    if args.runtime == "onnxruntime" and args.compile:  # (it was accepted, and the row said compile=yes)
        raise UserError("--compile compiles PyTorch models, and onnxruntime runs the exported graph; drop --compile")
    asked_channels_last = args.channels_last  # None: not given (channels-last, where PyTorch runs the model)
    args.channels_last = asked_channels_last is not False
    if args.memory and args.mode != "train":
        raise UserError("--memory measures the peak memory of a training step; add --mode train")
    names = _model_names(args)
    kwargs = parse_model_kwargs(args.model_kwargs)
    configs = []
    for name in names:
        if asked_channels_last and _runtime(args, name) == "onnxruntime":  # (accepted, and the row said ch-last no)
            raise UserError("--channels-last lays out PyTorch's maps, and onnxruntime chooses its own layout; "
                            "drop --channels-last")
        size = args.img_size or benchmark.architecture(name, kwargs)[2].get("input_size", (3, 299, 299))[-1]
        for batch in args.batch_size:
            configs.append(benchmark.Config(name, size, batch, args.mode, args.precision, args.channels_last,
                                            args.compile, _runtime(args, name), args.reference, args.fast, kwargs))
    # before the minutes of timing, not after: every model, size and reference, then the CSV
    benchmark.check_configs(configs)  # (first: an export's "cannot be trained" before the batch-size rule)
    benchmark.check_warmup(configs, args.warmup)
    if args.mode == "train" and 1 in args.batch_size:
        raise UserError("a training step with batch norm needs at least 2 images per batch (its statistics "
                        "of one image on a 1x1 grid are undefined); pass --batch-size 2 or more")
    out = Path(args.out)
    created = benchmark.check_csv_target(out, kwargs)
    before = len(benchmark.read_csv(out)) if out.stat().st_size else 0
    written = 0

    def save(rows: list[dict], _info: dict) -> None:  # each row as it finishes: a stopped run keeps its rows
        nonlocal written
        try:
            benchmark.write_csv(rows[written:], out, append=True)
        except OSError as exc:
            raise UserError(f"cannot write {out}: {exc.strerror or exc}; pass another --out") from None
        written = len(rows)

    if args.warmup == 0:  # honest, not hidden: a warm-up step run anyway would not be --warmup 0
        print(benchmark.WARMUP_0_WARNING, file=sys.stderr)
    info = benchmark.machine()
    threads = f"{info['threads']} torch thread" + "s" * (info["threads"] != 1)  # (1 thread, not 1 threads)
    print(f"machine: {benchmark.cpu_description(info)}, {info['cores']} cores, {threads}, torch {info['torch']}"
          + (f", load average {info['load_average']}" if "load_average" in info else ""))
    try:
        rows, _ = benchmark.benchmark(configs, args.warmup, args.iters, memory=args.memory, on_row=save)
    except BaseException:
        if created and written == 0:  # nothing measured: no empty file left behind
            out.unlink(missing_ok=True)
        elif written:
            print(f"\n{out} keeps the {written} row{'s' * (written != 1)} measured before the stop", file=sys.stderr)
        raise
    print()
    print(benchmark.format_rows(rows))
    print(f"\nwrote {out}" + (f" ({len(rows)} row{'s' * (len(rows) != 1)} added to its {before})" if before else ""))
    return 0
