"""Other convolution paths for CPU inference, measured layer by layer: are there any left?

    python benchmarks/infer_conv_paths.py                          # inception_v4 at batch 8
    python benchmarks/infer_conv_paths.py --models inception_v3 inception_v4 --batch 8

`optimize_for_inference` runs every convolution as one oneDNN primitive (direct convolution,
ReLU fused, weights prepacked). Issue 5's hardest target, Inception-v4 at batch 8 at 1.25x timm's
images/s, is the one left unmet on the CPU (1.08-1.17x on the AVX2 EPYC, 1.17-1.23x on the AVX-512 Xeon).
This script measures the two paths that do less work or move less memory than that, and what
is left besides the convolutions (the profiler's share of them in our forward pass).

1. **Winograd / FFT through NNPACK** (`torch._nnpack_spatial_convolution`: fewer multiplications
   for 3x3 and larger stride-1 kernels, NCHW only): each distinct convolution of the model at the
   batch size, oneDNN (channels-last, prepacked, ReLU fused) against NNPACK (NCHW, then ReLU), timed
   in alternation; the total if every layer took the faster of the two.
2. **Merging the 1x1 openers of a module** (one GEMM over the branches' output channels instead of
   one per branch, then dense copies of the slices that later layers read): per module kind.

Weights are random (timing only); medians of ``--repeats`` alternated rounds. Writes
benchmarks/results/infer_conv_paths.md and regenerates BENCHMARKS.md (``--results-dir DIR``: DIR's
file only).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import add_results_dir, run_script, write_section  # noqa: E402
from inceptionlab import create_model  # noqa: E402
from inceptionlab.models.layers import Concat, _mergeable_openers  # noqa: E402
from inceptionlab.tools import benchmark as bench  # noqa: E402
from inceptionlab.tools.summary import count_macs  # noqa: E402


def convolutions(model: nn.Module, size: int) -> list[tuple[nn.Conv2d, tuple]]:
    """(convolution, its input shape at batch 1) for every convolution the forward pass runs, in order."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, inp, out: seen.append((m, tuple(inp[0].shape))))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, size, size))
    for h in hooks:
        h.remove()
    return seen


def onednn(conv: nn.Conv2d, x: torch.Tensor, pointwise: bool = True):
    """The fused path: channels-last input, prepacked weight, ReLU in the primitive."""
    xc = x.contiguous(memory_format=torch.channels_last)
    p, s, d = list(conv.padding), list(conv.stride), list(conv.dilation)
    weight = torch.ops.mkldnn._reorder_convolution_weight(conv.weight.detach(), p, s, d, 1, list(xc.shape))
    bias = torch.zeros(conv.out_channels)
    return lambda: torch.ops.mkldnn._convolution_pointwise(xc, weight, bias, p, s, d, 1,
                                                           "relu" if pointwise else "none", [], "")


def nnpack(conv: nn.Conv2d, x: torch.Tensor):
    """NNPACK's convolution (it picks Winograd or FFT itself): NCHW input, then ReLU; None where it
    does not apply (strides, 1x1 kernels)."""
    if conv.stride != (1, 1) or conv.kernel_size == (1, 1) or conv.groups != 1:
        return None
    xn, weight, bias = x.contiguous(), conv.weight.detach(), torch.zeros(conv.out_channels)
    return lambda: torch._nnpack_spatial_convolution(xn, weight, bias, list(conv.padding), [1, 1]).relu_()


def alternate(steps: dict, repeats: int) -> dict:
    """Median seconds of each callable, timed in alternation after one warm-up call each."""
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def conv_table(model_name: str, batch: int, repeats: int) -> tuple[list[str], float, float]:
    model = create_model(model_name)
    size = model.pretrained_cfg["input_size"][-1]
    rows, measured = {}, {}
    for conv, shape in convolutions(model, size):
        key = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, shape[2:])
        if key not in measured:
            x = torch.randn(batch, *shape[1:])
            steps = {"onednn": onednn(conv, x)}
            other = nnpack(conv, x)
            if other is not None:
                steps["nnpack"] = other
            measured[key] = alternate(steps, repeats)
        rows.setdefault(key, 0)
        rows[key] += 1
    total_onednn = sum(n * measured[k]["onednn"] for k, n in rows.items())
    total_best = sum(n * min(measured[k].values()) for k, n in rows.items())
    lines = [f"### {model_name}, batch {batch}: oneDNN against NNPACK, layer by layer", "",
             "| convolution (in -> out, kernel, stride, input grid) | layers | oneDNN ms | NNPACK ms | faster |",
             "|---|---:|---:|---:|---|"]
    for key, n in sorted(rows.items(), key=lambda kv: -kv[1] * measured[kv[0]]["onednn"]):
        cin, cout, k, s, _, grid = key
        times = measured[key]
        nnpack_ms = f"{n * times['nnpack'] * 1e3:.1f}" if "nnpack" in times else "-"
        faster = "NNPACK" if times.get("nnpack", float("inf")) < times["onednn"] else "oneDNN"
        lines.append(f"| {cin} -> {cout}, {k[0]}x{k[1]}, /{s[0]}, {grid[0]}x{grid[1]} | {n} | "
                     f"{n * times['onednn'] * 1e3:.1f} | {nnpack_ms} | {faster} |")
    lines += ["", f"All convolutions in oneDNN: {total_onednn * 1e3:.0f} ms per batch; each layer on the faster "
              f"path: {total_best * 1e3:.0f} ms ({total_onednn / total_best:.3f}x).", ""]
    return lines, total_onednn, total_best


def merged_openers(model_name: str, batch: int, repeats: int) -> tuple[list[str], float]:
    """Each kind of module whose branches open with 1x1 convolutions of one input: the openers
    separately (as `optimize_for_inference` runs them) against one merged GEMM and dense copies
    of the slices that go on into further layers."""
    model = create_model(model_name).eval()
    size = model.pretrained_cfg["input_size"][-1]
    inputs = {}
    def keep(module, inp, out) -> None:  # (a hook that returns a value replaces the output)
        inputs.setdefault(module, tuple(inp[0].shape))

    hooks = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, Concat)]
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    for h in hooks:
        h.remove()
    kinds: dict = {}
    for module, shape in inputs.items():
        openers = _mergeable_openers(module.branches)
        if len(openers) < 2:
            continue
        widths = tuple(m.conv.out_channels for m in openers.values())
        key = (shape[1], widths, shape[2:])
        kinds.setdefault(key, [0, module, openers])[0] += 1
    lines = [f"### {model_name}, batch {batch}: the 1x1 openers of a module, separately or merged", "",
             "| module input, openers' widths | modules | separately ms | merged ms | merged saves |",
             "|---|---:|---:|---:|---:|"]
    saved_total = 0.0
    for (cin, widths, grid), (count, module, openers) in kinds.items():
        x = torch.randn(batch, cin, *grid)
        convs = [m.conv for m in openers.values()]
        separate = [onednn(c, x) for c in convs]
        merged_conv = nn.Conv2d(cin, sum(widths), 1)
        merged_conv.weight.data = torch.cat([c.weight.detach() for c in convs])
        run_merged = onednn(merged_conv, x)

        def merged(run=run_merged, widths=widths):
            parts = run().split(list(widths), dim=1)
            return [p.contiguous(memory_format=torch.channels_last) for p in parts[1:]]  # (the first: a view)

        times = alternate({"separate": lambda s=separate: [f() for f in s], "merged": merged}, repeats)
        saved = count * (times["separate"] - times["merged"])
        saved_total += saved
        lines.append(f"| {cin} in, {' + '.join(map(str, widths))} at {grid[0]}x{grid[1]} | {count} | "
                     f"{count * times['separate'] * 1e3:.1f} | {count * times['merged'] * 1e3:.1f} | "
                     f"{saved * 1e3:+.1f} ms |")
    effect = (f"save {saved_total * 1e3:.0f} ms" if saved_total >= 0 else f"cost {-saved_total * 1e3:.0f} ms more")
    lines += ["", f"Merging every module's openers would {effect} per batch.", ""]
    return lines, saved_total


def convolution_share(name: str, batch: int) -> tuple[float, float]:
    """(seconds of oneDNN convolution, seconds of everything) in one forward pass of
    `optimize_for_inference`'s model, by the profiler's self time, after warm-up."""
    from torch.profiler import ProfilerActivity, profile

    from inceptionlab.tools.fast import optimize_for_inference

    model = create_model(name)
    fast = optimize_for_inference(model)
    x = torch.randn(batch, 3, *model.pretrained_cfg["input_size"][1:])
    fast(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fast(x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    conv = sum(e.self_cpu_time_total for e in events if e.key == "mkldnn::_convolution_pointwise") / 1e6
    return conv, total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--models", nargs="+", default=["inception_v4"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    add_results_dir(parser)
    args = parser.parse_args(argv)
    # a model timm lacks fails now, in one line, not after the first models' minutes of tables
    bench.check_configs([bench.Config(name, bench.architecture(name)[2]["input_size"][-1], args.batch, "infer",
                                      reference="timm") for name in args.models])
    torch.set_num_threads(args.threads)
    start = time.time()
    command = "python benchmarks/infer_conv_paths.py " + " ".join(argv if argv is not None else sys.argv[1:])
    info = bench.machine()
    peak = bench.measure_peak("fp32")
    lines = [f"Convolution peak on this machine (the benchmark's 3x3 convolution): {peak:.1f} GFLOP/s.", ""]
    for name in args.models:
        table, total_onednn, total_best = conv_table(name, args.batch, args.repeats)
        merged, saved = merged_openers(name, args.batch, args.repeats)
        model = create_model(name)
        gflops = 2 * count_macs(model, model.pretrained_cfg["input_size"][-1]) * args.batch / total_onednn / 1e9
        whole = bench.run_config(bench.Config(name, model.pretrained_cfg["input_size"][-1], args.batch, "infer",
                                              reference="timm"), peak, warmup=1, iters=args.repeats)
        ours_ms, timm_ms = 1e3 * args.batch / whole["infer_samples_per_sec"], 1e3 * args.batch / whole["ref_samples_per_sec"]
        conv_s, forward_s = convolution_share(name, args.batch)
        lines += table + merged + [
            f"**{name}:** its convolutions run at {gflops:.1f} GFLOP/s in oneDNN ({gflops / peak:.0%} of the peak). "
            f"The faster path for every layer would take {1 - total_best / total_onednn:.1%} off their time, and "
            f"merged openers {'would take off ' if saved >= 0 else 'would add '}{abs(saved) / total_onednn:.1%}. The whole forward pass, timed in alternation: ours "
            f"(`optimize_for_inference`) {ours_ms:.0f} ms, timm's (channels-last) {timm_ms:.0f} ms, {whole['ratio']:.2f}x. "
            f"The profiler gives oneDNN's convolutions {conv_s / forward_s:.1%} of our forward pass ({conv_s * 1e3:.0f} of "
            f"{forward_s * 1e3:.0f} ms): whatever else is left can gain at most {forward_s / conv_s:.3f}x. (The "
            f"layer tables time each convolution alone, its input warm in the caches, in a separate phase; on this "
            f"shared machine compare their columns with each other, not with the whole-pass times.)", ""]
        print("\n".join(lines[-len(table) - len(merged) - 2:]))
    path = write_section("infer_conv_paths", command, info,
                         "Each distinct convolution of the model at the batch size, alone, in oneDNN and in NNPACK "
                         "(Winograd/FFT); then the 1x1 openers of each module kind, separately and merged. See the "
                         "script's docstring.", lines, folder=args.results_dir)
    print(f"wrote {path} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    run_script(main)
