r"""Annealed importance sampling (AIS) estimates of log normalising constants.

For an unnormalised log-density ``log γ(x)`` with normaliser ``Z = ∫ γ(x) dx`` and a tractable base
distribution ``p₀`` (normalised, easy to sample), AIS (Neal, 2001, arXiv:physics/9803008) moves ``N``
particles through the geometric path

.. math:: \log\pi_\beta(x) = (1 - \beta)\log p_0(x) + \beta\log\gamma(x) + \text{const},
          \qquad 0 = \beta_0 < \beta_1 < \dots < \beta_K = 1,

with ``x₀ ~ p₀`` and, for ``k = 1..K``, the weight update then one MCMC transition leaving
``π_{β_k}`` invariant:

.. math:: \log w \mathrel{+}= (\beta_k - \beta_{k-1})\,[\log\gamma(x_{k-1}) - \log p_0(x_{k-1})],
          \qquad x_k \sim T_k(\cdot \mid x_{k-1}).

Each ``w`` is an unbiased estimate of ``Z``; the estimate is ``log Ẑ = logmeanexp(log w)``, with the
delta-method standard error and the effective sample size of :mod:`probgen.infer.ais_weights`.

The transitions are the batched MALA / HMC / ULA steps of :mod:`probgen.infer.batched` (shared
code), on the potential ``U_β = -log π_β``. The weights stay unbiased only if the transition used at
step ``k`` does not depend on the particle it moves (a step size tuned on a particle's own past
acceptances depends on ``x_{k-1}`` and biases ``Ẑ``; we measured it). So with ``adapt_step_size=True``
a per-temperature step-size schedule ``h_1..h_K`` is tuned first on an independent *pilot* run
(``log h ← log h + ½ (mean acceptance - δ)`` over the pilot population, after each transition) and then
frozen for the main run, whose particles are fresh draws from ``p₀``. ULA does not leave ``π_β``
invariant, so with ``kernel="ula"`` the estimate carries an ``O(h)`` bias.

Modules: this one (forward AIS; it re-exports the names below), :mod:`probgen.infer.ais_schedules`
(β and step-size schedules), :mod:`probgen.infer.ais_weights` (log-weight summary and reliability
rule), :mod:`probgen.infer.ais_reverse` (RAISE).
"""

from __future__ import annotations

import math
import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_choice_or_callable, check_int, check_probability, check_tensor
from probgen.infer.ais_reverse import RAISEResult, reverse_ais
from probgen.infer.ais_schedules import SCHEDULES, ais_schedule, check_betas, step_size_schedule
from probgen.infer.ais_weights import (
    MIN_ESS_FRACTION,
    ais_reliability,
    base_log_prob,
    checked_log_target,
    log_weight_summary,
)
from probgen.infer.transitions import KERNELS, ChainState, StepResult, hmc_step

__all__ = [
    "annealed_importance_sampling",
    "reverse_ais",
    "AISResult",
    "RAISEResult",
    "ais_schedule",
    "check_betas",
    "ais_reliability",
    "log_weight_summary",
    "SCHEDULES",
    "MIN_ESS_FRACTION",
]

_DEFAULT_TARGET = {"mala": 0.574, "hmc": 0.8}
_PILOT_GAIN = 0.5  # log step size change per unit of (mean acceptance - target) in the pilot run


@dataclass
class AISResult:
    """Output of :func:`ais`.

    Attributes:
        log_z: ``log Ẑ = logmeanexp(log w)``, a 0-dim tensor.
        stderr: delta-method standard error of ``log Ẑ``: ``sd(w̃) / (√N mean(w̃))``.
        log_weights: ``(N,)`` log importance weights.
        ess: ``(Σ w)² / Σ w²``, the effective sample size of the weights.
        samples: ``(N, *event)`` final particles (approximately from the target, weighted by ``w``).
        betas: ``(K + 1,)`` the schedule used.
        accept_rate: ``(K,)`` mean acceptance probability at each step.
        step_sizes: ``(K,)`` step size used at each temperature (``None`` for a callable kernel);
            pass it back as ``step_size`` to reuse a tuned schedule.
        warning: ``None`` when the weights pass :func:`ais_reliability`, else its message (the call
            also issued it as a ``RuntimeWarning``).
    """

    log_z: Tensor
    stderr: Tensor
    log_weights: Tensor
    ess: Tensor
    samples: Tensor
    betas: Tensor
    accept_rate: Tensor
    step_sizes: Tensor | None = None
    warning: str | None = None



def annealed_importance_sampling(
    log_target: Callable[[Tensor], Tensor],
    base: Any,
    *,
    num_chains: int = 100,
    num_steps: int = 1000,
    betas: str | Tensor = "linear",
    kernel: str | Callable[..., Tensor] = "mala",
    step_size: float | Tensor = 0.1,
    adapt_step_size: bool | None = None,
    target_accept_prob: float | None = None,
    num_leapfrog: int = 5,
    num_mcmc_steps: int = 1,
    num_pilot_chains: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[int, ChainState], Any] | None = None,
    warn: bool = True,
) -> AISResult:
    """Estimate ``log Z`` of an unnormalised density by annealed importance sampling.

    Args:
        log_target: ``log γ: (N, *event) -> (N,)``, unnormalised, differentiable.
        base: a normalised distribution with ``sample(sample_shape)`` and ``log_prob`` (a
            torch/Pyro ``Distribution``); one draw is one ``event``. Batch dimensions of ``base`` are
            treated as independent event coordinates (``log_prob`` is summed over everything but the
            particle dimension), so ``Normal(torch.zeros(D), s)`` works as is.
        num_chains: number of particles ``N``.
        num_steps: number of intermediate distributions ``K`` when ``betas`` is a schedule name.
        betas: ``"linear"``, ``"geometric"``, ``"sigmoidal"`` (see :func:`ais_schedule`) or a tensor
            ``(K + 1,)`` strictly increasing from 0 to 1.
        kernel: ``"mala"``, ``"hmc"``, ``"ula"`` (biased), or a callable transition
            ``transition(x, potential_fn, beta, *, generator) -> x_new`` leaving ``exp(-potential_fn)``
            invariant, with ``potential_fn: (N, *event) -> (N,)`` the annealed ``-log π_β`` and ``beta``
            a 0-dim tensor (e.g. a tempered Gibbs sweep for an RBM).
        step_size: the step size, a number (the pilot's starting value when adapting) or a
            per-temperature schedule ``(K,)`` (e.g. ``AISResult.step_sizes`` of an earlier run; then
            no pilot runs).
        adapt_step_size: tune a per-temperature step-size schedule on an independent pilot run
            (default ``True`` for MALA/HMC, refused for ULA and callables).
        target_accept_prob: acceptance rate to tune to (0.574 MALA, 0.8 HMC by default).
        num_leapfrog: leapfrog steps per HMC transition.
        num_mcmc_steps: transitions per temperature.
        num_pilot_chains: particles of the pilot run (default ``min(N, max(64, N // 4))``).
        generator: optional ``torch.Generator`` for reproducibility.
        callback: ``callback(k, state)`` after the transitions at temperature ``β_k``.
        warn: issue a ``RuntimeWarning`` when :func:`ais_reliability` finds the weights degenerate
            (the message is in ``AISResult.warning`` either way).

    Returns:
        :class:`AISResult`. ``Ẑ`` is unbiased, so ``log Ẑ`` is a stochastic lower bound on ``log Z``:
        ``E[log Ẑ] ≤ log Z`` (Jensen; about ``-½ stderr²``) and ``P(log Ẑ > log Z + t) ≤ e^{-t}``
        (Markov).

    Reference: Neal (2001), "Annealed importance sampling", Statistics and Computing 11,
    arXiv:physics/9803008.

    Example:
        >>> import torch.distributions as td
        >>> log_target = lambda x: -0.5 * ((x - 1.0) ** 2).sum(-1) + 3.0   # Z = e³ (2π)^{D/2}
        >>> res = annealed_importance_sampling(
        ...     log_target, td.Normal(torch.zeros(2, dtype=torch.float64), 2.0), num_chains=200,
        ...     num_steps=100, generator=torch.Generator().manual_seed(0))
        >>> abs(res.log_z.item() - (3.0 + math.log(2 * math.pi))) < 5 * res.stderr.item() + 0.01
        True
    """
    if not callable(log_target):
        raise TypeError(f"log_target must be callable, got {type(log_target).__name__}")
    if not (callable(getattr(base, "sample", None)) and callable(getattr(base, "log_prob", None))):
        raise TypeError(f"base must be a distribution with sample and log_prob, got {type(base).__name__}")
    kernel = check_choice_or_callable("kernel", kernel, tuple(KERNELS))
    num_chains = check_int("num_chains", num_chains, minimum=1)
    num_mcmc_steps = check_int("num_mcmc_steps", num_mcmc_steps, minimum=1)
    num_leapfrog = check_int("num_leapfrog", num_leapfrog, minimum=1)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    name = kernel if isinstance(kernel, str) else "custom"
    if adapt_step_size is None:
        adapt_step_size = name in _DEFAULT_TARGET
    elif adapt_step_size and name not in _DEFAULT_TARGET:
        raise ValueError(
            f"adapt_step_size=True is only supported for kernels 'mala' and 'hmc', got kernel {name!r}"
        )
    target = _DEFAULT_TARGET.get(name, 0.574) if target_accept_prob is None else target_accept_prob
    target = check_probability("target_accept_prob", target, open_low=True, open_high=True)

    with torch.no_grad():
        x = base.sample((num_chains,))
    check_tensor("base.sample((num_chains,))", x, min_ndim=1)
    if x.dim() == 1:  # scalar events
        x = x[:, None]
        event_unsqueezed = True
    else:
        event_unsqueezed = False
    opts = {"dtype": x.dtype, "device": x.device}
    state_shape = x.shape

    def base_lp(z: Tensor) -> Tensor:
        return base_log_prob(base, z[:, 0] if event_unsqueezed else z)

    def target_lp(z: Tensor) -> Tensor:
        return checked_log_target(log_target, z[:, 0] if event_unsqueezed else z)

    if isinstance(betas, str):
        betas = ais_schedule(betas, num_steps, **opts)
    else:
        betas = check_betas(betas).to(**opts)
    num_levels = betas.shape[0] - 1

    schedule = step_size_schedule(step_size, num_levels, **opts)
    initial_step = float(schedule[0]) if schedule is not None else float(step_size)
    if num_pilot_chains is None:
        num_pilot_chains = min(num_chains, max(64, num_chains // 4))
    num_pilot_chains = check_int("num_pilot_chains", num_pilot_chains, minimum=1)
    step_fn: Callable[..., StepResult] | None = None
    if name == "hmc":
        step_fn = partial(hmc_step, num_leapfrog=num_leapfrog)
    elif name in KERNELS:
        step_fn = KERNELS[name]

    def components(z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``log p₀(z)``, ``log γ(z)`` and their gradients (only base and target evaluated once)."""
        z = z.detach().requires_grad_(step_fn is not None)
        with torch.set_grad_enabled(step_fn is not None):
            lb, lt = base_lp(z), target_lp(z)
            if step_fn is None:
                return lb.detach(), lt.detach(), torch.zeros_like(z), torch.zeros_like(z)
            gb = torch.autograd.grad(lb.sum(), z, allow_unused=True)[0] if lb.requires_grad else None
            gt = torch.autograd.grad(lt.sum(), z, allow_unused=True)[0] if lt.requires_grad else None
        zero = torch.zeros_like(z)
        return lb.detach(), lt.detach(), zero if gb is None else gb, zero if gt is None else gt

    def anneal(x: Tensor, steps: Tensor | None, report: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Run the annealing from ``x ~ p₀``; ``steps`` (K,) fixed step sizes, or None to adapt them on
        the population's mean acceptance. Returns log weights, final x, acceptance (K,), steps (K,)."""
        n = x.shape[0]
        inverse_mass_matrix = torch.ones(x.shape[1:], **opts)
        log_h = torch.tensor(math.log(initial_step), **opts)
        used = torch.empty(num_levels, **opts)
        log_w = torch.zeros(n, **opts)
        accept_rate = torch.zeros(num_levels, **opts)
        lp_base, lp_target, g_base, g_target = components(x)
        for k in range(1, num_levels + 1):
            b_prev, b = betas[k - 1], betas[k]
            log_w = log_w + (b - b_prev) * (lp_target - lp_base)

            def potential(z: Tensor, beta: Tensor = b) -> Tensor:
                return -((1.0 - beta) * base_lp(z) + beta * target_lp(z))

            if step_fn is None:
                for _ in range(num_mcmc_steps):
                    x = kernel(x, potential, b, generator=generator)
                    if not isinstance(x, Tensor) or x.shape != state_shape:
                        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                        raise ValueError(f"kernel must return a tensor of shape {tuple(state_shape)}, got {got}")
                    x = x.detach()
                acc = torch.ones(n, **opts)
                lp_base, lp_target, g_base, g_target = components(x)
                state = ChainState(x, -((1.0 - b) * lp_base + b * lp_target), torch.zeros_like(x))
            else:
                # the state at the new temperature from the components: no extra evaluation
                state = ChainState(x, -((1.0 - b) * lp_base + b * lp_target),
                                   -((1.0 - b) * g_base + b * g_target))
                h = steps[k - 1] if steps is not None else torch.exp(log_h)
                used[k - 1] = h
                acc = torch.zeros(n, **opts)
                for _ in range(num_mcmc_steps):
                    res = step_fn(potential, state, h.expand(n), inverse_mass_matrix, generator=generator)
                    state = res.state
                    acc = acc + res.accept_prob / num_mcmc_steps
                    if steps is None:
                        log_h = log_h + _PILOT_GAIN * (res.accept_prob.mean() - target)
                        h = torch.exp(log_h)
                x = state.x
                if k < num_levels:
                    lp_base, lp_target, g_base, g_target = components(x)
            accept_rate[k - 1] = acc.mean()
            if report and callback is not None:
                callback(k, state)
        return log_w, x, accept_rate, used

    if step_fn is not None and schedule is None:
        if adapt_step_size:
            with torch.no_grad():
                pilot = base.sample((num_pilot_chains,))
            pilot = pilot[:, None] if event_unsqueezed else pilot
            _, _, _, schedule = anneal(pilot, None, False)
        else:
            schedule = torch.full((num_levels,), initial_step, **opts)
    log_w, x, accept_rate, used = anneal(x, schedule, True)

    log_z, stderr, ess = log_weight_summary(log_w)
    message = ais_reliability(log_w)
    if message is not None and warn:
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    samples = x[:, 0] if event_unsqueezed else x
    return AISResult(log_z=log_z, stderr=stderr, log_weights=log_w, ess=ess, samples=samples.detach(),
                     betas=betas, accept_rate=accept_rate, step_sizes=used if step_fn is not None else None,
                     warning=message)



def ais(*args: Any, **kwargs: Any) -> AISResult:
    """Deprecated alias of :func:`annealed_importance_sampling` (the name ``ais`` is this module's)."""
    warnings.warn(
        "probgen.infer.ais.ais / calling probgen.infer.ais(...) is deprecated; use "
        "probgen.infer.annealed_importance_sampling (probgen.infer.ais is the module)",
        DeprecationWarning,
        stacklevel=2,
    )
    return annealed_importance_sampling(*args, **kwargs)


class _CallableModule(types.ModuleType):
    """``probgen.infer.ais`` is this module; calling it still runs AIS, with a ``DeprecationWarning``."""

    def __call__(self, *args: Any, **kwargs: Any) -> AISResult:
        warnings.warn(
            "calling probgen.infer.ais(...) is deprecated; use probgen.infer.annealed_importance_sampling "
            "(probgen.infer.ais is the module)",
            DeprecationWarning,
            stacklevel=2,
        )
        return annealed_importance_sampling(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
