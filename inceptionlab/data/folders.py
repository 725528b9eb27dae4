"""Finding the images and classes in a folder of class subfolders (`<root>/<class>/**/<image>`).

Classes are the subfolder names, sorted alphabetically (so label i means the same class on
every machine). Images are files with a known extension in any case (`.JPEG` counts), found
at any depth inside a class folder; hidden files and folders (names starting with '.') are
ignored. Every structural problem is a one-line UserError naming the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from inceptionlab.errors import UserError, listed

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VAL_FOLDER_NAMES = ("val", "test")  # the held-out split beside train/, in order of preference


def is_image_file(name: str) -> bool:
    """True for a visible file name with a known image extension (case-insensitive)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def class_names(root: Path) -> list[str]:
    """The visible subfolders of `root`, sorted; UserError if there are none."""
    names = sorted(entry.name for entry in os.scandir(root)
                   if entry.is_dir() and not entry.name.startswith("."))
    if not names:
        loose = sum(1 for entry in os.scandir(root) if entry.is_file() and is_image_file(entry.name))
        found = f" (found {loose} images directly in it)" if loose else ""
        raise UserError(
            f"no class folders in {root}{found}: put each class's images in {root}/<class>/"
        )
    return names


def images_in(folder: Path) -> list[Path]:
    """Every image file under `folder`, at any depth, in sorted order; hidden entries skipped.
    Linked folders are followed, each real folder once and each real file once: a link back up
    (`cat/again -> .`) multiplied 6 images into 246, with copies on both sides of the split."""
    found, seen_folders, seen_files = [], set(), set()
    for parent, subfolders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(parent)
        if real in seen_folders:
            subfolders[:] = []
            continue
        seen_folders.add(real)
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(files):
            path = Path(parent) / name
            if is_image_file(name) and os.path.realpath(path) not in seen_files:
                seen_files.add(os.path.realpath(path))
                found.append(path)
    return found


def scan_class_folders(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    """(classes, [(image path, label), ...]) for `root/<class>/...`.

    With `classes` given (the train split's), `root` must hold exactly those class folders.
    Raises UserError for no class folders, an empty class folder (named), or a single class.
    """
    found = class_names(root)
    if classes is not None and found != classes:
        raise UserError(_class_difference(root, classes, found))
    if len(found) < 2:
        raise UserError(
            f"needs at least 2 classes, found 1 ({found[0]}) in {root}: add another class folder"
        )
    samples = []
    for label, name in enumerate(found):
        images = images_in(root / name)
        if not images:
            raise UserError(
                f"class folder {root / name} has no images ({', '.join(IMAGE_EXTENSIONS)}): "
                "add images or remove the folder"
            )
        samples += [(path, label) for path in images]
    return found, samples


def split_folders(root: Path) -> tuple[Path, Path | None] | None:
    """(train/, val/ or test/ or None) when `root` has a train/ folder of class folders, else None.
    A train/ that holds images itself, or no subfolder, or that has folders of images beside it
    (other than val/ and test/), is a class named "train" (a photo set of trains and buses was read
    as a train/val layout, its other classes ignored)."""
    train = root / "train"
    if not train.is_dir():
        return None
    entries = list(os.scandir(train))
    if any(entry.is_file() and is_image_file(entry.name) for entry in entries) or \
            not any(entry.is_dir() and not entry.name.startswith(".") for entry in entries):
        return None
    siblings = [entry for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")
                and entry.name not in ("train", *VAL_FOLDER_NAMES)]
    if any(_holds_images(Path(entry.path)) for entry in siblings):  # cat/, dog/ beside train/: classes all,
        return None                                                  # not a layout that ignored cat and dog
    for name in VAL_FOLDER_NAMES:
        if (root / name).is_dir():
            return train, root / name
    return train, None


def _holds_images(folder: Path) -> bool:
    """Whether an image file lies anywhere under ``folder`` (stops at the first)."""
    for parent, subfolders, files in os.walk(folder, followlinks=True):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        if any(is_image_file(name) for name in files):
            return True
    return False


def _class_difference(root: Path, train_classes: list[str], val_classes: list[str]) -> str:
    """One line saying how the val/ classes differ from the train/ classes."""
    missing = sorted(set(train_classes) - set(val_classes))
    extra = sorted(set(val_classes) - set(train_classes))
    parts = []
    if missing:
        parts.append(f"missing from {root.name}/: {listed(missing)}")
    if extra:
        parts.append(f"not in train/: {listed(extra)}")
    return (f"{root.name}/ classes differ from train/ classes ({'; '.join(parts)}) in "
            f"{root.parent}: give both folders the same class subfolders")

