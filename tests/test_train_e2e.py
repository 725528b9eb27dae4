"""It learns: a small low-res Inception-v3 trained for under a minute on 1,500 real CIFAR-10 images
reaches clearly above-chance accuracy on 300 held-out test images (chance: 10%)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from inceptionlab.train import TrainConfig, evaluate, train

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR = SHARED_DATA / "cifar10"


def cifar_subset(root: Path, train_per_class: int, val_per_class: int) -> Path:
    """train/<class>/ and val/<class>/ folders of links to the first images of each class."""
    for split, source, count in (("train", "train", train_per_class), ("val", "test", val_per_class)):
        for name in sorted(os.listdir(CIFAR / source)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for file in sorted(os.listdir(CIFAR / source / name))[:count]:
                (folder / file).symlink_to(CIFAR / source / name / file)
    return root


@pytest.mark.slow
@pytest.mark.skipif(not (CIFAR / "train").is_dir(), reason=f"CIFAR-10 images not found at {CIFAR} "
                    f"(the shared data folder beside the checkout)")
def test_a_small_model_learns_cifar10(tmp_path):
    data = cifar_subset(tmp_path / "cifar", train_per_class=150, val_per_class=30)
    cfg = TrainConfig(model="inception_v3", data=str(data), out=str(tmp_path / "run"), epochs=4, batch_size=32,
                      img_size=16, opt="adamw", lr=3e-3, augment=False, threads=1, quiet=True,
                      model_kwargs=dict(stem="low_res", depth_multiplier=0.1, min_depth=8, drop_rate=0.0))
    before = torch.get_num_threads()
    try:
        summary = train(cfg)
    finally:
        torch.set_num_threads(before)
    print({k: summary[k] for k in ("best_top1", "final_top1", "final_top5", "seconds", "train_images_per_sec")})
    assert summary["status"] == "finished" and summary["classes"][0] == "airplane"
    assert summary["final_top1"] > 25.0, summary          # chance is 10%
    assert summary["final_top5"] > 65.0, summary          # chance is 50%
    report = evaluate(run=tmp_path / "run")
    assert report["top1"] == pytest.approx(summary["final_top1"], abs=1e-3) and report["images"] == 300
