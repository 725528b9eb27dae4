"""Exporting a model for deployment: ONNX (through ``torch.onnx``'s ``torch.export``-based exporter)
or a ``torch.export`` program (``.pt2``).

The exported network is the inference network: eval mode, auxiliary heads dropped, batch norm folded
into the convolutions (`fold_batchnorm`), so an ONNX graph holds only Conv, Relu, Concat, pooling,
one ReduceMean and one Gemm (and the Inception-ResNets' residual Add; their scaling is folded into the
convolutions too). The batch dimension is dynamic; height and width are fixed at export
(``size``, the model's input size by default). The preprocessing (input size, mean, std, crop_pct,
interpolation, channel order) and class names travel with the file: ONNX metadata ``inceptionlab`` and the
``inceptionlab.json`` extra file of a ``.pt2``, both JSON.

ONNX export needs the ``onnx`` and ``onnxscript`` packages, checking and running it ``onnxruntime``:
``pip install 'inceptionlab[export]'``.

The third kind of export is a state dict in timm's or torchvision's key layout (`export_state_dict`,
``models/layouts/reference.py``): the trained weights as they are (aux heads kept, nothing folded), for
those libraries' own models.
"""
from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from inceptionlab.errors import UserError, clipped
from inceptionlab.files import why_not_writable
from inceptionlab.tools.fast import fold_batchnorm

FORMATS = ("onnx", "pt2", "timm", "torchvision")
# formats that are a state dict in a reference library's key layout (batch norm not folded)
STATE_DICT_FORMATS = ("timm", "torchvision")
STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
INPUT_NAME, OUTPUT_NAME = "images", "logits"
FEATURES_NAME = "features"  # the output of a model without classifier (num_classes=0): pooled features


def output_name(model: nn.Module) -> str:
    """``logits``, or ``features`` for a model without classifier (its outputs are not class scores)."""
    return FEATURES_NAME if getattr(model, "num_classes", None) == 0 else OUTPUT_NAME
MAX_BATCH = 4096


def check_exportable(model: nn.Module) -> None:
    """A one-line error for a model an export cannot hold: a features_only model's list of maps."""
    from inceptionlab.models.base import FeatureExtractor

    if isinstance(model, FeatureExtractor):
        raise UserError("a features_only model returns a list of feature maps, which an export cannot name; "
                        "export the model itself (num_classes=0 gives the pooled features)")


def prepare_for_export(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode, without aux heads, with batch norm folded."""
    check_exportable(model)
    model = copy.deepcopy(model).eval()
    if hasattr(model, "drop_aux_heads"):
        model.drop_aux_heads()
    model.requires_grad_(False)
    return fold_batchnorm(model)


def _example(model: nn.Module, size: int | None, batch: int = 2) -> torch.Tensor:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = int(size or cfg.get("input_size", (3, 299, 299))[-1])
    x = torch.randn(batch, getattr(model, "in_chans", 3), size, size,
                    device=next(model.parameters()).device)
    check = getattr(model, "check_input", None)
    if check is not None:
        check(x)  # a clear error for a too small size, before the exporter's own
    return x


def metadata(model: nn.Module, size: int) -> dict:
    """What a runtime needs besides the graph: preprocessing and class names."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    chans = getattr(model, "in_chans", 3)
    return {
        "architecture": cfg.get("architecture", getattr(model, "name", type(model).__name__)),
        "input_size": [chans, size, size],
        "mean": list(cfg.get("mean", (0.5,) * chans)),
        "std": list(cfg.get("std", (0.5,) * chans)),
        "crop_pct": cfg.get("crop_pct", 0.875),
        "interpolation": cfg.get("interpolation", "bilinear"),
        "input_space": cfg.get("input_space", "RGB"),  # "BGR": Caffe-trained BN-Inception weights
        "input_range": list(cfg.get("input_range", (0, 1))),
        "num_classes": getattr(model, "num_classes", None),
        "classes": cfg.get("classes"),
        # the create_model switches it was built with: the benchmark rebuilds the network from them
        # (on the meta device) to count its parameters and multiply-adds
        "switches": cfg.get("switches"),
        # whether the weights are a run's EMA (True), its raw ones (False), or not known (None: weights
        # from elsewhere, random ones); `inceptionlab export` sets it
        "ema": cfg.get("ema"),
        # whether the weights are random (True: `inceptionlab export` without --weights, which predict
        # refuses; the benchmark still times it), trained (False), or not known (None: an export
        # through the API; files written before this field have none)
        "random_weights": cfg.get("random_weights"),
        "input_name": INPUT_NAME,
        "output_name": output_name(model),
    }


def export_onnx(model: nn.Module, path, size: int | None = None, opset: int | None = None, check=None) -> Path:
    """Writes ``model`` as ONNX with a dynamic batch dimension; returns the path."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise UserError(f"ONNX export needs the onnx and onnxscript packages ({exc.name} is missing); "
                        f"pip install 'inceptionlab[export]'") from None
    path = output_path(path, "onnx")
    net = prepare_for_export(model)
    x = _example(net, size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    kwargs = {} if opset is None else {"opset_version": int(opset)}
    program = torch.onnx.export(net, (x,), None, dynamo=True, input_names=[INPUT_NAME], output_names=[output_name(model)],
                                dynamic_shapes=({0: batch},), optimize=True, verbose=False, **kwargs)

    def write(target: Path) -> None:
        program.save(str(target))
        _set_onnx_metadata(target, metadata(model, x.shape[-1]))
    return _write_whole(path, write, check)


def _set_onnx_metadata(path: Path, meta: dict) -> None:
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "inceptionlab", json.dumps(meta)
    onnx.save(proto, str(path))


def export_pt2(model: nn.Module, path, size: int | None = None, check=None) -> Path:
    """Writes ``model`` as a ``torch.export`` program (load with ``torch.export.load``)."""
    path = output_path(path, "pt2")
    net = prepare_for_export(model)
    x = _example(net, size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(net, (x,), dynamic_shapes=({0: batch},))
    extra = {"inceptionlab.json": json.dumps(metadata(model, x.shape[-1]))}
    return _write_whole(path, lambda target: torch.export.save(program, str(target), extra_files=extra), check)


def format_of(path, format: str | None = None) -> str:
    """``format``, or (None) the one ``path``'s suffix names: ``.pt2`` a torch.export program, anything
    else ONNX."""
    if format is None:
        if Path(path).suffix.lower() in STATE_DICT_SUFFIXES:  # (it would have said "name it x.onnx")
            raise UserError(f"{Path(path).name} names a state dict: pass --format timm or --format torchvision "
                            f"for one in their key layout, or name a .onnx or .pt2 file to export the network")
        return "pt2" if Path(path).suffix.lower() == ".pt2" else "onnx"
    if format not in FORMATS:
        raise UserError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    return format


def output_path(path, format: str) -> Path:
    """``path`` as a Path, or a one-line error when it is a folder or its suffix names the other format."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; name the file to write, e.g. {path / ('model.' + format)}")
    suffix = path.suffix.lower()
    if format in STATE_DICT_FORMATS:
        if suffix not in STATE_DICT_SUFFIXES:
            raise UserError(f"a {format} state dict is written as .safetensors, or by torch.save as .pth, .pt or "
                            f".bin; got {path.name}: name it {path.with_suffix('.pth')}")
        return path
    if format == "pt2" and suffix != ".pt2":
        raise UserError(f"a torch.export program's file name ends in .pt2 (torch.export.load refuses others); "
                        f"name it {path.with_suffix('.pt2')}, or pass --format onnx")
    if format == "onnx" and suffix == ".pt2":
        raise UserError(f"{path} names a torch.export program but the format is onnx; name it "
                        f"{path.with_suffix('.onnx')}, or pass --format pt2")
    if format == "onnx" and suffix != ".onnx":  # `--out run/model.safetensors` replaced the trained weights
        raise UserError(f"an ONNX file's name ends in .onnx, got {path.name}; name it {path.with_suffix('.onnx')}")
    return path


def _write_whole(path: Path, write, check=None) -> Path:
    """Runs ``write(target)`` on a file of ``path``'s name in a temporary folder beside it, then
    ``check(target)``, then moves what it wrote (the file, and an ONNX file's external data, whose
    names it refers to) over ``path``: an export that fails, fails its check or is interrupted
    leaves a file already at ``path`` as it was."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        raise UserError(f"cannot write in {path.parent}: {why_not_writable(path.parent, exc)}; "
                        f"pass an --out in a writable folder") from None
    try:
        write(folder / path.name)
        if check is not None:
            check(folder / path.name)
        for written in sorted(folder.iterdir(), key=lambda f: f.name == path.name):  # the file itself last
            os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path


def export(model: nn.Module, path, format: str | None = None, size: int | None = None, check=None) -> Path:
    """`export_onnx` or `export_pt2`, by ``format`` (default: by ``path``'s suffix, see `format_of`);
    ``check(written_file)`` runs before the file replaces anything at ``path``."""
    format = format_of(path, format)
    if format == "onnx":
        return export_onnx(model, path, size, check=check)
    if format in STATE_DICT_FORMATS:
        return export_state_dict(model, path, format, check=check)
    return export_pt2(model, path, size, check=check)


def export_state_dict(model: nn.Module, path, library: str, check=None) -> Path:
    """Writes ``model``'s weights in ``library``'s key layout (``reference_state_dict``; batch norm
    not folded, every tensor as trained): ``.safetensors``, or a ``torch.save`` file for any other
    suffix. Its preprocessing and class names are not in it; they stay the caller's to carry."""
    from inceptionlab.models.layouts.reference import reference_state_dict

    path = output_path(path, library)
    state = reference_state_dict(model, library)

    def write(target: Path) -> None:
        if target.suffix.lower() == ".safetensors":
            from safetensors.torch import save_file

            from inceptionlab.models.weights import readable_by_umask
            save_file({k: v.contiguous() for k, v in state.items()}, str(target))
            readable_by_umask(target)  # (safetensors writes 0600: a serving user could not read it)
        else:
            torch.save(state, str(target))
    return _write_whole(path, write, check)


# ------------------------------------------------------------------ running and checking
def onnx_session(path, threads: int | None = None):
    """An onnxruntime CPU session for ``path``, with ``threads`` intra-op threads (default: torch's)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("running ONNX files needs onnxruntime; pip install 'inceptionlab[export]'") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """An ONNX file as a callable ``tensor -> tensor``, so the benchmark and predict can use it."""

    def __init__(self, path, threads: int | None = None):
        self.path = Path(path)
        self.session = onnx_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map.get("inceptionlab")
        self.metadata = json.loads(meta) if meta else {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().to("cpu", torch.float32).contiguous()
        return torch.from_numpy(self.session.run(None, {self.input_name: x.numpy()})[0])


def load_pt2(path):
    """The ``torch.export`` program in ``path`` as a module, and its metadata."""
    import zipfile

    if not zipfile.is_zipfile(path):  # (torch.export.load logs a traceback before its own error)
        raise UserError(f"cannot load {path} as a torch.export program (.pt2) (truncated, or not an export: "
                        f"not a zip archive); export it again with inceptionlab export")
    extra = {"inceptionlab.json": ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program.module(), (json.loads(extra["inceptionlab.json"]) if extra["inceptionlab.json"] else {})


EXPORTED_SUFFIXES = (".onnx", ".pt2")


def is_exported_file(name) -> bool:
    """Whether ``name`` names an exported file (by its suffix: it need not exist)."""
    return Path(str(name)).suffix.lower() in EXPORTED_SUFFIXES


def read_metadata(path) -> dict:
    """The inceptionlab metadata of an exported file, without building a session or a program (the
    benchmark checks every row before it times any); a one-line error for a file that is missing,
    damaged, or was exported by another tool."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"exported file {path} does not exist" if not path.is_dir() else
                        f"{path} is a folder; pass the exported .onnx or .pt2 file")
    info = path.stat()
    # copied: a caller may edit its dict; the file is read once per version (the benchmark asks per row)
    return copy.deepcopy(_metadata_of_version(path, info.st_mtime_ns, info.st_size))


@functools.lru_cache(maxsize=16)
def _metadata_of_version(path: Path, _mtime_ns: int, _size: int) -> dict:
    try:
        if path.suffix.lower() == ".onnx":
            import onnx
            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
            text = props.get("inceptionlab")
        else:
            import zipfile
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("/extra/inceptionlab.json")]
                text = archive.read(names[0]).decode() if names else None
        meta = json.loads(text) if text else None
    except ImportError:
        raise UserError("reading ONNX files needs the onnx package; pip install 'inceptionlab[export]'") from None
    except Exception as exc:  # noqa: BLE001 - protobuf, zip, JSON: one line naming the file
        raise _not_an_export(f"read {path} as an export", exc) from None
    return _checked_metadata(path, meta)


def _not_an_export(what: str, exc: Exception) -> UserError:
    """The one-line error for a file that protobuf, zip or JSON could not read as an export."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return UserError(f"cannot {what} (truncated, or not an export: {clipped(first, 120)}); export it again with "
                     f"inceptionlab export")


def _checked_metadata(path, meta, unknown: str = "") -> dict:
    """``meta``, or a one-line error where the file holds no inceptionlab metadata."""
    if not isinstance(meta, dict) or "input_size" not in meta:
        raise UserError(f"{path} has no inceptionlab metadata (another tool exported it); {unknown}"
                        f"export it with inceptionlab export")
    return meta


# the metadata keys that are a model's preprocessing configuration (its ``pretrained_cfg``)
_PREPROCESSING = ("input_size", "mean", "std", "crop_pct", "interpolation", "input_space", "input_range")


class ExportedClassifier(nn.Module):
    """An exported file as a classifier that `inceptionlab.tools.predict` can use: an ONNX file run
    in onnxruntime, or a ``.pt2`` program, with the preprocessing and class names that travel in
    its metadata as ``pretrained_cfg``. Its input size is the one it was exported at."""

    def __init__(self, path, threads: int | None = None):
        super().__init__()
        self.path = Path(path)
        if self.path.is_dir():
            raise UserError(f"{self.path} is a folder; pass the exported .onnx or .pt2 file")
        if not self.path.is_file():
            raise UserError(f"exported file {self.path} does not exist")
        kind = "an ONNX file" if self.path.suffix.lower() == ".onnx" else "a torch.export program (.pt2)"
        try:
            if self.path.suffix.lower() == ".onnx":
                self.runner = OnnxModel(self.path, threads)
                meta = self.runner.metadata
            else:
                self.runner, meta = load_pt2(self.path)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - protobuf, zip, JSON: one line naming the file
            raise _not_an_export(f"load {self.path} as {kind}", exc) from None
        _checked_metadata(self.path, meta, unknown="its preprocessing and classes are unknown: ")
        try:
            self._read_metadata(meta)
        except (TypeError, ValueError, IndexError, KeyError) as exc:  # edited by hand, or by another tool
            raise UserError(f"{self.path} has damaged inceptionlab metadata ({type(exc).__name__}: "
                            f"{str(exc)[:100]}); export it again with inceptionlab export") from None

    def _read_metadata(self, meta: dict) -> None:
        self.pretrained_cfg = {k: tuple(meta[k]) if isinstance(meta[k], list) else meta[k]
                               for k in _PREPROCESSING if k in meta}
        channels, height, width = (int(v) for v in meta["input_size"])  # C x H x W
        self.pretrained_cfg["input_size"] = (channels, height, width)
        for key in ("mean", "std"):
            if key in self.pretrained_cfg:
                self.pretrained_cfg[key] = tuple(float(v) for v in self.pretrained_cfg[key])
        if "crop_pct" in self.pretrained_cfg:
            self.pretrained_cfg["crop_pct"] = float(self.pretrained_cfg["crop_pct"])
        if len(self.pretrained_cfg.get("mean", ())) not in (0, channels) or \
                len(self.pretrained_cfg.get("std", ())) not in (0, channels):
            raise ValueError(f"mean/std of {channels} channel(s) expected")
        if meta.get("classes"):
            self.pretrained_cfg["classes"] = [str(c) for c in meta["classes"]]
        self.pretrained_cfg["architecture"] = meta.get("architecture")
        self.pretrained_cfg["ema"] = meta.get("ema") if isinstance(meta.get("ema"), bool) else None
        random_weights = meta.get("random_weights")  # (None: not known, as in files written before it)
        self.pretrained_cfg["random_weights"] = random_weights if isinstance(random_weights, bool) else None
        if isinstance(meta.get("switches"), dict):
            self.pretrained_cfg["switches"] = dict(meta["switches"])
        self.num_classes = None if meta.get("num_classes") is None else int(meta["num_classes"])
        if self.pretrained_cfg.get("classes") and self.num_classes not in (None, len(self.pretrained_cfg["classes"])):
            raise ValueError(f"{len(self.pretrained_cfg['classes'])} class names for {self.num_classes} classes")
        self.in_chans = channels

    def train(self, mode: bool = True) -> "ExportedClassifier":
        """An export is always in inference mode (a ``.pt2`` program refuses ``train()``)."""
        if mode:
            raise UserError(f"{self.path.name} is an inference export; it cannot be trained")
        self.training = False
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(self.pretrained_cfg["input_size"][1:])
        if tuple(x.shape[-2:]) != size:  # N x C x H x W, H and W fixed at export
            raise UserError(f"{self.path.name} was exported for {size[0]}x{size[1]} input, got "
                            f"{x.shape[-2]}x{x.shape[-1]}; drop --size, or export again with --size")
        return self.runner(x)


# The exported file must give PyTorch's logits to 1e-4 (issue 5), or to 1e-5 of the largest logit
# when they are large: float32 rounds a logit of 3000 to 2.4e-4, and folding the batch norms in
# PyTorch alone moves a briefly trained Inception-v3's logits of 3000 by 3e-3.
ABSOLUTE_TOLERANCE, RELATIVE_TOLERANCE = 1e-4, 1e-5


def allowed_difference(largest_logit: float) -> float:
    """How far the exported file's logits may be from PyTorch's, given the largest |logit|."""
    return max(ABSOLUTE_TOLERANCE, RELATIVE_TOLERANCE * largest_logit)


@torch.no_grad()
def logit_difference(exported, model: nn.Module, size: int | None = None, batches=(1, 3)) -> tuple[float, float]:
    """The largest |logit difference| between ``exported`` (a callable) and ``model`` in eval mode,
    over random batches of the given sizes, and the largest |logit| of ``model`` on them."""
    model = copy.deepcopy(model).eval()
    worst = largest = 0.0
    for b in batches:
        x = _example(model, size, batch=b)
        want = model(x).float()
        worst = max(worst, (exported(x).float() - want).abs().max().item())
        largest = max(largest, want.abs().max().item())
    return worst, largest


def max_abs_difference(exported, model: nn.Module, size: int | None = None, batches=(1, 3)) -> float:
    """The largest |logit difference| between ``exported`` and ``model`` (`logit_difference`)."""
    return logit_difference(exported, model, size, batches)[0]
