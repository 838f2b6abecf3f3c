"""Probability-flow ODE sampler through ``torchdiffeq``.

.. math::

    \\frac{dx}{dt} = f(x, t) - \\tfrac12 g(t)^2 \\nabla_x \\log p_t(x), \\qquad x_T \\sim p_T,

integrated from ``T`` down to ``eps``; its solution has the same marginals ``p_t`` as the forward SDE
(Song et al., 2021, Sec. 4.3), so it is a deterministic map from the prior to the data. Written once in
σ-space (:func:`sample_probability_flow`, the one signature, through the ODE core :mod:`probgen.ops.ode`);
:func:`sample_ode` is its front end over a score and an SDE.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from probgen._checks import check_choice
from probgen.ops.ode import ADAPTIVE_METHODS, FIXED_STEP_METHODS, ODE_METHODS, ODESolver, odeint_velocity
from probgen.samplers.base import (
    Callback,
    SampleResult,
    SigmaCallback,
    check_sigma_sampler,
    denoise_to_zero,
    positive_levels,
    run_on_sde,
)
from probgen.samplers.denoiser import Denoiser
from probgen.sde.base import SDE, ScoreFn

__all__ = ["sample_probability_flow", "sample_ode", "ODE_METHODS", "ADAPTIVE_METHODS", "FIXED_STEP_METHODS"]


def sample_probability_flow(model: Denoiser, x: Tensor, sigmas: Tensor, *, callback: SigmaCallback | None = None,
                            generator: torch.Generator | None = None, method: str = "dopri5", rtol: float = 1e-5,
                            atol: float = 1e-5) -> Tensor:
    r"""The probability-flow ODE of σ-space through the one ODE core, in ``u = \log σ``:

    .. math::

        \frac{dx}{du} = x - D(x, e^u), \qquad u: \log σ_0 \to \log σ_K

    (``dx/dσ = (x - D)/σ``; ``\log σ`` keeps the field smooth near ``σ_min``), integrated by
    :func:`probgen.ops.odeint_velocity`. An adaptive ``method`` (:data:`ADAPTIVE_METHODS`) solves the whole span
    at ``rtol``/``atol`` (interval by interval when a ``callback`` is given); a fixed-step one
    (:data:`FIXED_STEP_METHODS`) takes one step per interval of ``sigmas``. A last ``σ = 0`` returns the
    denoised ``D(x, σ_K)`` (Tweedie). ``callback(i, x, σ_{i+1}, None)`` after each interval.

    Reference: Song et al. (2021), arXiv:2011.13456, Sec. 4.3; Karras et al. (2022), arXiv:2206.00364, eq. 4.

    Example:
        >>> from probgen.samplers.karras import karras_sigmas
        >>> d = Denoiser(lambda x, s: x / (1 + s[:, None] ** 2), sigma_min=0.002, sigma_max=80.0)   # N(0, 1) data
        >>> z = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> x = sample_probability_flow(d, 80.0 * z, karras_sigmas(10, 0.002, 80.0, dtype=torch.float64))
        >>> torch.allclose(x, z * (1 + 0.002**2) ** 0.5 * 80.0 / (1 + 80.0**2) ** 0.5, atol=1e-4)   # exact transport
        True
    """
    x, sigmas = check_sigma_sampler(model, x, sigmas, callback)
    positive = positive_levels(sigmas)
    adaptive = check_choice("method", method, ODE_METHODS) in ADAPTIVE_METHODS
    solver = ODESolver(method, rtol=rtol, atol=atol, steps=None if adaptive else 1)

    def velocity(y: Tensor, u: Tensor) -> Tensor:
        return y - model(y, u.exp())

    logs = positive.log().tolist()
    knots = [0, len(logs) - 1] if adaptive and callback is None else list(range(len(logs)))
    with torch.no_grad():
        for i, j in zip(knots[:-1], knots[1:]):
            x = odeint_velocity(velocity, x, logs[i], logs[j], solver=solver)[0][-1]
            if callback is not None:
                callback(i, x, float(positive[j]), None)
        return denoise_to_zero(model, x, sigmas, callback)


def sample_ode(
    score_fn: ScoreFn,
    sde: SDE,
    shape: Sequence[int],
    *,
    method: str = "dopri5",
    steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-3,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    x_init: Tensor | None = None,
) -> SampleResult:
    """Sample by integrating the probability-flow ODE ``dx/dt = f - 1/2 g^2 s`` from ``T`` to ``eps``.

    A front end of :func:`sample_probability_flow`: the same ODE in σ-space (``x̃ = x/α(t)``,
    ``σ̃ = σ(t)/α(t)``) from ``σ̃(T)`` to ``σ̃(eps)``, mapped back by ``x = α(eps) x̃``; a fixed-step
    ``method`` steps on the σ's of the uniform time grid ``T = t_0 > … > t_steps = eps``.

    Args:
        score_fn: ``score_fn(x, t) -> Tensor like x``, ``x: (B, *event)``, ``t: (B,)``; or a model's
            :class:`~probgen.samplers.Denoiser` of the same SDE.
        sde: the forward SDE.
        shape: ``(B, *event)`` of the draws.
        method: a torchdiffeq solver; adaptive: ``"dopri5"``, ``"dopri8"``, ``"bosh3"``,
            ``"fehlberg2"``, ``"adaptive_heun"`` (use ``rtol``/``atol``); fixed-step: ``"euler"``,
            ``"midpoint"``, ``"heun2"``, ``"heun3"``, ``"rk4"``, ``"explicit_adams"``,
            ``"implicit_adams"``, ``"fixed_adams"`` (need ``steps``).
        steps: number of steps, for fixed-step methods only.
        rtol, atol: tolerances of adaptive methods (``> 0``).
        eps: final time, in ``(0, T)``.
        denoise: finish with Tweedie's posterior mean ``(x + sigma^2 s) / alpha`` at ``eps``.
        generator: seeds the prior draw.
        callback: ``callback(i, x, t)`` after each step of a fixed-step method (after the whole solve, at
            ``t = eps``, for an adaptive one).
        device, dtype: of the prior draw (ignored when ``x_init`` is given).
        x_init: start from this ``(B, *event)`` tensor instead of a prior draw.

    Returns:
        :class:`SampleResult` with ``samples`` and ``nfe`` (score calls made by the solver).

    Reference:
        Song et al. (2021), arXiv:2011.13456, Sec. 4.3; Chen et al. (2018), arXiv:1806.07366
        (torchdiffeq).

    Example:
        >>> from probgen.sde import VPSDE
        >>> out = sample_ode(lambda x, t: -x, VPSDE(), (8, 2), method="rk4", steps=10)
        >>> out.nfe
        40
    """
    solver = ODESolver(method, rtol=rtol, atol=atol, steps=steps)
    x, nfe, eps = run_on_sde(sample_probability_flow, score_fn, sde, shape, num_steps=1 if solver.adaptive else steps,
                             eps=eps, denoise=denoise, callback=callback, x_init=x_init, generator=generator,
                             device=device, dtype=dtype, method=method, rtol=rtol, atol=atol)
    return SampleResult(samples=x, nfe=nfe, info={"method": method, "steps": steps, "eps": eps})
