"""Decoding one image file into an RGB picture, whatever the file holds.

Real folders hold more than clean RGB JPEGs: grayscale scans, palette GIFs with a transparent
colour, RGBA PNGs, CMYK JPEGs from print, 16-bit TIFFs, phone photos that store their rotation
in EXIF, thumbnails of a few pixels and panoramas of tens of thousands. `load_image` turns each
into an upright 8-bit RGB `PIL.Image`, and turns every file it cannot decode into a one-line
`UserError` that names the file, so a dataset can record it and move on.

Size policy (PIL's decompression-bomb limit is replaced by this one):
- a picture whose longer side exceeds `MAX_SIDE` is shrunk to fit `MAX_SIDE`; JPEGs are decoded
  straight at a reduced scale (`Image.draft`), so a 20,000-pixel panorama costs little;
- a picture that would need more than `MAX_DECODE_PIXELS` pixels in memory *after* that reduced
  decode is refused (UserError) instead of exhausting memory;
- given `min_side` (the transforms say what they need: `decode_side`), a JPEG is decoded at the
  smallest 1/2, 1/4 or 1/8 scale whose shorter side still has `min_side` pixels. An 8000x6000
  photo for 64-pixel training is then decoded at 1000x750, not at 4096x3072 (about 30x fewer
  pixels); a picture already near the needed size is decoded as it is.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from PIL.JpegImagePlugin import JpegImageFile

from inceptionlab.errors import UserError

MAX_SIDE = 4096  # longer side of the pictures handed to the transforms
MAX_DECODE_PIXELS = 2**28  # ~16k x 16k: the most pixels decoded at once (about 1 GiB as RGBA)
JPEG_MAX_REDUCTION = 8  # libjpeg decodes at 1/2, 1/4 or 1/8 scale

# PIL refuses to even *open* files above 2 x MAX_IMAGE_PIXELS (178M pixels by default). We bound
# memory ourselves (above), and a JPEG far above PIL's limit is cheap to decode at 1/8 scale, so
# raise PIL's limit to what our own policy can still handle (never lower it, keep None = off).
_OUR_OPEN_LIMIT = MAX_DECODE_PIXELS * JPEG_MAX_REDUCTION**2
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < _OUR_OPEN_LIMIT:
    Image.MAX_IMAGE_PIXELS = _OUR_OPEN_LIMIT

WHITE = (255, 255, 255, 255)
_MODES_WITH_ALPHA = {"RGBA", "RGBa", "LA", "La", "PA"}
_HIGH_DEPTH_GRAY_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


def load_image(path: str | os.PathLike, *, min_side: int | None = None) -> Image.Image:
    """Decode the image file at `path` into an upright 8-bit RGB `PIL.Image`.

    Handles grayscale (L, 1), palette (P, with or without a transparent colour), alpha (RGBA, LA,
    PA: composited on white), CMYK, YCbCr, 16/32-bit and float grayscale (I;16, I, F: scaled to
    0-255), EXIF orientation (the picture comes back as a person would see it), and sizes from
    1x1 up (see the module docstring for very large pictures). With `min_side`, a JPEG may come
    back smaller than stored, never with its shorter side below `min_side` (or its own).

    Raises UnreadableImage (a UserError: 'cannot read image <path>: <reason>') for a missing,
    empty, truncated, corrupt or non-image file. The file is closed before returning.
    """
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # (a FIFO was "empty file (0 bytes)")
            raise _Unreadable("not a regular file (a pipe, socket or device)" if not stat.S_ISDIR(info.st_mode)
                              else "a folder, not an image file")
        if info.st_size == 0:
            raise _Unreadable("empty file (0 bytes)")
        with open(path, "rb") as stream:  # we own the file: PIL's image stays valid after close
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                picture = Image.open(stream)
                _reduce_while_decoding(picture, min_side)
                picture.load()  # decode now: truncated or corrupt data fails here, not later
        picture = _upright(picture)
        picture = to_rgb(picture)
        if max(picture.size) > MAX_SIDE:
            picture.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
        return picture
    except _Unreadable as exc:
        raise UnreadableImage(path, str(exc)) from None
    except FileNotFoundError:
        broken = path.is_symlink()  # a link whose target is gone
        raise UnreadableImage(path, f"broken symbolic link to {os.readlink(path)}" if broken else "no such file") from None
    except Image.UnidentifiedImageError:
        raise UnreadableImage(path, "not an image format PIL can decode") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise anything on hostile bytes
        raise UnreadableImage(path, _one_line(exc)) from exc


def to_rgb(picture: Image.Image) -> Image.Image:
    """The same picture as 8-bit RGB: alpha composited on white, deep grayscale scaled to 0-255."""
    if picture.mode == "RGB":
        return picture
    if picture.mode == "P":
        palette_mode = picture.palette.mode if picture.palette is not None else "RGB"
        has_alpha = "transparency" in picture.info or palette_mode == "RGBA"
        picture = picture.convert("RGBA" if has_alpha else "RGB")
    if picture.mode in _MODES_WITH_ALPHA:
        return _composite_on_white(picture)
    if picture.mode in _HIGH_DEPTH_GRAY_MODES:
        return _deep_gray_to_rgb(picture)
    try:
        return picture.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, ...
    except ValueError as exc:
        raise _Unreadable(f"unsupported colour mode {picture.mode} ({exc})") from None


def _reduce_while_decoding(picture: Image.Image, min_side: int | None = None) -> None:
    """Refuse pictures too large to decode; ask JPEG to decode large ones at reduced scale."""
    width, height = picture.size
    reduction = 1
    fit = MAX_SIDE / max(width, height)  # < 1: longer than we hand on
    if min_side is not None:
        fit = min(fit, min_side / min(width, height))  # < 1: larger than the transform needs
    if isinstance(picture, JpegImageFile) and fit < 1:  # JPEG, MPO
        # draft() picks the smallest 1/2, 1/4, 1/8 scale that still covers the requested size
        picture.draft(None, (max(1, math.ceil(width * fit)), max(1, math.ceil(height * fit))))
        reduction = width / picture.size[0]
    if width * height / reduction**2 > MAX_DECODE_PIXELS:
        raise _Unreadable(
            f"image is {width}x{height} pixels, over the {MAX_DECODE_PIXELS:,}-pixel decode "
            "limit: downscale it first"
        )


def _upright(picture: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block leaves the picture as stored."""
    try:
        return ImageOps.exif_transpose(picture)
    except Exception:  # noqa: BLE001 - bad metadata must not cost us a good picture
        return picture


def _composite_on_white(picture: Image.Image) -> Image.Image:
    """Flatten a picture with transparency onto a white background, as a browser shows it."""
    rgba = picture.convert("RGBA")
    background = Image.new("RGBA", rgba.size, WHITE)
    return Image.alpha_composite(background, rgba).convert("RGB")


def _deep_gray_to_rgb(picture: Image.Image) -> Image.Image:
    """Map 16-bit, 32-bit or float grayscale to 8 bits (as its bit depth implies), then to RGB.

    I;16* is 16-bit by definition (divide by 257). Mode I (32-bit) holds 8-bit data stored wide
    (an L picture converted to I, a 32-bit TIFF of 0..255) and, in some Pillow versions, 16-bit PNGs:
    values all inside 0..255 are taken as they are (dividing them by 257 made the picture black),
    values above 255 up to 65535 as 16-bit, anything else is min-max stretched.
    Mode F inside 0..1 is taken as a fraction of white, otherwise min-max stretched.
    """
    values = np.asarray(picture, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if picture.mode == "I" and 0 <= low and high <= 255:
        scaled = values
    elif picture.mode.startswith("I;16") or (picture.mode == "I" and 0 <= low and high <= 65535):
        scaled = values / 257.0
    elif picture.mode == "F" and 0 <= low and high <= 1:
        scaled = values * 255.0
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def _one_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class UnreadableImage(UserError):
    """An image file that cannot be decoded; `path` and `reason` are kept for the skip record."""

    def __init__(self, path, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):  # picklable, so it crosses from DataLoader workers intact
        return type(self), (self.path, self.reason)


class _Unreadable(Exception):
    """A file we recognised as unusable ourselves; its message is the reason."""
