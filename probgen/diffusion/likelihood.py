"""Exact log-likelihood of a score-based model through the probability-flow ODE.

The probability-flow ODE ``dx/dt = v(x, t) = f(x, t) - 1/2 g(t)^2 s(x, t)`` carries ``p_eps`` to
``p_T`` (Song et al., 2021, Sec. 4.3), so it is a continuous normalizing flow and the instantaneous
change of variables (Chen et al., 2018) gives

.. math::

    \\log p_\\epsilon(x) = \\log p_T(x_T) + \\int_\\epsilon^T \\nabla_x \\cdot v(x_t, t)\\, dt,
    \\qquad x_\\epsilon = x,

solved jointly for ``(x_t, int div)`` with torchdiffeq. The divergence is the exact trace of the
Jacobian (``D`` batched vector–Jacobian products) or Hutchinson's unbiased estimate with probes drawn
once per solve (FFJORD).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from probgen._checks import check_choice, check_int, check_output_shape, check_positive, check_tensor
from probgen.data.digits import bits_per_dim
from probgen.ops.trace import DIVERGENCE_METHODS, PROBE_NOISES, divergence, sample_probes
from probgen.samplers.base import _check_eps, _check_sde
from probgen.samplers.ode import _solver_options
from probgen.sde.base import SDE, ScoreFn

__all__ = ["ode_log_prob", "bits_per_dim"]


class _AugmentedDynamics(nn.Module):
    """``d/dt (x, l) = (v(x, t), div v(x, t))`` for the probability-flow velocity ``v``.

    An ``nn.Module`` so that ``odeint_adjoint`` accepts it; the score's module (if any) is registered
    as a submodule.
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn, trace: str, probes: Tensor | None, owner: nn.Module | None):
        super().__init__()
        self.sde = sde
        self.score_fn = score_fn
        self.trace = trace
        self.probes = probes
        self.owner = owner
        self.nfe = 0

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x = state[0]
        self.nfe += 1
        # torchdiffeq's first-step heuristic (and the adjoint's backward solve) may probe times just
        # outside [eps, T]; the dynamics are held constant there, which leaves the solution unchanged.
        time = t.to(x.dtype).clamp(0.0, self.sde.T).expand(x.shape[0])

        def velocity(y: Tensor) -> Tensor:
            return self.sde.reverse_f(self.score_fn, y, time, weight=0.5)

        v, div = divergence(velocity, x, method=self.trace, probes=self.probes,
                            create_graph=torch.is_grad_enabled())
        return v, div


def _owner_module(score_fn: ScoreFn) -> nn.Module | None:
    if isinstance(score_fn, nn.Module):
        return score_fn
    owner = getattr(score_fn, "__self__", None) if inspect.ismethod(score_fn) else None
    return owner if isinstance(owner, nn.Module) else None


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
    sde = _check_sde(sde)
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
    x = check_tensor("x", x, min_ndim=2)
    eps = _check_eps(eps, sde.T)
    rtol = check_positive("rtol", rtol)
    atol = check_positive("atol", atol)
    check_choice("trace", trace, DIVERGENCE_METHODS)
    check_choice("noise", noise, PROBE_NOISES)
    num_probes = check_int("num_probes", num_probes, minimum=1)
    solver = _solver_options(method, steps, sde.T - eps, rtol=rtol, atol=atol,
                             end=torch.tensor(sde.T, dtype=x.dtype, device=x.device))
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    if prior_log_prob is None:
        prior_log_prob = sde.prior_log_prob
    elif not callable(prior_log_prob):
        raise TypeError(f"prior_log_prob must be callable (B, *event) -> (B,) or None, "
                        f"got {type(prior_log_prob).__name__}")
    owner = _owner_module(score_fn)
    if adjoint:
        if adjoint_params is None:
            adjoint_params = tuple(owner.parameters()) if owner is not None else ()
        else:
            adjoint_params = tuple(adjoint_params)
    elif adjoint_params is not None:
        raise ValueError("adjoint_params is only used with adjoint=True, got adjoint=False")

    times = torch.tensor([eps, sde.T], dtype=x.dtype, device=x.device)
    chunks = x.split(batch_size) if batch_size is not None else (x,)
    out, nfe = [], 0
    for chunk in chunks:
        probes = None
        if trace == "hutchinson":
            probes = sample_probes(chunk, num_probes=num_probes, noise=noise, generator=generator)
        dynamics = _AugmentedDynamics(sde, score_fn, trace, probes, owner)
        state = (chunk, chunk.new_zeros(chunk.shape[0]))
        if adjoint:
            xs, divs = odeint_adjoint(dynamics, state, times, adjoint_params=adjoint_params, **solver)
        else:
            xs, divs = odeint(dynamics, state, times, **solver)
        prior = check_output_shape("prior_log_prob", prior_log_prob(xs[-1]), (chunk.shape[0],))
        out.append(prior + divs[-1])
        nfe += dynamics.nfe
    log_prob = torch.cat(out) if len(out) > 1 else out[0]
    return (log_prob, nfe) if return_nfe else log_prob
