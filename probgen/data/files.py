"""Loading user data from ``.npy``, ``.csv`` and ``.pt`` files, safely and with clear errors.

Nothing is ever unpickled: ``.npy`` files are read with ``numpy.load(allow_pickle=False)`` and ``.pt`` files
with ``torch.load(weights_only=True)``. Every error names the file and the problem.
"""

from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["FILE_EXTENSIONS", "load_file"]

FILE_EXTENSIONS: tuple[str, ...] = (".npy", ".csv", ".pt")
"""File extensions accepted by :func:`load_file` (case-insensitive)."""


_NPY_MAGIC = b"\x93NUMPY"


def _read_npy(path: Path) -> Tensor:
    with open(path, "rb") as handle:
        magic = handle.read(len(_NPY_MAGIC))
    if magic != _NPY_MAGIC:
        kind = "a .npz archive" if magic.startswith(b"PK") else "no NumPy header"
        raise ValueError(f"{path}: not a .npy file ({kind}); save one array with numpy.save")
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
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"{path}: the .pt file holds objects that are not plain tensors; refusing to unpickle them "
            f"(torch.load weights_only=True: {first})"
        ) from None
    except Exception as exc:  # noqa: BLE001  torch.load raises many types on corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a readable .pt file ({type(exc).__name__}: {first})") from None
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
    return data
