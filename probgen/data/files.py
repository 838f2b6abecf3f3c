"""Loading user data from ``.npy``, ``.csv`` and ``.pt`` files, safely and with clear errors.

Nothing is ever unpickled: ``.npy`` files are read with ``numpy.load(allow_pickle=False)`` and ``.pt`` files
with ``torch.load(weights_only=True)``. Every error names the file and the problem.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["FILE_EXTENSIONS", "MAX_ABS_VALUE", "MIN_ROWS", "IMAGE_LEVELS", "load_file", "check_fit_data",
           "file_levels"]

FILE_EXTENSIONS: tuple[str, ...] = (".npy", ".csv", ".pt")
"""File extensions accepted by :func:`load_file` (case-insensitive)."""


_NPY_MAGIC = b"\x93NUMPY"

MAX_ABS_VALUE = 1e15
"""Largest ``|value|`` accepted in a data file: beyond it, float32 arithmetic such as ``x**2`` overflows."""

MIN_ROWS = 20
"""Fewest rows a data file needs for training: the 10 % test split then has at least 2 points."""


def _check_npy_header(path: Path) -> None:
    """Refuse a header that declares more data than the file holds, before anything is allocated."""
    from numpy.lib import format as npy_format

    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            version = npy_format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = npy_format.read_array_header_2_0(handle)
            offset = handle.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a readable .npy file (bad header: {exc})") from None
    if dtype.hasobject:
        return  # refused below, without unpickling
    numel = 1
    for dim in shape:
        numel *= int(dim)
    declared = numel * dtype.itemsize
    if declared > size - offset:
        raise ValueError(
            f"{path}: the .npy header declares shape {tuple(shape)} ({declared:,} bytes of {dtype}) but the file "
            f"holds {max(size - offset, 0):,} bytes of data; truncated or crafted"
        )


def _read_npy(path: Path) -> Tensor:
    with open(path, "rb") as handle:
        magic = handle.read(len(_NPY_MAGIC))
    if magic != _NPY_MAGIC:
        kind = "a .npz archive" if magic.startswith(b"PK") else "no NumPy header"
        raise ValueError(f"{path}: not a .npy file ({kind}); save one array with numpy.save")
    _check_npy_header(path)
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(
                f"{path}: the .npy file holds Python objects (an object array); refusing to unpickle it. "
                "Save a numeric array instead"
            ) from None
        raise ValueError(f"{path}: not a readable .npy file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npy file ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{path}: expected a numeric array, got dtype {array.dtype}")
    return torch.from_numpy(np.array(array, dtype=np.float64, order="C"))


def _read_csv(path: Path) -> Tensor:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [(i + 1, row) for i, row in enumerate(csv.reader(handle))]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text .csv file ({exc})") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: malformed .csv file ({exc})") from None
    rows = [(line, row) for line, row in rows if any(field.strip() for field in row)]  # skip blank lines
    if not rows:
        raise ValueError(f"{path}: the .csv file is empty (no rows)")

    first_row = rows[0][1]
    if _parse_row(first_row) is None:  # a first row that is not all numbers is a header
        rows = rows[1:]
        if not rows:
            raise ValueError(f"{path}: the .csv file has a header row but no data rows")
    width = len(rows[0][1])
    values: list[list[float]] = []
    for line, row in rows:
        if len(row) != width:
            raise ValueError(f"{path}: line {line} has {len(row)} columns, expected {width} like the first data row")
        parsed = _parse_row(row)
        if parsed is None:
            bad = next(field for field in row if _parse_row([field]) is None)
            raise ValueError(f"{path}: line {line} holds a non-numeric value {bad.strip()!r}; expected numbers only")
        values.append(parsed)
    return torch.tensor(values, dtype=torch.float64)


def _parse_row(row: list[str]) -> list[float] | None:
    try:
        return [float(field) for field in row]
    except ValueError:
        return None


def _read_pt(path: Path) -> Tensor:
    from probgen.checkpoint import CheckpointError, safe_torch_load

    try:
        obj = safe_torch_load(path, map_location="cpu", what="data file")
    except CheckpointError as exc:
        text = str(exc)
        if "objects other than tensors" in text:
            detail = text[text.rfind("(") + 1:].split(" was not an allowed global")[0].rstrip(")")
            raise ValueError(
                f"{path}: the .pt file holds objects that are not plain tensors; refusing to unpickle them "
                f"(torch.load weights_only=True: {detail})"
            ) from None
        for prefix in (f"refused to load {path}: ", f"{path}: ", f"{path} "):
            if text.startswith(prefix):
                text = text[len(prefix):]
                break
        raise ValueError(f"{path}: not a readable .pt file: {text}") from None
    if not isinstance(obj, Tensor):
        raise ValueError(
            f"{path}: expected a tensor saved with torch.save(tensor, path), got a {type(obj).__name__}"
        )
    if obj.is_complex():
        raise ValueError(f"{path}: expected a real-valued tensor, got dtype {obj.dtype}")
    return obj.detach().to(torch.float64)


_READERS = {".npy": _read_npy, ".csv": _read_csv, ".pt": _read_pt}


def load_file(path: str | os.PathLike) -> Tensor:
    """Load a data matrix ``(N, D)`` or a batch of events ``(N, *event)`` from a user file.

    Formats:

    * ``.npy``: one numeric array (bool, integer or float), read with ``numpy.load(allow_pickle=False)``;
      object arrays are refused.
    * ``.csv``: comma-separated numbers, one data point per line, blank lines skipped; a first line that does
      not parse as numbers is taken as a header. Always gives ``(N, D)`` (``D = 1`` for a single column).
    * ``.pt``: one tensor saved with ``torch.save(tensor, path)``, read with ``torch.load(weights_only=True)``
      (no arbitrary unpickling); dicts, modules and other objects are refused.

    The data must have rank ``>= 2`` (a 1-D array is ambiguous: save it as ``(N, 1)`` or ``(1, D)``), at least
    one row, and only finite values.

    Args:
        path: a file whose extension is one of :data:`FILE_EXTENSIONS`.

    Returns:
        float32 tensor of shape ``(N, D)`` or ``(N, *event)``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: unknown extension, unreadable or pickled content, empty data, wrong rank, non-numeric
            values, NaN or infinite values; the message names the file.

    Example:
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as d:
        ...     np.save(f"{d}/x.npy", np.ones((3, 2)))
        ...     load_file(f"{d}/x.npy").shape
        torch.Size([3, 2])
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise ValueError(
            f"{path}: unknown file extension {path.suffix!r}; valid extensions: {', '.join(FILE_EXTENSIONS)}"
        )
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    data = _READERS[suffix](path)
    if data.dim() < 2:
        raise ValueError(
            f"{path}: expected (N, D) or (N, *event) data of rank >= 2, got shape {tuple(data.shape)}; "
            "save a single variable as (N, 1)"
        )
    if data.shape[0] == 0 or data.numel() == 0:
        raise ValueError(f"{path}: the data are empty (shape {tuple(data.shape)}, no rows)")
    data = data.to(torch.float32)  # values beyond float32's range become inf and are reported below
    finite = torch.isfinite(data).reshape(data.shape[0], -1).all(-1)
    if not bool(finite.all()):
        bad_values = int((~torch.isfinite(data)).sum())
        first_row = int(torch.nonzero(~finite)[0, 0])
        raise ValueError(
            f"{path}: {bad_values} NaN or infinite values (in float32) in {int((~finite).sum())} rows; "
            f"the first is data row {first_row} (0-based, header excluded)"
        )
    big = data.abs().reshape(data.shape[0], -1).amax(-1) > MAX_ABS_VALUE
    if bool(big.any()):
        first_row = int(torch.nonzero(big)[0, 0])
        raise ValueError(
            f"{path}: values up to {float(data.abs().max()):.3g} (data row {first_row}); values beyond "
            f"{MAX_ABS_VALUE:.0e} overflow float32 arithmetic (x**2 > 3.4e38): standardize the data first"
        )
    return data


IMAGE_LEVELS = 256
"""Levels of an image file of integer values in ``0..255`` (8-bit pixels), whatever its largest value."""


def _image_layout(data: Tensor) -> Tensor:
    """Image stacks in the layout the models take, ``(N, C, H, W)``: ``(N, H, W)`` gets a channel axis and
    channels-last ``(N, H, W, C)`` with ``C`` in 1 or 3 is moved to channels-first."""
    if data.dim() == 3:
        return data[:, None]
    if data.dim() == 4 and data.shape[1] not in (1, 3) and data.shape[3] in (1, 3):
        return data.permute(0, 3, 1, 2).contiguous()
    return data


def file_levels(data: Tensor) -> tuple[Tensor, int | None, tuple[float, float]]:
    r"""What a user file's values are: integer values are quantized levels, 8-bit image stacks are images.

    * every value 0 or 1: binary, ``L = 2`` levels, range ``(0, 1)``, values kept (image stacks laid out as
      below);
    * integer values in ``0..255`` with three axes or more (``(N, H, W)``, ``(N, C, H, W)`` or channels-last
      ``(N, H, W, C)``, ``C`` in 1 or 3): 8-bit images, reshaped to ``(N, C, H, W)`` and scaled as the PNG
      folders and MNIST are, level ``k -> x = 2k/255 - 1``, ``L = 256``, range ``(-1, 1)``, so that continuous
      models dequantize them and report bits/dim;
    * other integer values in ``0..L-1`` (``L <= 256``, ``L = max + 1``): quantized to ``L`` levels, range
      ``(0, L - 1)``, values kept;
    * anything else: continuous, ``num_levels = None`` and the range of the values.

    Continuous models of quantized data are trained on uniformly dequantized values
    (:func:`probgen.data.dequantize_scaled`) and report bits/dim (:func:`probgen.data.bits_per_dim`).

    Args:
        data: the values of :func:`load_file`, ``(N, *event)``.

    Returns:
        ``(values, num_levels, data_range)``.

    Example:
        >>> pixels = torch.randint(0, 256, (10, 28, 28)).float()
        >>> x, levels, data_range = file_levels(pixels)
        >>> tuple(x.shape), levels, data_range, float(x.min()) >= -1.0
        ((10, 1, 28, 28), 256, (-1.0, 1.0), True)
        >>> file_levels(torch.tensor([[0.0, 3.0], [2.0, 1.0]]))[1:]
        (4, (0.0, 3.0))
    """
    flat = data.reshape(-1)
    low, high = float(flat.min()), float(flat.max())
    integral = low >= 0.0 and high <= IMAGE_LEVELS - 1 and bool((flat == flat.round()).all())
    if not integral or high < 1.0:
        return data, None, (low, high)
    if high == 1.0:
        return _image_layout(data), 2, (0.0, 1.0)
    if data.dim() >= 3:
        return _image_layout(data).mul(2.0 / (IMAGE_LEVELS - 1)).sub(1.0), IMAGE_LEVELS, (-1.0, 1.0)
    return data, int(high) + 1, (0.0, high)


def check_fit_data(dataset, *, continuous: bool = True) -> None:
    """Refuse a user file that cannot be trained on, before anything is built (built-in sets pass).

    * fewer than :data:`MIN_ROWS` rows (no test split worth the name);
    * for continuous models, a column holding one value only (zero variance: a density model's
      scale parameters diverge), named by its index.

    Raises:
        ValueError: naming the file and the problem.

    Example:
        >>> from probgen.data import DataSet
        >>> x = torch.randn(30, 2); x[:, 1] = 3.0
        >>> ds = DataSet("f.npy", x[:27], x[27:], (2,), None, None, None, (0.0, 3.0), None, None, "file")
        >>> check_fit_data(ds)
        Traceback (most recent call last):
        ...
        ValueError: f.npy: column 1 is constant (every value is 3); ...
    """
    if getattr(dataset, "kind", None) != "file":
        return
    rows = len(dataset.train) + len(dataset.test)
    if rows < MIN_ROWS:
        raise ValueError(
            f"{dataset.name}: {rows} rows is too few to train on; need at least {MIN_ROWS} (the 10% test split "
            "must hold 2 points or more)"
        )
    if not continuous:
        return
    flat = torch.cat([dataset.train, dataset.test]).reshape(rows, -1)
    constant = (flat == flat[:1]).all(0)
    if bool(constant.any()):
        columns = torch.nonzero(constant).reshape(-1).tolist()
        more = f" (and {len(columns) - 1} more)" if len(columns) > 1 else ""
        raise ValueError(
            f"{dataset.name}: column {columns[0]} is constant (every value is {float(flat[0, columns[0]]):g}){more}; "
            "a density model cannot fit a zero-variance column: drop it (or add noise)"
        )
