"""scikit-learn's 8x8 handwritten digits with a fixed train/test split.

The 1,797 images of ``sklearn.datasets.load_digits`` (the UCI "Optical Recognition of Handwritten Digits"
test set, Alpaydin & Kaynak, 1998) ship inside scikit-learn, so nothing is downloaded. Each pixel is an
integer count in ``{0, ..., 16}``: 17 levels.

**Split.** Deterministic and independent of any RNG: within each class, the images are taken in the order of
the shipped file, and every 5th one (positions 0, 5, 10, ... of that class) goes to the test set. This gives
364 test and 1,433 train images, with every class in the same 1:4 proportion (``DIGITS_SPLIT_SIZES``).

**Dequantization** and bits per dimension live in :mod:`probgen.data.quantize` (re-exported here and from
:mod:`probgen.data`), shared by every quantized data set.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from probgen._checks import check_bool, check_choice
from probgen.data.quantize import bits_per_dim, dequantize, dequantize_scaled, to_levels  # noqa: F401 (old home)

__all__ = [
    "DIGITS_NUM_LEVELS",
    "DIGITS_SPLIT_SIZES",
    "DIGITS_SPLITS",
    "DIGITS_SCALES",
    "digits",
]

DIGITS_NUM_LEVELS = 17
"""Raw pixels of the digits are integers in ``{0, ..., 16}``."""

DIGITS_SPLITS: tuple[str, ...] = ("train", "test", "all")
DIGITS_SCALES: tuple[str, ...] = ("[-1,1]", "[0,1]", "raw")
DIGITS_SPLIT_SIZES: dict[str, int] = {"train": 1433, "test": 364, "all": 1797}
"""Number of images in each split (the test set is every 5th image of each class)."""

_BINARIZE_THRESHOLD = 8  # raw pixel >= 8 (of 16) -> 1
_TEST_EVERY = 5


@functools.lru_cache(maxsize=1)
def _load_raw() -> tuple[Tensor, Tensor, Tensor]:
    """(pixels uint8 (1797, 64), labels int64 (1797,), is_test bool (1797,)), cached per process."""
    from sklearn.datasets import load_digits  # local import: scikit-learn is slow to import

    bunch = load_digits()
    pixels = torch.as_tensor(bunch.data).to(torch.uint8)
    labels = torch.as_tensor(bunch.target).to(torch.int64)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(10):
        idx = torch.nonzero(labels == c).flatten()  # ascending file order
        is_test[idx[::_TEST_EVERY]] = True
    return pixels, labels, is_test


def digits(
    split: str = "train",
    *,
    scale: str | None = None,
    binarize: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """The 8x8 digits of scikit-learn as images and labels, with a fixed train/test split.

    Pixels ``k in {0, ..., 16}`` are returned as

    * ``scale="[-1,1]"`` (default): ``x = 2 k / 16 - 1``;
    * ``scale="[0,1]"``: ``x = k / 16``;
    * ``scale="raw"``: ``x = k`` (as floats);
    * ``binarize=True``: ``x = 1[k >= 8]`` in ``{0, 1}`` (threshold at half intensity, for RBMs and MADE);
      ``scale`` does not apply and must be left ``None``.

    The split is every 5th image of each class (in file order) for ``"test"`` (364 images) and the rest
    for ``"train"`` (1,433); ``"all"`` gives the 1,797 images in file order. No RNG is involved.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        scale: ``"[-1,1]"``, ``"[0,1]"`` or ``"raw"``; ``None`` means ``"[-1,1]"`` (or ``{0, 1}`` when
            binarized).
        binarize: threshold the pixels at 8 of 16.
        dtype: float dtype of the images.

    Returns:
        ``(images, labels)``: images of shape ``(N, 1, 8, 8)`` and ``dtype``, labels ``LongTensor (N,)``.

    Reference:
        Alpaydin & Kaynak (1998), UCI "Optical Recognition of Handwritten Digits" (scikit-learn ``load_digits``).

    Example:
        >>> x, y = digits("test")
        >>> x.shape, y.shape, float(x.min()), float(x.max())
        (torch.Size([364, 1, 8, 8]), torch.Size([364]), -1.0, 1.0)
    """
    check_choice("split", split, DIGITS_SPLITS)
    check_bool("binarize", binarize)
    if binarize and scale is not None:
        raise ValueError(f"scale does not apply when binarize=True (pixels are 0 or 1), got scale={scale!r}")
    if scale is None:
        scale = "[-1,1]"
    check_choice("scale", scale, DIGITS_SCALES)
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")

    pixels, labels, is_test = _load_raw()
    if split == "train":
        keep = ~is_test
    elif split == "test":
        keep = is_test
    else:
        keep = torch.ones_like(is_test)
    k = pixels[keep].to(dtype)
    if binarize:
        x = (k >= _BINARIZE_THRESHOLD).to(dtype)
    elif scale == "[-1,1]":
        x = 2.0 * k / (DIGITS_NUM_LEVELS - 1) - 1.0
    elif scale == "[0,1]":
        x = k / (DIGITS_NUM_LEVELS - 1)
    else:
        x = k
    return x.reshape(-1, 1, 8, 8), labels[keep].clone()
