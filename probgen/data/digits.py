"""scikit-learn's 8x8 handwritten digits, a fixed train/test split, and uniform dequantization for bits/dim.

The 1,797 images of ``sklearn.datasets.load_digits`` (the UCI "Optical Recognition of Handwritten Digits"
test set, Alpaydin & Kaynak, 1998) ship inside scikit-learn, so nothing is downloaded. Each pixel is an
integer count in ``{0, ..., 16}``: 17 levels.

**Split.** Deterministic and independent of any RNG: within each class, the images are taken in the order of
the shipped file, and every 5th one (positions 0, 5, 10, ... of that class) goes to the test set. This gives
364 test and 1,433 train images, with every class in the same 1:4 proportion (``DIGITS_SPLIT_SIZES``).

**Dequantization.** A continuous density model of discrete data is scored with uniform dequantization
(Uria et al., 2013, arXiv:1306.0186; Theis et al., 2016, arXiv:1511.01844): ``y = (k + u) / L`` with
``u ~ U[0, 1)^D`` maps the integer levels ``k in {0, ..., L-1}^D`` into bins of width ``1/L`` of ``[0, 1)^D``,
and ``E_u[log p_y(y)] - D log L <= log P(k)`` (Jensen), which :func:`bits_per_dim` turns into bits per dim.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from probgen._checks import check_choice, check_int, check_tensor

__all__ = [
    "DIGITS_NUM_LEVELS",
    "DIGITS_SPLIT_SIZES",
    "DIGITS_SPLITS",
    "DIGITS_SCALES",
    "digits",
    "dequantize_scaled",
    "dequantize",
    "to_levels",
    "bits_per_dim",
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
    if not isinstance(binarize, bool):
        raise TypeError(f"binarize must be a bool, got {type(binarize).__name__} {binarize!r}")
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


def _check_num_levels(num_levels: int) -> int:
    return check_int("num_levels", num_levels, minimum=2)


def _check_range(data_range: Sequence[float]) -> tuple[float, float]:
    if not isinstance(data_range, (tuple, list)) or len(data_range) != 2:
        raise ValueError(f"data_range must be a pair (low, high), got {data_range!r}")
    low, high = (float(v) for v in data_range)
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"data_range must be finite with high > low, got {data_range!r}")
    return low, high


def dequantize(k: Tensor, num_levels: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantization of integer levels into ``[0, 1)``.

    ``y = (k + u) / L``, ``u ~ U[0, 1)`` independently per entry, ``L = num_levels``: level ``k`` is spread
    uniformly over its bin ``[k/L, (k+1)/L)``. Map ``y`` to a model's data range with
    ``z = low + (high - low) * y`` and score it with :func:`bits_per_dim`.

    Args:
        k: integer-valued tensor (any integer dtype, or a float dtype holding whole numbers) with entries in
            ``{0, ..., num_levels - 1}``, any shape.
        num_levels: number of levels ``L >= 2`` (17 for the digits).
        generator: optional ``torch.Generator`` on ``k``'s device for the uniform noise.

    Returns:
        Tensor shaped like ``k`` with entries in ``[0, 1)``; ``k``'s dtype if it is float32/float64, else the
        default float dtype; on ``k``'s device.

    Reference:
        Uria, Murray & Larochelle (2013), arXiv:1306.0186; Theis, van den Oord & Bethge (2016), arXiv:1511.01844.

    Example:
        >>> y = dequantize(torch.tensor([0, 16]), 17, generator=torch.Generator().manual_seed(0))
        >>> bool((y[0] < 1 / 17) and (16 / 17 <= y[1] < 1))
        True
    """
    num_levels = _check_num_levels(num_levels)
    check_tensor("k", k, floating=False)
    if k.dtype == torch.bool or k.is_complex():
        raise TypeError(f"k must hold integer levels (an integer or float tensor), got {k.dtype}")
    if k.is_floating_point():
        if k.dtype in (torch.float16, torch.bfloat16):
            raise TypeError(f"k must be float32, float64 or an integer dtype, got {k.dtype}")
        if not bool((k == torch.round(k)).all()):
            raise ValueError("k must hold whole numbers (integer levels); got non-integer values")
        dtype = k.dtype
    else:
        dtype = torch.get_default_dtype()
    low, high = int(k.min()), int(k.max())
    if low < 0 or high > num_levels - 1:
        raise ValueError(
            f"k must lie in {{0, ..., {num_levels - 1}}} for num_levels={num_levels}, got values in [{low}, {high}]"
        )
    u = torch.rand(k.shape, generator=generator, device=k.device, dtype=dtype)
    # (k + u) / L < 1 in exact arithmetic; clamp guards float32 rounding of (L - 1 + u) / L up to 1.
    y = (k.to(dtype) + u) / num_levels
    return torch.clamp(y, max=1.0 - torch.finfo(dtype).eps / 2)


def to_levels(x: Tensor, *, num_levels: int, data_range: Sequence[float] = (-1.0, 1.0)) -> Tensor:
    """Recover integer levels from data scaled as ``x = low + (high - low) k / (L - 1)``.

    This inverts the scaling of :func:`digits` (``k = 0 -> low``, ``k = L - 1 -> high``), rounding to the
    nearest level, so that ``dequantize(to_levels(x, ...), L)`` dequantizes a :func:`probgen.data.load` split.

    Args:
        x: scaled data, any shape, floating.
        num_levels: ``L >= 2``.
        data_range: ``(low, high)`` of the scaled data.

    Returns:
        ``LongTensor`` shaped like ``x``, entries clamped to ``{0, ..., L - 1}``.

    Example:
        >>> to_levels(torch.tensor([-1.0, 0.0, 1.0]), num_levels=17).tolist()
        [0, 8, 16]
    """
    num_levels = _check_num_levels(num_levels)
    low, high = _check_range(data_range)
    check_tensor("x", x)
    k = torch.round((x - low) / (high - low) * (num_levels - 1))
    return k.clamp(0, num_levels - 1).to(torch.int64)


def dequantize_scaled(
    x: Tensor,
    *,
    num_levels: int,
    data_range: Sequence[float] = (-1.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Uniformly dequantize data in the scaling of :func:`load`, onto the same range.

    ``x = low + (high - low) k / (L - 1)`` (levels ``k``) becomes ``z = low + (high - low) (k + u) / L`` with
    ``u ~ U[0, 1)``: each level owns a bin of width ``Δ = (high - low) / L``, and a continuous density
    ``p(z)`` gives the discrete model ``P(k) = ∫_bin p(z) dz ≥ Δ^D exp(E_u log p(z))`` (see
    :func:`bits_per_dim`). Use it as ``probgen.fit(..., batch_transform=...)`` so that every step sees
    fresh noise.

    Example:
        >>> z = dequantize_scaled(torch.tensor([-1.0, 1.0]), num_levels=17)
        >>> bool((z >= -1).all() and (z < 1).all())
        True
    """
    low, high = _check_range(data_range)
    k = to_levels(x, num_levels=num_levels, data_range=(low, high))
    return low + (high - low) * dequantize(k.to(x.dtype), num_levels, generator=generator)


def bits_per_dim(
    log_prob_nats: Tensor,
    num_dims: int,
    *,
    num_levels: int,
    data_range: Sequence[float] = (-1.0, 1.0),
) -> Tensor:
    """Bits per dimension of discrete data from a continuous log-density of its dequantized version.

    With ``y = (k + u) / L`` in ``[0, 1)^D`` (bin width ``1/L`` per dimension) and the model's variable
    ``z = low + (high - low) y`` (bin width ``(high - low) / L``), the change of variables gives
    ``log p_y(y) = log p_z(z) + D log(high - low)``, and Jensen's inequality over the bin gives

    ``log P(k) >= log p_z(z) + D log(high - low) - D log L``,

    so ``bpd = -(log p_z(z) + D log(high - low) - D log L) / (D ln 2)`` is an upper bound on the discrete
    model's bits per dim (exact in expectation when the density is constant on each bin). A density uniform on
    ``[low, high]^D`` gives exactly ``log2 L``.

    Args:
        log_prob_nats: ``log p_z(z)`` in nats, any shape (typically ``(B,)``).
        num_dims: ``D``, the number of scalars per data point.
        num_levels: ``L``, the number of levels of the discrete data (17 for the digits).
        data_range: ``(low, high)`` of the scaled data ``z``.

    Returns:
        Bits per dim, shaped like ``log_prob_nats``.

    Reference:
        Theis, van den Oord & Bethge (2016), arXiv:1511.01844; Papamakarios et al. (2017), arXiv:1705.07057.

    Example:
        >>> lp = torch.tensor([-64 * math.log(2.0)])  # uniform density on [-1, 1]^64
        >>> round(float(bits_per_dim(lp, 64, num_levels=17)), 6) == round(math.log2(17), 6)
        True
    """
    check_tensor("log_prob_nats", log_prob_nats, nonempty=False, finite=False)
    num_dims = check_int("num_dims", num_dims, minimum=1)
    num_levels = _check_num_levels(num_levels)
    low, high = _check_range(data_range)
    log_pk = log_prob_nats + num_dims * (math.log(high - low) - math.log(num_levels))
    return -log_pk / (num_dims * math.log(2.0))
