r"""The discretized Gaussian decoder of a DDPM for data on ``L`` levels (Ho et al. 2020, eq. 13).

Reference: Ho, Jain & Abbeel (2020), arXiv:2006.11239, Sec. 3.3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints

__all__ = ["DiscretizedGaussian"]


def _log_normal_mass(lower: Tensor, upper: Tensor) -> Tensor:
    """``log(Φ(upper) - Φ(lower))`` stably (tails by symmetry, ``±inf`` ends allowed)."""
    flip = lower > 0  # both in the upper tail: Φ(u) - Φ(l) = Φ(-l) - Φ(-u)
    lo = torch.where(flip, -upper, lower)
    hi = torch.where(flip, -lower, upper)
    log_hi = torch.special.log_ndtr(hi)
    log_lo = torch.special.log_ndtr(lo)
    return log_hi + torch.log((-torch.expm1((log_lo - log_hi).clamp(max=0.0))).clamp_min(1e-300))


class DiscretizedGaussian(TorchDistribution):
    r"""Gaussian discretized onto ``L`` equally spaced levels (Ho et al. 2020, eq. 13).

    For a level ``x`` of ``low + k Δ``, ``Δ = (high - low)/(L - 1)``, each coordinate has mass

    .. math::

        P(x) = \Phi\Big(\frac{x + Δ/2 - μ}{σ}\Big) - \Phi\Big(\frac{x - Δ/2 - μ}{σ}\Big),

    with the lower edge at ``-∞`` for ``k = 0`` and the upper at ``+∞`` for ``k = L - 1``; coordinates
    are independent. Values are snapped to their nearest level before scoring.

    Args:
        loc: ``(B, *event)`` means.
        scale: standard deviation, broadcastable to ``loc``.
        num_levels: ``L >= 2``.
        data_range: ``(low, high)``.
        event_dim: trailing dimensions of ``loc`` forming one event.

    Example:
        >>> d = DiscretizedGaussian(torch.zeros(1, 3), 1e-3, num_levels=3, data_range=(-1.0, 1.0), event_dim=1)
        >>> d.log_prob(torch.zeros(1, 3)).abs().item() < 1e-6
        True
    """

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, loc: Tensor, scale: Tensor | float, *, num_levels: int, data_range: Sequence[float],
                 event_dim: int, validate_args: bool | None = None):
        self.loc = loc
        self.scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device).expand_as(loc)
        self.num_levels = int(num_levels)
        self.low, self.high = float(data_range[0]), float(data_range[1])
        self.event_dim_ = int(event_dim)
        shape = loc.shape
        split = len(shape) - self.event_dim_
        super().__init__(batch_shape=shape[:split], event_shape=shape[split:], validate_args=False)

    @property
    def bin_width(self) -> float:
        return (self.high - self.low) / (self.num_levels - 1)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        loc = self.loc.expand(batch_shape + self.event_shape)
        return DiscretizedGaussian(loc, self.scale.expand(batch_shape + self.event_shape),
                                   num_levels=self.num_levels, data_range=(self.low, self.high),
                                   event_dim=self.event_dim_)

    def _levels(self, value: Tensor) -> Tensor:
        k = torch.round((value - self.low) / self.bin_width)
        return k.clamp(0, self.num_levels - 1)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            z = self.loc.expand(shape) + self.scale.expand(shape) * torch.randn(shape, dtype=self.loc.dtype,
                                                                                  device=self.loc.device)
            return self.low + self._levels(z) * self.bin_width

    def log_prob(self, value: Tensor) -> Tensor:
        k = self._levels(value)
        center = self.low + k * self.bin_width
        half = 0.5 * self.bin_width
        upper = torch.where(k >= self.num_levels - 1, torch.full_like(center, math.inf),
                            (center + half - self.loc) / self.scale)
        lower = torch.where(k <= 0, torch.full_like(center, -math.inf), (center - half - self.loc) / self.scale)
        lp = _log_normal_mass(lower, upper)
        if self.event_dim_:
            lp = lp.reshape(*lp.shape[: lp.dim() - self.event_dim_], -1).sum(-1)
        return lp
