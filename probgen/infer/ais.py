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

Each ``w`` is an unbiased estimate of ``Z``; the estimate is ``log Ẑ = logmeanexp(log w)``. Its
standard error by the delta method, on the weights normalised by their maximum
(``w̃ = exp(log w - max log w)``, which leaves the ratio unchanged), is

.. math:: \operatorname{se}(\log\hat Z) \approx \frac{\operatorname{sd}(\tilde w)}{\sqrt{N}\,
          \overline{\tilde w}},

and the effective sample size of the weights is ``ESS = (Σ w)² / Σ w²``.

The transitions are the batched MALA / HMC / ULA steps of :mod:`probgen.infer.batched` (shared
code), on the potential ``U_β = -log π_β``. The weights stay unbiased only if the transition used at
step ``k`` does not depend on the particle it moves (a step size tuned on a particle's own past
acceptances depends on ``x_{k-1}`` and biases ``Ẑ``; we measured it). So with ``adapt_step_size=True``
a per-temperature step-size schedule ``h_1..h_K`` is tuned first on an independent *pilot* run
(``log h ← log h + ½ (mean acceptance - δ)`` over the pilot population, after each transition) and then
frozen for the main run, whose particles are fresh draws from ``p₀``. ULA does not leave ``π_β``
invariant, so with ``kernel="ula"`` the estimate carries an ``O(h)`` bias.
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

from probgen._checks import (
    check_choice_or_callable,
    check_int,
    check_positive,
    check_probability,
    check_tensor,
)
from probgen.infer.transitions import KERNELS, ChainState, StepResult, hmc_step, init_state
from probgen.ops.shapes import batch_sum

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
]

SCHEDULES = ("linear", "geometric", "sigmoidal")
_DEFAULT_TARGET = {"mala": 0.574, "hmc": 0.8}
_PILOT_GAIN = 0.5  # log step size change per unit of (mean acceptance - target) in the pilot run


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


def _base_log_prob(base: Any, x: Tensor) -> Tensor:
    lp = base.log_prob(x)
    return lp if lp.dim() == 1 else batch_sum(lp)


def log_weight_summary(log_weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(log Ẑ, stderr, ESS)`` from log weights ``(N,)``; see the module docstring for the formulas.

    Example:
        >>> lz, se, ess = log_weight_summary(torch.zeros(10))
        >>> lz.item(), se.item(), ess.item()
        (0.0, 0.0, 10.0)
    """
    n = log_weights.shape[0]
    log_z = torch.logsumexp(log_weights, 0) - math.log(n)
    w = torch.exp(log_weights - log_weights.max())
    stderr = w.std(unbiased=True) / (math.sqrt(n) * w.mean()) if n > 1 else torch.full_like(log_z, math.inf)
    ess = w.sum() ** 2 / (w**2).sum()
    return log_z, stderr, ess


#: the weights are declared unreliable when their ESS is below this fraction of the particles
MIN_ESS_FRACTION = 0.1


def ais_reliability(log_weights: Tensor, *, min_ess_fraction: float = MIN_ESS_FRACTION) -> str | None:
    r"""``None`` when the AIS standard error can be trusted, else a message saying why it cannot.

    The delta-method standard error is itself estimated from the weights; it covers the real error
    only when the weights are not dominated by a few particles. For log-normal weights with
    ``sd(log w) = s`` the effective sample size is ``ESS ≈ N e^{-s²}``; below ``ESS = 0.1 N``
    (``s ≳ 1.5``) the largest weight has typically not been seen yet and ``log Ẑ`` is biased low by an
    unknown amount (Neal 2001, §6; Salakhutdinov & Murray 2008). The rule: unreliable when
    ``N < 2``, any log weight is not finite, or ``ESS < max(min_ess_fraction · N, 2)``.

    Example:
        >>> ais_reliability(torch.zeros(100)) is None
        True
        >>> ais_reliability(torch.tensor([0.0, -30.0, -30.0, -30.0])) is not None
        True
    """
    n = log_weights.shape[0]
    if n < 2:
        return f"AIS used {n} particle: no standard error"
    if not bool(torch.isfinite(log_weights).all()):
        return "AIS produced non-finite log weights"
    _, _, ess = log_weight_summary(log_weights)
    ess = float(ess)
    if ess < max(min_ess_fraction * n, 2.0):
        sd = float(log_weights.std())
        return (
            f"AIS estimate is unreliable: the effective sample size of the weights is {ess:.1f} of {n} "
            f"particles (sd of log weights {sd:.2f}); the reported standard error does not cover the real "
            f"error and log Z is likely underestimated. Use more intermediate distributions (num_steps), "
            f"more particles (num_chains) or a base distribution closer to the target"
        )
    return None


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
        return _base_log_prob(base, z[:, 0] if event_unsqueezed else z)

    def target_lp(z: Tensor) -> Tensor:
        out = log_target(z[:, 0] if event_unsqueezed else z)
        if not isinstance(out, Tensor) or tuple(out.shape) != (z.shape[0],):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"log_target must return a tensor of shape ({z.shape[0]},), got {got}")
        return out

    if isinstance(betas, str):
        betas = ais_schedule(betas, num_steps, **opts)
    else:
        betas = check_betas(betas).to(**opts)
    num_levels = betas.shape[0] - 1

    if isinstance(step_size, Tensor) and step_size.numel() > 1:
        check_tensor("step_size", step_size, ndim=1)
        if step_size.shape[0] != num_levels or bool((step_size <= 0).any()):
            raise ValueError(
                f"step_size must be a positive number or a positive per-temperature schedule of shape "
                f"({num_levels},), got shape {tuple(step_size.shape)}"
            )
        schedule: Tensor | None = step_size.detach().to(**opts)
        initial_step = float(schedule[0])
    else:
        initial_step = check_positive("step_size", step_size)
        schedule = None
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
        return _base_log_prob(base, strip(u))

    def target_lp(u: Tensor) -> Tensor:
        out = log_target(strip(u))
        if not isinstance(out, Tensor) or tuple(out.shape) != (u.shape[0],):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"log_target must return a tensor of shape ({u.shape[0]},), got {got}")
        return out

    betas = ais_schedule(betas, num_steps, **opts) if isinstance(betas, str) else check_betas(betas).to(**opts)
    num_levels = betas.shape[0] - 1
    if isinstance(step_size, Tensor) and step_size.numel() > 1:
        check_tensor("step_size", step_size, ndim=1)
        if step_size.shape[0] != num_levels or bool((step_size <= 0).any()):
            raise ValueError(
                f"step_size must be a positive number or a positive per-temperature schedule of shape "
                f"({num_levels},), got shape {tuple(step_size.shape)}"
            )
        steps = step_size.detach().to(**opts)
    else:
        steps = torch.full((num_levels,), check_positive("step_size", step_size), **opts)
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
