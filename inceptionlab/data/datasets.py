"""Train and validation datasets from whatever the user points at, checked before training.

`build_datasets(data, ...)` chooses the source from `data`:

| data                                   | train                     | val                          |
|----------------------------------------|---------------------------|------------------------------|
| None                                   | embedded MNIST digits     | stratified `val_split` (0.2) |
| folder with train/ and val/ (or test/) | train/<class>/*           | val/<class>/*                |
| folder with train/ only                | train/<class>/*           | stratified `val_split` (0.2) |
| folder of <class>/*                    | <class>/*                 | stratified `val_split` (0.2) |
| CIFAR folder (or its parent)           | data batches              | test batch                   |

CIFAR folders are read as their authors distribute them, pickles or binary (see `cifar.py`).
An explicit `val_split` always holds out that fraction of the train data (a val/ or test
folder, or CIFAR's test batch, is then left untouched for a final test). Splits and
`limit_per_class` are stratified and seeded: the same seed gives the same files.

Every sample is `(FloatTensor 3 x H x W, int label)`. A file that cannot be decoded gives
None instead (recorded in `dataset.skipped`; the loader's collate drops it), or, with
strict=True, raises a UserError naming the file.
"""

from __future__ import annotations

import numbers
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from inceptionlab.data.cifar import CIFAR_SIDE, find_cifar, missing_files, read_cifar
from inceptionlab.data.digits import embedded_digits, load_digits
from inceptionlab.data.folders import (is_image_file, is_skipped_folder, scan_class_folders, shared_files,
                                       split_folders)
from inceptionlab.data.images import UnreadableImage, load_image
from inceptionlab.data.skipped import SkippedFiles
from inceptionlab.errors import UserError, listed

__all__ = [
    "DatasetSplits",
    "build_datasets",
    "embedded_digits",
    "SkippedFiles",
    "ImageFileDataset",
    "ArrayImageDataset",
    "stratified_split",
    "first_per_class",
    "limited",
]

DEFAULT_VAL_SPLIT = 0.2
NO_HOLD_OUT = 0.0  # the val_split of build_datasets(hold_out=False): nothing held out
Transform = Callable[[Image.Image], object]


@dataclass
class DatasetSplits:
    """What `build_datasets` returns: the two splits and what they hold."""

    train: Dataset
    val: Dataset
    classes: list[str]
    source: str  # for people: where the data came from and how it was split
    in_chans: int = 3  # samples are always RGB tensors (gray sources are converted)
    # side of the source pictures (28 MNIST, 32 CIFAR; an image folder's when its pictures are
    # all of one square size, see `uniform_side`); None: varies
    native_size: int | None = None
    origin: str = ""  # where the data came from, without how it was split

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def every_image(self) -> Dataset:
        """Train and val together, with val's (evaluation) transform: a test folder scored whole.
        Image files come in path order; arrays in their order (CIFAR: data batches, then test)."""
        train, val = self.train, self.val
        if isinstance(train, ImageFileDataset):
            return ImageFileDataset(sorted(train.samples + val.samples, key=lambda s: str(s[0])),
                                    self.classes, val.transform, strict=val.strict, root=train.root)
        if train.images is val.images:  # a hold-out of one array
            return ArrayImageDataset(train.images, train.labels, self.classes, val.transform,
                                     indices=np.sort(np.concatenate([train.indices, val.indices])))
        images = np.concatenate([train.images[train.indices], val.images[val.indices]])
        labels = np.concatenate([train.labels[train.indices], val.labels[val.indices]])
        return ArrayImageDataset(images, labels, self.classes, val.transform)


class ImageFileDataset(Dataset):
    """Image files with labels, decoded on access with `load_image` then `transform`."""

    def __init__(self, samples: list[tuple[Path, int]], classes: list[str],
                 transform: Transform | None = None, *, strict: bool = False, root: Path | None = None) -> None:
        self.samples = samples
        self.classes = classes
        self.transform = transform
        self.strict = strict
        self.root = root  # the folder of the class folders: split keys are paths below it
        self.skipped = SkippedFiles()

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def split_keys(self) -> list[str]:
        """Each file's path below the data folder (``cat/0002.png``): what the split is drawn by.
        Below `root`, not below the files' common folder: a folder of one class had keys without the
        class (``0002.png``), so `eval --run` on it scored images the run had trained on."""
        samples = [str(path) for path, _ in self.samples]
        root = self.root if self.root is not None else (os.path.commonpath(samples) if samples else "")
        return [os.path.relpath(path, root) for path in samples]

    def subset(self, indices, transform: Transform | None = None) -> "ImageFileDataset":
        """A dataset of the samples at `indices`, with its own transform and skip record."""
        chosen = [self.samples[i] for i in indices]
        return ImageFileDataset(chosen, self.classes, transform, strict=self.strict, root=self.root)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        """(transformed image, label), or None for an unreadable file (raises when strict)."""
        path, label = self.samples[index]
        try:
            picture = load_image(path, min_side=getattr(self.transform, "decode_side", None))
        except UnreadableImage as exc:
            if self.strict:  # a plain UserError: it survives DataLoader's re-raise from workers
                raise UserError(f"{exc} (strict: fix or remove the file, or leave out --strict to skip "
                                f"unreadable images)") from exc
            self.skipped.add(path, exc.reason)
            return None
        return (self.transform(picture) if self.transform else picture), label

    def __repr__(self) -> str:
        return (f"ImageFileDataset({len(self):,} images, {len(self.classes)} classes, "
                f"{len(self.skipped)} skipped)")


class ArrayImageDataset(Dataset):
    """Pictures held in memory as uint8 arrays (N x H x W gray, or N x H x W x 3 RGB).

    Gray pictures become 3-channel RGB PIL images, so the same preprocessing applies as for
    photographs. `indices` selects rows without copying the arrays.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str],
                 transform: Transform | None = None, *, indices=None) -> None:
        self.images = images
        self.labels = labels
        self.classes = classes
        self.transform = transform
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices)
        self.skipped = SkippedFiles()  # always empty: arrays always decode

    @property
    def targets(self) -> list[int]:
        return self.labels[self.indices].tolist()

    def subset(self, indices, transform: Transform | None = None) -> "ArrayImageDataset":
        """A dataset of the samples at `indices` (positions in this dataset)."""
        return ArrayImageDataset(self.images, self.labels, self.classes, transform,
                                 indices=self.indices[np.asarray(indices, dtype=np.int64)])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        row = self.indices[index]
        pixels = self.images[row]
        picture = Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB").convert("RGB")
        label = int(self.labels[row])
        return (self.transform(picture) if self.transform else picture), label

    def __repr__(self) -> str:
        side = "x".join(str(s) for s in self.images.shape[1:3])
        return f"ArrayImageDataset({len(self):,} images of {side}, {len(self.classes)} classes)"


def build_datasets(
    data: str | Path | None,
    *,
    train_transform: Transform | None,
    eval_transform: Transform | None,
    val_split: float | None = None,
    seed: int = 0,
    strict: bool = False,
    limit_per_class: int | None = None,
    val_limit_per_class: int | None = None,
    min_classes: int = 2,
    hold_out: bool = True,
) -> DatasetSplits:
    """Train and val datasets for `data` (see the module docstring for the sources).
    ``hold_out=False`` holds out no validation split (every image is in train, a val/ folder or CIFAR's
    test batch in val): for `DatasetSplits.every_image`, which a folder of one image per class can give.

    Raises UserError, before any image is decoded, for: a missing folder; no class folders;
    an empty class folder; a single class; val/ classes that differ from train/; a val_split
    outside (0, 1); a limit_per_class or val_limit_per_class below 1.
    """
    _check_val_split(val_split)
    if not hold_out:
        val_split = NO_HOLD_OUT  # (after the check, which refuses 0 from users)
    _check_limit(limit_per_class)
    _check_limit(val_limit_per_class, "val_limit_per_class")
    if data is None:
        splits = _digits_splits(train_transform, eval_transform, val_split, seed)
    else:
        root = _existing_folder(data)
        cifar = find_cifar(root)
        folders = split_folders(root)
        if cifar is not None:
            splits = _cifar_splits(root, *cifar, train_transform, eval_transform, val_split, seed)
        elif folders is not None:
            splits = _split_folder_splits(*folders, train_transform, eval_transform,
                                          val_split, seed, strict, min_classes)
        else:
            splits = _class_folder_splits(root, train_transform, eval_transform,
                                          val_split, seed, strict, min_classes)
    if limit_per_class is not None:
        splits.train = limited(splits.train, limit_per_class, seed)
        splits.source += f"; train limited to {limit_per_class} per class"
    if val_limit_per_class is not None:  # a quick look at a large test folder (10,000 CIFAR-10 images)
        splits.val = limited(splits.val, val_limit_per_class, seed, "val_limit_per_class")
        splits.source += f"; val limited to {val_limit_per_class} per class"
    splits.source += f" ({len(splits.train):,} train / {len(splits.val):,} val images)"
    return splits


def stratified_split(labels, val_fraction: float, seed: int, keys: list[str] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices), sorted: `val_fraction` of every class, chosen by `seed`.

    Each class keeps at least one image in train, and gives at least one to val if it has two.
    With `keys` (files' paths below the data folder), a class's images are ranked by a hash of
    (seed, key): a file's side depends on its own class alone, not on which other classes or
    images the folder holds. (With one random stream for all classes, `eval --run` on a folder
    of some of the classes scored images the run had trained on.)
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 0])
    train, val = [], []
    for label in np.unique(labels):
        members = _ranked(np.flatnonzero(labels == label), rng, seed, keys)
        held_out = min(max(round(len(members) * val_fraction), 1), len(members) - 1)
        val.append(members[:held_out])
        train.append(members[held_out:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _ranked(members: np.ndarray, rng, seed: int, keys: list[str] | None, salt: str = "") -> np.ndarray:
    """`members` in a seeded order: by a hash of (seed, key) with `keys`, else drawn from `rng`."""
    if keys is None:
        return rng.permutation(members)
    return np.array(sorted(members, key=lambda i: _rank(seed, salt + keys[i])), dtype=np.int64)


def _rank(seed: int, key: str) -> bytes:
    import hashlib

    return hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()


def _keys(dataset) -> list[str] | None:
    return dataset.split_keys() if hasattr(dataset, "split_keys") else None


def limited(dataset, limit: int, seed: int, name: str = "limit_per_class"):
    """``dataset`` with at most ``limit`` samples of each class, chosen as `first_per_class` chooses
    them (UserError naming ``name`` for a limit below 1)."""
    _check_limit(limit, name)
    return dataset.subset(first_per_class(dataset.targets, limit, seed, _keys(dataset)), dataset.transform)


def first_per_class(labels, limit: int, seed: int, keys: list[str] | None = None) -> np.ndarray:
    """Sorted indices of at most `limit` samples per class, chosen by `seed` (all, if fewer).
    With `keys` (files' paths), ranked as `stratified_split` ranks them (with its own salt), so the
    images kept of one class do not change when another class gains images."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 1])
    kept = [_ranked(np.flatnonzero(labels == label), rng, seed, keys, salt="limit\0")[:limit]
            for label in np.unique(labels)]
    return np.sort(np.concatenate(kept))


def _digits_splits(train_tf, eval_tf, val_split, seed) -> DatasetSplits:
    """The embedded digits, split `val_split` (0.2) stratified: 4,000 / 1,000 by default."""
    images, labels, source = load_digits()
    classes = [str(digit) for digit in range(int(labels.max()) + 1)]
    pool = ArrayImageDataset(images, labels, classes)
    train, val, how = _hold_out(pool, val_split, seed, train_tf, eval_tf)
    return DatasetSplits(train, val, classes, f"{source}; {how}", native_size=images.shape[1], origin=source)


def _cifar_splits(root, folder, layout, train_tf, eval_tf, val_split, seed) -> DatasetSplits:
    """CIFAR batches in `folder` (`root` or inside it): the test batch is val, unless val_split
    holds out part of train."""
    arrays = read_cifar(folder, layout)
    pool = ArrayImageDataset(arrays.train_images, arrays.train_labels, arrays.classes)
    source = f"{layout.name} {layout.format} in {folder}"
    if arrays.test_images is not None and _val_folder_kept(val_split):
        train = pool.subset(range(len(pool)), train_tf)
        val = ArrayImageDataset(arrays.test_images, arrays.test_labels, arrays.classes, eval_tf)
        how = f"val: {layout.test_file}"
    else:
        train, val, how = _hold_out(pool, val_split, seed, train_tf, eval_tf)
    missing = missing_files(folder, layout)
    if missing:  # an interrupted download trains on part of the data: say which part
        how += f"; missing: {listed(missing)}"
    beside = sorted(f"{entry.name}/" for entry in os.scandir(root) if entry.is_dir() and not is_skipped_folder(entry.name)
                    and Path(entry.path) != folder) if root != folder else []
    if beside:  # class folders beside the CIFAR folder are not read
        how += f"; ignored: {listed(beside)}"
    return DatasetSplits(train, val, arrays.classes, f"{source}; {how}", native_size=CIFAR_SIDE, origin=source)


def _split_folder_splits(train_dir, val_dir, ignored, train_tf, eval_tf, val_split, seed,
                         strict, min_classes=2) -> DatasetSplits:
    """root/train/<class> with root/val/<class> (or test/) as val, or split from train; what lies
    outside that layout (``ignored``) is named in the description."""
    train_ids, val_ids = {}, {}
    classes, samples = scan_class_folders(train_dir, min_classes=min_classes, identities=train_ids)
    # a val/ that an explicit val_split leaves unused is not read (its classes were checked, and refused)
    val_samples = (scan_class_folders(val_dir, classes, identities=val_ids)[1]
                   if val_dir is not None and _val_folder_kept(val_split) else None)
    if val_samples:
        shared = shared_files(train_ids, val_ids)
        if shared:
            val_file, train_file = shared[0]
            raise UserError(f"{len(shared)} of the {len(val_samples)} images in {val_dir.name}/ are files of train/ "
                            f"under another name ({val_file} is {train_file}, a link): validation would score "
                            f"images the network trains on; put other images in {val_dir.name}/, or remove it "
                            f"to hold out part of train/")
    pool = ImageFileDataset(samples, classes, strict=strict, root=train_dir)
    source = f"image folder {train_dir.parent}"
    if val_samples is not None and _val_folder_kept(val_split):
        train = pool.subset(range(len(pool)), train_tf)
        val = ImageFileDataset(val_samples, classes, eval_tf, strict=strict, root=val_dir)
        how = f"train/ and {val_dir.name}/"
    else:
        train, val, how = _hold_out(pool, val_split, seed, train_tf, eval_tf)
        how = f"train/; {how}" + (f"; {val_dir.name}/ not used" if val_dir is not None else "")
    if ignored:
        how += f"; ignored: {listed(ignored)}"
    return DatasetSplits(train, val, classes, f"{source} ({how})", origin=source, native_size=uniform_side(samples))


def _class_folder_splits(root, train_tf, eval_tf, val_split, seed, strict, min_classes=2) -> DatasetSplits:
    """root/<class>/*, split `val_split` (0.2) stratified."""
    classes, samples = scan_class_folders(root, min_classes=min_classes)
    pool = ImageFileDataset(samples, classes, strict=strict, root=root)
    train, val, how = _hold_out(pool, val_split, seed, train_tf, eval_tf)
    loose = sorted(entry.name for entry in os.scandir(root) if entry.is_file() and is_image_file(entry.name))
    if loose:  # an image beside the class folders has no class: say so rather than drop it unseen
        how += f"; ignored: {listed(loose)} (images outside the class folders)"
    return DatasetSplits(train, val, classes, f"image folder {root} ({how})", origin=f"image folder {root}",
                         native_size=uniform_side(samples))


SIDE_SAMPLES = 64  # files whose headers `uniform_side` reads


def uniform_side(samples: list[tuple[Path, int]], count: int = SIDE_SAMPLES) -> int | None:
    """The side of a folder's pictures when ``count`` of them, drawn at random (the same draw every
    time), are squares of one size, as a CIFAR-10 folder's 32x32 JPEGs are; else None. Only the
    files' headers are read (about 0.2 s for 64 files of CIFAR-10's 50,000); unreadable ones are
    passed over. Training and evaluation take it as the data's own size, as they take the array
    data sets' (evaluated at crop_pct 1.0 there: the centre crop of 0.875 cut an eighth off 32x32
    pictures). (Evenly spaced files missed every other picture of a folder that alternated sizes.)"""
    picked = random.Random(0).sample(range(len(samples)), min(count, len(samples)))
    sizes = set()
    for i in picked:
        try:
            with Image.open(samples[i][0]) as picture:
                sizes.add(picture.size)
        except Exception:  # noqa: BLE001 - unreadable files are the loader's business (skipped, said)
            continue
        if len(sizes) > 1:
            return None
    if len(sizes) != 1:
        return None
    width, height = sizes.pop()
    return width if width == height else None


def _val_folder_kept(val_split) -> bool:
    """Whether a val/ (test/) folder or CIFAR's test batch is the val split: unless a val_split holds
    out part of train instead (no hold-out at all keeps it: every image is scored)."""
    return val_split is None or val_split == NO_HOLD_OUT


def _hold_out(pool, val_split, seed, train_tf, eval_tf):
    """(train, val, description): a stratified, seeded `val_split` (default 0.2) of `pool`."""
    if val_split == NO_HOLD_OUT:  # every image scored: no split to hold out (a class of 1 image was refused)
        return pool.subset(range(len(pool)), train_tf), pool.subset([], eval_tf), "every image, none held out"
    fraction = DEFAULT_VAL_SPLIT if val_split is None else val_split
    train_idx, val_idx = stratified_split(pool.targets, fraction, seed, _keys(pool))
    if len(val_idx) == 0:
        counts = np.bincount(np.asarray(pool.targets))
        raise UserError(f"too few images to hold out a validation split: no class has 2 images (the most is "
                        f"{int(counts.max())}, {len(pool)} image{'s' * (len(pool) != 1)} in all); add images (at least 2 per class) or "
                        f"provide a val/ folder (eval: or --all-images, to score every image)")
    how = f"val: {fraction * 100:g}% held out, stratified, seed {seed}"
    classes = len(np.unique(np.asarray(pool.targets)))
    if len(val_idx) == classes and len(val_idx) > round(fraction * len(pool)):  # 1e-9 showed "1e-07% held out"
        how = f"val: 1 image per class held out (the least; {fraction * 100:g}% asked), stratified, seed {seed}"
    counts = np.bincount(np.asarray(pool.targets), minlength=len(pool.classes))
    unscored = [pool.classes[label] for label in np.flatnonzero(counts == 1)]
    if unscored:  # a class of one image trains on it: val cannot score that class
        how += f"; not in val (1 image, kept for training): {listed(unscored)}"
    return pool.subset(train_idx, train_tf), pool.subset(val_idx, eval_tf), how


def _existing_folder(data: str | Path) -> Path:
    root = Path(data).expanduser()
    if not root.exists():
        raise UserError(
            f"data folder {root} does not exist: pass a folder of <class>/ subfolders, one with "
            "train/ and val/, a CIFAR folder, or no data for the embedded digits"
        )
    if not root.is_dir():
        raise UserError(f"data must be a folder, {root} is a file: pass the folder that holds "
                        "the class subfolders")
    return root


def _check_val_split(val_split) -> None:
    if val_split is None:
        return
    if isinstance(val_split, bool) or not isinstance(val_split, numbers.Real) \
            or not 0 < val_split < 1:
        raise UserError(f"val_split must be a fraction between 0 and 1 (exclusive), "
                        f"got {val_split!r}: e.g. 0.2")


def _check_limit(limit, name: str = "limit_per_class") -> None:
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
        raise UserError(f"{name} must be a positive integer, got {limit!r}: e.g. 100")
