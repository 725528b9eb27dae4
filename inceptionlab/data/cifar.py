"""CIFAR-10 and CIFAR-100 in the original python pickle format (as torchvision downloads them).

cifar-10-batches-py/: data_batch_1..5, test_batch, batches.meta ('label_names')
cifar-100-python/:    train, test, meta ('fine_label_names'; labels under 'fine_labels')

Each batch is a dict with 'data' (N x 3072 uint8: the red plane, then green, then blue, each
32 x 32 row-major) and the labels. We read the pickles with `pickle` + numpy; no torchvision
dataset and no download. Pickles can run code when loaded: only point this at data you trust.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inceptionlab.errors import UserError

CIFAR_SIDE = 32
CIFAR_FOLDER_NAMES = ("cifar-10-batches-py", "cifar-100-python")


@dataclass(frozen=True)
class CifarLayout:
    """Which files of a CIFAR folder hold what."""

    name: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str


CIFAR10 = CifarLayout("CIFAR-10", tuple(f"data_batch_{i}" for i in range(1, 6)),
                      "test_batch", "batches.meta", "labels", "label_names")
CIFAR100 = CifarLayout("CIFAR-100", ("train",), "test", "meta", "fine_labels", "fine_label_names")


@dataclass
class CifarArrays:
    """A CIFAR folder read into memory: images are N x 32 x 32 x 3 uint8."""

    layout: CifarLayout
    folder: Path
    classes: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray | None  # None when the folder has no test batch
    test_labels: np.ndarray | None


def find_cifar(root: Path) -> tuple[Path, CifarLayout] | None:
    """(folder, layout) if `root` is, or directly contains, a CIFAR pickle folder; else None."""
    for folder in (root, *(root / name for name in CIFAR_FOLDER_NAMES)):
        if (folder / CIFAR10.meta_file).is_file():
            return folder, CIFAR10
        if (folder / CIFAR100.meta_file).is_file() and (folder / CIFAR100.train_files[0]).is_file():
            return folder, CIFAR100
    return None


def read_cifar(folder: Path, layout: CifarLayout) -> CifarArrays:
    """Read every train batch present (at least one), the test batch if present, and the names."""
    meta = _read_pickle(folder / layout.meta_file)
    if layout.names_key not in meta:
        raise UserError(f"{folder / layout.meta_file} has no '{layout.names_key}' entry: "
                        "re-download the dataset")
    classes = [_text(name) for name in meta[layout.names_key]]
    train_paths = [folder / name for name in layout.train_files if (folder / name).is_file()]
    if not train_paths:
        raise UserError(f"no {layout.name} training batches ({layout.train_files[0]}...) in "
                        f"{folder}: re-download the dataset")
    parts = [_read_batch(path, layout, len(classes)) for path in train_paths]
    train_images = np.concatenate([images for images, _ in parts])
    train_labels = np.concatenate([labels for _, labels in parts])
    test_images = test_labels = None
    if (folder / layout.test_file).is_file():
        test_images, test_labels = _read_batch(folder / layout.test_file, layout, len(classes))
    return CifarArrays(layout, folder, classes, train_images, train_labels, test_images, test_labels)


def _read_batch(path: Path, layout: CifarLayout, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 32 x 32 x 3 uint8, labels int64) from one batch pickle, shape-checked."""
    batch = _read_pickle(path)
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[layout.label_key], dtype=np.int64)
    except KeyError as exc:
        raise UserError(f"{path} has no {exc} entry: is it a {layout.name} batch?") from None
    pixels = 3 * CIFAR_SIDE * CIFAR_SIDE
    if data.ndim != 2 or data.shape[1] != pixels or len(labels) != len(data):
        raise UserError(f"{path} holds data of shape {data.shape} with {len(labels)} labels, "
                        f"expected N x {pixels} with N labels: re-download the dataset")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{path} has labels outside 0..{num_classes - 1}: re-download the dataset")
    images = data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)  # N x 32 x 32 x 3
    return np.ascontiguousarray(images), labels


def _read_pickle(path: Path) -> dict:
    """A CIFAR pickle as a dict with str keys (they were written by Python 2, keys as bytes)."""
    try:
        with open(path, "rb") as stream:
            content = pickle.load(stream, encoding="latin1")
    except Exception as exc:  # noqa: BLE001 - unpickling raises many types on a bad file
        raise UserError(f"cannot read CIFAR file {path}: {exc}: re-download the dataset") from None
    if not isinstance(content, dict):
        raise UserError(f"{path} is not a CIFAR pickle (holds {type(content).__name__}, not dict)")
    return {_text(key): value for key, value in content.items()}


def _text(value) -> str:
    """A key or class name as str (Python 2 pickles may hold them as bytes)."""
    return value.decode("latin1") if isinstance(value, bytes) else str(value)
