"""Built-in data sets, exact toy densities, the 8x8 digits with dequantization, and user files.

* :func:`toy2d` / :func:`toy2d_log_prob` / :func:`toy2d_entropy`: the 2-D sets of the flow and diffusion
  papers, with the exact density of ``8gaussians``, ``checkerboard``, ``rings`` and ``circles``;
* :func:`digits`: scikit-learn's 8x8 digits with a fixed split;
* :func:`dequantize`, :func:`dequantize_scaled`, :func:`to_levels`, :func:`bits_per_dim`, :func:`dynamic_binarize`:
  uniform dequantization, the one bits/dim convention of every family, dynamic binarization;
* :func:`load_file`: ``.npy`` / ``.csv`` / ``.pt`` user data, never unpickled;
* :func:`read_image_set`, :func:`read_idx`, :func:`read_cifar10_batch`, :func:`read_png_folder`: MNIST,
  Fashion-MNIST (IDX) and CIFAR-10 (binary) from the data folder (:func:`resolve_data_dir`), PNG folders;
  :func:`fetch` downloads the standard files, only when asked;
* :func:`load_dataset` -> :class:`DataSet`: the one entry used by the CLI and :func:`probgen.fit` users;
  :func:`list_datasets` for ``probgen data list``. (``load`` is its deprecated old name, kept as an alias that
  warns: :func:`probgen.load` reads checkpoints.)

See ``docs/data.md`` for the generators, densities, split and dequantization math.
"""

from __future__ import annotations

from probgen.data.dataset import DATASET_NAMES, TOY2D_RANGE, DataSet, binarized, list_datasets, load, load_dataset
from probgen.data.sklearn_digits import DIGITS_NUM_LEVELS, DIGITS_SCALES, DIGITS_SPLIT_SIZES, DIGITS_SPLITS, digits
from probgen.data.quantize import bits_per_dim, dequantize, dequantize_scaled, dynamic_binarize, to_levels
from probgen.data.download import DataFetchError, fetch
from probgen.data.files import FILE_EXTENSIONS, load_file
from probgen.data.images import (
    DATA_DIR_ENV,
    IMAGE_SET_NAMES,
    read_cifar10_batch,
    read_idx,
    read_image_set,
    read_png_folder,
    resolve_data_dir,
)
from probgen.data.toy_sets import (
    TOY2D_DESCRIPTIONS,
    TOY2D_NAMES,
    TOY2D_WITH_DENSITY,
    toy2d,
    toy2d_entropy,
    toy2d_log_prob,
)

__all__ = [
    "DataSet",
    "DATASET_NAMES",
    "TOY2D_RANGE",
    "load_dataset",
    "list_datasets",
    "TOY2D_NAMES",
    "TOY2D_WITH_DENSITY",
    "TOY2D_DESCRIPTIONS",
    "toy2d",
    "toy2d_log_prob",
    "toy2d_entropy",
    "DIGITS_NUM_LEVELS",
    "DIGITS_SPLITS",
    "DIGITS_SCALES",
    "DIGITS_SPLIT_SIZES",
    "digits",
    "dequantize",
    "dequantize_scaled",
    "to_levels",
    "bits_per_dim",
    "dynamic_binarize",
    "binarized",
    "FILE_EXTENSIONS",
    "load_file",
    "DATA_DIR_ENV",
    "IMAGE_SET_NAMES",
    "resolve_data_dir",
    "read_idx",
    "read_cifar10_batch",
    "read_image_set",
    "read_png_folder",
    "fetch",
    "DataFetchError",
]
