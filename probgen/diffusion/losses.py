"""Score-matching objectives: denoising score matching (continuous time and multi-noise) and sliced SM.

Three plain functions, one per estimator of the Fisher divergence between a model score ``s`` and the
data score ``∇ log p``:

* :func:`dsm_loss` — denoising score matching over continuous time for an SDE (Song et al. 2021,
  arXiv:2011.13456), with the ``σ(t)²`` weighting or the likelihood weighting ``g(t)²`` of Song,
  Durkan, Murray & Ermon (2021, arXiv:2101.09258), optionally with importance sampling of ``t``;
* :func:`multi_noise_dsm_loss` — NCSN's objective over a finite set of noise levels (Song & Ermon 2019,
  arXiv:1907.05600);
* :func:`sliced_score_matching_loss` — sliced score matching (Song, Garg, Shi & Ermon 2019,
  arXiv:1905.07088), which needs no perturbation kernel, so energy-based models can use it too.

Every function returns a scalar (``reduction="mean"`` or ``"sum"``) or the per-example losses
(``reduction="none"``, shape ``(B,)``), and sums (never averages) squared errors over the event
dimensions, so that the likelihood-weighted loss is the bound on the negative log-likelihood in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from probgen._checks import (
    check_bool,
    check_choice,
    check_choice_or_callable,
    check_int,
    check_output_shape,
    check_positive,
    check_tensor,
)
from probgen.ops.shapes import append_dims, batch_sum
from probgen.ops.score_matching import sliced_score_matching_loss  # one home, shared with the EBM family
from probgen.sde import SDE, VPSDE


__all__ = [
    "dsm_loss",
    "multi_noise_dsm_loss",
    "sliced_score_matching_loss",
    "sample_importance_time",
]

_REDUCTIONS = ("mean", "sum", "none")
_DSM_WEIGHTINGS = ("sigma2", "likelihood")
_NOISE_WEIGHTINGS = ("sigma2", "none")
_PROJECTIONS = ("rademacher", "gaussian")

# points of the grid on which a numeric inverse CDF of the importance density is built (log-spaced in t)
_GRID_POINTS = 4097


def _reduce(per_example: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "sum":
        return per_example.sum()
    return per_example


def _terminal_time(sde: Any) -> float:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a probgen.sde.SDE (VPSDE, SubVPSDE, VESDE, ...), got {type(sde).__name__}")
    return float(sde.T)


# ----------------------------------------------------------------------------------------------------
# importance sampling of the diffusion time
# ----------------------------------------------------------------------------------------------------


def _vp_log_expm1_integral(sde: Any, t: Tensor) -> Tensor:
    """``log(exp(B(t)) - 1)`` with ``B(t) = ∫₀ᵗ β(s) ds`` for the linear VP schedule, computed stably."""
    b = sde.beta_min * t + 0.5 * (sde.beta_max - sde.beta_min) * t**2
    return b + torch.log(-torch.expm1(-b))


def _vp_importance_time(sde: Any, u: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Closed-form inverse CDF of ``q(t) ∝ g(t)²/σ(t)² = β(t) / (1 - exp(-B(t)))`` on ``[eps, T]``.

    ``d/dt log(exp(B(t)) - 1) = β(t) / (1 - exp(-B(t)))``, so the CDF is linear in
    ``L(t) = log(exp(B(t)) - 1)``; inverting ``L`` gives ``B = softplus(L)`` and ``t`` from the
    quadratic ``B(t) = β₀ t + ½ (β₁ - β₀) t²`` (Song, Durkan, Murray & Ermon 2021, Sec. 5.1).
    """
    T = _terminal_time(sde)
    ends = torch.tensor([eps, T], dtype=torch.float64, device=u.device)
    low, high = _vp_log_expm1_integral(sde, ends).tolist()
    normalizer = high - low
    level = low + u.double() * normalizer
    b = torch.nn.functional.softplus(level)
    b0, b1 = float(sde.beta_min), float(sde.beta_max)
    if abs(b1 - b0) > 1e-12:
        t = (-b0 + torch.sqrt(b0**2 + 2.0 * (b1 - b0) * b)) / (b1 - b0)
    else:
        t = b / b0
    t = t.clamp(eps, T)
    beta = b0 + (b1 - b0) * t
    density = beta / (-torch.expm1(-(b0 * t + 0.5 * (b1 - b0) * t**2))) / normalizer
    return t.to(u.dtype), density.to(u.dtype)


def _grid_importance_time(sde: Any, u: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Numeric inverse CDF of ``q(t) ∝ g(t)²/σ(t)²`` for any SDE.

    The density is tabulated on a log-spaced grid over ``[eps, T]`` and the cell masses are found by the
    trapezoid rule; ``t`` is drawn as a cell (by mass) and then uniformly inside it, so the density that is
    returned — piecewise constant — is exactly the one sampled from and the importance weights stay
    unbiased however coarse the grid.
    """
    T = _terminal_time(sde)
    grid = torch.logspace(math.log10(eps), math.log10(T), _GRID_POINTS, dtype=torch.float64, device=u.device)
    grid[0], grid[-1] = eps, T
    g2 = sde.diffusion(grid) ** 2
    var = sde.marginal_std(grid) ** 2
    h = (g2 / var).double()
    if not bool(torch.isfinite(h).all()) or bool((h <= 0).any()):
        raise NotImplementedError(
            f"importance sampling of t needs g(t)²/σ(t)² finite and > 0 on [eps, T]; "
            f"{type(sde).__name__} violates this (try a larger eps or importance_sampling=False)"
        )
    widths = grid[1:] - grid[:-1]
    mass = 0.5 * (h[1:] + h[:-1]) * widths
    cdf = torch.cumsum(mass, 0)
    total = cdf[-1]
    target = u.double() * total
    cell = torch.searchsorted(cdf, target).clamp(max=mass.shape[0] - 1)
    before = torch.where(cell > 0, cdf[(cell - 1).clamp(min=0)], torch.zeros_like(target))
    frac = ((target - before) / mass[cell]).clamp(0.0, 1.0)
    t = grid[cell] + frac * widths[cell]
    density = mass[cell] / (widths[cell] * total)
    return t.to(u.dtype), density.to(u.dtype)


def _is_linear_vp(sde: Any) -> bool:
    # the closed form holds for the linear-β VP SDE only (SubVP shares beta_min/beta_max but not σ(t))
    return type(sde) is VPSDE


def sample_importance_time(
    sde: Any,
    num_samples: int,
    *,
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw diffusion times from ``q(t) ∝ g(t)² / σ(t)²`` on ``[eps, T]`` and return their density.

    This is the proposal that makes the likelihood-weighted DSM loss an expectation of a plain
    noise-prediction MSE: ``λ(t)/(q(t) σ(t)²) = Z`` with ``λ = g²`` and ``Z = ∫ g²/σ² dt``. For the linear
    VP SDE the inverse CDF is in closed form; for other SDEs it is built numerically on a grid of
    ``4097`` log-spaced times (exactly unbiased: the returned density is the one sampled from).

    Reference: Song, Durkan, Murray & Ermon (2021), "Maximum Likelihood Training of Score-Based
    Diffusion Models", arXiv:2101.09258, Sec. 5.1.

    Args:
        sde: a :class:`probgen.sde.SDE`.
        num_samples: ``B``.
        eps: smallest time (> 0; ``σ(0) = 0`` makes ``q`` non-integrable at 0).
        generator: optional random generator.
        device, dtype: of the returned tensors (float32 and CPU by default).

    Returns:
        ``(t, q)``: times ``(B,)`` and their density ``q(t)`` ``(B,)``.

    Example:
        >>> from probgen.sde import VPSDE
        >>> t, q = sample_importance_time(VPSDE(), 4, generator=torch.Generator().manual_seed(0))
        >>> t.shape, bool((q > 0).all())
        (torch.Size([4]), True)
    """
    num_samples = check_int("num_samples", num_samples, minimum=1)
    eps = check_positive("eps", eps)
    T = _terminal_time(sde)
    if eps >= T:
        raise ValueError(f"eps must be < sde.T = {T:g}, got {eps}")
    dtype = dtype or torch.get_default_dtype()
    u = torch.rand(num_samples, generator=generator, device=device or "cpu", dtype=torch.float64)
    if _is_linear_vp(sde):
        t, q = _vp_importance_time(sde, u, eps)
    else:
        t, q = _grid_importance_time(sde, u, eps)
    return t.to(dtype), q.to(dtype)


# ----------------------------------------------------------------------------------------------------
# denoising score matching
# ----------------------------------------------------------------------------------------------------


def dsm_loss(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    sde: Any,
    x: Tensor,
    *,
    weighting: str | Callable[[Tensor], Tensor] = "sigma2",
    importance_sampling: bool = False,
    eps: float = 1e-5,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Continuous-time denoising score matching for a diffusion SDE.

    Estimates

    .. math::

        \mathcal{L}(\theta) = \tfrac12 \int_{\epsilon}^{T} \lambda(t)\,
            \mathbb{E}_{x_0, x_t}\bigl\| s_\theta(x_t, t) - \nabla_{x_t}\log p_{0t}(x_t \mid x_0)\bigr\|^2 dt,
        \qquad x_t = \alpha(t) x_0 + \sigma(t) z,\; \nabla\log p_{0t} = -z/\sigma(t),

    with one ``t`` per example: ``t ~ U[eps, T]`` (each term multiplied by ``T - eps``), or, with
    ``importance_sampling=True``, ``t ~ q(t) ∝ g(t)²/σ(t)²`` (each term multiplied by ``λ(t)/q(t)``).
    Squared errors are summed over the event dimensions. Weightings:

    * ``"sigma2"``: ``λ(t) = σ(t)²`` — the usual DSM loss ``½ ‖σ s + z‖²`` (good samples);
    * ``"likelihood"``: ``λ(t) = g(t)²`` — then ``KL(p_data ‖ p_θ^{SDE}) ≤ ℒ(θ) - C + KL(p_T ‖ π)`` with
      ``C`` independent of ``θ``, i.e. the loss is, up to a constant, the bound on the NLL in nats;
    * a callable ``λ(t: (B,)) -> (B,)``.

    Importance sampling is the variance reduction of Song et al. (2021b) for the likelihood weighting
    (there the integrand is ``∝ 1/t`` near 0); it is refused for ``"sigma2"``, whose uniform-``t``
    estimator is already well-behaved.

    References:
        Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021), "Score-Based Generative Modeling
        through Stochastic Differential Equations", arXiv:2011.13456 (Eq. 7).
        Song, Durkan, Murray & Ermon (2021), "Maximum Likelihood Training of Score-Based Diffusion
        Models", arXiv:2101.09258 (Thm. 1, Sec. 5.1).

    Args:
        score_fn: ``score_fn(x_t, t) -> (B, *event)`` with ``x_t: (B, *event)``, ``t: (B,)``.
        sde: a :class:`probgen.sde.SDE` (``marginal``, ``marginal_std``, ``diffusion``, ``T``).
        x: data ``(B, *event)``.
        weighting: ``"sigma2"``, ``"likelihood"`` or a callable ``λ(t)``.
        importance_sampling: draw ``t`` from ``q ∝ g²/σ²`` (closed form for the VP SDE, numeric
            inverse CDF otherwise).
        eps: smallest diffusion time, ``0 < eps < T``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-example ``(B,)``).
        generator: optional random generator for ``t`` and the noise.

    Returns:
        A scalar, or ``(B,)`` with ``reduction="none"``.

    Example:
        >>> from probgen.sde import VPSDE
        >>> x = torch.randn(16, 2)
        >>> loss = dsm_loss(lambda x, t: -x, VPSDE(), x, weighting="likelihood", importance_sampling=True)
        >>> loss.shape
        torch.Size([])
    """
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable score_fn(x, t), got {type(score_fn).__name__}")
    x = check_tensor("x", x, min_ndim=2)
    weighting = check_choice_or_callable("weighting", weighting, _DSM_WEIGHTINGS)
    reduction = check_choice("reduction", reduction, _REDUCTIONS)
    eps = check_positive("eps", eps)
    check_bool("importance_sampling", importance_sampling)
    T = _terminal_time(sde)
    if eps >= T:
        raise ValueError(f"eps must be < sde.T = {T:g}, got {eps}")
    if importance_sampling and weighting == "sigma2":
        raise ValueError(
            "importance_sampling=True is for weighting='likelihood' (or a callable weighting); "
            "with weighting='sigma2' use importance_sampling=False"
        )

    batch = x.shape[0]
    if importance_sampling:
        t, density = sample_importance_time(
            sde, batch, eps=eps, generator=generator, device=x.device, dtype=x.dtype
        )
    else:
        u = torch.rand(batch, generator=generator, device=x.device, dtype=x.dtype)
        t = eps + (T - eps) * u
        density = torch.full_like(t, 1.0 / (T - eps))

    # t is drawn in [eps, T] here, so the SDE's unchecked twins are safe (no per-step validation syncs)
    alpha, std = sde.mean_scale(t), sde.std(t)
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_t = append_dims(alpha, x.dim()) * x + append_dims(std, x.dim()) * z
    score = check_output_shape("score_fn", score_fn(x_t, t), x.shape)
    # ‖s + z/σ‖² = ‖σ s + z‖² / σ²: written this way the noise parameterisation (σ s = -ε̂) loses no digits
    err = batch_sum((append_dims(std, x.dim()) * score + z) ** 2)
    var = std**2
    if weighting == "sigma2":
        ratio = torch.ones_like(t)  # λ/σ² = 1
    elif weighting == "likelihood":
        ratio = sde.g(t) ** 2 / var
    else:
        lam = weighting(t)
        if not isinstance(lam, Tensor) or tuple(lam.shape) != (batch,):
            got = tuple(lam.shape) if isinstance(lam, Tensor) else type(lam).__name__
            raise ValueError(f"weighting(t) must return a tensor of shape ({batch},), got {got}")
        ratio = lam / var
    per_example = 0.5 * ratio * err / density
    return _reduce(per_example, reduction)


def multi_noise_dsm_loss(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    sigmas: Tensor | Sequence[float],
    *,
    weighting: str | Callable[[Tensor], Tensor] = "sigma2",
    reduction: str = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""NCSN's denoising score matching over a finite set of noise levels.

    .. math::

        \mathcal{L}(\theta) = \frac1L \sum_{i=1}^{L} \lambda(\sigma_i)\,
            \tfrac12\, \mathbb{E}\bigl\| s_\theta(x + \sigma_i z, \sigma_i) + z/\sigma_i \bigr\|^2,

    estimated with one level drawn uniformly per example. ``λ(σ) = σ²`` (``"sigma2"``, Song & Ermon's
    choice, which makes every level's term O(1)), ``1`` (``"none"``) or a callable ``λ(σ: (B,)) -> (B,)``.

    Reference: Song & Ermon (2019), "Generative Modeling by Estimating Gradients of the Data
    Distribution", arXiv:1907.05600 (Eq. 5–6).

    Args:
        score_fn: ``score_fn(x_noisy, sigma) -> (B, *event)``, ``sigma: (B,)`` the noise level.
        x: data ``(B, *event)``.
        sigmas: the ``L`` noise levels, positive, ``(L,)``.
        weighting: ``"sigma2"``, ``"none"`` or a callable.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        generator: optional random generator.

    Returns:
        A scalar, or ``(B,)`` with ``reduction="none"``.

    Example:
        >>> x = torch.randn(8, 2)
        >>> multi_noise_dsm_loss(lambda x, s: -x, x, torch.tensor([1.0, 0.5, 0.1])).shape
        torch.Size([])
    """
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable score_fn(x, sigma), got {type(score_fn).__name__}")
    x = check_tensor("x", x, min_ndim=2)
    weighting = check_choice_or_callable("weighting", weighting, _NOISE_WEIGHTINGS)
    reduction = check_choice("reduction", reduction, _REDUCTIONS)
    sigmas = torch.as_tensor(sigmas, dtype=x.dtype, device=x.device)
    if sigmas.dim() != 1 or sigmas.numel() == 0:
        raise ValueError(f"sigmas must be a non-empty 1-D sequence of noise levels, got shape {tuple(sigmas.shape)}")
    if not bool(torch.isfinite(sigmas).all()) or bool((sigmas <= 0).any()):
        raise ValueError(f"sigmas must be finite and > 0, got {sigmas.tolist()}")

    batch = x.shape[0]
    index = torch.randint(0, sigmas.shape[0], (batch,), generator=generator, device=x.device)
    sigma = sigmas[index]
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    s = append_dims(sigma, x.dim())
    score = check_output_shape("score_fn", score_fn(x + s * z, sigma), x.shape)
    err = batch_sum((s * score + z) ** 2)  # = σ² ‖s + z/σ‖²
    if weighting == "sigma2":
        per_example = 0.5 * err
    elif weighting == "none":
        per_example = 0.5 * err / sigma**2
    else:
        lam = weighting(sigma)
        if not isinstance(lam, Tensor) or tuple(lam.shape) != (batch,):
            got = tuple(lam.shape) if isinstance(lam, Tensor) else type(lam).__name__
            raise ValueError(f"weighting(sigma) must return a tensor of shape ({batch},), got {got}")
        per_example = 0.5 * lam * err / sigma**2
    return _reduce(per_example, reduction)


# ----------------------------------------------------------------------------------------------------
# sliced score matching
# ----------------------------------------------------------------------------------------------------
