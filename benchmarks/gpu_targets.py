"""Issue 5 on a GPU: CUDA correctness for the six families, then AMP throughput against timm.

Prepared for a session that is lent a device (one call; not yet run on one: about 5-7 minutes on an
H200 is an estimate, and ``--max-minutes`` bounds the timing part):

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_targets.py --out $OUT

then, back on the development machine, copy the returned gpu_correctness.md, gpu_targets.csv and
gpu_targets.json into benchmarks/results/ and run ``python benchmarks/report.py``. Here, on the
CPU, the same code runs at toy sizes (the test suite runs this form):

    python benchmarks/gpu_targets.py --device cpu --quick --results-dir /tmp/gpu-check

Part 1 (correctness, random weights, seed 0, TF32 off) checks, for every family:
  - eager fp32 logits on the device against the CPU's;
  - `optimize_for_inference` on the device against eager (the issue's allclose 1e-4);
  - AMP inference (eager and the fast path) against fp32, per precision;
  - one AMP training step (fp16 with a gradient scaler, bf16 without): finite loss and
    gradients, every trained parameter moved, the loss within the precision's tolerance of fp32;
  - float64 training steps on the device, channels-last and NCHW, against the CPU's: the same
    gradients (1e-8).
Part 2 (speed): inception_v3, v4 and inception_resnet_v2 at 299 px, inference and training, in
AMP, channels-last, cuDNN autotuning on, against timm timed in alternation in the same process.

Writes ``gpu_correctness.md`` and ``gpu_targets.csv`` (+ ``.json``) into the results folder
(default benchmarks/results/, which regenerates BENCHMARKS.md); ``--out DIR`` copies them there
too. The run stops starting new rows after ``--max-minutes``; what it measured is kept.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import add_results_dir, is_published, run_script, save_result, write_report  # noqa: E402
from inceptionlab.models import create_model  # noqa: E402
from inceptionlab.tools import benchmark as bench  # noqa: E402
from inceptionlab.tools.fast import make_optimizer, optimize_for_inference, prepare_for_training  # noqa: E402

FAMILIES = ["googlenet", "bn_inception", "inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2"]
TARGET_MODELS = ["inception_v3", "inception_v4", "inception_resnet_v2"]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# relative tolerances (max |difference| / max |fp32 value|) of AMP against fp32: bf16 keeps 8 bits of mantissa, fp16 11
AMP_TOLERANCE = {"bf16": 0.05, "fp16": 0.01}
AMP_LOSS_TOLERANCE = {"bf16": 0.1, "fp16": 0.02}
EXACT = 1e-4  # fp32 on another device or in another memory format: the same arithmetic, another order


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value - reference| / max |reference|."""
    value, reference = value.detach().float().cpu(), reference.detach().float().cpu()
    return ((value - reference).abs().max() / reference.abs().max().clamp_min(1e-12)).item()


def allclose_ratio(value: torch.Tensor, reference: torch.Tensor, tol: float = EXACT) -> float:
    """max |value - reference| / (tol + tol * |reference|): at most 1 means allclose(rtol=atol=tol)."""
    value, reference = value.detach().float().cpu(), reference.detach().float().cpu()
    return ((value - reference).abs() / (tol + tol * reference.abs())).max().item()


def gradient_error(grads: dict, reference: dict) -> float:
    """max |g - g_ref| over every parameter / the largest |g_ref| of any parameter: near-zero
    gradients (a bias before a batch norm) compared on the scale of the rest."""
    scale = max(g.abs().max().item() for g in reference.values())
    return max((grads[k].cpu().double() - g.double()).abs().max().item() for k, g in reference.items()) / scale


def _check(model: str, check: str, value: float, limit: float) -> dict:
    return {"model": model, "check": check, "value": value, "limit": limit, "ok": value <= limit}


def _train_step(model, x, y, device, precision: str | None):
    """One SGD step of ``model`` on (x, y) (autocast in ``precision``, a gradient scaler for fp16);
    returns (loss, {name: gradient})."""
    optimizer = make_optimizer(model.parameters(), lr=0.01)
    torch.manual_seed(1)  # the same dropout mask for every step compared
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    context = torch.autocast(device.type, dtype=DTYPES[precision]) if precision else torch.autocast(
        device.type, enabled=False)
    with context:
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.detach(), grads


def check_family(name: str, device: torch.device, img_size: int | None, batch: int,
                 precisions: list[str], **switches) -> list[dict]:
    """Part 1 for one family (at ``img_size``, default the family's own input size; ``switches``
    such as a smaller depth_multiplier for a quick run); one row per check."""
    torch.manual_seed(0)
    cpu_model = create_model(name, **switches).eval()
    img_size = img_size or cpu_model.pretrained_cfg["input_size"][-1]
    x_cpu = torch.randn(batch, 3, img_size, img_size)
    y_cpu = torch.randint(0, cpu_model.num_classes, (batch,))
    x, y = x_cpu.to(device), y_cpu.to(device)
    rows = []
    with torch.no_grad():
        expected = cpu_model(x_cpu)
        model = copy.deepcopy(cpu_model).to(device)
        eager = model(x)
    rows.append(_check(name, f"eager fp32 at {img_size} px, batch {batch}: device vs CPU (relative)",
                       relative_error(eager, expected), EXACT))
    fast = optimize_for_inference(model)
    rows.append(_check(name, "optimize_for_inference vs eager (allclose 1e-4: <= 1)",
                       allclose_ratio(fast(x), eager), 1.0))
    for precision in precisions:
        with torch.no_grad(), torch.autocast(device.type, dtype=DTYPES[precision]):
            amp_eager, amp_fast = model(x), fast(x)
        tol = AMP_TOLERANCE[precision]
        rows.append(_check(name, f"{precision} autocast inference vs fp32 (relative)",
                           relative_error(amp_eager, eager), tol))
        rows.append(_check(name, f"{precision} autocast fast path vs fp32 (relative)",
                           relative_error(amp_fast, eager), tol))

    def trainable(channels_last: bool, dtype=torch.float32, on=device):
        m = copy.deepcopy(cpu_model).to(on, dtype)
        return prepare_for_training(m, channels_last=channels_last)

    # gradients in float64: at random initialization and batch 4 the network amplifies rounding, so
    # two float32 runs that only sum in another order disagree on deep layers' gradients (measured,
    # Inception-v4 at 160 px: NCHW float32 is 38% off float64 on its worst layer, channels-last
    # float32 53%), while in float64 channels-last and NCHW agree to 5e-11
    x64 = x.double()
    _, ref_grads = _train_step(trainable(False, torch.float64, torch.device("cpu")), x_cpu.double(), y_cpu,
                               torch.device("cpu"), None)
    for channels_last in (False, True):
        layout = "channels-last" if channels_last else "NCHW"
        data = x64.contiguous(memory_format=torch.channels_last) if channels_last else x64
        _, grads = _train_step(trainable(channels_last, torch.float64), data, y, device, None)
        rows.append(_check(name, f"fp64 train step, {layout} on the device vs NCHW on the CPU: gradients (relative)",
                           gradient_error(grads, ref_grads), 1e-8))
    ref_loss32, _ = _train_step(trainable(True), x, y, device, None)
    for precision in precisions:
        model = trainable(channels_last=True)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        loss, grads = _train_step(model, x, y, device, precision)
        finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads.values())
        # a bias right before a training-mode batch norm has a zero gradient (the norm removes any
        # per-channel constant): such a parameter rightly stays where it is
        stuck = sum(torch.equal(before[n], p.detach()) for n, p in model.named_parameters()
                    if n in grads and bool(grads[n].any()))
        rows.append(_check(name, f"{precision} train step: loss and gradients finite (0 = yes)",
                           float(not finite), 0.0))
        rows.append(_check(name, f"{precision} train step: parameters with a nonzero gradient left unchanged",
                           float(stuck), 0.0))
        rows.append(_check(name, f"{precision} train step: loss vs fp32 (relative)", relative_error(loss, ref_loss32),
                           AMP_LOSS_TOLERANCE[precision]))
    return rows


def correctness_markdown(rows: list[dict], command: str, info: dict) -> str:
    failed = [r for r in rows if not r["ok"]]
    lines = ["## gpu_correctness", "", f"Command: `{command}`", "",
             f"Device: {info.get('gpu') or info.get('cpu')}; torch {info.get('torch')}; measured "
             f"{time.strftime('%Y-%m-%d %H:%M %Z')}. Random weights (seed 0), TF32 off.", "",
             f"{len(rows) - len(failed)} of {len(rows)} checks passed" + (
                 ": failed " + "; ".join(f"{r['model']} {r['check']}" for r in failed) if failed else "") + ".", "",
             "| model | check | value | limit | ok |", "|---|---|---:|---:|---|"]
    lines += [f"| {r['model']} | {r['check']} | {r['value']:.3g} | {r['limit']:.3g} | {'yes' if r['ok'] else 'NO'} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu runs the same checks and timings on the CPU (to exercise the script)")
    parser.add_argument("--quick", action="store_true",
                        help="toy sizes: checks at 96 px and a quarter of the width; one model timed at 75 px, "
                             "batch 2, one step")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=FAMILIES, help="the families checked")
    parser.add_argument("--precisions", nargs="+", choices=sorted(DTYPES), default=None,
                        help="AMP precisions (default: bf16 fp16 on the GPU, bf16 on the CPU)")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 128], help="batch sizes timed")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--max-minutes", type=float, default=6.0, help="no new timed row starts after this")
    parser.add_argument("--no-timing", dest="timing", action="store_false", help="part 1 only")
    add_results_dir(parser)
    parser.add_argument("--out", type=Path, default=None, help="also copy the written files here")
    args = parser.parse_args(argv)
    start = time.time()
    command = "python benchmarks/gpu_targets.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run this on the GPU machine, or pass --device cpu to exercise the script",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    precisions = args.precisions or (["bf16", "fp16"] if device.type == "cuda" else ["bf16"])
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    info = bench.machine()
    results = args.results_dir
    results.mkdir(parents=True, exist_ok=True)
    written = []

    # part 1: correctness
    checks = []
    for name in args.families:
        rows = check_family(name, device, 96 if args.quick else None, 4, precisions,
                            **(dict(depth_multiplier=0.25) if args.quick else {}))
        checks += rows
        bad = [r["check"] for r in rows if not r["ok"]]
        print(f"{name}: {len(rows) - len(bad)}/{len(rows)} checks pass"
              + (f"; FAILED: {bad}" if bad else ""))
    path = results / "gpu_correctness.md"
    path.write_text(correctness_markdown(checks, command.strip(), info))
    written.append(path)

    # part 2: speed, in AMP, against timm
    if args.timing:
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        models = TARGET_MODELS[:1] if args.quick else TARGET_MODELS
        batches = [2] if args.quick else args.batches
        size = 75 if args.quick else 299  # (Inception-v3's smallest input: the CPU check times bf16 slowly)
        warmup, iters = (1, 1) if args.quick else (args.warmup, args.iters)
        configs = [bench.Config(m, size, b, mode, p, reference="timm")
                   for p in precisions for mode in ("infer", "train") for m in models for b in batches]
        peaks = {p: bench.measure_peak(p, device=device, repeats=1 if args.quick else 8) for p in precisions}
        info.update({f"peak_gflops_{p}": round(v, 1) for p, v in peaks.items()})
        rows = []
        for cfg in configs:
            if time.time() - start > args.max_minutes * 60:
                info["partial"] = True
                print(f"--max-minutes {args.max_minutes} reached: {len(configs) - len(rows)} rows not measured")
                break
            row = bench.run_config(cfg, peaks[cfg.precision], warmup, iters, device)
            rows.append(row)
            mode = row["mode"]
            print(f"{cfg.model} {mode} b{cfg.batch} {cfg.precision}: {row[f'{mode}_samples_per_sec']} img/s, "
                  f"timm {row['ref_samples_per_sec']} img/s, ratio {row['ratio']}x")
            info["wall_seconds"] = round(time.time() - start)
            csv_path = save_result("gpu_targets", rows, info, command.strip(), folder=results)
        if rows:
            print()
            print(bench.format_rows(rows))
            written += [csv_path, csv_path.with_suffix(".json")]
    if is_published(results):
        written.append(write_report())
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for path in written:
            shutil.copy(path, args.out / path.name)
    failed = sum(not r["ok"] for r in checks)
    print(f"\n{len(checks) - failed}/{len(checks)} correctness checks pass; wrote "
          f"{', '.join(str(p) for p in written)} in {time.time() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    run_script(main)
