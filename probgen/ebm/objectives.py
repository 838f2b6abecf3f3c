r"""Training objectives of energy-based models: contrastive divergence, persistent chains, NCE.

An EBM ``p_θ(x) = exp(-E_θ(x)) / Z_θ`` has the maximum-likelihood gradient

.. math::

    \nabla_\theta\, \mathbb{E}_{p}[-\log p_\theta(x)] = \mathbb{E}_{p}[\nabla_\theta E_\theta(x)]
    - \mathbb{E}_{p_\theta}[\nabla_\theta E_\theta(x)],

which :func:`contrastive_divergence_loss` turns into a surrogate ``E(x⁺) - E(x⁻)`` with negatives
``x⁻`` drawn (approximately) from the model — by short-run Langevin from noise (contrastive
divergence, Hinton 2002; short-run MCMC, Nijkamp et al. 2019, arXiv:1904.09770) or from persistent
chains kept in a :class:`ReplayBuffer` (Tieleman 2008; Du & Mordatch 2019, arXiv:1903.08689).
:func:`nce_loss` is noise-contrastive estimation (Gutmann & Hyvärinen, 2010), which learns ``log Z``
as a parameter. The score-matching objectives, shared with the diffusion family, live in
:mod:`probgen.ops.score_matching`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from probgen._checks import check_int, check_nonnegative, check_positive, check_probability, check_tensor
from probgen.ops.shapes import append_dims, batch_sum, flatten_event

__all__ = [
    "ReplayBuffer",
    "contrastive_divergence_loss",
    "nce_loss",
    "fit_gaussian",
    "FlatGaussian",
]


class ReplayBuffer(nn.Module):
    """A buffer of ``M`` persistent chain states, re-initialised from noise with probability ``ρ``.

    Du & Mordatch (2019) start the negative chains of each training step from states of earlier
    steps (so that the chains keep mixing across parameter updates, as in persistent contrastive
    divergence) and, with probability ``ρ = 5%``, from fresh noise (so the buffer keeps exploring).
    :meth:`draw` returns the starting states and their slots; :meth:`push` writes the moved states
    back into the same slots.

    The states are a registered buffer, so they follow ``.to(device, dtype)`` and are saved in
    checkpoints. A slot never written yet is treated as fresh noise.

    Args:
        size: number of slots ``M``.
        event_shape: shape of one state.
        reinit_prob: probability ``ρ`` that a drawn state is replaced by noise.

    Reference:
        Du & Mordatch (2019), "Implicit generation and generalization in energy-based models",
        arXiv:1903.08689. Tieleman (2008), "Training restricted Boltzmann machines using
        approximations to the likelihood gradient", ICML.

    Example:
        >>> buf = ReplayBuffer(10, (2,))
        >>> x, idx = buf.draw(4, lambda n: torch.zeros(n, 2))
        >>> buf.push(x + 1.0, idx)
        >>> int(buf.filled.sum()) <= 4
        True
    """

    def __init__(self, size: int, event_shape: Sequence[int], *, reinit_prob: float = 0.05) -> None:
        super().__init__()
        self.size = check_int("buffer_size", size, minimum=1)
        self.event_shape = tuple(int(s) for s in event_shape)
        self.reinit_prob = check_probability("reinit_prob", reinit_prob)
        self.register_buffer("states", torch.zeros(self.size, *self.event_shape))
        self.register_buffer("filled", torch.zeros(self.size, dtype=torch.bool))

    def draw(
        self,
        n: int,
        init_fn: Callable[[int], Tensor],
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw ``n`` starting states ``(n, *event)`` and their slot indices ``(n,)``.

        Each state is a stored one, or fresh noise ``init_fn(n)[i]`` where its slot was never
        written or with probability ``reinit_prob``.
        """
        n = check_int("n", n, minimum=1)
        device = self.states.device
        idx = torch.randint(0, self.size, (n,), generator=generator, device=device)
        u = torch.rand((n,), generator=generator, device=device, dtype=self.states.dtype)
        fresh = (~self.filled[idx]) | (u < self.reinit_prob)
        noise = init_fn(n).to(self.states)
        x = torch.where(append_dims(fresh, noise.dim()), noise, self.states[idx])
        return x, idx

    @torch.no_grad()
    def push(self, x: Tensor, idx: Tensor) -> None:
        """Write states ``x: (n, *event)`` into slots ``idx: (n,)``."""
        self.states[idx] = x.detach().to(self.states)
        self.filled[idx] = True

    def extra_repr(self) -> str:
        return f"size={self.size}, event_shape={self.event_shape}, reinit_prob={self.reinit_prob}"


def contrastive_divergence_loss(
    energy_pos: Tensor,
    energy_neg: Tensor,
    *,
    alpha: float = 0.0,
) -> Tensor:
    r"""The contrastive-divergence surrogate with Du & Mordatch's energy-magnitude penalty.

    .. math::

        \mathcal L = \overline{E(x^+)} - \overline{E(x^-)}
        + \alpha\big(\overline{E(x^+)^2} + \overline{E(x^-)^2}\big),

    where ``x⁺`` is a data batch and ``x⁻`` negatives from the model's sampler, held fixed (no
    gradient through the sampler). With exact model samples and ``α = 0`` its gradient is the exact
    maximum-likelihood gradient; short chains bias it (Carreira-Perpiñán & Hinton, 2005), which the
    penalty helps keep stable.

    Args:
        energy_pos: ``E(x⁺): (B,)``.
        energy_neg: ``E(x⁻): (B',)``.
        alpha: penalty weight ``α >= 0``.

    Returns:
        a scalar.

    References:
        Hinton (2002), Neural Computation 14(8); Du & Mordatch (2019), arXiv:1903.08689.

    Example:
        >>> round(contrastive_divergence_loss(torch.tensor([1.0, 3.0]), torch.tensor([4.0]), alpha=0.1).item(), 4)
        0.1
    """
    check_tensor("energy_pos", energy_pos, ndim=1, finite=False)
    check_tensor("energy_neg", energy_neg, ndim=1, finite=False)
    alpha = check_nonnegative("alpha", alpha)
    loss = energy_pos.mean() - energy_neg.mean()
    if alpha > 0:
        loss = loss + alpha * ((energy_pos**2).mean() + (energy_neg**2).mean())
    return loss


class FlatGaussian:
    """A multivariate normal over flattened events: samples ``(n, *event)``, ``log_prob -> (n,)``.

    The default NCE noise (:func:`fit_gaussian`). Built on
    :class:`torch.distributions.MultivariateNormal` over ``D = prod(event)`` coordinates.
    """

    def __init__(self, loc: Tensor, scale_tril: Tensor, event_shape: Sequence[int]) -> None:
        self.event_shape = tuple(int(s) for s in event_shape)
        self.dist = torch.distributions.MultivariateNormal(loc, scale_tril=scale_tril)

    def sample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        z = self.dist.sample(torch.Size(sample_shape))
        return z.reshape(*z.shape[:-1], *self.event_shape)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.dist.log_prob(x.reshape(*x.shape[: x.dim() - len(self.event_shape)], -1))


def fit_gaussian(x: Tensor, *, jitter: float = 1e-4) -> FlatGaussian:
    r"""The Gaussian ``N(x̄, S + εI)`` fitted to a batch ``x: (B, *event)`` (``S``: the 1/B covariance).

    Used as the default noise of NCE: noise close to the data makes the classification problem
    hard, which makes NCE statistically efficient (Gutmann & Hyvärinen, 2010, section 2.4).

    Example:
        >>> q = fit_gaussian(torch.randn(500, 2, dtype=torch.float64))
        >>> q.sample((3,)).shape
        torch.Size([3, 2])
    """
    check_tensor("x", x, min_ndim=2)
    jitter = check_positive("jitter", jitter)
    flat = flatten_event(x.detach())
    if flat.shape[0] < 2:
        raise ValueError(f"fitting a Gaussian needs a batch of at least 2 points, got {flat.shape[0]}")
    loc = flat.mean(0)
    centred = flat - loc
    cov = centred.T @ centred / flat.shape[0]
    cov = cov + jitter * cov.diagonal().mean().clamp_min(1.0) * torch.eye(flat.shape[1], dtype=x.dtype, device=x.device)
    return FlatGaussian(loc, torch.linalg.cholesky(cov), x.shape[1:])


def _noise_log_prob(noise: Any, y: Tensor) -> Tensor:
    lp = noise.log_prob(y)
    return lp if lp.dim() == 1 else batch_sum(lp)


def nce_loss(
    log_model_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    noise: Any,
    *,
    noise_ratio: int = 1,
) -> Tensor:
    r"""Noise-contrastive estimation: logistic regression of data against ``ν`` noise draws per point.

    With a self-normalised model ``log p_θ(x) = -E_θ(x) - c`` (``c = log Z`` learnt as a parameter)
    and ``G(u) = log p_θ(u) - log(ν q(u))``,

    .. math::

        \mathcal L = -\frac1B\Big[\sum_{b=1}^{B}\log\sigma\big(G(x_b)\big)
        + \sum_{j=1}^{\nu B}\log\sigma\big(-G(y_j)\big)\Big],\qquad y_j\sim q,

    whose minimizer is consistent for both θ and ``c`` (Gutmann & Hyvärinen, 2010, Theorem 1).

    Args:
        log_model_fn: ``log p_θ: (N, *event) -> (N,)``, including the ``-c`` term.
        x: data ``(B, *event)``.
        noise: a distribution with ``sample(sample_shape)`` returning ``(n, *event)`` and
            ``log_prob`` (``(n,)``, or per-coordinate values that are summed), e.g.
            :func:`fit_gaussian`, a torch/Pyro ``Independent(Normal(...), 1)``.
        noise_ratio: ``ν >= 1`` noise draws per data point.

    Returns:
        a scalar.

    Reference:
        Gutmann & Hyvärinen (2010), "Noise-contrastive estimation: A new estimation principle for
        unnormalized statistical models", AISTATS.

    Example:
        >>> q = fit_gaussian(torch.randn(100, 2))
        >>> # model = noise: G = -log ν, so the loss is log(1 + ν) + ν log(1 + 1/ν) = log 3 + 2 log 1.5
        >>> round(nce_loss(q.log_prob, torch.randn(8, 2), q, noise_ratio=2).item(), 4)
        1.9095
    """
    if not callable(log_model_fn):
        raise TypeError(f"log_model_fn must be callable, got {type(log_model_fn).__name__}")
    check_tensor("x", x, min_ndim=2)
    noise_ratio = check_int("noise_ratio", noise_ratio, minimum=1)
    if not (callable(getattr(noise, "sample", None)) and callable(getattr(noise, "log_prob", None))):
        raise TypeError(f"noise must be a distribution with sample and log_prob, got {type(noise).__name__}")
    with torch.no_grad():
        y = noise.sample((noise_ratio * x.shape[0],)).to(x)
    if tuple(y.shape[1:]) != tuple(x.shape[1:]):
        raise ValueError(
            f"noise.sample((n,)) must return (n, {', '.join(map(str, x.shape[1:]))}) like the data, "
            f"got {tuple(y.shape)}"
        )
    log_nu = math.log(noise_ratio)
    g_data = log_model_fn(x) - _noise_log_prob(noise, x).to(x) - log_nu
    g_noise = log_model_fn(y) - _noise_log_prob(noise, y).to(x) - log_nu
    n = x.shape[0]
    return -(torch.nn.functional.logsigmoid(g_data).sum() + torch.nn.functional.logsigmoid(-g_noise).sum()) / n
