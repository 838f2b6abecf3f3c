"""Probability-flow ODE sampler through ``torchdiffeq``.

.. math::

    \\frac{dx}{dt} = f(x, t) - \\tfrac12 g(t)^2 \\nabla_x \\log p_t(x), \\qquad x_T \\sim p_T,

integrated from ``T`` down to ``eps``; its solution has the same marginals ``p_t`` as the forward SDE
(Song et al., 2021, Sec. 4.3), so it is a deterministic map from the prior to the data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from probgen.ops.ode import ADAPTIVE_METHODS, FIXED_STEP_METHODS, ODE_METHODS, ODESolver, odeint_velocity
from probgen.samplers.base import (
    Callback,
    SampleResult,
    _check_callback,
    _check_eps,
    _check_sde,
    _CountedScore,
    _initial_state,
    _time,
)
from probgen.sde.base import SDE, ScoreFn

__all__ = ["sample_ode", "ODE_METHODS", "ADAPTIVE_METHODS", "FIXED_STEP_METHODS"]


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

    Args:
        score_fn: ``score_fn(x, t) -> Tensor like x``, ``x: (B, *event)``, ``t: (B,)``.
        sde: the forward SDE.
        shape: ``(B, *event)`` of the draws.
        method: a torchdiffeq solver; adaptive: ``"dopri5"``, ``"dopri8"``, ``"bosh3"``,
            ``"fehlberg2"``, ``"adaptive_heun"`` (use ``rtol``/``atol``); fixed-step: ``"euler"``,
            ``"midpoint"``, ``"heun2"``, ``"heun3"``, ``"rk4"``, ``"explicit_adams"``,
            ``"implicit_adams"``, ``"fixed_adams"`` (need ``steps``).
        steps: number of uniform steps, for fixed-step methods only.
        rtol, atol: tolerances of adaptive methods (``> 0``).
        eps: final time, in ``(0, T)``.
        denoise: finish with Tweedie's posterior mean ``(x + sigma^2 s) / alpha`` at ``eps``.
        generator: seeds the prior draw.
        callback: ``callback(i, x, t)`` at the output times (``x_T`` then the end point; every grid
            point for fixed-step methods), called after the solve.
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
    sde = _check_sde(sde)
    score = _CountedScore(score_fn)
    eps = _check_eps(eps, sde.T)
    callback = _check_callback(callback)
    x = _initial_state(sde, shape, x_init=x_init, generator=generator, device=device, dtype=dtype)
    solver = ODESolver(method, rtol=rtol, atol=atol, steps=steps)

    def velocity(x: Tensor, time: Tensor) -> Tensor:
        return sde.reverse_f(score, x, time, weight=0.5)

    num_out = steps + 1 if (callback is not None and steps is not None) else 2
    xs, _ = odeint_velocity(velocity, x, sde.T, eps, solver=solver, num_outputs=num_out)
    if callback is not None:
        ts = torch.linspace(sde.T, eps, num_out, dtype=x.dtype, device=x.device)
        for i in range(ts.shape[0]):
            callback(i, xs[i], float(ts[i]))
    x = xs[-1]
    if denoise:
        t_end = _time(x, eps)
        x = sde.tweedie(score(x, t_end), x, t_end)
    return SampleResult(samples=x, nfe=score.calls, info={"method": method, "steps": steps, "eps": eps})
