"""What a run's model costs: parameters, multiply-adds, and inference images/s on this machine.

Measured once per run after it trains and kept in the run directory as ``lab_measure.json``, so a
resumed compare and a re-drawn report show the same numbers.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

MEASURE_FILE = "lab_measure.json"
WARMUP_BATCHES = 2  # untimed: the first call of an optimized model packs its weights


def measure_model(model_name: str, model_kwargs: dict, *, num_classes: int, img_size: int,
                  batch_size: int = 32, batches: int = 5, max_seconds: float = 1.5, threads: int | None = None) -> dict:
    """``{params, macs, img_size, infer_images_per_sec, infer_batch_size}`` of a freshly built model.

    Inference speed: the model as it is deployed (`optimize_for_inference`: batch norm folded,
    channels-last, fused convolutions), ``batches`` timed batches of ``batch_size`` after
    two warm-ups (the first packs the weights), the median batch time; stops early once
    ``max_seconds`` are spent (big models on a CPU). ``threads``: torch's CPU threads while timing
    (the run's own count; restored after). (It timed the plain eager NCHW model after one warm-up:
    GoogLeNet "inferred" at 40 img/s while it trained at 73, where the benchmark gives it 372.)
    """
    import torch

    from inceptionlab.models import create_model
    from inceptionlab.tools.fast import optimize_for_inference
    from inceptionlab.tools.summary import count_macs

    # the data's class count, as the run trained (a num_classes switch won, and a failed run showed its count)
    model = create_model(model_name, **{**model_kwargs, "num_classes": num_classes}).eval()
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, img_size)
    x = torch.randn(batch_size, model.in_chans, img_size, img_size)
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        times = _time_batches(optimize_for_inference(model), x, batches, max_seconds)
    finally:
        torch.set_num_threads(threads_before)
    return dict(params=int(params), macs=int(macs), img_size=int(img_size),
                infer_images_per_sec=batch_size / statistics.median(times), infer_batch_size=batch_size,
                infer_threads=int(threads or threads_before))


def _time_batches(model, x, batches: int, max_seconds: float) -> list[float]:
    """Seconds per batch, after two warm-up batches."""
    import torch

    times = []
    with torch.inference_mode():
        for _ in range(WARMUP_BATCHES):
            model(x)
        start = time.perf_counter()
        for _ in range(batches):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
            if time.perf_counter() - start > max_seconds:
                break
    return times


def measure_run(run_dir: Path, model_name: str, model_kwargs: dict, *, num_classes: int, img_size: int,
                batch_size: int, threads: int | None = None) -> dict:
    """`measure_model` for a run, cached in ``run_dir/lab_measure.json``; {} if it cannot be built."""
    path = Path(run_dir) / MEASURE_FILE
    if path.exists():
        return json.loads(path.read_text())
    try:
        values = measure_model(model_name, model_kwargs, num_classes=num_classes, img_size=img_size,
                               batch_size=min(batch_size, 32), threads=threads)
    except Exception as exc:  # a model that cannot be built was already reported by its run
        values = dict(error=f"{type(exc).__name__}: {exc}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values, indent=1))
    return values


# ------------------------------------------------------------------ calibration
def calibration(confidences, correct, bins: int = 15) -> dict:
    """Expected calibration error (Guo et al. 2017) and the reliability table.

    ``confidences``: the top-1 softmax probability per image; ``correct``: whether top-1 was right.
    ECE = sum over equal-width confidence bins of (bin share) x |accuracy - mean confidence|, in %.
    """
    edges = [i / bins for i in range(bins + 1)]
    n = len(confidences)
    table, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        members = [i for i, c in enumerate(confidences) if (lo < c <= hi) or (lo == 0 and c == 0)]
        if members:
            acc = sum(1 for i in members if correct[i]) / len(members)
            conf = sum(confidences[i] for i in members) / len(members)
            ece += len(members) / n * abs(acc - conf)
        else:
            acc = conf = None
        table.append(dict(low=lo, high=hi, count=len(members), accuracy=acc, confidence=conf))
    return dict(ece=100.0 * ece, mean_confidence=100.0 * sum(confidences) / max(n, 1),
                accuracy=100.0 * sum(bool(c) for c in correct) / max(n, 1), bins=table, images=n)


def predict_val(run_dir: Path, data: str | None = None) -> tuple[list[float], list[bool]]:
    """Top-1 softmax confidence and correctness of a finished run's final model, per image of the
    run's own validation split (the engine's data, split and evaluation preprocessing); ``data``: where
    the run's data folder is now, when it moved (None: the folder its config.yaml names)."""
    import torch

    from inceptionlab.data import make_loader
    from inceptionlab.models.weights import load_weights
    from inceptionlab.train.config import TrainConfig
    from inceptionlab.train.engine import build_model_and_data

    run_dir = Path(run_dir)
    cfg = TrainConfig.from_yaml(run_dir / "config.yaml")
    if data is not None:
        cfg = cfg.replace(data=data)
    splits, net, _size = build_model_and_data(cfg.replace(weights=None, augment=False),
                                              pretrained=cfg.weights is not None)
    load_weights(net, run_dir / "model.safetensors")
    net.eval()
    loader = make_loader(splits.val, 64, train=False, seed=cfg.seed)
    confidences, correct = [], []
    with torch.inference_mode():
        for images, labels, _skipped in loader:
            if images.numel() == 0:
                continue
            conf, pred = net(images).float().softmax(dim=1).max(dim=1)
            confidences += conf.tolist()
            correct += (pred == labels).tolist()
    return confidences, correct
