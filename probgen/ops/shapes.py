"""Broadcasting and flattening helpers (STYLE.md convention 7: never hard-code ``[:, None, None]``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["append_dims", "batch_sum", "batch_mean", "flatten_event", "unflatten_event", "event_numel", "chunk_sizes"]


def append_dims(x: Tensor, target_ndim: int) -> Tensor:
    """Append trailing singleton dimensions to ``x`` until it has ``target_ndim`` dimensions.

    Used to broadcast a per-sample quantity ``x: (B,)`` against data ``(B, *event)``.

    Example:
        >>> append_dims(torch.ones(3), 4).shape
        torch.Size([3, 1, 1, 1])
    """
    missing = target_ndim - x.dim()
    if missing < 0:
        raise ValueError(f"x has {x.dim()} dimensions, more than target_ndim={target_ndim}")
    return x.reshape(*x.shape, *([1] * missing))


def batch_sum(x: Tensor) -> Tensor:
    """Sum over every dimension but the first: ``(B, *event) -> (B,)``.

    Example:
        >>> batch_sum(torch.ones(2, 3, 4)).tolist()
        [12.0, 12.0]
    """
    return x.reshape(x.shape[0], -1).sum(-1)


def batch_mean(x: Tensor) -> Tensor:
    """Mean over every dimension but the first: ``(B, *event) -> (B,)``."""
    return x.reshape(x.shape[0], -1).mean(-1)


def event_numel(event_shape: Sequence[int]) -> int:
    """Number of scalars in one event.

    Example:
        >>> event_numel((1, 8, 8))
        64
    """
    n = 1
    for s in event_shape:
        n *= int(s)
    return n


def flatten_event(x: Tensor) -> Tensor:
    """``(B, *event) -> (B, D)``."""
    return x.reshape(x.shape[0], -1)


def unflatten_event(x: Tensor, event_shape: Sequence[int]) -> Tensor:
    """``(B, D) -> (B, *event)``."""
    return x.reshape(x.shape[0], *event_shape)


def chunk_sizes(total: int, batch_size: int | None) -> list[int]:
    """Split ``total`` items into chunks of at most ``batch_size`` (``None``: one chunk), to bound memory.

    Example:
        >>> chunk_sizes(10, 4)
        [4, 4, 2]
        >>> chunk_sizes(3, None)
        [3]
    """
    if batch_size is None or batch_size >= total:
        return [total]
    full, rest = divmod(total, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


# keep torch referenced for doctest namespaces
_ = torch
