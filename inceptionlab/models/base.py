"""`InceptionNet`: one model class for the whole zoo, built from a family's stage table.

The network is an ordered dict of named blocks (TF-slim's end-point names, lower-cased), optional
auxiliary heads tapped after named blocks, and a classifier head. It follows timm's model API:
``forward_features``, ``forward_head(x, pre_logits=False)``, ``reset_classifier``,
``get_classifier``, ``feature_info``, plus ``forward_endpoints`` for any named block.

Output is one type across the zoo: a logits tensor, except in train mode with auxiliary heads,
where it is ``InceptionOutput(logits, aux)`` with ``aux`` a tuple of aux logits in depth order.
"""
from __future__ import annotations

import contextlib
import math
import numbers
from typing import NamedTuple, Sequence

import torch
import torch.nn as nn

from inceptionlab.errors import UserError
from inceptionlab.models.layers import AuxHead, ClassifierHead, Concat
from inceptionlab.models.spec import Block, Builder, Switches


class InceptionOutput(NamedTuple):
    logits: torch.Tensor
    aux: tuple


class InceptionNet(nn.Module):
    def __init__(self, name: str, stem: Sequence[tuple[str, Block]], body: Sequence[tuple[str, Block]],
                 switches: Switches, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 aux_heads: dict | None = None):
        """``aux_heads`` maps a block name to a factory ``(builder, in_chs, num_classes) -> AuxHead``."""
        super().__init__()
        self._build(name, stem, body, switches, num_classes, in_chans, drop_rate, aux_heads)

    def _build(self, name, stem, body, switches, num_classes, in_chans, drop_rate, aux_heads) -> None:
        self.name = name
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.switches = switches
        builder = Builder(switches)
        self.blocks = nn.ModuleDict()
        self.aux_heads = nn.ModuleDict()
        chs, block_chs = in_chans, {}
        device = torch.empty(0).device  # the caller's default device (meta when only counting)
        with torch.device("meta"):  # no default initialization: init_weights fills every tensor
            for part, table in (("stem", stem), ("body", body)):
                for block_name, spec in table:
                    module, chs = builder.block(spec, chs, in_stem=part == "stem")
                    if module is not None:
                        self.blocks[block_name] = module
                        block_chs[block_name] = chs
            for tap, make_head in (aux_heads or {}).items():
                self.aux_heads[tap] = make_head(builder, block_chs[tap], num_classes)
            self.head = ClassifierHead(chs, num_classes, drop_rate)
        self.to_empty(device=device)
        self.num_features = chs
        self.feature_info = _feature_info(self.blocks, block_chs)
        self._sizes_checked: set = set()  # input sizes whose geometry was checked
        self.grad_checkpointing = False
        self.min_input_size = _min_input_size(self, with_aux=False)
        self.min_train_size = _min_input_size(self, with_aux=True)  # the aux heads run in train mode
        # the input configuration; the registry adds the model card (input size, mean/std, ...)
        self.pretrained_cfg = dict(num_classes=num_classes,
                                   min_input_size=(in_chans, self.min_input_size, self.min_input_size))
        if device.type != "meta":
            init_weights(self)

    # ------------------------------------------------------------------ API
    def check_input(self, x: torch.Tensor) -> None:
        """A clear error for the wrong rank, channel count or a too small image."""
        if type(x).__name__ == "Proxy" and type(x).__module__.startswith("torch.fx"):
            raise UserError(f"{self.name} does not trace with torch.fx.symbolic_trace (its input checks and fast "
                            f"paths read the tensor's shape); use torch.export.export(model.eval(), (x,)) or "
                            f"torch.jit.trace(model.eval(), x)")
        if not isinstance(x, torch.Tensor):
            raise UserError(f"{self.name} takes a torch.Tensor batch (N x {self.in_chans} x H x W), got "
                            f"{type(x).__name__}; convert it with torch.as_tensor")
        if not x.is_floating_point():
            raise UserError(f"{self.name} takes normalized float images, got {x.dtype}; convert with "
                            f"x.float() / 255, then subtract the mean and divide by the std of model.pretrained_cfg")
        weight = next(self.parameters(), None)
        if (weight is not None and x.dtype != weight.dtype and weight.is_floating_point()
                and not torch.is_autocast_enabled(x.device.type)):
            raise UserError(f"{self.name} has {weight.dtype} weights and the input is {x.dtype}; convert the "
                            f"input (x.to({weight.dtype})) or the model (model.to({x.dtype})), or run under "
                            f"torch.autocast")
        shape = _static_shape(x)
        if len(shape) == 3 and shape[0] == self.in_chans:
            raise UserError(f"{self.name} expects a N x {self.in_chans} x H x W batch, got one image of shape "
                            f"{shape}; add the batch dimension (x.unsqueeze(0))")
        if len(shape) != 4:
            raise UserError(f"{self.name} expects a N x {self.in_chans} x H x W batch, got shape {shape}")
        if shape[1] != self.in_chans:
            raise UserError(f"{self.name} expects a N x {self.in_chans} x H x W batch, got shape "
                            f"{shape}; pass in_chans={shape[1]} to create_model or convert the images")
        h, w = shape[2:]
        if isinstance(h, torch.SymInt) or isinstance(w, torch.SymInt):  # dynamic shapes
            self._check_dynamic_size()
        with_aux = self._aux_in_use() and self.min_train_size > self.min_input_size
        m = self.min_train_size if with_aux else self.min_input_size
        if h < m or w < m:
            hint = ("use stem='low_res' for small images" if self.switches.stem == "imagenet"
                    else "resize the images up")
            if with_aux and h >= self.min_input_size and w >= self.min_input_size:  # only the aux heads need more
                hint = f"resize the images up, or build the model without aux_logits (eval mode takes {h}x{w})"
            aux = " with aux_logits=True in train mode" if with_aux else ""
            raise UserError(f"{self.name}{aux} needs at least {m}x{m} input, got {h}x{w}; {hint}")
        if not torch.compiler.is_compiling() and (h, w) not in self._sizes_checked:
            # (skipped while torch.compile/export traces: a cached set is a side effect it cannot keep,
            # and a symbolic H or W (dynamic shapes) cannot be hashed; checked first for that reason)
            if not _fits(self, (h, w), with_aux, branches_agree=True):
                near = [n for n in range(max(m, min(h, w) - 16), max(h, w) + 17)
                        if _fits(self, (n, n), with_aux, branches_agree=True)]
                raise UserError(f"{self.name} cannot take {h}x{w} input: the branches of a stride-2 module "
                                f"would disagree in size (as in the reference weights' layout); use a size "
                                f"such as {', '.join(map(str, near[:4])) or self.pretrained_cfg['input_size'][-1]}")
            self._sizes_checked.add((h, w))

    def _check_dynamic_size(self) -> None:
        """torch.export with a dynamic H or W: ceil-mode pools (GoogLeNet's and BN-Inception's, as in
        the reference weights) give output sizes whose guards torch's shape solver cannot prove
        (it failed deep inside sympy); say so in one line. torch.compile(dynamic=True) handles them."""
        if torch.compiler.is_exporting() and any(getattr(m, "ceil_mode", False) for m in self.blocks.modules()):
            raise UserError(f"{self.name} exports with a static H and W only (its ceil-mode pools give sizes "
                            f"torch.export cannot solve for); make only the batch dimension dynamic, and export "
                            f"once per input size (a tensor an earlier export with Dim.AUTO took stays marked "
                            f"dynamic: pass x.clone())")

    def forward_endpoints(self, x: torch.Tensor, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """The output of every named block in ``names`` (all blocks when None)."""
        self.check_input(x)
        if isinstance(names, str):
            names = [names]
        wanted = set(self.blocks) if names is None else set(names)
        unknown = wanted - set(self.blocks)
        if unknown:
            raise UserError(f"{self.name} has no block {sorted(unknown)[0]!r}; blocks are {', '.join(self.blocks)}")
        out = {}
        recompute = self._recomputing()
        for name, block in self.blocks.items():
            if out and getattr(block, "writes_into_input", False):  # (optimize_for_inference's residuals)
                x = x.clone()  # the block adds into its input: a kept endpoint was overwritten
            x = _checkpointed(block, x) if recompute else block(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's API. With it on, a forward pass that records gradients keeps only each block's
        input and recomputes the block's maps in the backward pass: less memory for about one more
        forward pass of time. Batch norm's running statistics still move once per step. Not with
        torch.compile, which cannot trace the checkpoint's guard of those statistics."""
        self.grad_checkpointing = bool(enable)

    def _recomputing(self) -> bool:
        """Whether this forward pass checkpoints its blocks: switched on, and recording gradients."""
        return self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_tracing()

    def _forward_blocks(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, list]:
        aux = []
        recompute = self._recomputing()
        for name, block in self.blocks.items():
            x = _checkpointed(block, x) if recompute else block(x)
            if with_aux and name in self.aux_heads:
                aux.append(self.aux_heads[name](x))
        return x, aux

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self._forward_blocks(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        shape = _static_shape(x)
        if len(shape) != 4 or shape[1] != self.num_features:
            raise UserError(f"forward_head takes forward_features' output, N x {self.num_features} x H x W; got "
                            f"shape {shape}")
        return self.head(x, pre_logits=pre_logits)

    def __prepare_scriptable__(self):
        """``torch.jit.script`` calls this first: the blocks' fast paths are Python that TorchScript
        cannot compile, so say what works instead of failing deep inside a layer."""
        raise UserError(f"{self.name} does not compile with torch.jit.script; use torch.jit.trace(model.eval(), "
                        f"example_input), torch.export.export, torch.compile, or inceptionlab export --format "
                        f"onnx|pt2")

    def _aux_in_use(self) -> bool:
        """Aux outputs come in training, from a model that has aux heads and classes (after
        ``reset_classifier(0)`` the heads have no classifier; they keep their weights for a later one)."""
        return self.training and len(self.aux_heads) > 0 and self.num_classes > 0

    def forward(self, x: torch.Tensor):
        self.check_input(x)
        with_aux = self._aux_in_use()
        try:
            features, aux = self._forward_blocks(x, with_aux)  # N x C x H' x W', [N x classes per aux head]
            logits = self.forward_head(features)
        except ValueError as exc:  # batch norm over N x 1 x 1 values in training
            if "more than 1 value per channel" not in str(exc):
                raise
            raise UserError(f"{self.name} in train mode needs more than one value per channel in each batch norm, "
                            f"and a batch of {x.shape[0]} gives one where a map is 1x1 (the aux heads, an "
                            f"embedding); train on batches of 2 or more images, or call model.eval()") from None
        return InceptionOutput(logits, tuple(aux)) if with_aux else logits

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier (and new aux classifiers) for ``num_classes``; 0 removes it. timm's
        signature: ``global_pool`` may only name the pooling these networks have ("avg")."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 0:
            raise UserError(f"num_classes must be a whole number >= 0 (0 removes the classifier), got {num_classes!r}")
        if global_pool not in (None, "avg"):
            raise UserError(f"global_pool {global_pool!r} is not available: the Inception heads average-pool "
                            f"(pass 'avg' or leave it out)")
        num_classes = int(num_classes)
        self.num_classes = num_classes
        self.pretrained_cfg["num_classes"] = num_classes
        # a new classifier: the old one's class names and ImageNet top-1 are not its own (save_pretrained
        # wrote 5 names beside a 3-class classifier, which predict then refused)
        for key in ("classes", "top1", "weights_top1_source"):
            self.pretrained_cfg.pop(key, None)
        if "switches" in self.pretrained_cfg:
            self.pretrained_cfg["switches"] = {**self.pretrained_cfg["switches"], "num_classes": num_classes}
        fc_in = getattr(self.head, "fc_in", self.num_features)  # an embedding head classifies its embedding
        self.head.fc = nn.Linear(fc_in, num_classes) if num_classes > 0 else nn.Identity()
        for head in self.aux_heads.values():
            head.fc = nn.Linear(head.fc_in, num_classes) if num_classes > 0 else nn.Identity()
        for m in [self.head.fc] + [h.fc for h in self.aux_heads.values()]:
            if isinstance(m, nn.Linear):
                _init_linear(m)

    def drop_aux_heads(self) -> None:
        """Removes the auxiliary heads, and the larger train-mode minimum input size they needed."""
        self.aux_heads = nn.ModuleDict()
        self.min_train_size = self.min_input_size

    @property
    def has_aux(self) -> bool:
        return len(self.aux_heads) > 0

    def save_pretrained(self, directory, classes=None):
        """Writes config.json + model.safetensors; ``create_model(directory)`` restores this model."""
        from inceptionlab.models.weights import save_pretrained
        return save_pretrained(self, directory, classes=classes)


class FeatureExtractor(nn.Module):
    """``create_model(..., features_only=True)``: a list of feature maps at ``out_indices``.

    It takes ``model`` over, as timm's feature wrappers do: the model's head and aux heads are
    removed, and its blocks past the deepest level asked for; pass ``copy.deepcopy(model)`` to keep
    the classifier."""

    def __init__(self, model: InceptionNet, out_indices: Sequence[int] | None = None):
        super().__init__()
        n = len(model.feature_info)
        if out_indices is not None and not isinstance(out_indices, (list, tuple, range)):
            raise UserError(f"out_indices must be a list of feature levels, e.g. (1, 3), 0..{n - 1}, or (-1,) for the "
                            f"last; got {out_indices!r}")
        out_indices = tuple(range(n)) if out_indices is None else tuple(out_indices)
        if not out_indices:
            raise UserError(f"out_indices is empty: name at least one feature level of 0..{n - 1}")
        for i in out_indices:
            if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
                raise UserError(f"out_indices must lie in 0..{n - 1} (or -{n}..-1 from the end) for "
                                f"{model.name}, got {i!r}")
        out_indices = tuple(i % n for i in out_indices)
        self.feature_info = FeatureInfo(model.feature_info[i] for i in out_indices)
        self.out_names = [info["module"] for info in self.feature_info]
        blocks = list(model.blocks)  # the deepest block asked for, in whatever order they were asked
        last = max((blocks.index(name) for name in self.out_names), default=-1)
        model.head = nn.Identity()  # type: ignore[assignment]
        model.drop_aux_heads()
        for name in list(model.blocks)[last + 1:]:
            del model.blocks[name]
        self.model = model

    @property
    def pretrained_cfg(self) -> dict:
        """The network's input configuration (size, mean, std...): the preprocessing to feed it."""
        return self.model.pretrained_cfg

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """As `InceptionNet.set_grad_checkpointing`, for the blocks up to the deepest level asked for."""
        self.model.set_grad_checkpointing(enable)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        ends = self.model.forward_endpoints(x, self.out_names)
        return [ends[name] for name in self.out_names]


def _checkpointed(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)``, its maps recomputed in the backward pass (the random state of dropout too)."""
    from torch.utils.checkpoint import checkpoint
    return checkpoint(block, x, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), _statistics_kept(block)))


@contextlib.contextmanager
def _statistics_kept(block: nn.Module):
    """The recomputation runs batch norm in training mode again, which would move its running
    statistics a second time (and count a second batch); they are put back as they were."""
    norms = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.training
             and m.track_running_stats]
    kept = [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, mean, var, count in kept:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


# ------------------------------------------------------------------ geometry
def block_output_size(block: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    """The output H, W of ``block`` (any module of convolutions and poolings) for an input of ``size``."""
    return _spatial(block, tuple(size))


def _static_shape(x: torch.Tensor) -> tuple[int, ...]:
    """The shape of ``x`` as ints. Under torch.jit.trace (and the TorchScript-based ONNX exporter)
    the sizes are 0-dim tensors, which hash by identity (every branch looked different, and tracing
    refused sizes that eager mode takes) and warn when compared. The checks only read them; the
    traced graph is the same."""
    if not torch.jit.is_tracing():
        return tuple(x.shape)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return tuple(int(n) for n in x.shape)


def _spatial(module: nn.Module, size: tuple[int, int], trace: list | None = None,
             all_branches: bool = True) -> tuple[int, int]:
    """The output H, W of ``module`` for an input of ``size``; appends every intermediate to trace.
    Parallel branches that disagree give (0, 0); ``all_branches=False`` follows the first only
    (monotone in the input size, for the search of the minimum)."""
    window = _window(module)
    if window is not None:
        pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
        k, s, p, d, ceil = window
        k, s, p, d = pair(k), pair(s), pair(p), pair(d)
        out = []
        for n, ki, si, pi, di in zip(size, k, s, p, d):
            span = n + 2 * pi - di * (ki - 1) - 1
            o = (math.ceil(span / si) if ceil else span // si) + 1
            if ceil and (o - 1) * si >= n + pi:
                o -= 1
            out.append(o)
        size = (out[0], out[1])
    elif isinstance(module, Concat):
        branches = module.branches if all_branches else module.branches[:1]
        sizes = {_spatial(branch, size, trace, all_branches) for branch in branches}
        size = sizes.pop() if len(sizes) == 1 else (0, 0)  # (0, 0): the branches disagree
    else:
        for child in module.children():
            if not isinstance(child, (AuxHead, ClassifierHead)):
                size = _spatial(child, size, trace, all_branches)
    if trace is not None:
        trace.append(size)
    return size


def _window(module: nn.Module):
    """(kernel, stride, padding, dilation, ceil_mode) of a convolution or pooling, else None. A
    module holding a 4-d ``weight`` and a ``stride`` (a fused convolution) counts as a convolution."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return (module.kernel_size, module.stride, module.padding, getattr(module, "dilation", 1),
                getattr(module, "ceil_mode", False))
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 4 and hasattr(module, "stride"):
        return tuple(weight.shape[2:]), module.stride, module.padding, getattr(module, "dilation", 1), False
    return None


def _fits(model: InceptionNet, n, with_aux: bool, branches_agree: bool = False) -> bool:
    """Whether every intermediate map of an n x n (or (h, w)) input is at least 1x1, and, with
    ``branches_agree``, whether the parallel branches of every module give the same size."""
    trace: list = []
    size = n if isinstance(n, tuple) else (n, n)
    for name, block in model.blocks.items():
        size = _spatial(block, size, trace, branches_agree)
        if with_aux and name in model.aux_heads:
            _spatial(model.aux_heads[name], size, trace, branches_agree)
    return all(h >= 1 and w >= 1 for h, w in trace)


def _min_input_size(model: InceptionNet, with_aux: bool) -> int:
    """The smallest input side that works: the least size whose maps stay at least 1x1, then
    upwards to the first one at which every module's branches agree in size."""
    lo, hi = 1, 4096
    while lo < hi:
        mid = (lo + hi) // 2
        if _fits(model, mid, with_aux):
            hi = mid
        else:
            lo = mid + 1
    while lo < 4096 and not _fits(model, lo, with_aux, branches_agree=True):
        lo += 1
    return lo


class FeatureInfo(list):
    """``model.feature_info``: one dict per feature level (``num_chs``, ``reduction``, ``module``),
    with timm's accessors: ``.channels()``, ``.reduction()``, ``.module_name()``."""

    def channels(self) -> list[int]:
        return [info["num_chs"] for info in self]

    def reduction(self) -> list[int]:
        return [info["reduction"] for info in self]

    def module_name(self) -> list[str]:
        return [info["module"] for info in self]


def _feature_info(blocks: nn.ModuleDict, block_chs: dict) -> FeatureInfo:
    """The last block at each resolution: channels, reduction against the input, and name."""
    size, ref = (4096, 4096), 4096
    names = [n for n in blocks if not isinstance(blocks[n], (nn.MaxPool2d, nn.AvgPool2d))]
    reductions = []
    for name in blocks:
        size = _spatial(blocks[name], size)
        if name in names:
            reductions.append(2 ** round(math.log2(ref / size[0])))
    return FeatureInfo(dict(num_chs=block_chs[name], reduction=reductions[i], module=name)
                       for i, name in enumerate(names) if i + 1 == len(names) or reductions[i + 1] != reductions[i])


# ------------------------------------------------------------------ initialization
_ERF_2 = math.erf(2 / math.sqrt(2))  # P(|z| < 2) for a standard normal


@torch.no_grad()
def _trunc_normal(tensor: torch.Tensor, std: float) -> None:
    """Normal(0, std) truncated at +-2 std."""
    _trunc_normal_all([(tensor, std)])


@torch.no_grad()
def _trunc_normal_all(weights: list) -> None:
    """Fills each (tensor, std) with Normal(0, std) truncated at +-2 std, by the inverse CDF.

    One draw for all tensors: erfinv on many small tensors costs more in per-op overhead than in
    arithmetic, and torch's rejection sampler is 20x slower still."""
    if not weights:
        return
    total = sum(t.numel() for t, _ in weights)
    draws = torch.empty(total, device=weights[0][0].device).uniform_(-_ERF_2, _ERF_2).erfinv_().mul_(math.sqrt(2))
    with _one_thread():
        start = 0
        for tensor, std in weights:
            n = tensor.numel()
            torch.mul(draws[start:start + n].view_as(tensor), std, out=tensor)
            start += n


@contextlib.contextmanager
def _one_thread():
    """For hundreds of small tensor operations: thread hand-offs cost more than the work (5x slower
    with two threads on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _init_linear(m: nn.Linear) -> None:
    _trunc_normal(m.weight, 0.01)
    if m.bias is not None:
        nn.init.zeros_(m.bias)


def init_weights(model: nn.Module) -> None:
    """TF's variance-scaling truncated normal (fan-in, gain 2) for convolutions, a small truncated
    normal for fully connected layers, BN at identity: what the TF-trained references used, and
    stable with ``norm=False`` too."""
    weights = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
            weights.append((m.weight, math.sqrt(2.0 / fan_in) / 0.8796))
        elif isinstance(m, nn.Linear):
            weights.append((m.weight, 0.01))
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
        elif next(m.parameters(recurse=False), None) is not None:
            raise TypeError(f"init_weights does not know how to initialize {type(m).__name__}")
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)
    _trunc_normal_all(weights)
