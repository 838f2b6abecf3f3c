"""What every sampler returns, and the checks they share at entry.

Samplers are plain functions with one shape (k-diffusion style)::

    sampler(score_fn, sde_or_schedule, shape_or_x, *, steps=..., generator=None, callback=None, ...)
        -> SampleResult(samples, nfe, info)

where ``nfe`` counts calls of ``score_fn`` (each call evaluates a whole batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_output_shape, check_real, check_tensor
from probgen.sde.base import SDE, check_sample_shape

__all__ = ["SampleResult", "Callback", "check_sde", "check_callback", "check_eps"]

Callback = Callable[[int, Tensor, Any], None]
"""``callback(i, x, t)``: called after step ``i`` with the current state and time (or noise level)."""


@dataclass
class SampleResult:
    """The output of a sampler.

    Attributes:
        samples: the draws, ``(B, *event)``.
        nfe: number of score-function evaluations (each on the whole batch).
        info: sampler-specific extras (e.g. the final time, the step count).
    """

    samples: Tensor
    nfe: int
    info: dict[str, Any] = field(default_factory=dict)


class _CountedScore:
    """Wrap ``score_fn`` to count its calls and check its output shape against its input.

    The output is detached: samplers never record an autograd graph through the score across steps
    (memory stays flat), while ``score_fn`` itself may still use autograd inside (an EBM's ``-grad E``).
    """

    def __init__(self, score_fn: Callable[..., Tensor], name: str = "score_fn"):
        if not callable(score_fn):
            raise TypeError(f"{name} must be callable, got {type(score_fn).__name__}")
        self.score_fn = score_fn
        self.name = name
        self.calls = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return check_output_shape(self.name, self.score_fn(x, t), x.shape).detach()


def check_sde(sde: Any) -> SDE:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a probgen.sde.SDE (VPSDE, SubVPSDE, VESDE, ...), got {type(sde).__name__}")
    return sde


def check_callback(callback: Any) -> Callback | None:
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(i, x, t) or None, got {type(callback).__name__}")
    return callback


def check_eps(eps: Any, T: float) -> float:
    v = check_real("eps", eps)
    if not (0.0 < v < T):
        raise ValueError(f"eps must lie in (0, {T:g}) (the final time of the reverse process), got {eps}")
    return v


def _initial_state(
    sde: SDE,
    shape: Sequence[int],
    *,
    x_init: Tensor | None,
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> Tensor:
    """``x_init`` if given (checked against ``shape``), else a draw from the prior ``p_T``."""
    shape = check_sample_shape("shape", shape)
    if x_init is None:
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        return sde.prior_sample(shape, generator=generator, device=device, dtype=dtype)
    check_tensor("x_init", x_init)
    if tuple(x_init.shape) != shape:
        raise ValueError(f"x_init must have shape {shape} (the shape argument), got {tuple(x_init.shape)}")
    return x_init.detach().to(device=device if device is not None else x_init.device, dtype=dtype or x_init.dtype)


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _time(x: Tensor, t: float) -> Tensor:
    return torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)


# old private names
_check_sde, _check_callback, _check_eps = check_sde, check_callback, check_eps
