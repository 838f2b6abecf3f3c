r"""Reverse AIS (RAISE; Burda, Grosse & Salakhutdinov 2015): a stochastic lower bound on the
log-likelihood of the annealed model, started from the points to score.

Forward AIS (:mod:`probgen.infer.ais`) is a stochastic lower bound on ``log Z`` and so an upper bound on
``log p(x) = log γ(x) - log Z``; RAISE gives the other side. See :func:`reverse_ais` for the estimator and
what exactly it bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_choice_or_callable, check_int, check_tensor
from probgen.infer.ais_schedules import ais_schedule, check_betas, step_size_schedule
from probgen.infer.ais_weights import base_log_prob, checked_log_target
from probgen.infer.transitions import KERNELS, hmc_step, init_state

__all__ = ["reverse_ais", "RAISEResult"]


@dataclass
class RAISEResult:
    """Output of :func:`reverse_ais`.

    Attributes:
        log_prob: ``(B,)`` ``log p̂(x_b) = log mean_m p̂_m(x_b)``, per point a stochastic lower bound on
            the log density of the *annealed model* (see :func:`reverse_ais`).
        log_weights: ``(B, M)`` reverse log weights ``log w_rev`` of each chain; ``log p̂_m(x_b) =
            log γ(x_b) - log w_rev[b, m]``.
        betas: ``(K + 1,)`` the schedule used.
        accept_rate: ``(K,)`` mean acceptance probability at each temperature (ones for a callable).
    """

    log_prob: Tensor
    log_weights: Tensor
    betas: Tensor
    accept_rate: Tensor


def reverse_ais(
    log_target: Callable[[Tensor], Tensor],
    base: Any,
    x: Tensor,
    *,
    kernel: str | Callable[..., Tensor],
    num_steps: int = 1000,
    betas: str | Tensor = "linear",
    step_size: float | Tensor = 0.1,
    num_leapfrog: int = 5,
    num_mcmc_steps: int = 1,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
) -> RAISEResult:
    r"""Reverse AIS (RAISE; Burda, Grosse & Salakhutdinov 2015): a stochastic lower bound on ``log p(x)``.

    With ``f_k(x) = p₀(x)^{1-β_k} γ(x)^{β_k}`` and reversible transitions ``T_k`` (each leaves ``f_k``
    invariant and satisfies detailed balance), forward AIS defines the *annealed model*
    ``p_ann(x_K) = Σ p₀(x_0) Π_k T_k(x_k | x_{k-1})``, the law of its final particle. RAISE starts at the
    data point ``x_K = x``, runs the chain *down* the schedule, ``x_{k-1} ~ T_k(· | x_k)`` for
    ``k = K..1``, and returns

    .. math:: \log\hat p(x) = \log\gamma(x) - \sum_{k=1}^{K} (\beta_k - \beta_{k-1})\,
              [\log\gamma(x_{k-1}) - \log p_0(x_{k-1})],

    an unbiased estimate ``E[p̂(x)] = p_ann(x)`` (importance sampling of the forward chain's path with
    the reverse chain as proposal). Hence, exactly: ``E[log p̂(x)] ≤ log p_ann(x)`` and
    ``P(log p̂(x) > log p_ann(x) + t) ≤ e^{-t}`` — a stochastic **lower bound on the annealed model's
    log-likelihood**, not on ``log p(x) = log γ(x) - log Z`` itself; ``p_ann → p`` as the annealing gets
    slower, and in practice RAISE errs on the low side (Burda et al. 2015). With forward AIS, which is a
    stochastic lower bound on ``log Z`` and so an *upper* bound on ``log p(x)``, it brackets the
    log-likelihood. ``num_samples`` chains per point average ``p̂`` (``log mean exp``).

    Args:
        log_target: ``log γ: (N, *event) -> (N,)`` as for :func:`annealed_importance_sampling`.
        base: the normalised base ``p₀`` (``log_prob`` only is used).
        x: ``(B, *event)`` the points to score (e.g. test data).
        kernel: a reversible transition: ``"mala"``, ``"hmc"`` (with a fixed ``step_size``, e.g.
            ``AISResult.step_sizes`` of a forward run on the same schedule) or a callable
            ``transition(x, potential_fn, beta, *, generator) -> x_new`` that satisfies detailed balance
            for ``exp(-potential_fn)`` (e.g. Gibbs + Metropolis–Hastings). ``"ula"`` is refused.
        num_steps, betas, num_leapfrog, num_mcmc_steps, generator: as :func:`annealed_importance_sampling`.
        step_size: a number or a per-temperature schedule ``(K,)`` (never adapted: adaptation on the
            chain's own states breaks the unbiasedness).
        num_samples: reverse chains per point ``M``.

    Returns:
        :class:`RAISEResult`.

    Reference: Burda, Grosse & Salakhutdinov (2015), "Accurate and conservative estimates of MRF
    log-likelihood using reverse annealing", AISTATS, arXiv:1412.8566.

    Example:
        >>> import torch.distributions as td
        >>> log_target = lambda x: -0.5 * ((x - 1.0) ** 2).sum(-1)   # p = N(1, I), log Z = log 2π
        >>> x = torch.zeros(3, 2, dtype=torch.float64)
        >>> res = reverse_ais(log_target, td.Normal(torch.zeros(2, dtype=torch.float64), 2.0), x,
        ...                   kernel="mala", step_size=0.3, num_steps=200, num_samples=20,
        ...                   generator=torch.Generator().manual_seed(0))
        >>> exact = td.Normal(torch.ones(2, dtype=torch.float64), 1.0).log_prob(x).sum(-1)
        >>> bool(((res.log_prob - exact).abs() < 0.1).all())
        True
    """
    if not callable(log_target):
        raise TypeError(f"log_target must be callable, got {type(log_target).__name__}")
    if not callable(getattr(base, "log_prob", None)):
        raise TypeError(f"base must be a distribution with log_prob, got {type(base).__name__}")
    kernel = check_choice_or_callable("kernel", kernel, ("mala", "hmc"))
    check_tensor("x", x, min_ndim=1)
    num_samples = check_int("num_samples", num_samples, minimum=1)
    num_mcmc_steps = check_int("num_mcmc_steps", num_mcmc_steps, minimum=1)
    num_leapfrog = check_int("num_leapfrog", num_leapfrog, minimum=1)
    b = x.shape[0]
    unsqueezed = x.dim() == 1
    z = (x[:, None] if unsqueezed else x).detach()
    z = z.repeat_interleave(num_samples, 0)
    opts = {"dtype": z.dtype, "device": z.device}
    n = z.shape[0]

    def strip(u: Tensor) -> Tensor:
        return u[:, 0] if unsqueezed else u

    def base_lp(u: Tensor) -> Tensor:
        return base_log_prob(base, strip(u))

    def target_lp(u: Tensor) -> Tensor:
        return checked_log_target(log_target, strip(u))

    betas = ais_schedule(betas, num_steps, **opts) if isinstance(betas, str) else check_betas(betas).to(**opts)
    num_levels = betas.shape[0] - 1
    steps = step_size_schedule(step_size, num_levels, **opts)
    if steps is None:
        steps = torch.full((num_levels,), float(step_size), **opts)
    step_fn = None
    if kernel == "hmc":
        step_fn = partial(hmc_step, num_leapfrog=num_leapfrog)
    elif kernel == "mala":
        step_fn = KERNELS["mala"]

    with torch.no_grad():
        log_gamma_x = target_lp(z)
    log_w = torch.zeros(n, **opts)
    accept_rate = torch.ones(num_levels, **opts)
    inverse_mass_matrix = torch.ones(z.shape[1:], **opts)
    for k in range(num_levels, 0, -1):
        beta = betas[k]

        def potential(u: Tensor, beta: Tensor = beta) -> Tensor:
            return -((1.0 - beta) * base_lp(u) + beta * target_lp(u))

        if step_fn is None:
            with torch.no_grad():
                for _ in range(num_mcmc_steps):
                    z = kernel(z, potential, beta, generator=generator)
                    if not isinstance(z, Tensor) or z.shape != (n, *z.shape[1:]):
                        raise ValueError("kernel must return a tensor of the shape of its input")
                    z = z.detach()
        else:
            state = init_state(potential, z)
            acc = torch.zeros(n, **opts)
            for _ in range(num_mcmc_steps):
                res = step_fn(potential, state, steps[k - 1].expand(n), inverse_mass_matrix, generator=generator)
                state = res.state
                acc = acc + res.accept_prob / num_mcmc_steps
            z = state.x.detach()
            accept_rate[k - 1] = acc.mean()
        with torch.no_grad():
            log_w = log_w + (beta - betas[k - 1]) * (target_lp(z) - base_lp(z))
    log_p = (log_gamma_x - log_w).reshape(b, num_samples)
    log_prob = torch.logsumexp(log_p, 1) - math.log(num_samples)
    return RAISEResult(log_prob=log_prob.detach(), log_weights=log_w.reshape(b, num_samples).detach(),
                       betas=betas, accept_rate=accept_rate)
