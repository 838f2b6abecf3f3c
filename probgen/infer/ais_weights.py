r"""The importance weights of AIS and RAISE: the log densities they are made of, their summary
``(log Ẑ, standard error, ESS)`` and the rule that says when that standard error cannot be trusted.

For log weights ``log w_1..log w_N`` the estimate is ``log Ẑ = logmeanexp(log w)``; its standard error by
the delta method, on the weights normalised by their maximum (``w̃ = exp(log w - max log w)``, which leaves
the ratio unchanged), is

.. math:: \operatorname{se}(\log\hat Z) \approx \frac{\operatorname{sd}(\tilde w)}{\sqrt{N}\,
          \overline{\tilde w}},

and the effective sample size of the weights is ``ESS = (Σ w)² / Σ w²``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from probgen.ops.shapes import batch_sum

__all__ = [
    "log_weight_summary",
    "ais_reliability",
    "bidirectional_upper",
    "MIN_ESS_FRACTION",
    "base_log_prob",
    "checked_log_target",
]


def base_log_prob(base: Any, x: Tensor) -> Tensor:
    """``log p₀(x): (N,)`` of a base distribution, summed over everything but the particle dimension."""
    lp = base.log_prob(x)
    return lp if lp.dim() == 1 else batch_sum(lp)


def checked_log_target(log_target: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``log_target(x)``, refused with a clear error unless it is a tensor of shape ``(N,)``."""
    out = log_target(x)
    if not isinstance(out, Tensor) or tuple(out.shape) != (x.shape[0],):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"log_target must return a tensor of shape ({x.shape[0]},), got {got}")
    return out


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


def bidirectional_upper(forward_log_weights: Tensor, reverse_log_weights: Tensor) -> tuple[Tensor, Tensor]:
    r"""The upper end of a bidirectional Monte Carlo bracket on ``log Z``, and its standard error.

    Reverse AIS started from a point ``x`` and run down the schedule to the base (``x_{k-1} ~ T_k(· |
    x_k)``, reversible ``T_k``) has log weight ``log r(x) = log Z_0 + Σ_k [log f_k(x_{k-1}) - log
    f_{k-1}(x_{k-1})]`` with ``E[1/r(x)] = p_ann(x)/γ(x)``, ``p_ann`` the law of the forward chain's
    last state (Burda et al. 2015). By Jensen, ``E[log r(x)] ≥ log γ(x) - log p_ann(x)``, so for ``x``
    drawn from the target ``p = γ/Z`` (Grosse, Ghahramani & Adams 2015)

    .. math:: \mathbb E_{x\sim p}\,\mathbb E[\log r(x)] \ \ge\ \log Z + \mathrm{KL}(p\,\|\,p_{\text{ann}})
              \ \ge\ \log Z.

    Forward AIS's final particles ``x_i`` with weights ``w_i`` are a weighted sample of ``p``
    (``E[Σ w_i g(x_i)] / E[Σ w_i] = E_p[g]``), so with one reverse chain started at each of them the
    self-normalised average

    .. math:: \log\hat Z_{\text{up}} = \sum_i \hat w_i \log r_i,\qquad \hat w_i = w_i / \textstyle\sum_j w_j,

    converges as ``N → ∞`` to a value ``≥ log Z``, whatever the schedule (its slack is the
    KL above plus the Jensen gap, both shrinking as the schedule grows). It shares forward AIS's blind
    spot: a mode no forward particle reaches moves both ends down together; :func:`ais_reliability`
    detects it only when the weights degenerate. Standard error: the self-normalised importance
    sampling one, ``se² = Σ_i ŵ_i² (log r_i - log Ẑ_up)²``.

    Args:
        forward_log_weights: ``(N,)`` forward AIS log weights ``log w_i`` (any common constant).
        reverse_log_weights: ``(N,)`` ``log r_i`` of the reverse chain started at particle ``i``,
            including ``log Z_0``.

    Returns:
        ``(log Ẑ_up, stderr)``, 0-dim tensors.

    Reference: Grosse, Ghahramani & Adams (2015), "Sandwiching the marginal likelihood using
    bidirectional Monte Carlo", arXiv:1511.02543.

    Example:
        >>> up, se = bidirectional_upper(torch.tensor([0.0, 0.0, -1e9]), torch.tensor([1.0, 3.0, 100.0]))
        >>> round(up.item(), 6), round(se.item(), 6)
        (2.0, 0.707107)
    """
    if forward_log_weights.shape != reverse_log_weights.shape or forward_log_weights.dim() != 1:
        raise ValueError(
            f"forward_log_weights and reverse_log_weights must both have shape (N,), got "
            f"{tuple(forward_log_weights.shape)} and {tuple(reverse_log_weights.shape)}"
        )
    w = torch.softmax(forward_log_weights, 0)
    upper = (w * reverse_log_weights).sum()
    if forward_log_weights.shape[0] < 2:
        return upper, torch.full_like(upper, math.inf)
    return upper, (w**2 * (reverse_log_weights - upper) ** 2).sum().sqrt()
