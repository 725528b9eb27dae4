"""Helpers shared by the test modules."""
import torch
import torch.nn as nn


def image_folder(root, classes, per_class: int, *, size: int = 12, junk: int = 0, seed: int = 0, start: int = 0):
    """``root/<class>/<i>.png``: ``per_class`` random RGB pictures per class (numbered from
    ``start``), and ``junk`` files per class named ``junk<i>.png`` that are not images."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls in classes:
        folder = Path(root) / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        for i in range(junk):
            (folder / f"junk{i}.png").write_text("not an image")
    return Path(root)


def train_in_process(cfg):
    """``train(cfg)`` in this process, leaving torch's thread count as it found it (a run sets its own)."""
    from inceptionlab.train import train
    before = torch.get_num_threads()
    try:
        return train(cfg)
    finally:
        torch.set_num_threads(before)


def ema_run(out, model: str, img_size: int, model_kwargs: dict):
    """A finished 2-step run on 40 of the embedded digits that kept an EMA: its model.safetensors is
    the EMA, its checkpoints hold both weights."""
    from inceptionlab.train import TrainConfig

    torch.set_num_threads(1)
    summary = train_in_process(TrainConfig(model=model, out=str(out), steps=2, batch_size=8, img_size=img_size,
                                           limit_per_class=4, val_split=0.02, quiet=True,
                                           model_kwargs=dict(model_kwargs), ema_decay=0.9))
    assert summary["status"] == "finished" and summary["ema"] is True
    return out


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """BN statistics and affine parameters far from identity, so that loading, folding and export
    are exercised on every BN tensor."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
    return model
