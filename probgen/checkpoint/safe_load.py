"""Loading a torch file without a denial of service: zip records checked against the file's size before
unpickling, then every tensor checked (:func:`safe_torch_load`, used for checkpoints and ``.pt`` data)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from probgen.checkpoint.format import CheckpointError, PathLike
from probgen.checkpoint.limits import limit

__all__ = ["safe_torch_load"]


def _scan_zip(target: Path) -> int:
    """Refuse a torch zip file whose records could expand beyond the file: compressed records, or
    records declaring more bytes than the file holds. Returns the file size."""
    import zipfile

    size = target.stat().st_size
    try:
        with zipfile.ZipFile(target) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise CheckpointError(
            f"refused to load {target}: it is truncated, corrupted or not a torch checkpoint (not a torch zip "
            f"file: {error}; legacy and raw pickle files are never unpickled)"
        ) from None
    if len(infos) > limit("PROBGEN_MAX_OBJECTS"):
        raise CheckpointError(f"{target} holds {len(infos):,} records (limit PROBGEN_MAX_OBJECTS)")
    declared = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(
                f"{target}: record {info.filename!r} is compressed; torch.save never compresses, so the file was "
                "crafted or re-packed (refused: a compressed record can expand beyond the file)"
            )
        declared += info.file_size
    if declared > size:
        raise CheckpointError(
            f"{target}: its records declare {declared:,} bytes but the file holds {size:,}; truncated or crafted"
        )
    return size


def _check_tensor(t: Tensor, where: str, target: Path) -> int:
    """Refuse tensors that are not plain dense CPU/GPU data; returns the bytes a contiguous copy needs."""
    if t.is_meta or t.device.type == "meta":
        raise CheckpointError(f"{target}: {where} is a meta tensor (no data); refused")
    if t.is_quantized:
        raise CheckpointError(f"{target}: {where} is a quantized tensor ({t.dtype}); refused")
    if t.is_nested:
        raise CheckpointError(f"{target}: {where} is a nested tensor; refused")
    if t.layout != torch.strided:
        raise CheckpointError(f"{target}: {where} is a {t.layout} tensor (sparse); only dense tensors are allowed")
    need = t.numel() * t.element_size()
    have = t.untyped_storage().nbytes()
    if t.numel() and need > have:
        raise CheckpointError(
            f"{target}: {where} has shape {tuple(t.shape)} ({need:,} bytes) over a storage of {have:,} bytes "
            f"(strides {tuple(t.stride())}: an expanded or overlapping tensor); refused"
        )
    return need


def safe_torch_load(path: PathLike, *, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` that a crafted file cannot turn into a denial of service.

    Before anything is unpickled, the zip records are checked against the file's actual size
    (compressed records are refused); torch then refuses storages whose declared size differs
    from their record, so storages never exceed the file. After loading, every tensor is checked:
    meta, quantized, nested and sparse tensors are refused, and so are tensors whose shape needs
    more bytes than their storage holds (stride-0 "expanded" or overlapping views, which would
    materialise to any size when copied). The plain-data walk visits at most
    ``PROBGEN_MAX_OBJECTS`` values, and all tensors together at most 4x the file size plus 1 MB.

    Args:
        path: the file.
        map_location: as in :func:`torch.load`.
        what: how errors call the file.

    Returns:
        The loaded object.

    Raises:
        CheckpointError: a refused file (the message names the file and the problem).

    Example:
        >>> import tempfile, os, torch
        >>> target = os.path.join(tempfile.mkdtemp(), "t.pt")
        >>> torch.save(torch.ones(1).expand(10**6), target)
        >>> safe_torch_load(target)
        Traceback (most recent call last):
        ...
        probgen.checkpoint.CheckpointError: ... an expanded or overlapping tensor); refused
    """
    target = Path(path)
    size = _scan_zip(target)
    try:
        obj = torch.load(target, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "weights_only" in text.lower() or "weights only" in text.lower():
            detail = next((line.strip() for line in text.splitlines() if "WeightsUnpickler error" in line),
                          text.splitlines()[0] if text else type(error).__name__)
            raise CheckpointError(
                f"refused to load {target}: it holds objects other than tensors and plain Python data, which "
                "could run code when unpickled, or it is corrupted; probgen never unpickles such objects "
                f"({detail})"
            ) from error
        raise CheckpointError(f"{target} is corrupted or not a {what} ({error})") from error
    except MemoryError:
        raise CheckpointError(f"{target}: loading it needs more memory than this machine has; refused") from None
    except Exception as error:  # torch raises RuntimeError/EOFError/ValueError/... on damaged zips
        raise CheckpointError(
            f"{target} is truncated, corrupted or not a torch checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})"
        ) from error
    budget = 4 * size + (1 << 20)
    total = 0
    seen = 0
    max_objects = limit("PROBGEN_MAX_OBJECTS")
    stack: list[tuple[Any, str, int]] = [(obj, what, 0)]
    while stack:
        item, where, depth = stack.pop()
        seen += 1
        if seen > max_objects:
            raise CheckpointError(
                f"{target} holds more than {max_objects:,} values (limit PROBGEN_MAX_OBJECTS; raise it if the "
                "file is yours)"
            )
        if depth > 100:
            raise CheckpointError(f"{target}: {where} is nested more than 100 levels deep; refused")
        if isinstance(item, Tensor):
            total += _check_tensor(item, where, target)
            if total > budget:
                raise CheckpointError(
                    f"{target}: its tensors add up to more than {budget:,} bytes for a file of {size:,} bytes "
                    "(tensors sharing storage); refused"
                )
        elif isinstance(item, dict):
            stack.extend((v, f"{where}[{k!r}]", depth + 1) for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item))
    return obj
