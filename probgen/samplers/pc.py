"""Predictor–corrector sampler (Song et al., 2021, Algorithm "PC sampling").

Each of ``steps`` steps from ``t_i`` to ``t_{i+1}`` on the grid ``T = t_0 > ... > t_steps = eps``
runs ``corrector_steps`` Langevin corrector moves at ``t_i`` and then one predictor move:

* predictor ``"reverse_diffusion"``: the forward discretisation ``(f, G)`` reversed,
  ``x <- x - (f - G^2 s) + G z`` (ancestral DDPM step for VP, SMLD for VE);
* predictor ``"euler_maruyama"``: ``x <- x - (f - g^2 s) dt + g sqrt(dt) z``;
* corrector ``"langevin"``: ``x <- x + e s + sqrt(2 e) z`` with
  ``e = 2 alpha_i (snr |z| / |s|)^2`` (norms averaged over the batch), as in score_sde_pytorch's
  ``LangevinCorrector``; ``"none"`` skips it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from probgen._checks import check_choice, check_int, check_positive
from probgen.ops.shapes import append_dims, flatten_event
from probgen.samplers.base import (
    Callback,
    SampleResult,
    _check_callback,
    _check_eps,
    _check_sde,
    _CountedScore,
    _initial_state,
    _randn_like,
    _time,
)
from probgen.sde.base import SDE, ScoreFn

__all__ = ["sample_pc", "PREDICTORS", "CORRECTORS"]

PREDICTORS = ("reverse_diffusion", "euler_maruyama")
CORRECTORS = ("langevin", "none")


def _langevin_correct(score: _CountedScore, sde: SDE, x: Tensor, t: Tensor, dt: float, snr: float,
                      generator: torch.Generator | None) -> Tensor:
    grad = score(x, t)
    noise = _randn_like(x, generator)
    grad_norm = flatten_event(grad).norm(dim=-1).mean()
    noise_norm = flatten_event(noise).norm(dim=-1).mean()
    ratio = snr * noise_norm / grad_norm.clamp_min(torch.finfo(x.dtype).tiny)
    # a vanishing score (e.g. an untrained, zero-initialised network) gives no information to correct with:
    # skip the corrector step rather than take an infinite one
    step = torch.where(grad_norm > 0, 2.0 * sde.corrector_alpha(t, dt) * ratio**2, torch.zeros_like(t))
    step = append_dims(step, x.dim())
    return x + step * grad + (2.0 * step).sqrt() * noise


def _predict(predictor: str, score: _CountedScore, sde: SDE, x: Tensor, t: Tensor, dt: float,
             generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """One reverse step from ``t`` to ``t - dt``: returns ``(x_new, x_mean)``."""
    if predictor == "reverse_diffusion":
        f, G = sde.step_coefficients(x, t, dt)
        x_mean = x - (f - append_dims(G**2, x.dim()) * score(x, t))
        noise_scale = G
    else:
        x_mean = x - sde.reverse_f(score, x, t) * dt
        noise_scale = sde.g(t) * math.sqrt(dt)
    return x_mean + append_dims(noise_scale, x.dim()) * _randn_like(x, generator), x_mean


def sample_pc(
    score_fn: ScoreFn,
    sde: SDE,
    shape: Sequence[int],
    *,
    steps: int = 1000,
    corrector_steps: int = 1,
    snr: float = 0.16,
    predictor: str = "reverse_diffusion",
    corrector: str = "langevin",
    eps: float = 1e-3,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    x_init: Tensor | None = None,
) -> SampleResult:
    """Predictor–corrector sampling of the reverse-time SDE from ``T`` to ``eps``.

    Predictor (``reverse_diffusion``): ``x <- x - (f - G^2 s(x, t)) + G z`` with ``(f, G)`` the forward
    discretisation of ``sde`` over ``dt``. Corrector (``langevin``): ``x <- x + e s + sqrt(2 e) z``,
    ``e = 2 alpha (snr ||z|| / ||s||)^2``.

    Args:
        score_fn: ``score_fn(x, t) -> Tensor like x``, ``x: (B, *event)``, ``t: (B,)``.
        sde: the forward SDE.
        shape: ``(B, *event)`` of the draws.
        steps: predictor steps (``>= 1``) on a uniform grid from ``T`` to ``eps``.
        corrector_steps: Langevin moves before each predictor step (``>= 0``).
        snr: signal-to-noise ratio setting the corrector's step size (``> 0``).
        predictor: ``"reverse_diffusion"`` or ``"euler_maruyama"``.
        corrector: ``"langevin"`` or ``"none"``.
        eps: final time, in ``(0, T)``.
        denoise: return the noise-free mean of the last predictor step (score_sde's noise removal).
        generator: seeds the prior draw and every Gaussian draw.
        callback: ``callback(i, x, t)`` after predictor step ``i`` (``x`` now at time ``t``).
        device, dtype: of the prior draw (ignored when ``x_init`` is given).
        x_init: start from this ``(B, *event)`` tensor instead of a prior draw.

    Returns:
        :class:`SampleResult` with ``samples`` and ``nfe = steps * (1 + corrector_steps)`` (with a
        Langevin corrector).

    Reference:
        Song et al. (2021), arXiv:2011.13456, Algorithms 2–3 and Appendix G.

    Example:
        >>> from probgen.sde import VESDE
        >>> out = sample_pc(lambda x, t: -x, VESDE(sigma_max=5.0), (8, 2), steps=10)
        >>> out.nfe
        20
    """
    sde = _check_sde(sde)
    score = _CountedScore(score_fn)
    steps = check_int("steps", steps, minimum=1)
    corrector_steps = check_int("corrector_steps", corrector_steps, minimum=0)
    snr = check_positive("snr", snr)
    check_choice("predictor", predictor, PREDICTORS)
    check_choice("corrector", corrector, CORRECTORS)
    eps = _check_eps(eps, sde.T)
    callback = _check_callback(callback)
    x = _initial_state(sde, shape, x_init=x_init, generator=generator, device=device, dtype=dtype)

    times = torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64).tolist()
    x_mean = x
    for i in range(steps):
        t_now, dt = times[i], times[i] - times[i + 1]
        t = _time(x, t_now)
        if corrector == "langevin":
            for _ in range(corrector_steps):
                x = _langevin_correct(score, sde, x, t, dt, snr, generator)
        x, x_mean = _predict(predictor, score, sde, x, t, dt, generator)
        if callback is not None:
            callback(i, x, times[i + 1])
    samples = x_mean if denoise else x
    return SampleResult(samples=samples, nfe=score.calls, info={"steps": steps, "eps": eps})
