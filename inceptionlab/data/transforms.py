"""Inception preprocessing: the training crop and the evaluation centre crop.

Training follows the Inception papers' recipe (GoogLeNet section 6, Inception-v3 / TF-slim
`inception_preprocessing`): a random crop covering `scale` of the picture's area with aspect
ratio in `ratio`, resized to `img_size`; a random horizontal flip; optional colour distortion.
Evaluation resizes the shorter side to `img_size / crop_pct` and takes the centre `img_size`
square (crop_pct 0.875: 299 -> resize 341, crop 299).

Both return a callable `PIL.Image -> FloatTensor 3 x img_size x img_size`, normalised with the
given mean and std. Randomness comes from torch's RNG only, so the loader can make it repeatable.
Each also carries `decode_side`: the shorter side a picture needs for the transform to lose
nothing, which `load_image(path, min_side=...)` uses to decode large JPEGs at reduced scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from inceptionlab.data.images import load_image  # re-exported: part of this module's API
from inceptionlab.errors import UserError

__all__ = [
    "train_transform",
    "eval_transform",
    "load_image",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

INCEPTION_MEAN = (0.5, 0.5, 0.5)  # TF-slim Inception weights: pixels scaled to [-1, 1]
INCEPTION_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision-style weights (e.g. GoogLeNet)
IMAGENET_STD = (0.229, 0.224, 0.225)

EVAL_MAX_ASPECT = 16  # longer side kept by evaluation, in shorter sides: a line of 20000x1 took 34 s and 1.8 GB
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # RGB -> gray weights (PIL's "L" mode)

INTERPOLATIONS = {
    "nearest": T.InterpolationMode.NEAREST,
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "lanczos": T.InterpolationMode.LANCZOS,
}

# Colour distortion as TF-slim's distort_color: brightness +-32/255 (added), saturation and
# contrast x[0.5, 1.5], hue +-0.2 of the colour circle, in one of its four orders.
DISTORT_BRIGHTNESS = 32 / 255
DISTORT_CONTRAST = 0.5
DISTORT_SATURATION = 0.5
DISTORT_HUE = 0.2


class DistortColor:
    """TF-slim's ``distort_color`` (Inception-v3's training colour distortion) on a PIL picture.

    Brightness is *added* (``tf.image.random_brightness``: every pixel +-32/255, black included;
    torchvision's ColorJitter multiplies, which leaves black black); saturation and contrast are
    scaled by a factor in [0.5, 1.5] and hue turned by up to 0.2 of the colour circle; the four go in
    one of TF-slim's four orders, drawn per picture. Randomness from torch's RNG, as the crop's.
    Contrast follows torchvision (around the picture's mean gray, where TF uses each channel's mean).
    """

    ORDERS = (("brightness", "saturation", "hue", "contrast"), ("saturation", "brightness", "contrast", "hue"),
              ("contrast", "hue", "brightness", "saturation"), ("hue", "saturation", "contrast", "brightness"))

    def __call__(self, picture: Image.Image) -> Image.Image:
        from torchvision.transforms import functional as F

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * torch.rand(()).item()

        for step in self.ORDERS[int(torch.randint(4, ()))]:
            if step == "brightness":
                shift = round(uniform(-DISTORT_BRIGHTNESS, DISTORT_BRIGHTNESS) * 255)
                picture = picture.point(lambda value: min(255, max(0, value + shift)))  # a lookup table
            elif step == "saturation":
                picture = F.adjust_saturation(picture, uniform(1 - DISTORT_SATURATION, 1 + DISTORT_SATURATION))
            elif step == "contrast":
                picture = F.adjust_contrast(picture, uniform(1 - DISTORT_CONTRAST, 1 + DISTORT_CONTRAST))
            else:
                picture = F.adjust_hue(picture, uniform(-DISTORT_HUE, DISTORT_HUE))
        return picture

    def __repr__(self) -> str:
        return "DistortColor(tf_slim)"


def train_transform(
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = True,
    distort: bool = False,
    interpolation: str = "bilinear",
    input_space: str = "RGB",
) -> T.Compose:
    """Random-area crop -> `img_size`, random flip, optional colour distortion, normalise.

    ``input_space="BGR"`` gives the channels in the order Caffe-trained weights expect."""
    _check_size(img_size)
    _check_range("scale", scale, upper=1.0)
    _check_range("ratio", ratio, upper=None)
    steps = [
        T.RandomResizedCrop(img_size, scale=tuple(scale), ratio=tuple(ratio),
                            interpolation=_interpolation(interpolation)),
    ]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    if distort:
        steps.append(DistortColor())
    steps += _to_normalised_tensor(mean, std, input_space)
    pipeline = T.Compose(steps)
    # the smallest crop (least area, most elongated) still gets img_size pixels across
    pipeline.decode_side = math.ceil(img_size / math.sqrt(scale[0] / max(ratio[1], 1 / ratio[0])))
    return pipeline


def eval_transform(
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    crop_pct: float = 0.875,
    interpolation: str = "bilinear",
    input_space: str = "RGB",
) -> T.Compose:
    """Resize the shorter side to int(img_size / crop_pct), centre-crop `img_size`, normalise
    (channels in ``input_space`` order: "RGB", or "BGR" for Caffe-trained weights)."""
    _check_size(img_size)
    if not 0 < crop_pct <= 1:
        raise UserError(f"crop_pct must be in (0, 1], got {crop_pct}: 0.875 is the usual value")
    resize_to = int(img_size / crop_pct)
    steps = [
        TrimLongSide(EVAL_MAX_ASPECT),  # a 4096x1 line became 1.4M x 341 pixels (1.8 GB) before the crop
        T.Resize(resize_to, interpolation=_interpolation(interpolation)),  # shorter side
        T.CenterCrop(img_size),
        *_to_normalised_tensor(mean, std, input_space),
    ]
    pipeline = T.Compose(steps)
    pipeline.decode_side = 2 * resize_to  # twice the resize: pixels then move by 2 of 255 levels at most
    return pipeline


class TrimLongSide:
    """Centre-crops a picture's longer side to ``max_aspect`` times its shorter side, when longer.

    Before the evaluation resize: the centre crop after it keeps at most the middle square, so
    what lies beyond ``max_aspect`` squares never reaches the output; only the time and memory the
    resize would take for it do (a 20000x1 line: 34 s and 1.8 GB at 299). Pictures up to
    ``max_aspect``:1 pass unchanged; beyond, the resize grid moves by under a pixel."""

    def __init__(self, max_aspect: float) -> None:
        self.max_aspect = max_aspect

    def __call__(self, picture: Image.Image) -> Image.Image:
        width, height = picture.size
        short = min(width, height)
        keep = math.ceil(self.max_aspect * short)
        if max(width, height) <= keep:
            return picture
        if width > height:  # W x H -> keep x H, the middle of the row
            left = (width - keep) // 2
            return picture.crop((left, 0, left + keep, height))
        top = (height - keep) // 2
        return picture.crop((0, top, width, top + keep))

    def __repr__(self) -> str:
        return f"TrimLongSide(max_aspect={self.max_aspect})"


class ToNormalizedTensor:
    """PIL uint8 H x W x C -> FloatTensor C x H x W of (pixel / 255 - mean) / std, per channel.

    Computed in numpy float32 (the same IEEE result as torchvision's ToTensor + Normalize): a
    single picture is far too small for torch's intra-op threads, which on a busy machine cost
    more than the arithmetic. A grayscale picture gives one plane per mean value; one mean value
    (a model of ``in_chans=1``) makes a colour picture gray first (ITU-R 601 luma, as PIL's "L").
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], input_space: str = "RGB") -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.bgr = input_space == "BGR"

    def __call__(self, picture: Image.Image) -> torch.Tensor:
        pixels = np.asarray(picture, dtype=np.float32)
        if pixels.ndim == 3 and len(self.mean) == 1:
            pixels = pixels[:, :, :3] @ LUMA  # H x W x 3 -> H x W: gray for a one-channel model
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]  # H x W x 1, broadcast to every channel below
        elif self.bgr:
            pixels = pixels[:, :, ::-1]  # RGB -> BGR, as Caffe-trained weights expect
        scaled = (pixels / np.float32(255) - self.mean) / self.std  # H x W x C
        return torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))  # C x H x W

    def __repr__(self) -> str:
        return f"ToNormalizedTensor(mean={self.mean.tolist()}, std={self.std.tolist()})"


def _to_normalised_tensor(mean: Sequence[float], std: Sequence[float], input_space: str = "RGB") -> list:
    """The final step of both pipelines, with mean, std and channel order checked."""
    mean, std = _channel_stats("mean", mean), _channel_stats("std", std)
    if any(s <= 0 for s in std):
        raise UserError(f"std must be positive, got {std}: use e.g. {INCEPTION_STD}")
    if input_space not in ("RGB", "BGR"):
        raise UserError(f"input_space must be 'RGB' or 'BGR', got {input_space!r}")
    return [ToNormalizedTensor(mean, std, input_space)]


def _channel_stats(name: str, values: Sequence[float]) -> tuple[float, ...]:
    """Validate a per-channel mean or std: 3 numbers (or 1, used for every channel)."""
    try:
        values = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be 3 numbers, got {values!r}: e.g. {INCEPTION_MEAN}") from None
    if len(values) not in (1, 3):
        raise UserError(f"{name} must be 3 numbers (one per RGB channel), got {len(values)}")
    return values


def _check_size(img_size: int) -> None:
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise UserError(f"img_size must be a positive integer, got {img_size!r}: e.g. 299")


def _check_range(name: str, bounds: Sequence[float], upper: float | None) -> None:
    """A (low, high) pair with 0 < low <= high (<= upper when given)."""
    if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1] or (upper and bounds[1] > upper):
        limit = f" <= {upper}" if upper else ""
        raise UserError(f"{name} must be (low, high) with 0 < low <= high{limit}, got {bounds}")


def _interpolation(name: str) -> T.InterpolationMode:
    if name not in INTERPOLATIONS:
        raise UserError(f"unknown interpolation {name!r}: use one of {', '.join(INTERPOLATIONS)}")
    return INTERPOLATIONS[name]
