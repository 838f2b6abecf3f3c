r"""The Gaussian–Bernoulli RBM (Cho, Ilin & Raiko, 2011): real visible units, binary hidden units.

The shared machinery is :class:`probgen.ebm.rbm_base.RBMBase`; the equations of both RBMs are in
:mod:`probgen.ebm.rbm`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from probgen._checks import check_bool, check_positive
from probgen.ebm.rbm_base import RBMBase, RealIndependent, enumerate_logsumexp

__all__ = ["GaussianBernoulliRBM"]


class GaussianBernoulliRBM(RBMBase):
    r"""A Gaussian–Bernoulli RBM (Cho, Ilin & Raiko, 2011) on real ``v ∈ R^V``, binary ``h``.

    .. math::

        E(v, h) = \sum_i\frac{(v_i - b_i)^2}{2\sigma_i^2} - \sum_{i,j}\frac{v_i}{\sigma_i^2}W_{ij}h_j
        - c^\top h,\qquad v \mid h \sim N(b + Wh, \operatorname{diag}\sigma^2),

    .. math::

        F(v) = \sum_i\frac{(v_i - b_i)^2}{2\sigma_i^2} - \sum_j\operatorname{softplus}\Big(c_j +
        \sum_i \frac{v_i W_{ij}}{\sigma_i^2}\Big),\quad
        \log Z = \log\sum_h e^{c^\top h + \sum_i \frac{(b_i + (Wh)_i)^2 - b_i^2}{2\sigma_i^2}}
        + \sum_i \tfrac12\log(2\pi\sigma_i^2).

    ``p(v)`` is a mixture of ``2^H`` Gaussians with shared covariance ``diag σ²``; ``log Z`` is exact
    by enumerating the hidden layer.

    Args:
        n_visible, n_hidden, objective, k, num_chains, event_shape, init_std: as :class:`BernoulliRBM`.
        sigma: visible standard deviation ``σ`` (all units; standardize the data first).
        learn_sigma: learn one ``log σ_i`` per visible unit (parameter ``log_sigma``), else fixed.

    Example:
        >>> rbm = GaussianBernoulliRBM(2, 3, sigma=0.5)
        >>> rbm.free_energy(torch.randn(4, 2)).shape, rbm.log_partition().dim()
        (torch.Size([4]), 0)
    """

    family = "gaussian-rbm"
    _dist_class = RealIndependent

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        sigma: float = 1.0,
        learn_sigma: bool = False,
        objective: str = "cd",
        k: int = 1,
        num_chains: int = 100,
        event_shape: Sequence[int] | None = None,
        init_std: float = 0.01,
    ) -> None:
        super().__init__(n_visible, n_hidden, objective=objective, k=k, num_chains=num_chains,
                         event_shape=event_shape, init_std=init_std)
        self.sigma_init = check_positive("sigma", sigma)
        check_bool("learn_sigma", learn_sigma)
        self.learn_sigma = learn_sigma
        log_sigma = torch.full((self.n_visible,), math.log(self.sigma_init))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @property
    def sigma(self) -> Tensor:
        """``σ: (V,)``."""
        return self.log_sigma.exp()

    def _initial_chains(self, n: int) -> Tensor:
        return torch.randn(n, self.n_visible)

    def _scaled(self, v: Tensor) -> Tensor:
        return v * torch.exp(-2.0 * self.log_sigma)

    def _visible_energy(self, v: Tensor, bias: Tensor) -> Tensor:
        return (0.5 * (v - bias) ** 2 * torch.exp(-2.0 * self.log_sigma)).sum(-1)

    def _sample_visible_given(self, mean_input: Tensor, generator: torch.Generator | None) -> Tensor:
        z = torch.randn(mean_input.shape, generator=generator, dtype=mean_input.dtype, device=mean_input.device)
        return mean_input + self.sigma.detach() * z

    def visible_mean(self, h: Tensor) -> Tensor:
        return self.visible_bias + h.to(self.weight) @ self.weight.T

    def _exact_log_z(self, max_units: int) -> Tensor:
        if self.n_hidden > max_units:
            raise ValueError(
                f"exact log_partition of a GaussianBernoulliRBM enumerates the hidden layer (2^n_hidden states): "
                f"n_hidden={self.n_hidden} > max_units={max_units}; use method='ais'"
            )
        inv_var = torch.exp(-2.0 * self.log_sigma)
        b = self.visible_bias

        def fn(h: Tensor) -> Tensor:
            m = b + h @ self.weight.T
            return h @ self.hidden_bias + 0.5 * ((m**2 - b**2) * inv_var).sum(-1)

        log_z = enumerate_logsumexp(fn, self.n_hidden, dtype=self.weight.dtype, device=self.weight.device)
        return log_z + (0.5 * math.log(2 * math.pi) + self.log_sigma).sum()

    def _ais_base(self, base_bias: Tensor) -> torch.distributions.Distribution:
        return torch.distributions.Independent(torch.distributions.Normal(base_bias, self.sigma.detach()), 1)

    def _bias_from_moments(self, mean: Tensor, count: float) -> Tensor:
        return mean.to(self.weight).detach()

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(sigma=self.sigma_init, learn_sigma=self.learn_sigma)
        return cfg
