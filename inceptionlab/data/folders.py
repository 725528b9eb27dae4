"""Finding the images and classes in a folder of class subfolders (`<root>/<class>/**/<image>`).

Classes are the subfolder names, sorted alphabetically (so label i means the same class on
every machine). Images are files with a known extension in any case (`.JPEG` counts), found
at any depth inside a class folder; hidden files and folders (names starting with '.') are
ignored. Every structural problem is a one-line UserError naming the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from inceptionlab.errors import UserError, listed

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VAL_FOLDER_NAMES = ("val", "test")  # the held-out split beside train/, in order of preference


def is_image_file(name: str) -> bool:
    """True for a visible file name with a known image extension (case-insensitive)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


# folders that systems add beside a user's own: a zip made on a Mac (__MACOSX, its ._* files), a
# Synology NAS's thumbnails (@eaDir), Windows (its recycle bin and volume data), a file system's root
SYSTEM_FOLDERS = frozenset({"__MACOSX", "@eaDir", "$RECYCLE.BIN", "System Volume Information", "lost+found"})


def is_skipped_folder(name: str) -> bool:
    """Whether a folder named ``name`` is left out wherever images are looked for: hidden, or one of
    `SYSTEM_FOLDERS` (a Synology NAS puts @eaDir/ in every folder, with thumbnails in it)."""
    return name.startswith(".") or name in SYSTEM_FOLDERS


def class_names(root: Path) -> list[str]:
    """The visible subfolders of `root` that are not `SYSTEM_FOLDERS`, sorted; UserError if there
    are none, or for a link to a folder that is gone (dropping that class would renumber the others
    without a word)."""
    entries = [entry for entry in os.scandir(root) if not is_skipped_folder(entry.name)]
    broken = sorted(entry.name for entry in entries if entry.is_symlink() and not os.path.exists(entry.path))
    if broken:
        raise UserError(f"{root / broken[0]} is a link to {os.readlink(root / broken[0])}, which does not "
                        f"exist{f' ({len(broken)} such links)' if len(broken) > 1 else ''}: "
                        f"fix the link or remove it")
    names = sorted(entry.name for entry in entries if entry.is_dir())
    if not names:
        loose = sum(1 for entry in os.scandir(root) if entry.is_file() and is_image_file(entry.name))
        found = f" (found {loose} images directly in it)" if loose else ""
        raise UserError(
            f"no class folders in {root}{found}: put each class's images in {root}/<class>/"
        )
    return names


def images_in(folder: Path, within: Path | None = None, identities: dict | None = None) -> list[Path]:
    """Every image file under `folder`, at any depth, in sorted order; hidden entries skipped.
    Linked folders are followed, each real folder once and each real file once: a link back up
    (`cat/again -> .`) multiplied 6 images into 246, with copies on both sides of the split.
    With `within` (the data folder), a link inside `folder` to anywhere else in it is not
    followed: `a/up -> ..` had given class a the images of class b, under a's label. `identities`,
    when given, receives each image's `file_identity` (found while walking: no second stat)."""
    return files_in(folder, is_image_file, within, identities=identities)


def files_in(folder: Path, keep=lambda name: True, within: Path | None = None, *, every_name: bool = False,
             identities: dict | None = None) -> list[Path]:
    """Every visible file under `folder` whose name `keep` accepts, walked as `images_in` says;
    with `every_name`, a file linked in under two names is listed under both (predict answers for
    every name it is given; training must not count an image twice). Linked folders are walked
    after every folder reached without a link, so that a folder that is both is named by its own
    path (`link -> nested` had named nested's images link/..., as "link" sorts first)."""
    found, seen_folders, seen_files = [], set(), set()  # seen files by identity: a hard link is one too
    inside = os.path.realpath(within) + os.sep if within is not None else None
    own = os.path.realpath(folder) + os.sep
    linked: list[str] = []

    def walk(top, through_links: bool) -> None:
        for parent, subfolders, files in os.walk(top, followlinks=through_links):
            real = os.path.realpath(parent)
            if real in seen_folders:
                subfolders[:] = []
                continue
            seen_folders.add(real)
            subfolders[:] = sorted(name for name in subfolders if not is_skipped_folder(name)
                                   and not _elsewhere_inside(os.path.join(parent, name), inside, own))
            if not through_links:
                links = [name for name in subfolders if os.path.islink(os.path.join(parent, name))]
                linked.extend(os.path.join(parent, name) for name in links)
                subfolders[:] = [name for name in subfolders if name not in links]
            for name in sorted(files):
                path = Path(parent) / name
                if not keep(name) or name.startswith("."):
                    continue
                identity = file_identity(path)
                if every_name or identity not in seen_files:
                    seen_files.add(identity)
                    found.append(path)
                    if identities is not None:
                        identities[path] = identity

    walk(folder, through_links=False)
    for link in linked:
        walk(link, through_links=True)
    return found


def file_identity(path: Path | str):
    """What makes two names one file: (device, inode), so symbolic and hard links both count;
    the resolved path where the file system has no inode numbers (or the name is dangling)."""
    try:
        info = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return (info.st_dev, info.st_ino) if info.st_ino else os.path.realpath(path)


def _elsewhere_inside(path: str, inside: str | None, own: str) -> bool:
    """Whether `path` is a link to a place inside the data folder (`inside`) but outside this
    class's own folder (`own`): another class, or the data folder itself."""
    if inside is None or not os.path.islink(path):
        return False
    target = os.path.realpath(path) + os.sep
    return (target.startswith(inside) and not target.startswith(own)) or inside.startswith(target)


def scan_class_folders(root: Path, classes: list[str] | None = None, min_classes: int = 2,
                       identities: dict | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    """(classes, [(image path, label), ...]) for `root/<class>/...`.

    With `classes` given (the train split's), `root` must hold exactly those class folders.
    Raises UserError for no class folders, an empty class folder (named), or fewer than
    `min_classes` classes (2 to train; evaluation of named classes can score a folder of one).
    `identities` receives each image's `file_identity`, for `shared_files`.
    """
    found = class_names(root)
    if classes is not None and found != classes:
        raise UserError(_class_difference(root, classes, found))
    if len(found) == 1 and found[0].lower() in ("train", "val", "validation", "test"):  # a split folder alone
        raise UserError(f"{root} holds only {found[0]}/, no class folders: point --data at {root / found[0]}, "
                        f"or add a train/ folder beside it")
    if len(found) < min_classes:
        raise UserError(
            f"needs at least 2 classes, found 1 ({found[0]}) in {root}: add another class folder"
        )
    real = {}
    for name in found:  # a class folder linked in twice: the same images under two labels
        other = real.setdefault(os.path.realpath(root / name), name)
        if other != name:
            raise UserError(f"class folders {other} and {name} in {root} are the same folder (a link); remove one")
    samples, owner = [], {}
    identities = {} if identities is None else identities
    for label, name in enumerate(found):
        images = images_in(root / name, within=root, identities=identities)
        if not images:
            fix = (f"add images of {name} to it (every class of train/ needs some in {root.name}/), or remove "
                   f"the class from both folders" if classes is not None else "add images or remove the folder")
            raise UserError(f"class folder {root / name} has no images ({', '.join(IMAGE_EXTENSIONS)}): {fix}")
        for path in images:  # one picture linked into two classes would train under both labels
            other = owner.setdefault(identities[path], path)
            if other != path:
                raise UserError(_one_file_twice(root, other, path))
        samples += [(path, label) for path in images]
    return found, samples


def _one_file_twice(root: Path, first: Path, second: Path) -> str:
    """The message for one file found in two class folders: the symbolic link named as one."""
    link, target = (first, second) if os.path.islink(first) and not os.path.islink(second) else (second, first)
    how = "a link to" if os.path.islink(link) else "the same file as (a hard link)"
    classes = sorted({link.relative_to(root).parts[0], target.relative_to(root).parts[0]})
    return (f"{link} is {how} {target}: one picture in two classes ({' and '.join(classes)}) would train under "
            f"both labels; remove the one in the wrong class")


def shared_files(train: dict, val: dict) -> list[tuple[Path, Path]]:
    """(val file, train file) pairs that are one file under two names (a val/ linked to train/):
    validation would score images the network trained on. ``train`` and ``val`` map each file to
    its identity, as `scan_class_folders` gives them."""
    in_train = {identity: path for path, identity in train.items()}
    return [(path, in_train[identity]) for path, identity in val.items() if identity in in_train]


class SplitLayout(NamedTuple):
    """root/train/<class>/ with root/val/<class>/ (or test/, or None: hold out from train/)."""
    train: Path
    val: Path | None
    ignored: list[str]  # what lies outside the layout (a stray image in train/, a folder beside it)


def split_folders(root: Path) -> SplitLayout | None:
    """The train/val layout of `root`, or None when `root` is a folder of classes.

    train/ is a split when folders of images lie inside it: a stray image in train/, or a folder
    of images beside train/ and val/, is then listed as ignored (one stray file made the classes
    "train" and "val"). It is a class named "train" when it holds no such folder (a photo set of
    trains and buses), or when folders of images lie beside it and no val/ or test/ of class
    folders does (cat/, dog/ and train/ are three classes, not a layout that ignores two).
    A val/ or test/ without images is passed over (an empty val/ hid test/)."""
    train = root / "train"
    if not train.is_dir() or not _image_folders(train):
        return None
    held_out = [root / name for name in VAL_FOLDER_NAMES if (root / name).is_dir()]
    val = next((folder for folder in held_out if _holds_images(folder)), None)  # loose images: its own error
    siblings = [entry.name for entry in os.scandir(root) if entry.is_dir() and not is_skipped_folder(entry.name)
                and entry.name not in ("train", *VAL_FOLDER_NAMES) and _holds_images(Path(entry.path))]
    if siblings and val is None:  # cat/, dog/ beside train/: classes all
        return None
    passed_over = held_out[:held_out.index(val)] if val is not None else held_out  # before it in preference
    ignored = [f"{folder.name}/ (no images)" for folder in passed_over]
    if val is not None:  # test/ beside the val/ in use: named, not read (it may be the final test)
        ignored += [f"{folder.name}/ ({val.name}/ is used)" for folder in held_out[held_out.index(val) + 1:]
                    if _holds_images(folder)]
    for folder in (train, val):
        if folder is not None:
            ignored += sorted(f"{folder.name}/{entry.name}" for entry in os.scandir(folder)
                              if entry.is_file() and is_image_file(entry.name))
    ignored += sorted(f"{name}/" for name in siblings)
    return SplitLayout(train, val, ignored)


def _image_folders(folder: Path) -> bool:
    """Whether a visible subfolder of ``folder`` holds an image (at any depth)."""
    return any(entry.is_dir() and not is_skipped_folder(entry.name) and _holds_images(Path(entry.path))
               for entry in os.scandir(folder))


def _holds_images(folder: Path) -> bool:
    """Whether an image file lies anywhere under ``folder`` (stops at the first)."""
    for parent, subfolders, files in os.walk(folder, followlinks=True):
        subfolders[:] = [name for name in subfolders if not is_skipped_folder(name)]
        if any(is_image_file(name) for name in files):
            return True
    return False


def _class_difference(root: Path, train_classes: list[str], val_classes: list[str]) -> str:
    """One line saying how the val/ classes differ from the train/ classes."""
    missing = sorted(set(train_classes) - set(val_classes))
    extra = sorted(set(val_classes) - set(train_classes))
    alike = {_looks(name): name for name in missing}
    twins = [(alike[_looks(name)], name) for name in extra if _looks(name) in alike]
    if twins:  # 'café' in NFC against NFD (macOS, zip tools), or a trailing space: show the characters
        missing = [ascii(name) for name in missing]
        extra = [ascii(name) for name in extra]
    parts = []
    if missing:
        parts.append(f"missing from {root.name}/: {listed(missing)}")
    if extra:
        parts.append(f"not in train/: {listed(extra)}")
    fix = "give both folders the same class subfolders"
    if twins:
        fix = (f"names that look alike differ in their characters ({ascii(twins[0][0])} in train/, "
               f"{ascii(twins[0][1])} in {root.name}/): rename one to match the other")
    return f"{root.name}/ classes differ from train/ classes ({'; '.join(parts)}) in {root.parent}: {fix}"


def _looks(name: str) -> str:
    """A class name as it reads: Unicode-normalized (NFC), without surrounding spaces."""
    import unicodedata

    return unicodedata.normalize("NFC", name).strip()

