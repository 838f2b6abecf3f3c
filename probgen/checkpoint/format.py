"""The checkpoint file format: its markers, its errors, checkpoint paths, and the plain-data check and
SHA-256 digest every checkpoint carries (see :mod:`probgen.checkpoint` for the layout)."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

__all__ = ["FORMAT", "FORMAT_VERSION", "CHECKPOINT_NAME", "CheckpointError", "CheckpointWriteError",
           "checkpoint_file", "PathLike"]

PathLike = Union[str, os.PathLike]

#: The marker every probgen checkpoint carries under ``"format"``.
FORMAT = "probgen-checkpoint"
#: The newest layout this version of probgen writes and reads.
FORMAT_VERSION = 1
#: The file name used inside a folder (the CLI's ``--out DIR``).
CHECKPOINT_NAME = "checkpoint.pt"


_SAFE_SCALARS = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A file that cannot be trusted or used as a probgen checkpoint.

    Raised for files that are not probgen checkpoints, were written by a newer probgen, are
    truncated or corrupted, hold objects other than plain data, name an unknown family, or whose
    config no longer matches the saved weights.
    """


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed; the previous file at that path (if any) is left intact."""


# ----------------------------------------------------------------------------------------------
# paths


def checkpoint_file(path: PathLike) -> Path:
    """The checkpoint file that ``path`` designates: ``path`` itself, or ``path/checkpoint.pt``
    when ``path`` is an existing folder or ends with a path separator (``"run/"``).

    Example:
        >>> import tempfile
        >>> checkpoint_file(tempfile.gettempdir()).name
        'checkpoint.pt'
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    text = os.fspath(path)
    if text == "":
        raise ValueError("path must not be empty")
    p = Path(text)
    if p.is_dir() or text.endswith(("/", os.sep)):  # "run/" names a folder even before it exists
        return p / CHECKPOINT_NAME
    return p


# ----------------------------------------------------------------------------------------------
# plain-data check and digest


def _check_plain(obj: Any, where: str) -> None:
    """Raise :class:`CheckpointError` if ``obj`` holds anything but plain data and tensors."""
    if isinstance(obj, Tensor):
        if type(obj) is not Tensor and not isinstance(obj, nn.Parameter):
            raise CheckpointError(f"{where} is a tensor subclass {type(obj).__name__}; only plain tensors are allowed")
        return
    if type(obj) in _SAFE_SCALARS:  # exact types: subclasses (str-like versions, numpy floats) pickle as globals
        return
    if isinstance(obj, Mapping):
        if not isinstance(obj, dict):
            raise CheckpointError(f"{where} is a {type(obj).__name__}; only dict mappings are allowed")
        for key, value in obj.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise CheckpointError(
                    f"{where} has a key {key!r} of type {type(key).__name__}; keys must be str or int"
                )
            _check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple, torch.Size):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; a checkpoint holds only tensors, "
        "dict, list, tuple, str, int, float, bool and None"
    )


def _digest(obj: Any) -> str:
    """SHA-256 of ``obj``'s structure and values (tensor bytes included), independent of pickling."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, Tensor):
        t = obj.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"B1" if obj else b"B0")
    elif isinstance(obj, int):
        h.update(f"I{obj};".encode())
    elif isinstance(obj, float):
        h.update(b"F" + struct.pack("<d", obj))
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)}:".encode() + data)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for value in obj:
            _feed(h, value)
    else:  # pragma: no cover - _check_plain runs first
        raise CheckpointError(f"cannot digest {type(obj).__name__}")
