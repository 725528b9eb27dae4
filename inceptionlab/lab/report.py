"""The report of a lab directory: ``results.json``, ``report.md``, ``report.html`` and the plots.

One document is built as a list of blocks (headings, paragraphs, tables, figures) and written
twice: as Markdown next to the PNG files, and as one self-contained HTML file whose images are
inline ``data:`` URIs (it opens anywhere, with no network and no other file).
"""
from __future__ import annotations

import base64
import datetime
import html
import json
import math
from pathlib import Path

from inceptionlab.files import atomic_write_text
from inceptionlab.lab.plan import Plan
from inceptionlab.lab.results import collect

SUPPORTED_TEXT = {True: "yes, the measurement bears the claim out",
                  False: "no, the measurement does not bear the claim out",
                  # (also a claim whose first half held and whose second did not: "cannot settle it" contradicted that)
                  None: "undecided: these runs do not settle the whole claim"}
SKIPPED_SHOWN = 5  # unreadable files the report names per sentence (each run's summary.json lists them all)


# ------------------------------------------------------------------ entry point
def make_report(plan: Plan, lab_dir, data_source: str | None = None, val_images: int | None = None,
                classes: int | None = None) -> dict:
    """Collects the results of ``lab_dir``, judges the study (if any), draws, and writes the report."""
    from inceptionlab.lab.plots import draw_all
    from inceptionlab.lab.studies import get_study

    lab_dir = Path(lab_dir)
    study = get_study(plan.study) if plan.study else None
    results = collect(plan, lab_dir, data_source=data_source, target_fn=study.target if study else None,
                      val_images=val_images)
    results.update(val_images=val_images, classes=classes)
    results["created"] = datetime.datetime.now().isoformat(timespec="seconds")
    if study is not None:
        results["study"] = study.verdict(results)
    results["plots"] = draw_all(results, lab_dir)
    write_report(results, lab_dir)
    return results


def write_report(results: dict, lab_dir) -> None:
    lab_dir = Path(lab_dir)
    atomic_write_text(json.dumps(_clean(results), indent=1) + "\n", lab_dir / "results.json")
    blocks = document(results)
    atomic_write_text(to_markdown(blocks), lab_dir / "report.md")
    atomic_write_text(to_html(blocks, results["title"], lab_dir), lab_dir / "report.html")


def _clean(value):
    """JSON-safe: NaN and infinities become null (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


# ------------------------------------------------------------------ formatting numbers
def fmt(key: str, value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, dict) and "mean" in value:
        text = fmt(key, value["mean"])
        return text if value.get("n", 1) < 2 else f"{text} ± {fmt(key, value['std'])}"
    if key in ("params", "macs"):
        for scale, unit in ((1e9, "G"), (1e6, "M")):
            if value >= scale:
                return f"{value / scale:.2f}{unit}"
        return f"{value / 1e3:.1f}k"
    if key.endswith("images_per_sec") or key in ("steps", "steps_to_target"):
        return f"{value:,.0f}"
    if key in ("best_top1", "best_top5", "final_top1", "final_top5", "final_train_top1", "ece", "target_top1"):
        return f"{value:.2f}"
    if "loss" in key:  # a diverging run's 1e23 printed 24 digits
        return f"{value:.4f}" if abs(value) < 1e5 else f"{value:.3e}"
    if key in ("seconds", "seconds_to_target"):
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def number(value: float) -> str:
    """A study's number as its verdict writes it: two decimals ("20.00", "-0.78"), or three
    significant digits far from 1 ("1.23e+07", "0.000123")."""
    if value != 0 and not 0.01 <= abs(value) < 1e5:
        return f"{value:.3g}"
    return f"{value:.2f}"


RUN_COLUMNS = [("params", "params"), ("macs", "multiply-adds"), ("train_images_per_sec", "train img/s"),
               ("infer_images_per_sec", "inference img/s"), ("best_top1", "best top-1 %"),
               ("best_top5", "best top-5 %"), ("final_val_loss", "final val loss"),
               ("final_train_loss", "final train loss"), ("final_train_top1", "final train top-1 %"),
               ("steps", "steps"), ("seconds", "seconds"),
               ("steps_to_target", "steps to target"), ("seconds_to_target", "seconds to target")]
VARIANT_COLUMNS = [("best_top1", "best top-1 %"), ("best_top5", "best top-5 %"),
                   ("final_val_loss", "final val loss"), ("steps_to_target", "steps to target"),
                   ("seconds_to_target", "seconds to target"), ("train_images_per_sec", "train img/s"),
                   ("infer_images_per_sec", "inference img/s")]


def _measured(columns: list[tuple[str, str]], items: list[dict]) -> list[tuple[str, str]]:
    """The columns, less top-5 when no item has one (5 classes or fewer: every image is in its top 5),
    and less the training top-1 when no run logged it (runs of a version before it was logged)."""
    return [(k, t) for k, t in columns
            if k not in ("best_top5", "final_train_top1") or any(i.get(k) is not None for i in items)]


def run_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    columns = _measured(RUN_COLUMNS, results["runs"])
    head = ["run", "model", "status"] + [title for _, title in columns]
    rows = []
    for r in results["runs"]:
        rows.append([r["name"], r["model"], r["status"]] + [fmt(k, r.get(k)) for k, _ in columns])
    return head, rows


def variant_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    columns = _measured(VARIANT_COLUMNS, results["variants"])
    head = ["variant", "model", "finished / runs"] + [f"{t} (mean ± std)" for _, t in columns]
    rows = []
    for v in results["variants"]:
        cells = []
        for key, _ in columns:
            text = fmt(key, v.get(key))
            if key.endswith("_to_target"):
                text += f" ({v.get(key + '_reached', 0)}/{v['finished']} reached)"
            elif v.get(key) and v[key]["n"] < v["finished"]:  # a finished seed without it: say over how many
                text += f" (n={v[key]['n']})"
            cells.append(text)
        rows.append([v["variant"], v["model"], f"{v['finished']} / {v['n']}"] + cells)
    return head, rows


def setting_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    head = ["run", "model", "switches of its own", "settings of its own", "seed"]
    rows = []
    for r in results["runs"]:
        left_out = f" (from scratch, without the shared {', '.join(r['left_out'])})" if r.get("left_out") else ""
        rows.append([r["name"], r["model"], _kv(r.get("own_switches")) or "-", (_kv(r.get("train")) or "-") + left_out,
                     str(r["seed"])])
    return head, rows


# settings that change what a run sees or how long it trains
DATA_AND_BUDGET = ("epochs", "steps", "minutes", "limit_per_class", "val_limit_per_class", "val_split", "img_size", "augment",
                   "crop_scale", "hflip", "distort", "batch_size", "strict")


def _sameness(plan: dict) -> str:
    # a run's own budget sits at its top level (steps: 2), its other settings under train:
    varied = sorted({k for run in plan.get("runs", []) for k in [*(run.get("train") or {}), *run]
                     if k in DATA_AND_BUDGET})
    seeds = len(plan.get("seeds") or [0])
    if seeds > 1:  # a model's runs differ in seed; the variants at one seed share it
        who, seed = "Every variant", (f"the same seed at each of the {seeds} seeds (which set the split, "
                                      f"initialization and augmentation)")
    else:
        who, seed = "Every run", "the same split and augmentation seed"
    if varied:
        return f"{who} saw the same data and {seed}; some runs set their own {', '.join(varied)} (see below)."
    return f"{who} saw the same data and budget, and {seed}."


def skipped_notes(results: dict) -> list[str]:
    """The files the runs skipped as unreadable: one sentence when every run skipped the same ones, else one
    per run that skipped any; [] when none did."""
    ran = [r for r in results["runs"] if r.get("skipped_files") is not None]
    skipping = [r for r in ran if r["skipped_files"]]
    data = (results.get("plan") or {}).get("data")
    files = {r["name"]: sorted(_in_data(s.get("path"), data) for s in r["skipped_files"]) for r in skipping}
    if len(ran) > 1 and len(skipping) == len(ran) and len({tuple(f) for f in files.values()}) == 1:
        return [_skipped_sentence(files[skipping[0]["name"]], "every run", skipping[0])]
    return [_skipped_sentence(files[r["name"]], f"run {r['name']}", r) for r in skipping]


def _skipped_sentence(files: list[str], who: str, run: dict) -> str:
    shown = ", ".join(files[:SKIPPED_SHOWN]) + (f" and {len(files) - SKIPPED_SHOWN} more" if len(files) > SKIPPED_SHOWN
                                                 else "")
    return (f"{len(files)} unreadable file(s) skipped by {who}: {shown} (counted in the images above, never trained "
            f"or validated on; all of them, with the reasons, in {run['dir']}/summary.json)")


def _in_data(path, data) -> str:
    """``path`` relative to the data folder where it lies inside it."""
    try:
        return str(Path(str(path)).relative_to(Path(str(data))))
    except ValueError:
        return str(path)


def _kv(mapping) -> str:
    return ", ".join(f"{k}={v}" for k, v in (mapping or {}).items())


def _flatten(numbers: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for key, value in numbers.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _flatten(value, name + " / ")
        elif isinstance(value, list):
            out.append((name, ", ".join(str(v) for v in value)))
        elif isinstance(value, float):
            out.append((name, number(value)))
        else:
            out.append((name, "-" if value is None else str(value)))
    return out


# ------------------------------------------------------------------ the document
def document(results: dict) -> list[tuple]:
    """The report as blocks: ("h1"|"h2"|"p"|"quote", text), ("table", head, rows), ("figure", plot),
    ("list", items)."""
    plan = results["plan"]
    blocks: list[tuple] = [("h1", results["title"])]
    budget = ", ".join(f"{k} {v:g}" for k, v in results["budget"].items()) or "per-run budgets"
    runs = plan.get("runs") or []
    # a setting every run sets for itself is not shared (the batchnorm study's lr per arm)
    own_everywhere = set.intersection(*[set(r.get("train") or {}) for r in runs]) if runs else set()
    shared = _kv({k: v for k, v in (plan.get("train") or {}).items() if k not in own_everywhere}) or "engine defaults"
    blocks.append(("p", f"Data: {results.get('data_source') or plan.get('data') or 'embedded digits'}. "
                        f"Budget per run: {budget}. Seeds: {', '.join(map(str, results['seeds']))}. "
                        f"Shared switches: {_kv(plan.get('model_kwargs')) or 'none'}. "
                        f"Shared training settings: {shared}. Target accuracy: {results['target_rule']}. "
                        + _sameness(plan)))
    skipped = skipped_notes(results)
    if skipped:  # (the report said nothing of them, and its image counts include them)
        blocks.append(("list", skipped))
    study = results.get("study")
    if study:
        blocks += [("h2", f"The claim: {study['title']}"), ("quote", f"{study['claim']} ({study['paper']})"),
                   ("h2", "What was measured"), ("p", study["verdict"]),
                   ("p", f"Does it bear the claim out? {SUPPORTED_TEXT[study['supported']]}.")]
        numbers = _flatten(study.get("numbers") or {})
        if numbers:
            blocks.append(("table", ["number", "value"], [list(n) for n in numbers]))
    failed = [r for r in results["runs"] if r["status"] != "finished"]
    if failed:
        blocks += [("h2", "Runs that did not finish"),
                   ("list", [f"{r['name']}: {r['status']} - {r.get('message') or 'no message'}" for r in failed])]
    from inceptionlab.lab.results import best_top1
    unscored = [r for r in results["runs"] if r["status"] == "finished" and best_top1(r) is None]
    if unscored:  # finished, yet nothing to compare: its cells read "-" and its variant's means leave it out
        blocks += [("h2", "Finished runs without an evaluation"),
                   ("list", [f"{r['name']}: {r.get('steps') or 0} steps, no validation score; the tables' means "
                             f"leave it out" for r in unscored])]
    blocks += [("h2", "Runs"), ("table", *run_rows(results))]
    if any(v["n"] > 1 for v in results["variants"]):
        blocks += [("h2", "Over seeds"), ("table", *variant_rows(results))]
    blocks += [("h2", "What each run varies (beyond the shared switches and settings above)"),
               ("table", *setting_rows(results))]
    if results["plots"]:
        blocks.append(("h2", "Plots"))
        blocks += [("figure", p) for p in results["plots"]]
    blocks.append(("p", "Multiply-adds are for one image at the run's input size (inference, no auxiliary heads), "
                        "while parameters count every weight of the network, frozen ones and auxiliary heads included "
                        "(each run's start line says how many a fine-tune trained); inference images/s "
                        "is the median of a few timed batches on this machine; seconds are the run's wall-clock "
                        "time to its last training step, the evaluations and checkpoints on the way included (the "
                        "clock that --minutes budgets) and the final evaluation after it not, while train img/s counts the "
                        "training steps alone; the training loss is the loss that was minimized (auxiliary heads' "
                        "weighted losses and label smoothing included), the validation loss plain cross-entropy "
                        "of the main head, comparable across runs; every number here is in results.json."))
    return blocks


def md_text(text: str) -> str:
    """Text for Markdown: ``<`` and ``&`` escaped, which a viewer would otherwise read as HTML (a title
    of ``<script>`` or a failure message of ``<b>`` came through raw); ``>`` starts no tag and stays."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;")


def to_markdown(blocks: list[tuple]) -> str:
    out = []
    esc = md_text
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out.append(f"# {esc(block[1])}")
        elif kind == "h2":
            out.append(f"## {esc(block[1])}")
        elif kind == "p":
            out.append(esc(block[1]))
        elif kind == "quote":
            out.append(f"> {esc(block[1])}")
        elif kind == "list":
            out.append("\n".join(f"- {esc(item)}" for item in block[1]))
        elif kind == "table":
            head, rows = block[1], block[2]
            lines = ["| " + " | ".join(esc(h) for h in head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(esc(c).replace("|", "\\|") for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "figure":
            plot = block[1]
            out.append(f"![{esc(plot['title'])}]({plot['file']})\n\n*{esc(plot['caption'])}*")
    return "\n\n".join(out) + "\n"


CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.3em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.86em}th,td{border:1px solid #ccc;padding:.25em .55em}
th{background:#f3f3f3;text-align:left}td{text-align:right}td:first-child,td:nth-child(2){text-align:left}
blockquote{margin:.5em 0;padding:.4em 1em;border-left:4px solid #88a;background:#f6f6fb}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
"""


def to_html(blocks: list[tuple], title: str, lab_dir: Path) -> str:
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{esc(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{esc(block[1])}</p>")
        elif kind == "quote":
            out.append(f"<blockquote>{esc(block[1])}</blockquote>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            head, rows = block[1], block[2]
            out.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
            out.append("</tbody></table>")
        elif kind == "figure":
            plot = block[1]
            data = base64.b64encode((Path(lab_dir) / plot["file"]).read_bytes()).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(plot["title"])}">'
                       f"<figcaption>{esc(plot['title'])}: {esc(plot['caption'])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ the terminal
def terminal_table(results: dict) -> str:
    """A short fixed-width table for the end of a compare."""
    head = ["run", "status", "params", "MMACs", "train img/s", "best top-1", "val loss", "steps", "seconds"]
    rows = []
    for r in results["runs"]:
        rows.append([r["name"], r["status"], fmt("params", r.get("params")),
                     "-" if r.get("macs") is None else f"{r['macs'] / 1e6:.1f}",
                     fmt("train_images_per_sec", r.get("train_images_per_sec")), fmt("best_top1", r.get("best_top1")),
                     fmt("final_val_loss", r.get("final_val_loss")), fmt("steps", r.get("steps")),
                     fmt("seconds", r.get("seconds"))])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    lines = [line(head), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]
    study = results.get("study")
    if study:
        lines += ["", f"claim:   {study['claim']}", f"verdict: {study['verdict']}",
                  f"         ({SUPPORTED_TEXT[study['supported']]})"]
    return "\n".join(lines)
