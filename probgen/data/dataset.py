"""``load_dataset``: the one entry to every data set (toy sets, digits, MNIST / Fashion-MNIST / CIFAR-10, user files and
PNG folders) used by the CLI and ``fit``."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from probgen._checks import check_int
from probgen.data.sklearn_digits import DIGITS_NUM_LEVELS, digits
from probgen.data.files import FILE_EXTENSIONS, file_levels, load_file
from probgen.data.images import IMAGE_SET_NAMES, IMAGE_SETS, read_image_set, read_png_folder
from probgen.data.quantize import dynamic_binarize
from probgen.data.toy_sets import (
    TOY2D_DESCRIPTIONS,
    TOY2D_NAMES,
    TOY2D_WITH_DENSITY,
    toy2d,
    toy2d_entropy,
    toy2d_log_prob,
)

__all__ = ["DataSet", "DATASET_NAMES", "TOY2D_RANGE", "load_dataset", "list_datasets", "binarized"]

DATASET_NAMES: tuple[str, ...] = (*TOY2D_NAMES, "digits", "digits-binary", *IMAGE_SET_NAMES, "mnist-binary")
"""Built-in names accepted by :func:`load_dataset`."""

TOY2D_RANGE: tuple[float, float] = (-4.0, 4.0)
"""``data_range`` of the toy sets: FFJORD's plotting square, which holds nearly all of their mass."""

_TOY_DEFAULT_TRAIN = 50_000
_TOY_DEFAULT_TEST = 10_000
_FILE_TEST_FRACTION = 0.1
_BINARY_TEST_SEED = 0  # the one fixed binarization of mnist-binary's test split, whatever ``seed`` is


@dataclass(frozen=True)
class DataSet:
    """A data set split into train and test tensors, with what is known about it.

    Attributes:
        name: the built-in name, or the file path as given.
        train: float32 tensor ``(N_train, *event_shape)``.
        test: float32 tensor ``(N_test, *event_shape)``.
        event_shape: shape of one data point, e.g. ``(2,)`` or ``(1, 8, 8)``.
        log_prob: exact log-density ``x: (n, *event) -> (n,)`` (nats) or ``None`` when unknown.
        entropy: ``(value, stderr)`` of the true differential entropy (nats) or ``None``.
        num_levels: number of quantization levels of discrete data (17 for digits, 2 for digits-binary),
            ``None`` for continuous data. Callers dequantize with :func:`probgen.data.dequantize`.
        data_range: ``(low, high)``: exact range of the scaled levels for discrete data (level 0 -> low, level
            ``num_levels - 1`` -> high); the square :data:`TOY2D_RANGE` for toy sets; min and max of the
            training values for files.
        labels_train: ``LongTensor (N_train,)`` or ``None``.
        labels_test: ``LongTensor (N_test,)`` or ``None``.
        kind: ``"toy2d"``, ``"image"`` or ``"file"``.
        batch_transform: ``x: (B, *event) -> (B, *event)`` that training must apply to every batch of
            ``train`` (``probgen.fit(..., batch_transform=...)``), or ``None``: :func:`dynamic_binarize` for
            ``"mnist-binary"``, whose ``train`` holds grey levels in ``[0, 1]`` (Bernoulli probabilities).
    """

    name: str
    train: Tensor
    test: Tensor
    event_shape: tuple[int, ...]
    log_prob: Callable[[Tensor], Tensor] | None
    entropy: tuple[float, float] | None
    num_levels: int | None
    data_range: tuple[float, float]
    labels_train: Tensor | None
    labels_test: Tensor | None
    kind: str
    batch_transform: Callable[[Tensor], Tensor] | None = None

    def __repr__(self) -> str:
        entropy = "None" if self.entropy is None else f"{self.entropy[0]:.4f} ± {self.entropy[1]:.1e}"
        return (
            f"DataSet(name={self.name!r}, kind={self.kind!r}, train={tuple(self.train.shape)}, "
            f"test={tuple(self.test.shape)}, event_shape={self.event_shape}, "
            f"log_prob={'exact' if self.log_prob is not None else None}, entropy={entropy}, "
            f"num_levels={self.num_levels}, data_range={self.data_range}, "
            f"labels={'yes' if self.labels_train is not None else None})"
        )


def list_datasets() -> list[tuple[str, str]]:
    """Built-in data sets as ``(name, one-line description)`` pairs, for ``probgen data list``.

    Example:
        >>> rows = list_datasets()
        >>> rows[0]
        ('8gaussians', 'mixture of 8 Gaussians on a circle of radius 2*sqrt(2) (exact density)')
        >>> "digits" in dict(rows)
        True
    """
    rows = [(name, TOY2D_DESCRIPTIONS[name]) for name in TOY2D_NAMES]
    rows.append(("digits", "scikit-learn 8x8 handwritten digits, 17 levels scaled to [-1,1] (1,433 train / 364 test)"))
    rows.append(("digits-binary", "the 8x8 digits binarized at 8 of 16 into {0,1} (for RBMs, MADE)"))
    rows += [(name, IMAGE_SETS[name].description) for name in IMAGE_SET_NAMES]
    rows.append(("mnist-binary", "MNIST for binary models: train binarized afresh every batch, test binarized once"))
    rows.append(("<file>.npy|.csv|.pt", "your own (N, D) or (N, *event) data, split 90/10 at random"))
    rows.append(("<folder>/", "a folder of PNG images of one size, 256 levels scaled to [-1,1], split 90/10 (Pillow)"))
    return rows


@functools.lru_cache(maxsize=None)
def _toy_entropy(name: str) -> tuple[float, float]:
    return toy2d_entropy(name)


def _take(name: str, x: Tensor, n: int | None, what: str) -> Tensor:
    if n is None:
        return x
    if n > len(x):
        raise ValueError(f"{what} must be <= {len(x)} for data set {name!r}, got {n}")
    return x[:n]


def _load_toy(name: str, seed: int, n_train: int | None, n_test: int | None) -> DataSet:
    n_train = _TOY_DEFAULT_TRAIN if n_train is None else n_train
    n_test = _TOY_DEFAULT_TEST if n_test is None else n_test
    has_density = name in TOY2D_WITH_DENSITY
    return DataSet(
        name=name,
        train=toy2d(name, n_train, seed=2 * seed),
        test=toy2d(name, n_test, seed=2 * seed + 1),
        event_shape=(2,),
        log_prob=functools.partial(toy2d_log_prob, name) if has_density else None,
        entropy=_toy_entropy(name) if has_density else None,
        num_levels=None,
        data_range=TOY2D_RANGE,
        labels_train=None,
        labels_test=None,
        kind="toy2d",
    )


def _load_digits(name: str, n_train: int | None, n_test: int | None) -> DataSet:
    binary = name == "digits-binary"
    opts = {"binarize": True} if binary else {"scale": "[-1,1]"}
    x_train, y_train = digits("train", **opts)
    x_test, y_test = digits("test", **opts)
    return DataSet(
        name=name,
        train=_take(name, x_train, n_train, "n_train"),
        test=_take(name, x_test, n_test, "n_test"),
        event_shape=(1, 8, 8),
        log_prob=None,
        entropy=None,
        num_levels=2 if binary else DIGITS_NUM_LEVELS,
        data_range=(0.0, 1.0) if binary else (-1.0, 1.0),
        labels_train=_take(name, y_train, n_train, "n_train"),
        labels_test=_take(name, y_test, n_test, "n_test"),
        kind="image",
    )


def _load_path(path: Path, label: str, seed: int, n_train: int | None, n_test: int | None) -> DataSet:
    values, num_levels, levels_range = file_levels(load_file(path))
    train, test = _split_rows(values, path, seed, n_train, n_test)
    return DataSet(
        name=label,
        train=train,
        test=test,
        event_shape=tuple(train.shape[1:]),
        log_prob=None,
        entropy=None,
        num_levels=num_levels,
        data_range=levels_range if num_levels else (float(train.min()), float(train.max())),
        labels_train=None,
        labels_test=None,
        kind="file",
    )


def _scaled(k: Tensor) -> Tensor:
    """8-bit levels ``k`` -> ``2k/255 - 1`` in ``[-1, 1]``, float32."""
    return k.to(torch.float32).mul_(2.0 / 255.0).sub_(1.0)


def _load_png_folder(path: Path, label: str, seed: int, n_train: int | None, n_test: int | None) -> DataSet:
    train, test = _split_rows(read_png_folder(path), path, seed, n_train, n_test)
    return DataSet(
        name=label,
        train=_scaled(train),
        test=_scaled(test),
        event_shape=tuple(train.shape[1:]),
        log_prob=None,
        entropy=None,
        num_levels=256,
        data_range=(-1.0, 1.0),
        labels_train=None,
        labels_test=None,
        kind="image",
    )


def _load_image_set(name: str, data_dir, n_train: int | None, n_test: int | None) -> DataSet:
    binary = name == "mnist-binary"
    raw = read_image_set("mnist" if binary else name, data_dir=data_dir)
    train, test = _take(name, raw["train"], n_train, "n_train"), _take(name, raw["test"], n_test, "n_test")
    if binary:
        generator = torch.Generator().manual_seed(_BINARY_TEST_SEED)
        train = train.to(torch.float32).div_(255.0)
        test = torch.bernoulli(test.to(torch.float32).div_(255.0), generator=generator)
    else:
        train, test = _scaled(train), _scaled(test)
    return DataSet(
        name=name,
        train=train,
        test=test,
        event_shape=tuple(train.shape[1:]),
        log_prob=None,
        entropy=None,
        num_levels=2 if binary else 256,
        data_range=(0.0, 1.0) if binary else (-1.0, 1.0),
        labels_train=_take(name, raw["train_labels"], n_train, "n_train"),
        labels_test=_take(name, raw["test_labels"], n_test, "n_test"),
        kind="image",
        batch_transform=dynamic_binarize if binary else None,
    )


def binarized(dataset: DataSet, *, seed: int = _BINARY_TEST_SEED) -> DataSet:
    """The dynamically binarized copy of quantized data (grey images) for models of binary data (RBM, MADE).

    Each value is read as the probability of a 1, ``p = (x - low) / (high - low)`` over ``dataset.data_range``:
    ``train`` keeps ``p`` and gets :func:`probgen.data.dynamic_binarize` as its ``batch_transform`` (a fresh
    Bernoulli draw at every batch), ``test`` is binarized once with ``seed`` — what ``load_dataset("mnist-binary")``
    is for MNIST, for any quantized data. Binary data come back unchanged.

    Example:
        >>> ds = load_dataset("digits")
        >>> b = binarized(ds)
        >>> b.num_levels, b.data_range, float(b.train.min()) >= 0.0, set(b.test.unique().tolist()) <= {0.0, 1.0}
        (2, (0.0, 1.0), True, True)
    """
    if dataset.num_levels == 2:
        return dataset
    if dataset.num_levels is None:
        raise ValueError(f"binarized needs quantized data (levels read as grey values); {dataset.name!r} is continuous")
    low, high = float(dataset.data_range[0]), float(dataset.data_range[1])
    train = ((dataset.train - low) / (high - low)).clamp_(0.0, 1.0)
    test = torch.bernoulli(((dataset.test - low) / (high - low)).clamp_(0.0, 1.0),
                           generator=torch.Generator().manual_seed(seed))
    return dataclasses.replace(dataset, name=f"{dataset.name}-binarized", train=train, test=test, num_levels=2,
                               data_range=(0.0, 1.0), log_prob=None, entropy=None, batch_transform=dynamic_binarize)


def _split_rows(data: Tensor, path: Path, seed: int, n_train: int | None, n_test: int | None) -> tuple[Tensor, Tensor]:
    """Shuffle the rows with ``seed`` and split them: ``ceil(N/10)`` test rows (or ``n_test``), the rest train."""
    total = len(data)
    if total < 2:
        raise ValueError(f"{path}: need at least 2 rows to split into train and test, got {total}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    data = data[torch.randperm(total, generator=generator)]
    test_size = max(1, math.ceil(_FILE_TEST_FRACTION * total)) if n_test is None else n_test
    if test_size >= total:
        raise ValueError(f"n_test must be < {total} (the number of rows in {path}), got {test_size}")
    train_size = total - test_size if n_train is None else n_train
    if train_size + test_size > total:
        raise ValueError(
            f"n_train + n_test must be <= {total} (the number of rows in {path}), got {train_size} + {test_size}"
        )
    return data[test_size : test_size + train_size], data[:test_size]


def load_dataset(
    name_or_path: str | os.PathLike,
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> DataSet:
    """Load a built-in data set or a user file as a :class:`DataSet` with train and test splits.

    * Toy sets (:data:`probgen.data.TOY2D_NAMES`): ``n_train`` (default 50,000) and ``n_test`` (default
      10,000) fresh i.i.d. points drawn with seeds ``2 * seed`` and ``2 * seed + 1``, so train and test never
      share draws; ``log_prob`` and ``entropy`` (Monte Carlo, 10^6 points, cached per process) for the sets
      with an exact density.
    * ``"digits"``: the fixed split of :func:`probgen.data.digits` (1,433 / 364 images ``(1, 8, 8)``),
      levels ``k in {0..16}`` scaled to ``x = 2k/16 - 1``, ``num_levels = 17``, ``data_range = (-1, 1)``;
      ``"digits-binary"``: pixels ``1[k >= 8]`` in ``{0, 1}``, ``num_levels = 2``, ``data_range = (0, 1)``.
      Both with labels. ``seed`` does not apply; ``n_train`` / ``n_test`` keep the first rows of each split.
      Dequantize for bits/dim with ``dequantize(to_levels(x, num_levels=L, data_range=r), L)``.
    * A ``.npy``, ``.csv`` or ``.pt`` path (see :func:`probgen.data.load_file`): the rows are shuffled with a
      ``torch.Generator`` seeded by ``seed``; the first ``ceil(N / 10)`` form the test set and the rest the
      train set (a 90/10 split). ``n_test`` / ``n_train`` override the sizes.
    * ``"mnist"``, ``"fashion-mnist"`` (``(1, 28, 28)``) and ``"cifar10"`` (``(3, 32, 32)``): the standard
      splits read from the distribution files in ``data_dir`` (:mod:`probgen.data.images`; nothing is
      downloaded, see :func:`probgen.data.fetch`), 8-bit levels ``k`` scaled to ``x = 2k/255 - 1``,
      ``num_levels = 256``, ``data_range = (-1, 1)``, with labels. ``"mnist-binary"``: ``train`` holds the grey
      levels ``k/255`` and :attr:`DataSet.batch_transform` is :func:`probgen.data.dynamic_binarize` (a fresh
      Bernoulli draw per batch); ``test`` is one fixed Bernoulli draw (seed 0); ``num_levels = 2``,
      ``data_range = (0, 1)``. ``n_train`` / ``n_test`` keep the first rows; ``seed`` does not apply.
    * A folder: its ``*.png`` images (one size; Pillow), scaled and split like a file, ``num_levels = 256``.

    Args:
        name_or_path: a name from :data:`DATASET_NAMES` or a path to a data file.
        seed: non-negative integer seed for the toy draws or the file shuffle.
        n_train: size of the training split (see above), ``>= 1``.
        n_test: size of the test split (see above), ``>= 1``.
        data_dir: folder of the image sets' files (default ``$PROBGEN_DATA_DIR``, else ``~/.cache/probgen/data``).

    Returns:
        A :class:`DataSet`.

    Example:
        >>> ds = load_dataset("checkerboard", n_train=100, n_test=10)
        >>> ds.train.shape, ds.test.shape, ds.kind, ds.log_prob is not None
        (torch.Size([100, 2]), torch.Size([10, 2]), 'toy2d', True)
    """
    seed = check_int("seed", seed, minimum=0)
    if n_train is not None:
        n_train = check_int("n_train", n_train, minimum=1)
    if n_test is not None:
        n_test = check_int("n_test", n_test, minimum=1)
    if isinstance(name_or_path, str) and name_or_path in DATASET_NAMES:
        if name_or_path in TOY2D_NAMES:
            return _load_toy(name_or_path, seed, n_train, n_test)
        if name_or_path in (*IMAGE_SET_NAMES, "mnist-binary"):
            return _load_image_set(name_or_path, data_dir, n_train, n_test)
        return _load_digits(name_or_path, n_train, n_test)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a data set name or a file path, got {type(name_or_path).__name__}")
    path = Path(name_or_path)
    if path.is_dir():
        return _load_png_folder(path, os.fspath(name_or_path), seed, n_train, n_test)
    if path.suffix.lower() in FILE_EXTENSIONS or path.exists():
        return _load_path(path, os.fspath(name_or_path), seed, n_train, n_test)
    raise ValueError(
        f"unknown data set {os.fspath(name_or_path)!r}; valid names: {', '.join(repr(n) for n in DATASET_NAMES)}, "
        f"a path to a {'/'.join(FILE_EXTENSIONS)} file, or a folder of PNG images"
    )


def load(*args, **kwargs) -> DataSet:
    """Deprecated alias of :func:`load_dataset` (renamed so that it never meets :func:`probgen.load`, which reads
    checkpoints).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     ds = load("checkerboard", n_train=10, n_test=5)
        >>> caught[0].category.__name__, ds.train.shape
        ('DeprecationWarning', torch.Size([10, 2]))
    """
    warnings.warn(
        "probgen.data.load is deprecated; use probgen.data.load_dataset (probgen.load reads checkpoints)",
        DeprecationWarning,
        stacklevel=2,
    )
    return load_dataset(*args, **kwargs)
