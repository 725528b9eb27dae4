"""Measuring speed: images per second, step time, achieved GFLOP/s against this machine's peak.

One `Config` is one row: a model at an image size and batch size, in inference or training, at a
precision, with or without channels-last and ``torch.compile``, run by PyTorch or onnxruntime.
The machine's peak is measured first (`measure_peak`: a large 3x3 convolution, the operation
these networks spend their time in). Each row times repeated steps after warm-up and reports
medians. With a reference library (``timm`` or ``torchvision``), the same architecture from that
library runs in the same process with the same settings, and the two are timed in alternation
(ours, theirs, ours, theirs...) so that a noisy machine slows both alike; the row shows the ratio.

Our side uses the fast paths of `inceptionlab.tools.fast`: `optimize_for_inference` for
inference, channels-last + the fused SGD step for training. The reference runs as its library's
users run it: eval + ``torch.inference_mode`` for inference, the default (foreach) SGD step for
training, channels-last and autocast as the row says.

FLOPs: 2 x multiply-adds of the forward pass (`count_macs`) per image; a training step is
counted as 3 x the forward pass (forward, and a backward pass of twice its cost), the aux heads'
included when the model has them. ``param_count`` likewise counts the aux heads in training rows
only (they do not run in inference).
"""
from __future__ import annotations

import csv
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from inceptionlab.cpus import vector_isa
from inceptionlab.errors import UserError
from inceptionlab.files import why_not_writable

MODES = ("infer", "train")
PRECISIONS = ("fp32", "bf16", "fp16")
RUNTIMES = ("torch", "onnxruntime")
# the same architecture in the reference libraries
REFERENCES = {
    "timm": {"inception_v3": "inception_v3", "inception_v4": "inception_v4",
             "inception_resnet_v2": "inception_resnet_v2"},
    "torchvision": {"googlenet": "googlenet", "inception_v3": "inception_v3"},
}
TRAIN_FLOPS_FACTOR = 3


@dataclass
class Config:
    model: str
    img_size: int = 299
    batch: int = 8
    mode: str = "infer"
    precision: str = "fp32"
    channels_last: bool = True
    compile: bool = False
    runtime: str = "torch"
    reference: str | None = None
    fast: bool = True  # our fast paths (off: the plain eager model, for comparison)
    model_kwargs: dict = field(default_factory=dict)


# ------------------------------------------------------------------ the machine
def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "os": platform.platform(terse=True)}
    isa = vector_isa()
    if isa:
        info["isa"] = isa  # two machines named "AMD EPYC" here differed 3.5x in peak: AVX2 against AVX-512
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        pass
    return info


def cpu_description(info: dict) -> str:
    """``machine()``'s CPU with its vector instructions where recorded: "AMD EPYC (AVX512+BF16)"
    (results written before 2026-12-03 have no "isa")."""
    return f"{info.get('cpu')} ({info['isa']})" if info.get("isa") else f"{info.get('cpu')}"


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _dtype(precision: str) -> torch.dtype:
    from inceptionlab.tools.fast import DTYPE_NAMES
    return DTYPE_NAMES[precision]


@torch.inference_mode()
def measure_peak(precision: str = "fp32", repeats: int = 8, device: torch.device | None = None) -> float:
    """GFLOP/s of a large 3x3 convolution (8 x 256 x 56 x 56 -> 256, channels-last, BN-free, the
    best case for these networks' kernels): the machine's practical peak, the fastest of ``repeats``
    (a peak is a best case; on a shared machine the median would measure the neighbours).

    In the precision's own type, so that a row's fraction says how near the model comes to what
    the machine does in that precision; except fp16 on the CPU, which takes fp32's peak (CPUs
    emulate fp16 convolutions at a few GFLOP/s: 5 s for this one). bf16 on a CPU without native
    bf16 (AVX2 only) is emulated too, and its peak is low accordingly (`_peak_note` says so)."""
    device = device or _device()
    dtype = _dtype(precision) if device.type == "cuda" or precision == "bf16" else torch.float32
    n, c, hw = (64, 256, 56) if device.type == "cuda" else (8, 256, 56)
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(device, dtype).to(memory_format=torch.channels_last)
    x = torch.randn(n, c, hw, hw, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    flops = 2 * n * c * c * 9 * hw * hw
    conv(x)
    conv(x)
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        conv(x)
        _sync(device)
        times.append(time.perf_counter() - t)
    return flops / min(times) / 1e9


def _peak_note(precision: str) -> str:
    """What the peak of ``precision`` is, where it is not simply that precision's native speed."""
    if _device().type != "cpu":
        return ""
    if precision == "fp16":
        return " (fp32's: this CPU emulates fp16 convolutions)"
    from inceptionlab.tools.fast import cpu_has_bf16

    if precision == "bf16" and not cpu_has_bf16():
        return " (emulated: this CPU has no native bf16, so bf16 fractions are of this low peak)"
    return ""


# ------------------------------------------------------------------ the models
def reference_name(library: str, name: str) -> str:
    """What ``library`` calls our ``name``, or a one-line error when it has no such architecture."""
    names = REFERENCES.get(library)
    if names is None:
        raise UserError(f"unknown reference {library!r}; choose from {', '.join(REFERENCES)}")
    if name not in names:
        raise UserError(f"{library} has no {name}; it has {', '.join(names)}")
    return names[name]


# switches the reference libraries' models mirror (or that do not change the timed network)
MIRRORED_SWITCHES = ("num_classes", "drop_rate")


def architecture(name: str, model_kwargs: dict | None = None) -> tuple[str, dict, dict]:
    """``name``'s registered architecture, its switches and its input configuration (``input_size``...):
    a registered name with ``model_kwargs``, or a directory written by training (its config.json)."""
    from inceptionlab.models.registry import create_model, is_saved_folder, model_card
    from inceptionlab.models.weights import saved_config
    from inceptionlab.tools.export import is_exported_file, read_metadata

    if is_exported_file(name):  # its metadata names the architecture and switches it was built with
        meta = read_metadata(name)
        if not meta.get("architecture") or not isinstance(meta.get("switches"), dict):
            raise UserError(f"{name} does not say which network it holds (exported by an earlier inceptionlab, or "
                            f"from a model built without create_model); export it again with inceptionlab export")
        if model_kwargs:
            raise UserError(f"{name} is an exported network, fixed at export: drop --model-kwargs "
                            f"{switches_text(model_kwargs)}")
        model_card(meta["architecture"])
        return meta["architecture"], dict(meta["switches"]), {"input_size": tuple(meta["input_size"])}
    if is_saved_folder(name):
        config = saved_config(name)
        model_card(config["architecture"])  # an architecture this version does not have fails here
        return config["architecture"], {**config["switches"], **(model_kwargs or {})}, config["preprocessing"]
    if not model_kwargs:
        return name, {}, model_card(name)
    with torch.device("meta"):  # the input of this build (stem="low_res" takes 32 px, not the card's 299)
        return name, dict(model_kwargs), dict(create_model(name, **model_kwargs).pretrained_cfg)


def check_reference(library: str, arch: str, switches: dict) -> str:
    """What ``library`` calls the registered architecture ``arch``; a one-line error when it has none,
    or when one of ``switches`` would make ours another network than the reference's (a ratio
    against it would mislead)."""
    from inceptionlab.models.registry import model_entry

    defaults = model_entry(arch).defaults
    changed = {k: v for k, v in switches.items()
               if k not in MIRRORED_SWITCHES and not (k in defaults and defaults[k] == v)}
    if changed:
        shown = " ".join(f"{k}={v}" for k, v in changed.items())
        raise UserError(f"--reference {library} builds the standard {arch}, not one with {shown}: "
                        f"drop --reference, or those switches")
    return reference_name(library, arch)


def reference_model(library: str, name: str, **kwargs) -> nn.Module:
    """``name``'s architecture built by ``library`` (random weights, no download)."""
    their_name = reference_name(library, name)
    num_classes = kwargs.get("num_classes", 1000)
    if library == "timm":
        try:
            import timm
        except ImportError:
            raise UserError("--reference timm needs timm: pip install timm") from None
        return timm.create_model(their_name, pretrained=False, num_classes=num_classes)
    import torchvision
    build = getattr(torchvision.models, their_name)
    # no aux heads (ours have none by default either), no input transform, the fast init
    return build(weights=None, aux_logits=False, init_weights=False, num_classes=num_classes)


def _our_model(cfg: Config) -> nn.Module:
    from inceptionlab.models.registry import create_model
    from inceptionlab.tools.export import is_exported_file

    if is_exported_file(cfg.model):  # the network it holds, on meta: only counted (the file itself runs)
        arch, switches, _ = architecture(cfg.model)
        with torch.device("meta"):
            return create_model(arch, **switches)
    return create_model(cfg.model, **cfg.model_kwargs)


def _exported_step(cfg: Config, x: torch.Tensor) -> Callable[[], None]:
    """One inference batch through an exported file: an ONNX file in onnxruntime, a ``.pt2`` program
    in PyTorch, as they were exported (batch norm folded; nothing is optimized again)."""
    from inceptionlab.tools.export import OnnxModel, load_pt2

    if cfg.runtime == "onnxruntime":
        runner = OnnxModel(cfg.model)
        x = x.contiguous()
        return lambda: runner(x)
    program, _ = load_pt2(cfg.model)

    def step():
        with torch.inference_mode():
            program(x)
    return step


def _input(cfg: Config, in_chans: int, device: torch.device) -> torch.Tensor:
    x = torch.randn(cfg.batch, in_chans, cfg.img_size, cfg.img_size, device=device)
    return x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x


def _autocast(cfg: Config, device: torch.device):
    if cfg.precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=_dtype(cfg.precision))


def infer_step(model: nn.Module, cfg: Config, ours: bool, device: torch.device) -> Callable[[], None]:
    """A callable running one inference batch."""
    from inceptionlab.tools.export import is_exported_file

    x = _input(cfg, getattr(model, "in_chans", 3), device)
    if ours and is_exported_file(cfg.model):
        return _exported_step(cfg, x)
    if cfg.runtime == "onnxruntime" and ours:
        from inceptionlab.tools.export import OnnxModel, export_onnx
        if cfg.precision != "fp32":
            raise UserError("--runtime onnxruntime runs fp32 only")
        # onnxruntime reads the whole file (and its external data) when the session is made,
        # so the exported copy is removed at once instead of staying in the temp folder.
        with tempfile.TemporaryDirectory(prefix="inceptionlab-bench-") as folder:
            runner = OnnxModel(export_onnx(model, Path(folder) / f"{cfg.model}.onnx", cfg.img_size))
        x = x.contiguous()
        return lambda: runner(x)
    if ours and cfg.fast:
        from inceptionlab.tools.fast import optimize_for_inference
        dtype = _dtype(cfg.precision) if cfg.precision != "fp32" and device.type == "cpu" else None
        runner = optimize_for_inference(model.to(device), channels_last=cfg.channels_last, compile=cfg.compile,
                                        dtype=dtype)
        context = _autocast(cfg, device) if device.type == "cuda" else nullcontext()

        def step():
            with context:
                runner(x)
        return step
    model = model.to(device).eval()
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    runner = torch.compile(model) if cfg.compile else model

    def step():
        with torch.inference_mode(), _autocast(cfg, device):
            runner(x)
    return step


def train_step(model: nn.Module, cfg: Config, ours: bool, device: torch.device) -> Callable[[], None]:
    """A callable running one training step: forward, cross-entropy, backward, SGD step."""
    from inceptionlab.tools.fast import make_optimizer, prepare_for_training

    if cfg.runtime != "torch":
        raise UserError("training runs in PyTorch only; use --runtime torch with --mode train")
    model = model.to(device)
    x = _input(cfg, getattr(model, "in_chans", 3), device)
    classes = getattr(model, "num_classes", None) or getattr(getattr(model, "fc", None), "out_features", 1000)
    y = torch.randint(0, 1000, (cfg.batch,), device=device) % max(1, classes)  # (torchvision's have no num_classes)
    if ours and cfg.fast:
        runner = prepare_for_training(model, channels_last=cfg.channels_last, compile=cfg.compile)
        optimizer = make_optimizer(model.parameters())
        _build_fused_norm(model, cfg, device)
    else:
        model.train()
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        runner = torch.compile(model) if cfg.compile else model
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None

    def step():
        with _autocast(cfg, device):
            out = runner(x)
            logits = out[0] if isinstance(out, tuple) else out
            loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
    return step


def _build_fused_norm(model: nn.Module, cfg: Config, device: torch.device) -> None:
    """Builds (or loads) the fused batch norm kernel now, before any step, where our training step
    will take it, as training does (`Trainer`): a one-time build of up to 30 s per machine, which had
    landed in the first timed step under --warmup 0. Not a step: nothing of the model runs."""
    if (device.type == "cpu" and cfg.channels_last and cfg.precision == "fp32" and not cfg.compile
            and any(type(m) is nn.BatchNorm2d for m in model.modules())):
        from inceptionlab.models import fused_norm
        fused_norm.kernel()


def check_warmup(configs: list[Config], warmup: int) -> None:
    """A one-line error for a compiled row without a warm-up step: its first call compiles (minutes
    on a CPU), and the compilation was timed as the step (0.02 img/s, into the CSV)."""
    if warmup < 1 and any(cfg.compile for cfg in configs):
        raise UserError("--compile with --warmup 0 would time the compilation as the step (the first call "
                        "compiles); pass --warmup 1 or more")


WARMUP_0_WARNING = ("warning: with --warmup 0 the first timed step includes one-time setup (optimize_for_inference "
                    "packs its weights on its first call; every model allocates and picks its kernels then), which "
                    "skews the median of a few --iters and the --reference ratio; --warmup 1 or more times steady "
                    "steps")


def check_configs(configs: list[Config]) -> None:
    """A one-line error, before the peak and any timing, for a configuration that would fail in the
    middle of a run: an unknown model, a reference library that lacks it (or is not installed), an
    image size below the model's smallest input (or one its branches disagree at)."""
    from inceptionlab.tools.export import is_exported_file

    checked: set = set()
    for cfg in configs:
        arch, switches, preprocessing = architecture(cfg.model, cfg.model_kwargs)
        if cfg.reference:
            check_reference(cfg.reference, arch, switches)
            _check_reference_library(cfg.reference)
        if is_exported_file(cfg.model):
            _check_exported(cfg, preprocessing["input_size"][-1])
            continue
        key = (arch, repr(sorted(switches.items(), key=str)), cfg.img_size, cfg.mode)
        if key not in checked:
            _check_size(cfg, arch, switches)
            checked.add(key)


def _check_exported(cfg: Config, size: int) -> None:
    """What an exported file can be timed as: inference in fp32 at its own input size, an ONNX file in
    onnxruntime and a ``.pt2`` program in PyTorch, as it was exported."""
    onnx = cfg.model.lower().endswith(".onnx")
    if onnx and cfg.runtime != "onnxruntime":
        raise UserError(f"{cfg.model} is an ONNX file, which runs in onnxruntime: drop --runtime {cfg.runtime}")
    if not onnx and cfg.runtime != "torch":
        raise UserError(f"{cfg.model} is a torch.export program, which runs in PyTorch: drop --runtime "
                        f"{cfg.runtime} (or export with --format onnx)")
    if cfg.mode != "infer":
        raise UserError(f"{cfg.model} is an inference export; it cannot be trained: use --mode infer")
    if cfg.precision != "fp32":
        raise UserError(f"{cfg.model} is timed as exported, in fp32: drop --precision {cfg.precision}")
    if cfg.compile:
        raise UserError(f"{cfg.model} is timed as exported: drop --compile")
    if not cfg.fast:
        raise UserError(f"{cfg.model} is timed as exported (batch norm folded), there is no plain eager model in "
                        f"it: drop --no-fast, and time the run folder or model name for that")
    if cfg.img_size != size:
        raise UserError(f"{cfg.model} was exported for {size}x{size} input, not {cfg.img_size}x{cfg.img_size}: "
                        f"drop --img-size, or export it again with --size {cfg.img_size}")


def _check_reference_library(library: str) -> None:
    try:
        __import__(library)
    except ImportError:
        raise UserError(f"--reference {library} needs {library}: pip install {library}") from None


def _check_size(cfg: Config, arch: str, switches: dict) -> None:
    """``cfg.img_size`` against the smallest input of ``arch`` built with ``switches`` (on the meta
    device: no memory, no weights), in the mode the row runs (train mode runs the aux heads). The
    references' standard architectures take the same smallest sizes as ours (15 px for googlenet,
    75 for the others), and a reference row has no switches that would change ours."""
    from inceptionlab.models.registry import create_model

    with torch.device("meta"):
        model = create_model(arch, **switches)
    model.train(cfg.mode == "train")
    aux = cfg.mode == "train" and getattr(model, "_aux_in_use", lambda: False)()
    smallest = getattr(model, "min_train_size" if aux else "min_input_size", 1)
    size = cfg.img_size
    if size < smallest:
        low_res = None
        if getattr(model.switches, "stem", None) == "imagenet" and not cfg.reference:  # (which takes no switches)
            with torch.device("meta"):
                low_res = create_model(arch, **{**switches, "stem": "low_res"}).min_input_size
        hint = ", or --model-kwargs stem=low_res for small images" if low_res and size >= low_res else ""
        raise UserError(f"--img-size {size} is below {cfg.model}'s smallest input, {smallest}x{smallest}: "
                        f"pass --img-size {smallest} or more{hint}")
    if not hasattr(model, "check_input"):
        return
    try:
        model.check_input(torch.empty(1, getattr(model, "in_chans", 3), size, size, device="meta"))
    except UserError as exc:  # branches that disagree at this size: its message names the sizes that work
        raise UserError(str(exc).replace("use a size such as", "pass --img-size, e.g.")) from None


# ------------------------------------------------------------------ timing
def time_alternating(steps: dict[str, Callable[[], None]], warmup: int, iters: int,
                     device: torch.device) -> dict[str, list[float]]:
    """Runs every step ``warmup`` times, then ``iters`` rounds of each in turn; seconds per call."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(iters):
        for key, step in steps.items():
            _sync(device)
            t = time.perf_counter()
            step()
            _sync(device)
            times[key].append(time.perf_counter() - t)
    return times


def run_config(cfg: Config, peak: float, warmup: int = 2, iters: int = 5,
               device: torch.device | None = None) -> dict:
    """Times one configuration (and its reference) on ``device`` (default: the GPU if there is
    one, else the CPU) and returns its row."""
    from inceptionlab.tools.summary import count_macs, count_training_macs

    if cfg.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    if cfg.precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.runtime not in RUNTIMES:
        raise UserError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {cfg.runtime!r}")
    check_warmup([cfg], warmup)
    device = device or _device()
    torch.manual_seed(0)
    ours = _our_model(cfg)
    # what the step runs: the aux heads in training only (inference rows counted their parameters, not their MACs)
    params = sum(p.numel() for name, p in ours.named_parameters() if cfg.mode == "train" or not name.startswith("aux_heads."))
    macs = (count_training_macs if cfg.mode == "train" else count_macs)(ours, cfg.img_size)
    make = infer_step if cfg.mode == "infer" else train_step
    steps = {"ours": make(ours, cfg, True, device)}
    if cfg.reference:
        ref_cfg = replace(cfg, runtime="torch")
        arch, switches, _ = architecture(cfg.model, cfg.model_kwargs)
        check_reference(cfg.reference, arch, switches)
        steps["reference"] = make(reference_model(cfg.reference, arch, **switches), ref_cfg, False, device)
    times = time_alternating(steps, warmup, iters, device)
    step_s = statistics.median(times["ours"])
    per_image_flops = 2 * macs * (TRAIN_FLOPS_FACTOR if cfg.mode == "train" else 1)
    gflops = per_image_flops * cfg.batch / step_s / 1e9
    row = {
        "model": cfg.model, "img_size": cfg.img_size, "batch": cfg.batch, "mode": cfg.mode,
        "precision": cfg.precision, "compile": cfg.compile,
        "channels_last": cfg.channels_last and cfg.runtime == "torch",  # (onnxruntime is given NCHW input)
        "runtime": cfg.runtime, "fast": cfg.fast, "threads": torch.get_num_threads(),
        "infer_samples_per_sec": None, "infer_step_time_ms": None,
        "train_samples_per_sec": None, "train_step_time_ms": None,
        "param_count": params, "gmacs": round(macs / 1e9, 6),  # (3 places said 0.027 of 26.614 MMACs)
        "gflops_per_sec": significant(gflops), "peak_gflops_per_sec": round(peak, 1),
        "fraction_of_peak": round(gflops / peak, 3) if peak else None,
        "reference": cfg.reference, "ref_samples_per_sec": None, "ratio": None,
        "iters": iters, "step_times_ms": _milliseconds(times["ours"]),
        "model_kwargs": switches_text(cfg.model_kwargs),
    }
    row[f"{cfg.mode}_samples_per_sec"] = round(cfg.batch / step_s, 2)
    row[f"{cfg.mode}_step_time_ms"] = round(step_s * 1e3, 1)
    if cfg.reference:
        ref_s = statistics.median(times["reference"])
        row["ref_samples_per_sec"] = round(cfg.batch / ref_s, 2)
        row["ratio"] = round(ref_s / step_s, 3)
        row["ref_step_times_ms"] = _milliseconds(times["reference"])
    return row


def significant(value: float, digits: int = 3) -> float:
    """``value`` rounded to at least ``digits`` significant digits and at least one decimal: one
    decimal had written 0.9455 GFLOP/s as 0.9, and a tiny model's as 0.0 (the step times keep three
    digits too); 1234.56 keeps its one decimal, 1234.6."""
    if not value or not math.isfinite(value):
        return value
    return round(value, max(1, digits - 1 - math.floor(math.log10(abs(value)))))


def _milliseconds(seconds: list[float]) -> str:
    """Each timed step in ms, to three significant digits at least (whole ms said "14 1" of a
    7.5 ms median)."""
    places = lambda ms: 2 if ms < 10 else 1 if ms < 100 else 0  # noqa: E731
    return " ".join(f"{t * 1e3:.{places(t * 1e3)}f}" for t in seconds)


# ------------------------------------------------------------------ memory
_MEMORY_CHILD = """
import json, sys, torch
from inceptionlab.tools.benchmark import Config, _our_model, _peak_rss_mb, architecture, reference_model, train_step
cfg = Config(**json.loads(sys.argv[1]))
torch.manual_seed(0)
if cfg.reference:  # the architecture and switches of a run folder too, as run_config builds it
    arch, switches, _ = architecture(cfg.model, cfg.model_kwargs)
    model = reference_model(cfg.reference, arch, **switches)
else:
    model = _our_model(cfg)
before = _peak_rss_mb()
step = train_step(model, cfg, cfg.reference is None, torch.device("cpu"))
for _ in range(2):
    step()
print(json.dumps({"peak_rss_mb": _peak_rss_mb(), "model_rss_mb": before}))
"""


def _peak_rss_mb() -> float:
    """This process's peak resident size in MiB: VmHWM, which (unlike ru_maxrss, which keeps the
    forking parent's peak across exec) counts only this program."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def training_peak_rss(cfg: Config) -> dict:
    """Peak resident memory (MiB) of a process that builds the model (ours, or ``cfg.reference``'s)
    and runs two training steps: a fresh process each, so that nothing else counts."""
    import json

    payload = {k: v for k, v in asdict(cfg).items()}
    payload["mode"] = "train"
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, json.dumps(payload)], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"the memory measurement's process failed: {last}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ output
COLUMNS = ["model", "img_size", "batch", "mode", "precision", "channels_last", "compile", "runtime", "threads",
           "infer_samples_per_sec", "infer_step_time_ms", "train_samples_per_sec", "train_step_time_ms",
           "param_count", "gmacs", "gflops_per_sec", "peak_gflops_per_sec", "fraction_of_peak",
           "reference", "ref_samples_per_sec", "ratio", "peak_rss_mb", "ref_peak_rss_mb", "iters",
           "step_times_ms", "ref_step_times_ms", "fast", "model_kwargs"]
# the columns before model_kwargs was added (benchmarks/results/*.csv): read as they are, and appended
# to while the rows have no switches (an empty model_kwargs is what those rows mean)
OLD_COLUMNS = COLUMNS[:-1]


def switches_text(model_kwargs: dict | None) -> str:
    """``{"stem": "low_res", "depth_multiplier": 0.125}`` -> ``stem=low_res depth_multiplier=0.125``,
    as --model-kwargs takes them ("" for the defaults)."""
    def value(v) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if v is None:
            return "none"
        if isinstance(v, (list, tuple)):
            return ",".join(value(x) for x in v)
        return str(v)
    return " ".join(f"{k}={value(v)}" for k, v in (model_kwargs or {}).items())


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", errors="replace") as f:
        return next(csv.reader(f), [])


def _header_fits(path: Path, header: list[str], with_switches: bool) -> None:
    if header == COLUMNS or (header == OLD_COLUMNS and not with_switches):
        return
    if header == OLD_COLUMNS:
        raise UserError(f"{path} is a benchmark CSV without the model_kwargs column (written before it was added), "
                        f"so these rows' --model-kwargs would be lost; pass another --out")
    raise UserError(f"{path} exists and is not a benchmark CSV of these columns; pass another --out "
                    f"(the rows are added to an existing benchmark CSV)")


def check_csv_target(path, model_kwargs: dict | None = None) -> bool:
    """A one-line error, before any timing, when ``path`` cannot take the benchmark's rows: a folder,
    an unwritable place, or a file that is not a benchmark CSV (which appending would spoil), or one
    of the older columns when the rows have ``model_kwargs``. The file is opened for appending (so
    that a place the permission bits allow but the file system refuses, /proc as root, fails now,
    not after the timing), and created if it did not exist: returns whether it was created (the
    caller removes it if the run ends before its first row)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass --out a CSV file, e.g. {path / 'benchmark.csv'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write in {path.parent}: {why_not_writable(path.parent, exc)}; "
                        f"pass an --out in a writable folder") from None
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise UserError(f"cannot write {path}: permission denied; pass another --out")
    if path.is_file() and path.stat().st_size:
        _header_fits(path, _csv_header(path), bool(model_kwargs))
    existed = path.exists()
    try:
        with path.open("a", newline=""):
            pass
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}; pass another --out") from None
    return not existed


def write_csv(rows: list[dict], path, append: bool = False) -> Path:
    """The rows as CSV; with ``append``, added to an existing file of the same columns (or of the
    older columns, without model_kwargs, while the rows have none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    adding = append and path.is_file() and path.stat().st_size > 0
    columns = COLUMNS
    if adding:
        columns = _csv_header(path)
        _header_fits(path, columns, any(row.get("model_kwargs") for row in rows))
    with path.open("a" if adding else "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if not adding:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return path


def read_csv(path) -> list[dict]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def format_rows(rows: list[dict], markdown: bool = False) -> str:
    """The table printed (and written into BENCHMARKS.md)."""
    head = ["model", "size", "batch", "mode", "prec", "ch-last", "compile", "runtime", "img/s", "step ms",
            "GFLOP/s", "of peak", "reference", "ref img/s", "ratio"]
    body = []
    for r in rows:
        mode = r["mode"]
        ips = r.get(f"{mode}_samples_per_sec")
        body.append([_model_cell(r), str(r["img_size"]), str(r["batch"]), mode, r["precision"],
                     _yes(r["channels_last"]), _yes(r["compile"]), r["runtime"], _num(ips, 2),
                     _num(r.get(f"{mode}_step_time_ms"), 1), _gflops(r["gflops_per_sec"]),
                     _pct(r["fraction_of_peak"]), r.get("reference") or "-", _num(r.get("ref_samples_per_sec"), 2),
                     _num(r.get("ratio"), 2, suffix="x")])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i in (0, 3, 4, 7, 12) else "---:"
                                                            for i in range(len(head))) + "|"]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(c.rjust(w) if i not in (0, 3, 4, 7, 12) else c.ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([fmt(head), "-" * (sum(widths) + 2 * len(widths))] + [fmt(b) for b in body])


def _model_cell(row: dict) -> str:
    """The model, with its switches and ``no-fast`` where the row has them: a 1/8-width low-res
    googlenet is not the standard one."""
    fast = row.get("fast")
    notes = [n for n in (row.get("model_kwargs"), "" if fast in (None, "") or _yes(fast) == "yes" else "no-fast") if n]
    return f"{row['model']} ({', '.join(notes)})" if notes else str(row["model"])


def _threads(n) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def _yes(v) -> str:
    return "yes" if str(v) in ("True", "true", "1") else "no"


def _num(v, digits: int, suffix: str = "") -> str:
    if v in (None, ""):
        return "-"
    return f"{float(v):.{digits}f}{suffix}"


def _gflops(v) -> str:
    """GFLOP/s to three significant digits (one decimal at 100 and above, as the tables had them):
    a tiny model's 0.946 showed as 0.9, or 0.0."""
    if v in (None, ""):
        return "-"
    v = float(v)
    places = 1 if not v or abs(v) >= 100 or not math.isfinite(v) else 2 - math.floor(math.log10(abs(v)))
    return f"{v:.{max(1, places)}f}"


def _pct(v) -> str:
    return "-" if v in (None, "") else f"{float(v):.0%}"


def benchmark(configs: list[Config], warmup: int = 2, iters: int = 5, memory: bool = False,
              log: Callable[[str], None] | None = print,
              on_row: Callable[[list, dict], None] | None = None) -> tuple[list[dict], dict]:
    """Measures the peak once per precision, then every configuration; returns (rows, machine).
    ``on_row(rows, machine)`` runs after each row (to save partial results of a long run)."""
    check_configs(configs)  # a wrong name or size fails now, not after the peak and the rows before it
    check_warmup(configs, warmup)
    info = machine()
    peaks: dict[str, float] = {}
    rows = []
    for cfg in configs:
        if cfg.precision not in peaks:
            peaks[cfg.precision] = measure_peak(cfg.precision)
            info[f"peak_gflops_{cfg.precision}"] = round(peaks[cfg.precision], 1)
            if log:
                log(f"peak ({cfg.precision}, 3x3 convolution 8x256x56x56): {peaks[cfg.precision]:.1f} GFLOP/s "
                    f"on {_threads(info['threads'])}{_peak_note(cfg.precision)}")
        row = run_config(cfg, peaks[cfg.precision], warmup, iters)
        if memory and cfg.mode == "train" and _device().type == "cpu":
            row["peak_rss_mb"] = round(training_peak_rss(replace(cfg, reference=None))["peak_rss_mb"], 1)
            if cfg.reference:
                row["ref_peak_rss_mb"] = round(training_peak_rss(cfg)["peak_rss_mb"], 1)
        rows.append(row)
        if log:
            mode = row["mode"]
            ref = (f", {cfg.reference} {row['ref_samples_per_sec']} img/s, ratio {row['ratio']}x"
                   if cfg.reference else "")
            mem = f", peak RSS {row['peak_rss_mb']} MiB" if row.get("peak_rss_mb") else ""
            mem += f" (reference {row['ref_peak_rss_mb']} MiB)" if row.get("ref_peak_rss_mb") else ""
            log(f"{_model_cell(row)} {mode} b{cfg.batch} {cfg.img_size}px {cfg.precision}: "
                f"{row[f'{mode}_samples_per_sec']} img/s, {row['fraction_of_peak']:.0%} of peak{ref}{mem}")
        if on_row:
            on_row(rows, info)
    return rows, info

