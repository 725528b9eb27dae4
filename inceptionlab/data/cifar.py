"""CIFAR-10 and CIFAR-100 as their authors distribute them: the python pickles (what torchvision
downloads) or the binary version.

cifar-10-batches-py/:  data_batch_1..5, test_batch, batches.meta ('label_names')
cifar-100-python/:     train, test, meta ('fine_label_names'; labels under 'fine_labels')
cifar-10-batches-bin/: data_batch_1..5.bin, test_batch.bin, batches.meta.txt (a name per line)
cifar-100-binary/:     train.bin, test.bin, fine_label_names.txt

A pickled batch is a dict with 'data' (N x 3072 uint8: the red plane, then green, then blue, each
32 x 32 row-major) and the labels; a binary batch is N records of the label byte(s) then the same
3072 bytes (CIFAR-100: the coarse label, then the fine one). We read them with `pickle` + numpy;
no torchvision dataset and no download. Pickles can run code when loaded: only point this at data
you trust.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inceptionlab.errors import UserError

CIFAR_SIDE = 32
PIXELS = 3 * CIFAR_SIDE * CIFAR_SIDE


@dataclass(frozen=True)
class CifarLayout:
    """Which files of a CIFAR folder hold what, and how."""

    name: str
    folder_name: str  # as the archive unpacks
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str  # pickles: the labels' entry; binary: unused
    names_key: str  # pickles: the class names' entry in meta_file; binary: unused
    label_bytes: int = 0  # binary: bytes before each record's pixels (0: pickles); the last is the label

    @property
    def binary(self) -> bool:
        return self.label_bytes > 0

    @property
    def format(self) -> str:
        return "binary" if self.binary else "pickles"


CIFAR10 = CifarLayout("CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                      "test_batch", "batches.meta", "labels", "label_names")
CIFAR100 = CifarLayout("CIFAR-100", "cifar-100-python", ("train",), "test", "meta", "fine_labels",
                       "fine_label_names")
CIFAR10_BIN = CifarLayout("CIFAR-10", "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                          "test_batch.bin", "batches.meta.txt", "", "", label_bytes=1)
CIFAR100_BIN = CifarLayout("CIFAR-100", "cifar-100-binary", ("train.bin",), "test.bin", "fine_label_names.txt",
                           "", "", label_bytes=2)
LAYOUTS = (CIFAR10, CIFAR100, CIFAR10_BIN, CIFAR100_BIN)
CIFAR_FOLDER_NAMES = tuple(layout.folder_name for layout in LAYOUTS)


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
    """(folder, layout) if `root` is, or directly contains, a CIFAR folder; else None. A folder
    named as a CIFAR archive unpacks, or holding its first training batch, without the file of
    class names is a UserError (it had been read as an image folder of one class)."""
    for folder in (root, *(root / name for name in CIFAR_FOLDER_NAMES if (root / name).is_dir())):
        for layout in LAYOUTS:
            has_batch = (folder / layout.train_files[0]).is_file()
            if (folder / layout.meta_file).is_file() and (has_batch or layout is CIFAR10):
                return folder, layout
            if folder.name == layout.folder_name or (has_batch and layout.train_files[0] != "train"):
                raise UserError(f"{folder} looks like {layout.name} ({layout.format}) but has no "
                                f"{layout.meta_file} (the class names): unpack the whole archive again")
    return None


def read_cifar(folder: Path, layout: CifarLayout) -> CifarArrays:
    """Read every train batch present (at least one), the test batch if present, and the names.
    Every class must have training images (a partial download had trained on 8 of 10 classes)."""
    classes = _class_names(folder / layout.meta_file, layout)
    train_paths = [folder / name for name in layout.train_files if (folder / name).is_file()]
    if not train_paths:
        raise UserError(f"no {layout.name} training batches ({layout.train_files[0]}...) in "
                        f"{folder}: re-download the dataset")
    parts = [_read_batch(path, layout, len(classes)) for path in train_paths]
    train_images = np.concatenate([images for images, _ in parts])
    train_labels = np.concatenate([labels for _, labels in parts])
    empty = [name for label, name in enumerate(classes) if not np.any(train_labels == label)]
    if empty:
        raise UserError(f"{layout.name} in {folder} has no training images of {len(empty)} of its "
                        f"{len(classes)} classes ({', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''}): "
                        f"unpack the whole archive again")
    test_images = test_labels = None
    if (folder / layout.test_file).is_file():
        test_images, test_labels = _read_batch(folder / layout.test_file, layout, len(classes))
    return CifarArrays(layout, folder, classes, train_images, train_labels, test_images, test_labels)


def missing_files(folder: Path, layout: CifarLayout) -> list[str]:
    """The layout's batch files that `folder` lacks (an interrupted download or unpacking)."""
    return [name for name in (*layout.train_files, layout.test_file) if not (folder / name).is_file()]


def _class_names(path: Path, layout: CifarLayout) -> list[str]:
    if layout.binary:
        try:
            names = [line.strip() for line in path.read_text(encoding="latin1").splitlines()]
        except OSError as exc:
            raise UserError(f"cannot read CIFAR file {path}: {exc.strerror}: unpack the archive again") from None
        return [name for name in names if name]
    meta = _read_pickle(path)
    if layout.names_key not in meta:
        raise UserError(f"{path} has no '{layout.names_key}' entry: re-download the dataset")
    return [_text(name) for name in meta[layout.names_key]]


def _read_batch(path: Path, layout: CifarLayout, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 32 x 32 x 3 uint8, labels int64) from one batch file, shape-checked."""
    if layout.binary:
        raw = np.fromfile(path, dtype=np.uint8)
        record = layout.label_bytes + PIXELS
        if raw.size % record:
            raise UserError(f"{path} holds {raw.size:,} bytes, not a whole number of {record}-byte "
                            f"{layout.name} records: it is truncated; re-download the dataset")
        rows = raw.reshape(-1, record)
        data, labels = rows[:, layout.label_bytes:], rows[:, layout.label_bytes - 1].astype(np.int64)
    else:
        batch = _read_pickle(path)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            labels = np.asarray(batch[layout.label_key], dtype=np.int64)
        except KeyError as exc:
            raise UserError(f"{path} has no {exc} entry: is it a {layout.name} batch?") from None
    if data.ndim != 2 or data.shape[1] != PIXELS or len(labels) != len(data):
        raise UserError(f"{path} holds data of shape {data.shape} with {len(labels)} labels, "
                        f"expected N x {PIXELS} with N labels: re-download the dataset")
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
