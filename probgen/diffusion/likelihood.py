"""Exact log-likelihood of a score-based model through the probability-flow ODE.

The probability-flow ODE ``dx/dt = v(x, t) = f(x, t) - 1/2 g(t)^2 s(x, t)`` carries ``p_eps`` to
``p_T`` (Song et al., 2021, Sec. 4.3), so it is a continuous normalizing flow and the instantaneous
change of variables (Chen et al., 2018) gives

.. math::

    \\log p_\\epsilon(x) = \\log p_T(x_T) + \\int_\\epsilon^T \\nabla_x \\cdot v(x_t, t)\\, dt,
    \\qquad x_\\epsilon = x,

solved jointly for ``(x_t, int div)`` by the one ODE core, :func:`probgen.ops.odeint_logdet` (the
same integrator as the CNF and flow matching). The divergence is the exact trace of the Jacobian (``D``
batched vector–Jacobian products) or Hutchinson's unbiased estimate with probes drawn once per solve
(FFJORD).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from probgen._checks import check_output_shape, check_tensor
from probgen.data.quantize import bits_per_dim
from probgen.ops.ode import ODESolver, odeint_logdet, owner_params as _owner_params
from probgen.samplers.base import check_eps, check_sde
from probgen.sde.base import SDE, ScoreFn

__all__ = ["ode_log_prob", "bits_per_dim"]


def ode_log_prob(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    *,
    eps: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    trace: str = "exact",
    num_probes: int = 1,
    noise: str = "rademacher",
    method: str = "dopri5",
    steps: int | None = None,
    adjoint: bool = False,
    adjoint_params: Iterable[Tensor] | None = None,
    batch_size: int | None = None,
    prior_log_prob: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    return_nfe: bool = False,
) -> Tensor | tuple[Tensor, int]:
    """Log-density ``log p_eps(x)`` in nats through the probability-flow ODE.

    .. math::

        \\log p_\\epsilon(x) = \\log p_T(x_T) + \\int_\\epsilon^T
        \\operatorname{tr}\\Big(\\frac{\\partial v}{\\partial x}(x_t, t)\\Big) dt, \\quad
        v = f - \\tfrac12 g^2 s.

    Gradients flow to ``x`` and to the score's parameters when autograd is enabled (wrap plain
    evaluations in ``torch.no_grad()`` to save memory; with ``adjoint=True`` memory is constant in the
    number of solver steps).

    Args:
        score_fn: ``score_fn(x, t) -> Tensor like x``, ``x: (B, *event)``, ``t: (B,)``; must act per
            sample (no batch norm).
        sde: the forward SDE whose probability-flow ODE is integrated.
        x: data ``(B, *event)``, finite floats.
        eps: start time in ``(0, T)``: the result is the density of ``p_eps``, the data law after the
            forward SDE ran for ``eps`` (``p_0`` itself is singular for the score).
        rtol, atol: adaptive solver tolerances (``> 0``).
        trace: ``"exact"`` (``D`` batched VJPs per evaluation) or ``"hutchinson"`` (unbiased).
        num_probes: Hutchinson probes averaged at each evaluation (``>= 1``), fixed over one solve.
        noise: Hutchinson probe law, ``"rademacher"`` or ``"gaussian"``.
        method: a torchdiffeq solver (``probgen.samplers.ODE_METHODS``): adaptive ``"dopri5"``,
            ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``, ``"adaptive_heun"`` or fixed-step ``"euler"``,
            ``"midpoint"``, ``"heun2"``, ``"heun3"``, ``"rk4"``, ``"explicit_adams"``,
            ``"implicit_adams"``, ``"fixed_adams"`` (these need ``steps``).
        steps: number of uniform steps for a fixed-step method.
        adjoint: solve with ``torchdiffeq.odeint_adjoint`` (constant-memory gradients).
        adjoint_params: parameters to differentiate with the adjoint; default: those of ``score_fn``
            when it is an ``nn.Module`` or a bound method of one, else none.
        batch_size: solve at most this many rows of ``x`` at a time (bounded memory).
        prior_log_prob: ``(B, *event) -> (B,)`` log density used at ``t = T``; default
            ``sde.prior_log_prob``. (Pass the exact ``p_T`` when it is known, e.g. in tests.)
        generator: seeds the Hutchinson probes.
        return_nfe: also return the number of evaluations of the ODE right-hand side (summed over
            chunks); each evaluates the score once plus ``D`` (exact) or ``num_probes`` VJPs.

    Returns:
        ``log p_eps(x)``, shape ``(B,)``, on ``x``'s device and dtype (and the NFE if asked).

    Reference:
        Song et al. (2021), arXiv:2011.13456, Sec. 4.3 and Appendix D.2; Chen et al. (2018),
        arXiv:1806.07366; Grathwohl et al. (2019), FFJORD, arXiv:1810.01367.

    Example:
        >>> from probgen.sde import VPSDE
        >>> x = torch.zeros(2, 3, dtype=torch.float64)
        >>> lp = ode_log_prob(lambda x, t: -x, VPSDE(), x)  # data N(0, I) stays N(0, I) under VP
        >>> [round(v, 4) for v in lp.tolist()]
        [-2.7568, -2.7568]
    """
    sde = check_sde(sde)
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
    x = check_tensor("x", x, min_ndim=2)
    eps = check_eps(eps, sde.T)
    solver = ODESolver(method, rtol=rtol, atol=atol, steps=steps)
    if prior_log_prob is None:
        prior_log_prob = sde.log_prior
    elif not callable(prior_log_prob):
        raise TypeError(f"prior_log_prob must be callable (B, *event) -> (B,) or None, "
                        f"got {type(prior_log_prob).__name__}")

    def velocity(y: Tensor, time: Tensor) -> Tensor:
        return sde.reverse_f(score_fn, y, time, weight=0.5)

    if adjoint and adjoint_params is None:
        adjoint_params = _owner_params(score_fn)
    x_T, logdet, nfe = odeint_logdet(velocity, x, eps, sde.T, solver=solver, trace=trace, num_probes=num_probes,
                                     noise=noise, generator=generator, adjoint=adjoint,
                                     adjoint_params=adjoint_params, batch_size=batch_size)
    prior = check_output_shape("prior_log_prob", prior_log_prob(x_T), (x.shape[0],))
    log_prob = prior + logdet
    return (log_prob, nfe) if return_nfe else log_prob
