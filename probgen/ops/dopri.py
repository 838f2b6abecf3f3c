r"""A lean Dormand–Prince 5(4) integrator from ``t0`` to ``t1``, for the hot path of the ODE core.

The algorithm is torchdiffeq's ``dopri5`` (Dormand & Prince 1980; Hairer, Nørsett & Wanner 1993, §II.4-5):
the same tableau with first-same-as-last, the same error ratio
``‖err / (atol + rtol·max(|y0|, |y1|))‖``, the same step-size rule
``h ← h·min(10, max(0.9·r^{-1/5}, 0.2))`` (never shrinking after an accepted step) and the same initial
step selection, so it takes the same steps and evaluations (a test compares the two). It differs in
bookkeeping only: time and step size stay Python floats, a stage is a chain of ``add(alpha=…)`` on the
state, and no dense output is fitted, because the ODE core asks for the end point alone. On a
784-dimensional likelihood solve torchdiffeq's per-stage work (stage tensors, time casts, the
interpolant) cost 15–40 % on top of the right-hand side; this costs a few per cent
(``benchmarks/bench_likelihood.py``).

Used by :mod:`probgen.ops.ode` for forward (non-adjoint) ``dopri5`` solves with two output times; every
other method, dense output and the adjoint go through torchdiffeq.

Reference: Dormand & Prince (1980), J. Comput. Appl. Math. 6(1); Hairer, Nørsett & Wanner (1993),
*Solving Ordinary Differential Equations I*, §II.4 (initial step) and §II.5 (the pair).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["dopri5_solve"]

# Butcher tableau of the Dormand–Prince 5(4) pair: stage times, stage weights, and the 5th-minus-4th order
# error weights (the 5th-order weights are the last stage's row: first same as last).
_C = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_E = (35 / 384 - 1951 / 21600, 0.0, 500 / 1113 - 22642 / 50085, 125 / 192 - 451 / 720,
      -2187 / 6784 - -12231 / 42400, 11 / 84 - 649 / 6300, -1 / 60)
_ORDER = 5
_SAFETY, _IFACTOR, _DFACTOR = 0.9, 10.0, 0.2

Field = Callable[[float, Tensor], Tensor]
"""``f(t, y) -> dy/dt`` with ``t`` a Python float and ``y`` the (flat) state."""
Norm = Callable[[Tensor], Tensor]
"""An error norm: a scalar tensor of a state-shaped tensor."""


def _combine(y: Tensor, ks: list[Tensor], weights: tuple[float, ...], h: float) -> Tensor:
    """``y + h · Σ_j w_j k_j`` (zero weights skipped), differentiable, no in-place writes."""
    out = y
    for w, k in zip(weights, ks):
        if w != 0.0:
            out = out.add(k, alpha=h * w)
    return out


@torch.no_grad()
def _error_ratio(err: Tensor, y0: Tensor, y1: Tensor, rtol: float, atol: float, norm: Norm) -> float:
    tol = y0.abs().maximum(y1.abs()).mul_(rtol).add_(atol)
    return float(norm(err.div_(tol)))


@torch.no_grad()
def _initial_step(f: Field, t0: float, y0: Tensor, f0: Tensor, rtol: float, atol: float, norm: Norm) -> float:
    """Hairer, Nørsett & Wanner (1993) §II.4's starting step, as torchdiffeq's ``_select_initial_step`` (one
    extra evaluation)."""
    scale = y0.abs().mul(rtol).add_(atol)
    d0 = float(norm(y0 / scale))
    d1 = float(norm(f0 / scale))
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    f1 = f(t0 + h0, y0.add(f0, alpha=h0))
    d2 = float(norm((f1 - f0) / scale)) / h0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / _ORDER)
    return min(100 * h0, h1)


def dopri5_solve(f: Field, y0: Tensor, t0: float, t1: float, *, rtol: float, atol: float,
                 norm: Norm) -> tuple[Tensor, int]:
    r"""Integrate ``dy/dt = f(t, y)`` from ``t0`` to ``t1`` (either order) by adaptive Dormand–Prince 5(4).

    Steps are clipped to land exactly on ``t1``. Gradients flow through the stages to ``y0`` and to ``f``'s
    parameters when autograd is on; the step sizes are constants of the graph (as in torchdiffeq).

    Args:
        f: ``f(t, y)``, ``t`` a Python float.
        y0: the start state (any shape; ``f`` returns the same shape).
        t0, t1: start and end times.
        rtol, atol: tolerances of the error ratio.
        norm: the error norm (e.g. RMS, or a mixed norm over parts of a flat state).

    Returns:
        ``(y(t1), nfe)``: the end state and the number of evaluations of ``f``.

    Raises:
        FloatingPointError: the state or its error became non-finite, or the step underflowed.

    Example:
        >>> import torch
        >>> rms = lambda e: e.pow(2).mean().sqrt()
        >>> y, nfe = dopri5_solve(lambda t, y: -y, torch.ones(3, dtype=torch.float64), 0.0, 1.0,
        ...                       rtol=1e-8, atol=1e-8, norm=rms)
        >>> round(float(y[0]), 8) == round(math.exp(-1), 8)
        True
    """
    if t0 == t1:
        return y0, 0
    sign = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)

    def g(s: float, y: Tensor) -> Tensor:  # time s in [0, span] running forward
        v = f(t0 + sign * s, y)
        return v if sign > 0 else -v

    y, k0 = y0, g(0.0, y0)
    nfe = 1
    h = _initial_step(g, 0.0, y, k0, rtol, atol, norm)
    nfe += 1
    s = 0.0
    while s < span:
        if not math.isfinite(h) or s + h <= s:
            raise FloatingPointError(f"the ODE step underflowed at t = {t0 + sign * s:.6g} (step {h!r}): the "
                                     "field is stiff or non-finite there; loosen rtol/atol or use a fixed-step method")
        last = s + h >= span
        if last:
            h = span - s
        ks = [k0]
        for c, a in zip(_C, _A):
            yi = _combine(y, ks, a, h)
            ks.append(g(span if (last and c == 1.0) else s + c * h, yi))
        nfe += len(_C)
        with torch.no_grad():
            err = _combine(k0.new_zeros(()), ks, _E, h)
        ratio = _error_ratio(err, y, yi, rtol, atol, norm)
        if not math.isfinite(ratio):
            raise FloatingPointError(f"non-finite state in the ODE solve between t = {t0 + sign * s:.6g} and "
                                     f"{t0 + sign * (s + h):.6g}: the field returned inf/NaN")
        if ratio <= 1.0:
            y, k0 = yi, ks[-1]
            s = span if last else s + h
        if ratio == 0.0:
            h *= _IFACTOR
        else:
            low = 1.0 if ratio < 1.0 else _DFACTOR
            h *= min(_IFACTOR, max(_SAFETY / ratio ** (1.0 / _ORDER), low))
    return y, nfe
