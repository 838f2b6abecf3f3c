r"""Restricted Boltzmann machines: Bernoulli–Bernoulli and Gaussian–Bernoulli.

An RBM is an energy-based model on visible units ``v ∈ R^V`` and binary hidden units
``h ∈ {0, 1}^H`` with no intra-layer connections, ``p(v, h) = exp(-E(v, h)) / Z``:

.. math::

    \text{Bernoulli:}\quad E(v, h) &= -v^\top W h - b^\top v - c^\top h,\qquad v\in\{0,1\}^V,\\
    \text{Gaussian:}\quad E(v, h) &= \sum_i \frac{(v_i - b_i)^2}{2\sigma_i^2}
        - \sum_{i,j}\frac{v_i}{\sigma_i^2} W_{ij} h_j - c^\top h,\qquad v\in\mathbb{R}^V,

(``W = weight``, ``b = visible_bias``, ``c = hidden_bias``; the Gaussian form is Cho, Ilin & Raiko,
2011, whose conditional mean of ``v`` is ``b + Wh``). Summing out ``h`` gives the free energy
``p(v) = exp(-F(v)) / Z``:

.. math::

    F(v) = E_{\text{vis}}(v) - \sum_j \operatorname{softplus}\big(c_j + \tilde v^\top W_{:j}\big),
    \qquad \tilde v = v \text{ (Bernoulli)},\ v/\sigma^2 \text{ (Gaussian)},

and the conditionals factorise, which is what block Gibbs sampling uses:
``p(h_j = 1 | v) = sigmoid(c_j + ṽᵀW_{:j})``; ``p(v_i = 1 | h) = sigmoid(b_i + W_{i:}h)`` (Bernoulli) or
``v_i | h ~ N(b_i + W_{i:}h, σ_i²)`` (Gaussian).

Training minimises the CD-k / PCD surrogate ``mean F(v_data) - mean F(v⁻)`` (Hinton 2002; Tieleman
2008). ``log Z`` is computed exactly by enumerating the smaller binary layer when it is small, or
estimated by annealed importance sampling (Salakhutdinov & Murray 2008; Neal 2001) through
:func:`probgen.infer.ais`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from probgen._checks import check_binary
from probgen.ebm.gaussian_rbm import GaussianBernoulliRBM
from probgen.ebm.rbm_ais import LOG_PARTITION_METHODS, MAX_ENUMERATION_UNITS, LogLikelihoodBracket, LogPartitionBracket
from probgen.ebm.rbm_base import RBM_OBJECTIVES, BinaryIndependent, RBMBase, enumerate_logsumexp

__all__ = [
    "BernoulliRBM",
    "GaussianBernoulliRBM",
    "LogLikelihoodBracket",
    "LogPartitionBracket",
    "RBM_OBJECTIVES",
    "LOG_PARTITION_METHODS",
    "MAX_ENUMERATION_UNITS",
]


class BernoulliRBM(RBMBase):
    r"""A Bernoulli–Bernoulli RBM: ``E(v, h) = -vᵀWh - bᵀv - cᵀh`` on ``v ∈ {0,1}^V``, ``h ∈ {0,1}^H``.

    .. math::

        F(v) = -b^\top v - \sum_j \operatorname{softplus}(c_j + v^\top W_{:j}),\qquad
        p(v) = e^{-F(v)}/Z.

    Args:
        n_visible: ``V``.
        n_hidden: ``H``.
        objective: ``"cd"`` (CD-k from the data) or ``"pcd"`` (persistent chains).
        k: Gibbs sweeps per training step (``>= 1``).
        num_chains: number of persistent chains (PCD).
        event_shape: shape of one data point if not ``(V,)`` (e.g. ``(1, 8, 8)``); samples take it.
        init_std: standard deviation of the initial weights (biases start at 0).

    Parameters: ``weight (V, H)``, ``visible_bias (V,)``, ``hidden_bias (H,)``.

    References:
        Smolensky (1986); Hinton (2002), Neural Computation 14(8); Tieleman (2008), ICML;
        Salakhutdinov & Murray (2008), ICML.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> rbm = BernoulliRBM(4, 3)
        >>> v = torch.bernoulli(torch.full((5, 4), 0.5))
        >>> rbm.free_energy(v).shape, rbm.log_prob(v).shape, rbm.sample(2, gibbs_steps=3).shape
        (torch.Size([5]), torch.Size([5]), torch.Size([2, 4]))
        >>> # near-zero weights: log Z is close to (4 + 3) log 2, the value for zero weights
        >>> bool(torch.isclose(rbm.log_partition(), torch.tensor(7 * 0.6931471805599453), atol=0.05))
        True
    """

    family = "rbm"
    _dist_class = BinaryIndependent

    def _initial_chains(self, n: int) -> Tensor:
        return torch.bernoulli(torch.full((n, self.n_visible), 0.5))

    def _check_values(self, v: Tensor, name: str) -> None:
        check_binary(name, v, model="a BernoulliRBM")

    def _scaled(self, v: Tensor) -> Tensor:
        return v

    def _visible_energy(self, v: Tensor, bias: Tensor) -> Tensor:
        return -(v @ bias)

    def _sample_visible_given(self, mean_input: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(mean_input), generator=generator)

    def visible_mean(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.visible_bias + h.to(self.weight) @ self.weight.T)

    def _exact_log_z(self, max_units: int) -> Tensor:
        m = min(self.n_visible, self.n_hidden)
        if m > max_units:
            raise ValueError(
                f"exact log_partition enumerates the smaller layer (2^m states): n_visible={self.n_visible}, "
                f"n_hidden={self.n_hidden}, so m={m} > max_units={max_units}; use method='ais'"
            )
        opts = {"dtype": self.weight.dtype, "device": self.weight.device}
        if self.n_hidden <= self.n_visible:
            # log Z = logsumexp_h [cᵀh + Σ_i softplus(b_i + (Wh)_i)]
            return enumerate_logsumexp(
                lambda h: h @ self.hidden_bias + F.softplus(self.visible_bias + h @ self.weight.T).sum(-1),
                self.n_hidden, **opts)
        return enumerate_logsumexp(lambda v: -self._free_energy(v), self.n_visible, **opts)

    def _ais_base(self, base_bias: Tensor) -> torch.distributions.Distribution:
        return torch.distributions.Independent(torch.distributions.Bernoulli(logits=base_bias), 1)

    def _bias_from_moments(self, mean: Tensor, count: float) -> Tensor:
        # Laplace-smoothed pixel means, as log-odds (Salakhutdinov & Murray 2008)
        p = (mean.to(self.weight) * count + 1.0) / (count + 2.0)
        return (torch.log(p) - torch.log1p(-p)).detach()
