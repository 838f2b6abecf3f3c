"""Continuous normalizing flow (FFJORD) as a Pyro ``TransformModule``.

A CNF moves a point along an ODE ``dx/dt = f(x, t)`` from ``t0`` (base side) to ``t1`` (data side).
The instantaneous change of variables (Chen et al., 2018, arXiv:1806.07366) gives

.. math::

    \\log\\left|\\det \\frac{\\partial x(t_1)}{\\partial x(t_0)}\\right| = \\int_{t_0}^{t_1}
    \\operatorname{tr}\\Big(\\frac{\\partial f}{\\partial x}(x(t), t)\\Big)\\, dt ,

so the log-determinant is one extra ODE state integrated alongside ``x``. The trace is exact
(``D`` batched vector–Jacobian products) or Hutchinson's unbiased estimate ``E[vᵀ J v]`` with probes
``v`` held fixed over one solve (Grathwohl et al., 2019, arXiv:1810.01367). The solve is the one
ODE core :func:`probgen.ops.odeint_logdet`, shared with the probability-flow ODE likelihood and
flow matching. Gradients go through :func:`torchdiffeq.odeint_adjoint` (memory constant in the number of solver
steps) or, with ``adjoint=False``, by backpropagating through the solver.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn

from probgen._checks import check_bool, check_choice, check_int, check_positive, check_tensor
from probgen.ops.ode import FIXED_STEP_METHODS, ODE_METHODS, ODESolver, odeint_logdet
from probgen.ops.trace import DIVERGENCE_METHODS, PROBE_NOISES

__all__ = ["CNFTransform", "ODE_METHODS"]


class CNFTransform(TransformModule):
    """A bijection ``y = x(t1)`` where ``x(t0) = x`` and ``dx/dt = f(x, t)``, scored by its integrated divergence.

    .. math::

        T(x) = x + \\int_{t_0}^{t_1} f(x(t), t)\\,dt, \\qquad
        \\log|\\det \\partial T/\\partial x| = \\int_{t_0}^{t_1} \\operatorname{tr} \\partial_x f(x(t), t)\\,dt.

    ``_call`` integrates forward (base → data), ``_inverse`` backward (data → base); both cost one
    ODE solve, so neither direction is privileged. ``log_abs_det_jacobian(x, y)`` returns the
    integral from the most recent solve when ``(x, y)`` is the cached pair (Pyro's habit), and
    re-solves from ``x`` otherwise. With ``trace="hutchinson"`` it is an unbiased estimate whose
    probes are drawn once per solve.

    Shapes: ``x: (B, D)``; ``vector_field(x, t) -> (B, D)`` with ``t: (B,)`` and must act per sample.

    Attributes:
        nfe: number of vector-field evaluations since the last solve started (reset at the start
            of every forward or inverse solve; adjoint backward evaluations add to it).

    Args:
        vector_field: an ``nn.Module`` (or, with ``adjoint=False``, any callable) ``f(x, t)``.
        t0: start time (base side).
        t1: end time (data side), ``t1 > t0``.
        trace: ``"exact"`` or ``"hutchinson"``.
        method: a torchdiffeq solver name (see :data:`ODE_METHODS`).
        rtol: relative tolerance of adaptive solvers.
        atol: absolute tolerance of adaptive solvers.
        adjoint: backpropagate with the adjoint method (``torchdiffeq.odeint_adjoint``).
        num_probes: Hutchinson probes per solve (averaged).
        noise: Hutchinson probe law, ``"rademacher"`` or ``"gaussian"``.
        step_size: step of a fixed-grid solver (required for those, ignored by adaptive ones).

    Reference:
        Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud, "FFJORD: Free-form Continuous Dynamics
        for Scalable Reversible Generative Models", 2019, arXiv:1810.01367.

    Example:
        >>> class Field(torch.nn.Module):
        ...     def forward(self, x, t):
        ...         return -x
        >>> T = CNFTransform(Field(), adjoint=False)
        >>> x = torch.ones(3, 2)
        >>> y = T(x)                       # x e^{-1}
        >>> round(T.log_abs_det_jacobian(x, y)[0].item(), 4)    # ∫ tr(-I) dt = -2
        -2.0
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        vector_field: nn.Module | Callable[[Tensor, Tensor], Tensor],
        *,
        t0: float = 0.0,
        t1: float = 1.0,
        trace: str = "exact",
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        adjoint: bool = True,
        num_probes: int = 1,
        noise: str = "rademacher",
        step_size: float | None = None,
    ) -> None:
        super().__init__(cache_size=1)
        if not callable(vector_field):
            raise TypeError(f"vector_field must be a callable f(x, t), got {type(vector_field).__name__}")
        check_bool("adjoint", adjoint)
        if adjoint and not isinstance(vector_field, nn.Module):
            raise TypeError(
                "adjoint=True needs vector_field to be an nn.Module (its parameters are the adjoint "
                f"parameters), got {type(vector_field).__name__}; pass adjoint=False for a plain callable"
            )
        self.vector_field = vector_field
        self.t0 = float(t0)
        self.t1 = float(t1)
        if not self.t1 > self.t0:
            raise ValueError(f"t1 must be > t0, got t0={t0}, t1={t1}")
        self.trace = check_choice("trace", trace, DIVERGENCE_METHODS)
        self.method = check_choice("method", method, ODE_METHODS)
        self.rtol = check_positive("rtol", rtol)
        self.atol = check_positive("atol", atol)
        self.adjoint = adjoint
        self.num_probes = check_int("num_probes", num_probes, minimum=1)
        self.noise = check_choice("noise", noise, PROBE_NOISES)
        if method in FIXED_STEP_METHODS:
            if step_size is None:
                raise ValueError(f"method {method!r} is a fixed-grid solver and needs step_size, got None")
            step_size = check_positive("step_size", step_size)
        elif step_size is not None:
            step_size = check_positive("step_size", step_size)
        self.step_size = step_size
        self._solver = ODESolver(self.method, rtol=self.rtol, atol=self.atol,
                                 step_size=step_size if method in FIXED_STEP_METHODS else None)
        self.nfe = 0
        self._cached_logdet: Tensor | None = None

    def solve(self, x: Tensor, *, reverse: bool = False) -> tuple[Tensor, Tensor]:
        """Integrate from ``t0`` to ``t1`` (or back with ``reverse=True``) with the log-determinant.

        One call of the shared ODE core :func:`probgen.ops.odeint_logdet`.

        Args:
            x: ``(B, D)`` start points.
            reverse: integrate ``t1 → t0`` (data → base).

        Returns:
            ``(x_end, logdet)`` with ``logdet = log|det ∂x_end/∂x|: (B,)``, i.e.
            ``+∫ tr ∂f/∂x dt`` forward and ``-∫ tr ∂f/∂x dt`` in reverse.
        """
        check_tensor("x", x, ndim=2)
        t0, t1 = (self.t1, self.t0) if reverse else (self.t0, self.t1)
        params = None
        if self.adjoint:
            params = tuple(p for p in self.vector_field.parameters() if p.requires_grad)
        y, logdet, self.nfe = odeint_logdet(self.vector_field, x, t0, t1, solver=self._solver, trace=self.trace,
                                            num_probes=self.num_probes, noise=self.noise, adjoint=self.adjoint,
                                            adjoint_params=params)
        # the augmented state integrates ∫_{start}^{end} tr J dt; reversing time flips the sign
        return y, logdet

    def _call(self, x: Tensor) -> Tensor:
        y, logdet = self.solve(x)
        self._cached_logdet = logdet
        return y

    def _inverse(self, y: Tensor) -> Tensor:
        x, logdet_inv = self.solve(y, reverse=True)
        # logdet_inv = ∫_{t1}^{t0} tr J dt = -log|det ∂y/∂x|
        self._cached_logdet = -logdet_inv
        return x

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        """``log|det ∂y/∂x| = ∫_{t0}^{t1} tr ∂f/∂x dt`` along the path through ``x``, shape ``(B,)``."""
        x_old, y_old = self._cached_x_y
        if x is not x_old or y is not y_old or self._cached_logdet is None:
            self._cached_x_y = (None, None)
            self(x)
        return self._cached_logdet
