r"""The one continuous-time core: integrate ``x`` (and its log-determinant) through torchdiffeq.

Every continuous-time family reduces to a velocity field ``v(x, t)``: a CNF's network, a
flow-matching model's velocity, the probability-flow ODE ``f - ½ g² s`` of a score SDE, of a DDPM's VP
bridge or of EDM's σ-ODE. This module integrates it, optionally with the instantaneous change of
variables (Chen et al. 2018)

.. math::

    \frac{d}{dt}\begin{pmatrix} x \\ \ell \end{pmatrix} =
    \begin{pmatrix} v(x, t) \\ \operatorname{tr} \partial_x v(x, t) \end{pmatrix},
    \qquad \ell(t_1) = \log\Big|\det \frac{\partial x(t_1)}{\partial x(t_0)}\Big|,

with one list of solvers (:data:`ODE_METHODS`), the exact trace or Hutchinson's estimate with probes
fixed over a solve (FFJORD), plain back-propagation or the adjoint method, chunking of the batch and
counting of evaluations. :func:`odeint_velocity` integrates ``x`` alone (samplers);
:func:`odeint_logdet` integrates ``(x, ℓ)`` (likelihoods).

Shapes: ``x: (B, *event)``; ``velocity(x, t) -> (B, *event)`` with ``t: (B,)``; acts per sample.

References:
    Chen, Rubanova, Bettencourt & Duvenaud (2018), arXiv:1806.07366 (torchdiffeq);
    Grathwohl et al. (2019), FFJORD, arXiv:1810.01367.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from probgen._checks import check_bool, check_choice, check_int, check_positive, check_tensor
from probgen.ops.dopri import dopri5_solve
from probgen.ops.trace import DIVERGENCE_METHODS, PROBE_NOISES, divergence, sample_probes

__all__ = [
    "ADAPTIVE_METHODS",
    "FIXED_STEP_METHODS",
    "ODE_METHODS",
    "Velocity",
    "ODESolver",
    "odeint_velocity",
    "odeint_logdet",
    "owner_params",
]

ADAPTIVE_METHODS: tuple[str, ...] = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
"""torchdiffeq solvers with error control (use ``rtol``/``atol``)."""
FIXED_STEP_METHODS: tuple[str, ...] = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams",
                                       "implicit_adams", "fixed_adams")
"""torchdiffeq fixed-grid solvers (need ``steps`` or ``step_size``)."""
ODE_METHODS: tuple[str, ...] = ADAPTIVE_METHODS + FIXED_STEP_METHODS
"""Every solver the continuous-time families accept: the one list."""

Velocity = Callable[[Tensor, Tensor], Tensor]
"""``velocity(x, t) -> Tensor like x`` with ``x: (B, *event)``, ``t: (B,)``."""


@dataclass(frozen=True)
class ODESolver:
    """Validated solver settings, built once at a public entry and reused by every solve.

    Args:
        method: a name in :data:`ODE_METHODS`.
        rtol, atol: tolerances of adaptive methods (``> 0``).
        steps: number of uniform steps over the span, for fixed-step methods (xor ``step_size``).
        step_size: step length of fixed-step methods (xor ``steps``).

    Example:
        >>> ODESolver("rk4", steps=10).kwargs(span=1.0, end=torch.tensor(0.0))["options"]
        {'step_size': 0.1}
    """

    method: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    steps: int | None = None
    step_size: float | None = None

    def __post_init__(self) -> None:
        check_choice("method", self.method, ODE_METHODS)
        object.__setattr__(self, "rtol", check_positive("rtol", self.rtol))
        object.__setattr__(self, "atol", check_positive("atol", self.atol))
        if self.method in FIXED_STEP_METHODS:
            if self.steps is None and self.step_size is None:
                raise ValueError(f"steps is required for the fixed-step method {self.method!r} (an integer >= 1); "
                                 f"adaptive methods: {', '.join(map(repr, ADAPTIVE_METHODS))}")
            if self.steps is not None and self.step_size is not None:
                raise ValueError(f"give steps or step_size, not both (got steps={self.steps}, "
                                 f"step_size={self.step_size})")
            if self.steps is not None:
                object.__setattr__(self, "steps", check_int("steps", self.steps, minimum=1))
            else:
                object.__setattr__(self, "step_size", check_positive("step_size", self.step_size))
        elif self.steps is not None:
            raise ValueError(f"steps is only used by fixed-step methods ({', '.join(map(repr, FIXED_STEP_METHODS))}); "
                             f"the adaptive method {self.method!r} sets its steps from rtol/atol, got steps={self.steps!r}")

    @property
    def adaptive(self) -> bool:
        return self.method in ADAPTIVE_METHODS

    @property
    def lean(self) -> bool:
        """Solved by :func:`probgen.ops.dopri.dopri5_solve` (same steps as torchdiffeq's dopri5, less bookkeeping)
        when only the end point is asked for and no adjoint is used."""
        return self.method == "dopri5"

    def kwargs(self, *, span: float, end: Tensor) -> dict[str, Any]:
        """torchdiffeq keyword arguments for a solve over ``|t1 - t0| = span`` ending at ``end``.

        Adaptive solvers get ``step_t = [end]`` so that no step goes past the end time (torchdiffeq
        otherwise steps beyond it and interpolates back, evaluating the field outside the interval).
        """
        if self.adaptive:
            return {"method": self.method, "rtol": self.rtol, "atol": self.atol,
                    "options": {"step_t": end.reshape(1)}}
        size = span / self.steps if self.steps is not None else self.step_size
        return {"method": self.method, "options": {"step_size": size}}


class _Field(nn.Module):
    """``d(x[, ℓ])/dt`` for torchdiffeq; an ``nn.Module`` so that ``odeint_adjoint`` accepts it."""

    def __init__(self, velocity: Velocity, t_lo: float, t_hi: float, trace: str | None, probes: Tensor | None,
                 shape: torch.Size | None = None):
        super().__init__()
        self.velocity = velocity
        self.shape = shape  # of x in the flat (x, ℓ) state
        self.t_lo, self.t_hi = t_lo, t_hi
        self.trace = trace
        self.probes = probes
        self.nfe = 0

    def _time(self, t: Tensor | float, x: Tensor) -> Tensor:
        # torchdiffeq's first-step heuristic (and the adjoint's backward solve) may probe times just
        # outside the interval; the field is held constant there, which leaves the solution unchanged.
        if isinstance(t, float):  # from probgen.ops.dopri
            return x.new_full((x.shape[0],), min(max(t, self.t_lo), self.t_hi))
        return t.to(dtype=x.dtype, device=x.device).clamp(self.t_lo, self.t_hi).expand(x.shape[0])

    def forward(self, t: Tensor | float, state: Any) -> Any:
        self.nfe += 1
        if self.trace is None:
            return self.velocity(state, self._time(t, state))
        # the augmented state is one flat tensor [x.flatten(), ℓ] (see _flat_state): torchdiffeq then skips its
        # tuple wrapper (a split and a cat of the whole state per evaluation, a norm per tuple entry per step)
        x = state[: -self.shape[0]].view(self.shape)
        time = self._time(t, x)
        v, div = divergence(lambda y: self.velocity(y, time), x, method=self.trace, probes=self.probes,
                            create_graph=torch.is_grad_enabled())
        return torch.cat((v.reshape(-1), div))


def _flat_state(x: Tensor) -> Tensor:
    """``[x.flatten(), 0_B]``: the ``(x, ℓ)`` state of :func:`odeint_logdet` as one tensor."""
    return torch.cat((x.reshape(-1), x.new_zeros(x.shape[0])))


def _rms_norm(e: Tensor) -> Tensor:
    """torchdiffeq's default error norm of one tensor, detached (see :func:`_mixed_norm`)."""
    return e.detach().pow(2).mean().sqrt()


def _mixed_norm(batch: int) -> Callable[[Tensor], Tensor]:
    """torchdiffeq's error norm of a ``(x, ℓ)`` tuple on the flat state: ``max(rms(x part), rms(ℓ part))``, so the
    log-determinant keeps its own error control (an RMS over both would dilute its ``B`` entries by ``B·D``)."""

    def norm(e: Tensor) -> Tensor:
        # detached: step-size control carries no gradient (at a zero error, sqrt's backward would give NaN to a
        # differentiable log_prob, e.g. NUTS started at the mean of a Gaussian prior)
        e = e.detach()
        return torch.maximum(e[:-batch].pow(2).mean().sqrt(), e[-batch:].pow(2).mean().sqrt())

    return norm


def owner_params(velocity: Velocity) -> tuple[Tensor, ...]:
    """Trainable parameters of ``velocity`` when it is an ``nn.Module`` or a bound method of one (for the adjoint)."""
    owner = velocity
    if inspect.ismethod(velocity):
        owner = velocity.__self__
    elif hasattr(velocity, "func") and hasattr(velocity, "keywords"):  # functools.partial
        owner = getattr(velocity.func, "__self__", velocity.func)
    if isinstance(owner, nn.Module):
        return tuple(p for p in owner.parameters() if p.requires_grad)
    return ()


def odeint_velocity(
    velocity: Velocity,
    x: Tensor,
    t0: float,
    t1: float,
    *,
    solver: ODESolver,
    num_outputs: int = 2,
) -> tuple[Tensor, int]:
    """Integrate ``dx/dt = v(x, t)`` from ``t0`` to ``t1``; no validation (callers check at their entry).

    Args:
        velocity: ``v(x, t)``; ``t: (B,)``, clamped to ``[min(t0, t1), max(t0, t1)]``.
        x: start points ``(B, *event)``.
        t0, t1: start and end times (either order).
        solver: an :class:`ODESolver`.
        num_outputs: number of equally spaced output times (``>= 2``; the first is ``t0``).

    Returns:
        ``(xs, nfe)``: ``xs: (num_outputs, B, *event)`` with ``xs[-1]`` the end point, and the number of
        velocity evaluations.

    Example:
        >>> xs, nfe = odeint_velocity(lambda x, t: -x, torch.ones(2, 1), 0.0, 1.0, solver=ODESolver("rk4", steps=4))
        >>> round(float(xs[-1, 0, 0]), 4), nfe
        (0.3679, 16)
    """
    field = _Field(velocity, min(t0, t1), max(t0, t1), None, None)  # state: x itself
    if solver.lean and num_outputs == 2:
        end, nfe = dopri5_solve(field, x, float(t0), float(t1), rtol=solver.rtol, atol=solver.atol, norm=_rms_norm)
        return torch.stack((x, end)), nfe
    ts = torch.linspace(t0, t1, num_outputs, dtype=x.dtype, device=x.device)
    xs = odeint(field, x, ts, **solver.kwargs(span=abs(t1 - t0), end=ts[-1]))
    return xs, field.nfe


def odeint_logdet(
    velocity: Velocity,
    x: Tensor,
    t0: float,
    t1: float,
    *,
    solver: ODESolver | None = None,
    trace: str = "exact",
    num_probes: int = 1,
    noise: str = "rademacher",
    generator: torch.Generator | None = None,
    adjoint: bool = False,
    adjoint_params: Iterable[Tensor] | None = None,
    batch_size: int | None = None,
) -> tuple[Tensor, Tensor, int]:
    r"""Integrate ``(x, ℓ)`` with ``dℓ/dt = tr ∂v/∂x`` from ``t0`` to ``t1``: ``ℓ = log|det ∂x(t1)/∂x(t0)|``.

    .. math::

        x(t_1) = x + \int_{t_0}^{t_1} v(x(t), t)\,dt, \qquad
        \ell = \int_{t_0}^{t_1} \operatorname{tr}\frac{\partial v}{\partial x}(x(t), t)\,dt.

    Gradients flow to ``x`` and to the field's parameters when autograd is enabled, through the solver
    or (``adjoint=True``) by the adjoint method with memory constant in the number of steps.

    Args:
        velocity: ``v(x, t) -> like x``, per sample.
        x: start points ``(B, *event)``.
        t0, t1: start and end times (either order; reversing time flips the sign of ``ℓ``).
        solver: an :class:`ODESolver` (default dopri5 at ``rtol = atol = 1e-5``).
        trace: ``"exact"`` (``D`` batched VJPs) or ``"hutchinson"`` (unbiased; probes fixed per solve).
        num_probes: Hutchinson probes averaged per evaluation.
        noise: Hutchinson probe law, ``"rademacher"`` or ``"gaussian"``.
        generator: seeds the Hutchinson probes.
        adjoint: use ``torchdiffeq.odeint_adjoint``.
        adjoint_params: parameters to differentiate with the adjoint (default: those of ``velocity``
            when it is an ``nn.Module``, a bound method of one or a ``functools.partial`` of one).
        batch_size: solve at most this many rows at a time.

    Returns:
        ``(x_end, logdet, nfe)`` with ``x_end: (B, *event)``, ``logdet: (B,)`` and the number of field
        evaluations summed over chunks (each is one ``v`` plus ``D`` or ``num_probes`` VJPs).

    Reference: Chen et al. (2018), arXiv:1806.07366; Grathwohl et al. (2019), arXiv:1810.01367.

    Example:
        >>> x = torch.ones(3, 2, dtype=torch.float64)
        >>> y, logdet, nfe = odeint_logdet(lambda x, t: -x, x, 0.0, 1.0)   # y = x / e, tr(-I) = -2
        >>> round(float(y[0, 0]), 5), round(float(logdet[0]), 5)
        (0.36788, -2.0)
    """
    if not callable(velocity):
        raise TypeError(f"velocity must be callable as velocity(x, t), got {type(velocity).__name__}")
    check_tensor("x", x, min_ndim=2)
    solver = solver if solver is not None else ODESolver()
    if not isinstance(solver, ODESolver):
        raise TypeError(f"solver must be a probgen.ops.ODESolver, got {type(solver).__name__}")
    check_choice("trace", trace, DIVERGENCE_METHODS)
    check_choice("noise", noise, PROBE_NOISES)
    num_probes = check_int("num_probes", num_probes, minimum=1)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    check_bool("adjoint", adjoint)
    if adjoint:
        adjoint_params = tuple(adjoint_params) if adjoint_params is not None else owner_params(velocity)
    elif adjoint_params is not None:
        raise ValueError("adjoint_params is only used with adjoint=True, got adjoint=False")

    times = torch.tensor([t0, t1], dtype=x.dtype, device=x.device)
    kwargs = solver.kwargs(span=abs(t1 - t0), end=times[-1])
    ends, logdets, nfe = [], [], 0
    for chunk in (x.split(batch_size) if batch_size is not None else (x,)):
        probes = None
        if trace == "hutchinson":
            probes = sample_probes(chunk, num_probes=num_probes, noise=noise, generator=generator)
        field = _Field(velocity, min(t0, t1), max(t0, t1), trace, probes, chunk.shape)
        b = chunk.shape[0]
        opts = dict(kwargs)
        if solver.adaptive:
            opts["options"] = {**opts["options"], "norm": _mixed_norm(b)}
        if adjoint:
            # the backward solve's norm wraps the state norm above (torchdiffeq's default adjoint norm)
            end = odeint_adjoint(field, _flat_state(chunk), times, adjoint_params=adjoint_params, **opts)[-1]
        elif solver.lean:
            end, _ = dopri5_solve(field, _flat_state(chunk), float(t0), float(t1), rtol=solver.rtol,
                                  atol=solver.atol, norm=opts["options"]["norm"])
        else:
            end = odeint(field, _flat_state(chunk), times, **opts)[-1]
        ends.append(end[:-b].view(chunk.shape))
        logdets.append(end[-b:])
        nfe += field.nfe
    if len(ends) == 1:
        return ends[0], logdets[0], nfe
    return torch.cat(ends), torch.cat(logdets), nfe
