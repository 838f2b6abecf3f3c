"""Exponential moving average of a network's weights, as diffusion models use for sampling and likelihood."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ema_update"]


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, *, decay: float, num_updates: int) -> float:
    """One EMA step ``θ_ema ← d θ_ema + (1 - d) θ`` with the warm-up ``d = min(decay, (1 + k) / (10 + k))``.

    The warm-up (``k = num_updates`` done so far) lets the average forget its random initialisation quickly
    (as in TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``). Buffers are copied, not averaged.

    Returns:
        The decay ``d`` used.

    Example:
        >>> a, b = nn.Linear(1, 1), nn.Linear(1, 1)
        >>> d = ema_update(a, b, decay=0.999, num_updates=0)
        >>> round(d, 3)
        0.1
    """
    d = min(float(decay), (1.0 + num_updates) / (10.0 + num_updates))
    for ema_p, p in zip(ema.parameters(), model.parameters()):
        ema_p.lerp_(p.detach(), 1.0 - d)
    for ema_b, b in zip(ema.buffers(), model.buffers()):
        ema_b.copy_(b)
    return d
