"""What a model costs, block by block: output shape, parameters and multiply-adds.

Multiply-adds (MACs) are half the FLOPs that ``torch.utils.flop_counter.FlopCounterMode`` counts
for one image: convolutions and matrix products, the operations that dominate these networks
(pooling, batch norm and ReLU are not counted, as in the papers and the references' model cards).
Counting runs the model on the ``meta`` device, so it allocates no memory and takes a fraction of a
second even for Inception-ResNet-v2.

- `count_macs(model, size)`       total MACs of one inference forward pass (any ``nn.Module``)
- `model_summary(model, size)`    one `Row` per named block of an `InceptionNet`, then its head
                                  and its auxiliary heads
- `zoo_summary()`                 one row per registered model: the README's table
- `explain_factorization(name)`   each factorized convolution of a model against the unfactorized
                                  one, next to the savings the v3 paper states (Sec. 3.1 and 3.2)
"""
from __future__ import annotations

import copy
import difflib
import numbers
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from inceptionlab.errors import UserError
from inceptionlab.models.layers import Concat, ConvBN, ScaledResidual


@dataclass
class Row:
    """One line of a summary: a named block (or the head, or an aux head) of a model."""
    name: str
    kind: str
    out_shape: tuple  # C, H, W (C for the classifier heads)
    params: int
    macs: int
    inference: bool = True  # False for auxiliary heads: they run in training only


# ------------------------------------------------------------------ counting
def _on_meta(model: nn.Module) -> nn.Module:
    """A weightless copy of ``model`` on the meta device, in eval mode."""
    if all(p.device.type == "meta" for p in model.parameters()):
        return model.eval()
    return copy.deepcopy(model).to("meta").eval()


def _input_size(model: nn.Module, size: int | None) -> int:
    if size is not None:
        # (numbers.Integral: a numpy integer is a size too; -5 raised deep in torch)
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise UserError(f"size must be a positive whole number of pixels, got {size!r}")
        return int(size)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    return int(cfg.get("input_size", (3, 299, 299))[-1])


def _check_size(model: nn.Module, size: int, with_aux: bool = False) -> None:
    """The model's own check (the minimum size and the fix); ``with_aux``: as in training, where the
    auxiliary heads run too and may need a larger input."""
    check = getattr(model, "check_input", None)
    if check is not None:
        was_training = model.training
        model.train(with_aux)
        try:
            check(torch.empty(1, getattr(model, "in_chans", 3), size, size, device="meta"))
        finally:
            model.train(was_training)


def count_macs(model: nn.Module, size: int | None = None) -> int:
    """Multiply-adds of one ``size`` x ``size`` image through ``model`` in eval mode
    (``FlopCounterMode`` FLOPs / 2). Works for any image model with ``in_chans`` (default 3)."""
    size = _input_size(model, size)
    _check_size(model, size)
    meta = _on_meta(model)
    x = torch.empty(1, getattr(model, "in_chans", 3), size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        meta(x)
    return int(counter.get_total_flops()) // 2


def count_training_macs(model: nn.Module, size: int | None = None) -> int:
    """`count_macs` and the aux heads' multiply-adds, which run in training (where ``size`` lets them)."""
    size = _input_size(model, size)
    macs = count_macs(model, size)
    if aux_rows_fit(model, size):
        counts, _ = _trace(model, size)
        macs += sum(n for path, n in counts.items() if path.startswith("aux_heads."))
    return macs


def _trace(model: nn.Module, size: int, with_aux: bool = True) -> tuple[dict, dict]:
    """Runs an `InceptionNet` on meta once: ({module path: MACs}, {block or aux name: output shape}).

    Module paths are ``model.named_modules()`` names ("" for the whole model, "blocks.mixed_5b",
    "blocks.mixed_5b.branches.0.conv", ...)."""
    meta = _on_meta(model)
    x = torch.empty(1, meta.in_chans, size, size, device="meta")
    shapes: dict = {}
    hooks = [block.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
             for name, block in meta.blocks.items()]
    root = type(meta).__name__
    try:
        with FlopCounterMode(display=False) as counter:
            logits = meta(x)  # the whole model, so that module paths start at its root
            shapes["head"] = tuple(logits.shape[1:])
        counts = {_strip(k, root): sum(v.values()) // 2 for k, v in counter.get_flop_counts().items()}
        if with_aux:
            for tap, head in meta.aux_heads.items():
                ends = meta.forward_endpoints(x, [tap])
                with FlopCounterMode(display=False) as aux_counter:
                    out = head(ends[tap])
                counts[f"aux_heads.{tap}"] = aux_counter.get_total_flops() // 2
                shapes[f"aux:{tap}"] = tuple(out.shape[1:])
    finally:
        for hook in hooks:
            hook.remove()
    return counts, shapes


def _strip(key: str, root: str) -> str:
    if key == root:
        return ""
    return key[len(root) + 1:] if key.startswith(root + ".") else key


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(module: nn.Module) -> str:
    """A few words for a block: 'conv 3x3/2', 'inception, 4 branches', 'residual x0.17', ..."""
    if isinstance(module, ConvBN):
        kh, kw = module.conv.kernel_size
        return f"conv {kh}x{kw}/{module.conv.stride[0]}"
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        s = module.stride if isinstance(module.stride, int) else module.stride[0]
        return f"{'max' if isinstance(module, nn.MaxPool2d) else 'avg'} pool {k}x{k}/{s}"
    if isinstance(module, ScaledResidual):
        return f"residual, {len(module.branches.branches)} branches, x{module.scale:g}"
    if isinstance(module, Concat):
        strided = any(isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) and _stride(m) > 1
                      for m in module.modules())
        return f"{'reduction' if strided else 'inception'}, {len(module.branches)} branches"
    if isinstance(module, nn.Sequential):
        return " + ".join(describe(m) for m in module)
    return type(module).__name__


def _stride(m: nn.Module) -> int:
    s = m.stride
    return s if isinstance(s, int) else s[0]


def aux_rows_fit(model: nn.Module, size: int) -> bool:
    """Whether the auxiliary heads of ``model`` run in training at ``size`` (and have classes to
    give: after ``reset_classifier(0)`` they give nothing)."""
    if not getattr(model, "aux_heads", None) or getattr(model, "num_classes", 1) == 0:
        return False
    return size >= getattr(model, "min_train_size", 0)


def model_summary(model: nn.Module, size: int | None = None) -> list[Row]:
    """One `Row` per named block of an `InceptionNet` (a whole Inception module is one row), then
    the classifier head, then each auxiliary head (marked ``inference=False``) when they run at
    ``size`` in training (see `aux_rows_fit`): v3's need 299 pixels where its body takes 75."""
    if not hasattr(model, "blocks") or not hasattr(model, "aux_heads"):
        raise UserError(f"model_summary takes a model of the zoo (create_model without features_only), got "
                        f"{type(model).__name__}; count_macs(model, size) counts any image model")
    size = _input_size(model, size)
    _check_size(model, size)
    with_aux = aux_rows_fit(model, size)
    counts, shapes = _trace(model, size, with_aux=with_aux)
    rows = [Row(name, describe(block), shapes[name], _params(block), counts.get(f"blocks.{name}", 0))
            for name, block in model.blocks.items()]
    rows.append(Row("head", describe_head(model), shapes["head"], _params(model.head), counts.get("head", 0)))
    for tap, head in (model.aux_heads.items() if with_aux else ()):
        rows.append(Row(f"aux:{tap}", "auxiliary classifier (training)", shapes[f"aux:{tap}"], _params(head),
                        counts[f"aux_heads.{tap}"], inference=False))
    return rows


def describe_head(model: nn.Module) -> str:
    """'avg pool + fc 2048->1000', with an embedding between where the head has one (IRv1's facenet head)."""
    embedding = getattr(model.head, "embedding", None)
    pooled = (f"avg pool + embedding {embedding.in_features}->{embedding.out_features}"
              if isinstance(embedding, nn.Linear) else "avg pool")
    if not model.num_classes:  # (it said "fc 256->0" of the identity reset_classifier(0) leaves)
        return f"{pooled}, no classifier (num_classes=0)"
    width = embedding.out_features if isinstance(embedding, nn.Linear) else model.num_features
    return f"{pooled} + fc {width}->{model.num_classes}"


def totals(rows: list[Row]) -> dict:
    """Parameters and MACs of inference (aux heads excluded) and of training (with them)."""
    return dict(params=sum(r.params for r in rows if r.inference),
                macs=sum(r.macs for r in rows if r.inference),
                params_with_aux=sum(r.params for r in rows),
                macs_with_aux=sum(r.macs for r in rows))


def format_summary(rows: list[Row], title: str = "") -> str:
    """`model_summary`'s rows as the table `inceptionlab summary` prints: one line per block (what
    it is, output shape, parameters, MMACs), then the totals of inference and of training."""
    t = totals(rows)
    lines = [title] if title else []
    lines.append(f"{'block':<18} {'what':<36} {'output':>16} {'params':>12} {'MMACs':>10}")
    lines.append("-" * 96)
    for r in rows:
        shape = " x ".join(str(v) for v in r.out_shape)
        lines.append(f"{r.name:<18} {r.kind:<36} {shape:>16} {r.params:>12,} {r.macs / 1e6:>10.1f}")
    lines.append("-" * 96)
    lines.append(f"{'total':<18} {'(inference: aux heads excluded)':<36} {'':>16} {t['params']:>12,} "
                 f"{t['macs'] / 1e6:>10.1f}")
    if t["params_with_aux"] != t["params"]:
        lines.append(f"{'':<18} {'training, with aux heads':<36} {'':>16} {t['params_with_aux']:>12,} "
                     f"{t['macs_with_aux'] / 1e6:>10.1f}")
    lines.append(f"{t['params'] / 1e6:.3f} M parameters, {t['macs'] / 1e9:.3f} GMACs per image")
    return "\n".join(lines)


# ------------------------------------------------------------------ the zoo
def build_on_meta(name: str, **switches) -> nn.Module:
    """``create_model(name, **switches)`` without memory or initialization cost (meta device)."""
    import warnings

    from inceptionlab.models.registry import create_model
    with torch.device("meta"), warnings.catch_warnings():
        # a saved folder's weights load into meta tensors as a no-op, with one warning per tensor
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
        return create_model(name, **switches).eval()


def zoo_summary(names: list[str] | None = None) -> list[dict]:
    """One row per registered model at 1000 classes and its default input size."""
    from inceptionlab.models.registry import list_models, model_card

    rows = []
    for name in names or list_models():
        model = build_on_meta(name)
        card = model_card(name)
        size = model.pretrained_cfg["input_size"][-1]
        rows.append(dict(model=name, params=_params(model), gmacs=count_macs(model, size) / 1e9,
                         input_size=size, paper=card.get("paper", ""), top1=card.get("top1"),
                         reference=card.get("reference", "")))
    return rows


def format_zoo(rows: list[dict], markdown: bool = False) -> str:
    head = ["model", "params (M)", "GMACs", "input", "top-1 (ref. weights)", "paper"]
    body = [[r["model"], f"{r['params'] / 1e6:.2f}", f"{r['gmacs']:.3f}", f"{r['input_size']}x{r['input_size']}",
             f"{r['top1']:.2f}" if r["top1"] is not None else "-", r["paper"]] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * 4 + ["---"]) + "|"]
        lines += ["| " + " | ".join(b) + " |" for b in body]
        return "\n".join(lines)
    return "\n".join(_table(head, body, left={0, 5}))


# ------------------------------------------------------------------ factorization
# the switches that undo a factorization, and the section of "Rethinking" that states its saving
FACTORIZATIONS = {"factorize_5x5": "Sec. 3.1", "factorize_nxn": "Sec. 3.2"}


@dataclass
class Factorization:
    """Convolutions of the model against the ones they replace in the unfactorized original."""
    block: str
    switch: str         # the switch that split them, or both: "factorize_5x5+factorize_nxn"
    factorized: str     # e.g. "3x3 64->96 + 3x3 96->96"
    unfactorized: str   # e.g. "5x5 64->96"
    macs: int           # of the factorized convolutions, this model
    macs_unfactorized: int
    block_macs: int     # the whole block, this model
    block_macs_unfactorized: int  # the whole block, with every factorize switch off
    paper_saving: float  # the saving with equal channel counts, as the paper computes it

    @property
    def saving(self) -> float:
        return 1.0 - self.macs / self.macs_unfactorized

    @property
    def block_saving(self) -> float:
        return 1.0 - self.block_macs / self.block_macs_unfactorized


def _convs(model: nn.Module, block: str, counts: dict) -> list[tuple]:
    """(kernel, in, out, stride, MACs) of each convolution in a block, in order."""
    out = []
    for path, m in model.blocks[block].named_modules():
        if isinstance(m, nn.Conv2d):
            out.append((tuple(m.kernel_size), m.in_channels, m.out_channels, m.stride[0],
                        counts.get(f"blocks.{block}.{path}", 0)))
    return out


def _describe_convs(convs) -> str:
    return " + ".join(f"{k[0]}x{k[1]} {i}->{o}" for k, i, o, _, _ in convs)


def _is_factorization(switch: str, factorized, unfactorized) -> bool:
    """Whether a group of changed convolutions is the factorization ``switch`` stands for."""
    before = {k for k, *_ in unfactorized}
    after = {k for k, *_ in factorized}
    if switch == "factorize_5x5":
        return before == {(5, 5)} and after == {(3, 3)}
    n = {k[0] for k in before}
    return len(n) == 1 and all(k[0] == k[1] for k in before) and after <= {(1, *n), (*n, 1)}


def _paper_saving(factorized, unfactorized) -> float:
    """What the paper's arithmetic gives with equal channel counts: 1 - (sum of the factorized
    kernels' areas) / (area of the kernel they replace); 28% for 5x5 -> 3x3+3x3, 33% for 3x3 ->
    1x3+3x1, 71% for 7x7 -> 1x7+7x1."""
    area = lambda convs: sum(k[0] * k[1] for k, *_ in convs)  # noqa: E731
    return 1.0 - area(factorized) / area(unfactorized)


@dataclass
class Explanation:
    """`explain_factorization`'s answer: the factorized convolutions found, and the whole model's
    MACs with each factorization switched off."""
    name: str
    size: int
    macs: int
    unfactorized_macs: dict  # "factorize_nxn=False" (and later ", factorize_5x5=False") -> MACs of that model
    found: list

    def as_dict(self) -> dict:
        """The fields, and each factorization's savings (properties, which ``asdict`` leaves out)."""
        doc = asdict(self)
        for entry, factorization in zip(doc["found"], self.found):
            entry.update(saving=factorization.saving, block_saving=factorization.block_saving)
        return doc


def _factorizations_in_block(block: str, chain: list[tuple]) -> list[Factorization]:
    """The factorized convolutions of ``block`` in ``chain[0]``'s model against the last model of
    ``chain``, whose other models each undo one more switch: ``[(None, model, counts), (switch,
    model without it, counts), ...]``.

    Each step pairs the convolutions that changed, and a step that undoes the convolutions of an
    earlier one extends that entry: with both switches on, a 5x5 that became two 3x3 and then four
    1x3/3x1 is one entry, "factorize_5x5+factorize_nxn", whose convolutions are in the model."""
    _, model, counts = chain[0]
    unfactorized_counts = chain[-1][2]
    built = _convs(model, block, counts)
    ours = built
    became = [{i} for i in range(len(built))]  # per convolution of `ours`: the indices in `built` it became
    entries: list = []  # (switches, indices in `ours` of the convolutions it replaced)
    for switch, plain, plain_counts in chain[1:]:
        theirs = _convs(plain, block, plain_counts)
        theirs_became = [set() for _ in theirs]
        moved: dict = {}  # index in `ours` -> the indices in `theirs` (one switch fewer) it came from
        new_entries = []
        # the convolutions that differ, aligned by kernel and channels (MACs left out)
        matcher = difflib.SequenceMatcher(None, [c[:4] for c in ours], [c[:4] for c in theirs], autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            pairs = zip(range(i1, i2), range(j1, j2)) if tag == "equal" else \
                [(i, j) for i in range(i1, i2) for j in range(j1, j2)]
            for i, j in pairs:
                theirs_became[j] |= became[i]
                moved.setdefault(i, set()).add(j)
            if tag == "equal" or i1 == i2 or j1 == j2 or not _is_factorization(switch, ours[i1:i2], theirs[j1:j2]):
                continue
            earlier = [e for e in entries if e[1] & set(range(i1, i2))]
            entries = [e for e in entries if e not in earlier]
            new_entries.append(({s for e in earlier for s in e[0]} | {switch}, set(range(j1, j2))))
        entries = [(s, {j for i in replaced for j in moved.get(i, ())}) for s, replaced in entries] + new_entries
        ours, became = theirs, theirs_became
    found = []
    for switches, replaced in entries:
        if not replaced:  # (a later switch removed what it had replaced: nothing to compare with)
            continue
        u = [ours[j] for j in sorted(replaced)]
        positions = sorted(set().union(*(became[j] for j in replaced)))
        f = [built[i] for i in positions]
        found.append((positions[:1], Factorization(
            block=block, switch="+".join(s for s in FACTORIZATIONS if s in switches),
            factorized=_describe_convs(f), unfactorized=_describe_convs(u),
            macs=sum(c[4] for c in f), macs_unfactorized=sum(c[4] for c in u),
            block_macs=counts.get(f"blocks.{block}", 0),
            block_macs_unfactorized=unfactorized_counts.get(f"blocks.{block}", 0),
            paper_saving=_paper_saving(f, u))))
    return [entry for _, entry in sorted(found, key=lambda pair: pair[0])]  # in the block's order


def explain_factorization(name: str, size: int | None = None, **switches) -> Explanation:
    """Every factorized convolution in ``create_model(name, **switches)``, against the model built
    with the factorize switches off (the unfactorized original), block by block. ``name`` may be a
    saved folder.

    The factorizations are undone one at a time, the last first: ``factorize_nxn``, then
    ``factorize_5x5``. (Undoing the 5x5 alone, with the n x n split on, gives a 1x5 + 5x1, not the
    5x5 the paper's figure counts against.) A convolution that both split (a 5x5 as two 3x3, each as
    1x3 + 3x1) is one entry, its four convolutions against the 5x5, so that the entries add up to
    the difference of the two models."""
    from inceptionlab.models.registry import is_saved_folder, model_entry

    model = build_on_meta(name, **switches)
    if is_saved_folder(name):  # its architecture, at its own switches: the variants below have no weights to load
        switches = {**model.pretrained_cfg.get("switches", {}), **switches}
        name = model.name
        model = build_on_meta(name, **switches)
    size = _input_size(model, size)
    _check_size(model, size)
    accepted = model_entry(name).switches
    steps = [switch for switch in FACTORIZATIONS if switch in accepted and switches.get(switch) is not False]
    chain = [(None, model, _trace(model, size, with_aux=False)[0])]  # the model, then one switch fewer each
    unfactorized: dict = {}
    off: dict = {}
    undone: list = []  # the switches whose undoing changed the model, for the lines of whole-model MACs
    for switch in reversed(steps):  # undo the last factorization first
        off[switch] = False
        plain = build_on_meta(name, **{**switches, **off})
        if list(plain.blocks) != list(chain[-1][1].blocks):
            continue
        plain_counts, _ = _trace(plain, size, with_aux=False)
        if plain_counts[""] != chain[-1][2][""]:
            undone.append(switch)
            unfactorized[", ".join(f"{k}=False" for k in undone)] = plain_counts[""]
        chain.append((switch, plain, plain_counts))
    found = [f for block in model.blocks for f in _factorizations_in_block(block, chain)]
    return Explanation(name, size, chain[0][2][""], unfactorized, found)


def _table(head: list[str], body: list[list[str]], left: set[int]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [fmt(head), "-" * (sum(widths) + 2 * (len(widths) - 1))] + [fmt(b) for b in body]


# models whose default switches give factorized convolutions: what an empty explanation suggests
FACTORIZED_MODELS = ("inception_v3", "inception_v3_paper")


def format_factorization(ex: Explanation) -> str:
    if not ex.found:
        from inceptionlab.models.registry import model_entry

        # (googlenet's 5x5 branch is a 3x3, as torchvision built it: factorize_5x5=true alone is refused)
        five = ("kernel_5x5=5 factorize_5x5=true" if model_entry(ex.name).defaults.get("kernel_5x5", 5) != 5
                else "factorize_5x5=true")
        # (one of these models finds nothing only where its switches are off: it suggested itself)
        others = [m for m in FACTORIZED_MODELS if m != ex.name]
        return (f"{ex.name} has no factorized convolutions at these switches (factorize_5x5 / factorize_nxn "
                f"change nothing); try {', '.join(others)} or --model-kwargs {five} or factorize_nxn=true")
    chained = any("+" in f.switch for f in ex.found)  # a convolution both switches split
    lines = [f"Factorized convolutions in {ex.name} at {ex.size}x{ex.size}, against the same model with the "
             f"factorize switches off (MMACs per image).",
             "'paper' is the saving with equal channel counts, as \"Rethinking\" computes it: Sec. 3.1, 28% for a "
             "5x5 as two 3x3; Sec. 3.2, 33% for a 3x3 as 1x3 + 3x1 (1 - 2/n for n x n)"
             + ("; both, 52% for a 5x5 as two 3x3 split in turn (1 - 12/25)." if chained else "."), ""]
    body, seen = [], set()
    for f in ex.found:  # the block's saving, against the whole unfactorized block, on its first row
        block_saving = f"{f.block_saving:.0%}" if f.block not in seen else ""
        seen.add(f.block)
        body.append([f.block, f.factorized, f"{f.macs / 1e6:.1f}", f.unfactorized, f"{f.macs_unfactorized / 1e6:.1f}",
                     f"{f.saving:.0%}", f"{f.paper_saving:.0%}", block_saving])
    total_f, total_u = sum(f.macs for f in ex.found), sum(f.macs_unfactorized for f in ex.found)
    lines += _table(["block", "factorized", "MMACs", "instead of", "MMACs", "saving", "paper", "block saving"],
                    body, left={0, 1, 3})
    lines.append(f"all factorized convolutions: {total_f / 1e6:.1f} MMACs instead of {total_u / 1e6:.1f} "
                 f"({1 - total_f / total_u:.0%} saved)")
    for undone, macs in ex.unfactorized_macs.items():  # (a switch that changes nothing has no line)
        lines.append(f"whole model: {ex.macs / 1e9:.3f} GMACs; with {undone} {macs / 1e9:.3f} GMACs "
                     f"({1 - ex.macs / macs:.0%} saved)")
    return "\n".join(lines)
