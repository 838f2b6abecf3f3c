r"""Annealing schedules of AIS and RAISE: the inverse temperatures ``0 = β_0 < ... < β_K = 1`` and the
per-temperature step sizes of the gradient-based transitions.

Shared by :mod:`probgen.infer.ais` (forward AIS), :mod:`probgen.infer.ais_reverse` (RAISE) and the RBM's
closed-form annealing (:mod:`probgen.ebm.rbm_ais`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from probgen._checks import check_choice_or_callable, check_int, check_positive, check_probability, check_tensor

__all__ = ["SCHEDULES", "ais_schedule", "check_betas", "step_size_schedule"]

SCHEDULES = ("linear", "geometric", "sigmoidal")


def ais_schedule(name: str, num_steps: int, *, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None, geometric_start: float = 1e-4,
                 sigmoid_scale: float = 4.0) -> Tensor:
    """Inverse temperatures ``β_0 = 0 < β_1 < ... < β_K = 1`` (``K = num_steps``), shape ``(K + 1,)``.

    * ``"linear"``: ``β_k = k / K``;
    * ``"geometric"``: ``β_k = β_min^{(K - k) / (K - 1)}`` for ``k ≥ 1`` (``β_1 = β_min =
      geometric_start``), and ``β_0 = 0``; spends more steps near the base;
    * ``"sigmoidal"`` (Grosse, Maddison & Salakhutdinov, 2013): ``β̃_k = σ(s (2k/K - 1))``, rescaled
      to ``β_k = (β̃_k - β̃_0) / (β̃_K - β̃_0)`` (``s = sigmoid_scale``).

    Example:
        >>> ais_schedule("linear", 4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    name = check_choice_or_callable("betas", name, SCHEDULES)
    num_steps = check_int("num_steps", num_steps, minimum=1)
    k = torch.arange(num_steps + 1, dtype=dtype, device=device)
    if name == "linear":
        betas = k / num_steps
    elif name == "geometric":
        if num_steps == 1:
            betas = k.clone()
        else:
            lo = math.log(check_probability("geometric_start", geometric_start, open_low=True, open_high=True))
            betas = torch.exp(lo * (num_steps - k) / (num_steps - 1))
            betas[0] = 0.0
    else:
        s = torch.sigmoid(sigmoid_scale * (2.0 * k / num_steps - 1.0))
        betas = (s - s[0]) / (s[-1] - s[0])
    betas[-1] = 1.0
    return betas


def check_betas(betas: Tensor) -> Tensor:
    """Validate an AIS schedule: 1-D, at least 2 entries, ``0 = β_0 < ... < β_K = 1``; returns it."""
    check_tensor("betas", betas, ndim=1)
    if betas.numel() < 2:
        raise ValueError(f"betas must have at least 2 entries (0 and 1), got {betas.numel()}")
    if float(betas[0]) != 0.0 or float(betas[-1]) != 1.0:
        raise ValueError(
            f"betas must start at 0 and end at 1, got {float(betas[0]):g} ... {float(betas[-1]):g}"
        )
    if bool((betas[1:] <= betas[:-1]).any()):
        i = int((betas[1:] <= betas[:-1]).nonzero()[0, 0])
        raise ValueError(
            f"betas must be strictly increasing, got betas[{i}]={float(betas[i]):g} >= "
            f"betas[{i + 1}]={float(betas[i + 1]):g}"
        )
    return betas



def step_size_schedule(step_size: float | Tensor, num_levels: int, *, dtype: torch.dtype,
                       device: torch.device | str | None) -> Tensor | None:
    """A per-temperature step-size schedule ``(K,)`` from ``step_size``, or ``None`` for a single number.

    ``step_size`` is a positive number (``None`` comes back: the caller adapts it or repeats it) or a
    positive tensor of shape ``(num_levels,)`` (e.g. ``AISResult.step_sizes`` of an earlier run).

    Example:
        >>> step_size_schedule(torch.tensor([0.25, 0.5]), 2, dtype=torch.float64, device=None).tolist()
        [0.25, 0.5]
        >>> step_size_schedule(0.3, 2, dtype=torch.float64, device=None) is None
        True
    """
    if isinstance(step_size, Tensor) and step_size.numel() > 1:
        check_tensor("step_size", step_size, ndim=1)
        if step_size.shape[0] != num_levels or bool((step_size <= 0).any()):
            raise ValueError(
                f"step_size must be a positive number or a positive per-temperature schedule of shape "
                f"({num_levels},), got shape {tuple(step_size.shape)}"
            )
        return step_size.detach().to(dtype=dtype, device=device)
    check_positive("step_size", step_size)
    return None
