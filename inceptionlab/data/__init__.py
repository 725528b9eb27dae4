"""Data for the lab: datasets (embedded digits, image folders, CIFAR), Inception preprocessing,
and a loader that is repeatable by seed and survives unreadable files.

    splits = build_datasets("photos/", train_transform=train_transform(299, mean, std),
                            eval_transform=eval_transform(299, mean, std))
    loader = make_loader(splits.train, 32, train=True, seed=0)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, labels, n_skipped in loader:
            ...
"""

from inceptionlab.data.datasets import (
    DatasetSplits,
    SkippedFiles,
    build_datasets,
    embedded_digits,
)
from inceptionlab.data.loader import make_loader
from inceptionlab.data.transforms import eval_transform, load_image, train_transform

__all__ = [
    "DatasetSplits",
    "build_datasets",
    "embedded_digits",
    "SkippedFiles",
    "train_transform",
    "eval_transform",
    "load_image",
    "make_loader",
]
