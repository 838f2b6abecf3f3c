"""The SDE abstract class and the reverse-time SDE built from a score.

A forward (noising) SDE on ``t in [0, T]`` is

.. math::

    dx = f(x, t)\\,dt + g(t)\\,dw,

with an affine drift, so that its transition from a data point is Gaussian,
``p_t(x_t | x_0) = N(alpha(t) x_0, sigma(t)^2 I)``. Given the score ``s(x, t) = grad_x log p_t(x)``
of the marginal, the reverse-time SDE (Anderson, 1982) and the probability-flow ODE are

.. math::

    dx = [f(x, t) - g(t)^2 s(x, t)]\\,dt + g(t)\\,d\\bar w, \\qquad
    \\frac{dx}{dt} = f(x, t) - \\tfrac12 g(t)^2 s(x, t).

Shapes: ``x: (B, *event)`` for any event shape, ``t: (B,)``; ``g(t)``, ``alpha(t)``, ``sigma(t)``
are ``(B,)`` and broadcast against ``x`` with :func:`probgen.ops.append_dims`.

Reference: Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole (2021), "Score-Based Generative
Modeling through Stochastic Differential Equations", arXiv:2011.13456 (``sde_lib.py`` of
score_sde_pytorch for the parameterisations and discretisations).

User-facing members validate their arguments (``probgen._checks``); the *solver interface*
(``f``, ``g``, ``mean_scale``, ``std``, ``step_coefficients``, ``corrector_alpha``, ``reverse_f``,
``tweedie``, ``log_prior``) skips validation and is what samplers and ODE solvers call inside their
loops, after checking once at entry (see :class:`SDE`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_output_shape, check_positive, check_tensor, check_time
from probgen.ops.shapes import append_dims, batch_sum

__all__ = ["SDE", "ReverseSDE", "ScoreFn", "check_sample_shape"]

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""``score_fn(x, t) -> Tensor like x`` with ``x: (B, *event)`` and ``t: (B,)``."""


def _check_x(name: str, x: Any) -> Tensor:
    return check_tensor(name, x, min_ndim=1)


def _check_t_for(sde: SDE, t: Any, x: Tensor | None = None, *, name: str = "t") -> Tensor:
    """Validate ``t: (B,)`` in ``[0, T]``; a number or 0-d tensor is broadcast to ``x``'s batch."""
    if x is not None and (isinstance(t, (int, float)) and not isinstance(t, bool) or
                          isinstance(t, Tensor) and t.dim() == 0):
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
    check_time(name, t, 0.0, sde.T, batch_size=None if x is None else x.shape[0])
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    if x is not None:
        t = t.to(dtype=x.dtype, device=x.device)
    return t


def _call_score(score_fn: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    return check_output_shape("score_fn", score_fn(x, t), x.shape)


class SDE(ABC):
    """Abstract forward SDE ``dx = f(x, t) dt + g(t) dw`` on ``[0, T]`` with Gaussian transitions.

    Two layers, in the torchsde manner (a contract checked once at entry, not on every inner call):

    **Solver interface** — fast, *unvalidated*; called inside sampler and ODE loops (``probgen.samplers``,
    ``probgen.ops.ode``, ``probgen.diffusion``, ``probgen.infer``) after the caller checked its inputs
    once. ``x: (B, *event)`` floating, ``t: (B,)`` in ``[0, T]`` of ``x``'s dtype and device:

    =============================================  =================================================
    ``f(x, t)``                                    drift ``f(x, t)``, like ``x``
    ``g(t)``                                       diffusion ``g(t)``, ``(B,)``
    ``mean_scale(t)``                              ``alpha(t)`` with ``E[x_t | x_0] = alpha(t) x_0``
    ``std(t)``                                     ``sigma(t)``, std of ``p_t(x_t | x_0)``
    ``step_coefficients(x, t, dt)``                ``(f, G)`` of the forward step ``x_t = x_{t-dt} + f + G z``
    ``corrector_alpha(t, dt)``                     Langevin-corrector scale (``1 - beta dt`` for VP)
    ``reverse_f(score_fn, x, t, weight=1)``        ``f - weight g^2 s`` (reverse SDE: 1, PF-ODE: 1/2)
    ``tweedie(score, x, t)``                       ``E[x_0 | x_t] = (x + sigma^2 s) / alpha``
    ``log_prior(z)``                               ``log N(z; 0, prior_std^2 I)``, ``(B,)``
    =============================================  =================================================

    A subclass implements ``f``, ``g``, ``mean_scale``, ``std``, ``prior_std`` and ``config``; it may
    override ``step_coefficients`` (default Euler–Maruyama) and ``corrector_alpha`` (default 1).

    **User interface** — validated (argument errors name the argument): ``drift``, ``diffusion``,
    ``marginal_scale``, ``marginal_std``, ``marginal``, ``prior_sample``, ``prior_log_prob``,
    ``discretize``, ``discrete_alpha``, ``reverse_drift``, ``ode_drift`` and
    ``reverse(score_fn, probability_flow=False)``.

    Reference: Song et al. (2021), arXiv:2011.13456 (``sde_lib.py`` of score_sde_pytorch).
    """

    T: float = 1.0

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def f(self, x: Tensor, t: Tensor) -> Tensor:
        """Drift ``f(x, t)`` (unvalidated solver interface)."""

    @abstractmethod
    def g(self, t: Tensor) -> Tensor:
        """Diffusion coefficient ``g(t): (B,)`` (unvalidated solver interface)."""

    @abstractmethod
    def mean_scale(self, t: Tensor) -> Tensor:
        """``alpha(t): (B,)`` with ``E[x_t | x_0] = alpha(t) x_0`` (unvalidated solver interface)."""

    @abstractmethod
    def std(self, t: Tensor) -> Tensor:
        """``sigma(t): (B,)``, the standard deviation of ``p_t(x_t | x_0)`` (unvalidated solver interface)."""

    @property
    @abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior ``p_T = N(0, prior_std^2 I)``."""

    @abstractmethod
    def config(self) -> dict[str, float]:
        """JSON-safe keyword arguments that rebuild this SDE: ``type(sde)(**sde.config())``."""

    # ------------------------------------------------------------------ solver interface (unvalidated)
    def step_coefficients(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """``(f, G)`` of one forward step ``x_t = x_{t-dt} + f + G z``; default Euler–Maruyama
        ``f = f(x, t) dt``, ``G = g(t) sqrt(dt)`` (unvalidated; see :meth:`discretize`)."""
        return self.f(x, t) * dt, self.g(t) * math.sqrt(dt)

    def corrector_alpha(self, t: Tensor, dt: float) -> Tensor:
        """Scale of the Langevin corrector's step (``alpha_i = 1 - beta_i`` for VP, 1 otherwise)."""
        return torch.ones_like(t)

    def reverse_f(self, score_fn: ScoreFn, x: Tensor, t: Tensor, *, weight: float = 1.0) -> Tensor:
        """``f(x, t) - weight g(t)^2 s(x, t)``: the reverse-SDE drift (``weight=1``) or the
        probability-flow velocity (``weight=1/2``). ``score_fn``'s output shape is checked."""
        g2 = append_dims(self.g(t) ** 2, x.dim())
        return self.f(x, t) - weight * g2 * _call_score(score_fn, x, t)

    def tweedie(self, score: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """Posterior mean ``E[x_0 | x_t] = (x_t + sigma(t)^2 s(x_t, t)) / alpha(t)`` (Tweedie's formula)."""
        n = x.dim()
        return (x + append_dims(self.std(t) ** 2, n) * score) / append_dims(self.mean_scale(t), n)

    def log_prior(self, z: Tensor) -> Tensor:
        """``log N(z; 0, prior_std^2 I)``: ``(B, *event) -> (B,)`` (unvalidated; see :meth:`prior_log_prob`)."""
        s = self.prior_std
        num_dims = z[0].numel()
        return -0.5 * num_dims * math.log(2 * math.pi * s * s) - 0.5 * batch_sum(z * z) / (s * s)

    # old private names, kept so that code written against them keeps working
    def _drift(self, x: Tensor, t: Tensor) -> Tensor:
        return self.f(x, t)

    def _diffusion(self, t: Tensor) -> Tensor:
        return self.g(t)

    def _marginal_scale(self, t: Tensor) -> Tensor:
        return self.mean_scale(t)

    def _marginal_std(self, t: Tensor) -> Tensor:
        return self.std(t)

    def _discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        return self.step_coefficients(x, t, dt)

    def _reverse_drift(self, score_fn: ScoreFn, x: Tensor, t: Tensor, *, weight: float = 1.0) -> Tensor:
        return self.reverse_f(score_fn, x, t, weight=weight)

    def _tweedie(self, score: Tensor, x: Tensor, t: Tensor) -> Tensor:
        return self.tweedie(score, x, t)

    # ------------------------------------------------------------------ public, validated
    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """Drift ``f(x, t)``: ``x: (B, *event)``, ``t: (B,)`` -> ``(B, *event)``."""
        x = _check_x("x", x)
        return self.f(x, _check_t_for(self, t, x))

    def diffusion(self, t: Tensor) -> Tensor:
        """Diffusion coefficient ``g(t)``: ``t: (B,)`` -> ``(B,)``."""
        return self.g(_check_t_for(self, t))

    def marginal_scale(self, t: Tensor) -> Tensor:
        """``alpha(t)`` with ``E[x_t | x_0] = alpha(t) x_0``: ``(B,)`` -> ``(B,)``."""
        return self.mean_scale(_check_t_for(self, t))

    def marginal_std(self, t: Tensor) -> Tensor:
        """``sigma(t)``, the standard deviation of ``p_t(x_t | x_0)``: ``(B,)`` -> ``(B,)``."""
        return self.std(_check_t_for(self, t))

    def marginal(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of ``p_t(x_t | x_0) = N(alpha(t) x_0, sigma(t)^2 I)``.

        Args:
            x0: data, ``(B, *event)``.
            t: times, ``(B,)`` in ``[0, T]``.

        Returns:
            ``(mean, std)`` with ``mean: (B, *event)`` and ``std: (B,)``.
        """
        x0 = _check_x("x0", x0)
        t = _check_t_for(self, t, x0)
        return append_dims(self.mean_scale(t), x0.dim()) * x0, self.std(t)

    def prior_sample(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw ``z ~ p_T = N(0, prior_std^2 I)`` of shape ``(B, *event)``."""
        shape = check_sample_shape("shape", shape)
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return z * self.prior_std

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """Log density of the prior ``N(0, prior_std^2 I)`` at ``z: (B, *event)`` -> ``(B,)`` nats.

        ``log p_T(z) = -D/2 log(2 pi s^2) - |z|^2 / (2 s^2)`` with ``D`` the event size.
        """
        z = _check_x("z", z)
        return self.log_prior(z)

    def discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """One-step discretisation ``x_t = x_{t - dt} + f + G z`` of the forward SDE at ``t``.

        VP uses the DDPM step (``f = (sqrt(1 - beta_i) - 1) x``, ``G = sqrt(beta_i)``,
        ``beta_i = beta(t) dt``), VE the SMLD step (``f = 0``,
        ``G = sqrt(sigma(t)^2 - sigma(t - dt)^2)``), others Euler–Maruyama
        (``f = f(x, t) dt``, ``G = g(t) sqrt(dt)``).

        Args:
            x: ``(B, *event)``.
            t: ``(B,)`` in ``[0, T]``.
            dt: step length, ``> 0``.

        Returns:
            ``(f, G)`` with ``f`` like ``x`` and ``G: (B,)``.
        """
        x = _check_x("x", x)
        t = _check_t_for(self, t, x)
        dt = check_positive("dt", dt)
        return self.step_coefficients(x, t, dt)

    def discrete_alpha(self, t: Tensor, dt: float) -> Tensor:
        """Scale ``alpha_i`` of the Langevin corrector's step size (``1 - beta(t) dt`` for VP-type, else 1).

        Reference: score_sde_pytorch ``LangevinCorrector`` (Song et al., 2021, arXiv:2011.13456).
        """
        return self.corrector_alpha(_check_t_for(self, t), check_positive("dt", dt))

    def reverse_drift(self, score_fn: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
        """Drift of the reverse-time SDE, ``f(x, t) - g(t)^2 s(x, t)`` (time running from ``T`` to 0)."""
        x = _check_x("x", x)
        return self.reverse_f(_check_score_fn(score_fn), x, _check_t_for(self, t, x))

    def ode_drift(self, score_fn: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
        """Velocity of the probability-flow ODE, ``dx/dt = f(x, t) - 1/2 g(t)^2 s(x, t)``."""
        x = _check_x("x", x)
        return self.reverse_f(_check_score_fn(score_fn), x, _check_t_for(self, t, x), weight=0.5)

    def reverse(self, score_fn: ScoreFn, *, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (or, with ``probability_flow=True``, the probability-flow ODE).

        Example:
            >>> from probgen.sde import VPSDE
            >>> rsde = VPSDE().reverse(lambda x, t: -x)
            >>> rsde.drift(torch.zeros(2, 3), torch.full((2,), 0.5)).shape
            torch.Size([2, 3])
        """
        return ReverseSDE(self, _check_score_fn(score_fn), probability_flow=bool(probability_flow))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class ReverseSDE:
    """Reverse-time SDE ``dx = [f - g^2 s] dt + g dw_bar`` (time running from ``T`` down to 0).

    With ``probability_flow=True`` it is the ODE ``dx/dt = f - 1/2 g^2 s`` and ``diffusion`` is 0.
    ``discretize(x, t, dt)`` returns ``(f_rev, G)`` for the step from ``t`` to ``t - dt``:
    ``x_{t - dt} = x_t - f_rev + G z`` (``f_rev = f - G^2 s`` from the forward discretisation, as in
    score_sde_pytorch's ``ReverseDiffusionPredictor``).

    Built by :meth:`SDE.reverse`; shapes as in :class:`SDE`.
    """

    def __init__(self, sde: SDE, score_fn: ScoreFn, *, probability_flow: bool = False):
        self.sde = sde
        self.score_fn = score_fn
        self.probability_flow = probability_flow
        self.T = sde.T

    @property
    def _weight(self) -> float:
        return 0.5 if self.probability_flow else 1.0

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """``f(x, t) - w g(t)^2 s(x, t)`` with ``w = 1`` (SDE) or ``1/2`` (ODE)."""
        x = _check_x("x", x)
        return self.sde.reverse_f(self.score_fn, x, _check_t_for(self.sde, t, x), weight=self._weight)

    def diffusion(self, t: Tensor) -> Tensor:
        """``g(t)`` for the SDE, zeros for the probability-flow ODE; ``(B,)``."""
        g = self.sde.diffusion(t)
        return torch.zeros_like(g) if self.probability_flow else g

    def discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        """``(f - w G^2 s, G)`` (``G = 0`` for the ODE) for the step from ``t`` to ``t - dt``."""
        x = _check_x("x", x)
        t = _check_t_for(self.sde, t, x)
        dt = check_positive("dt", dt)
        return self._discretize(x, t, dt)

    def _discretize(self, x: Tensor, t: Tensor, dt: float) -> tuple[Tensor, Tensor]:
        f, G = self.sde.step_coefficients(x, t, dt)
        score = _call_score(self.score_fn, x, t)
        rev_f = f - self._weight * append_dims(G**2, x.dim()) * score
        return rev_f, torch.zeros_like(G) if self.probability_flow else G

    def __repr__(self) -> str:
        return f"ReverseSDE({self.sde!r}, probability_flow={self.probability_flow})"


def _check_score_fn(score_fn: Any) -> ScoreFn:
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(x, t), got {type(score_fn).__name__}")
    return score_fn


def check_sample_shape(name: str, shape: Any) -> tuple[int, ...]:
    """Validate a sample shape ``(B, *event)`` of positive integers."""
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or len(shape) < 1 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape
    ):
        raise ValueError(f"{name} must be a tuple (batch, *event) of positive integers, got {shape!r}")
    return tuple(shape)


_check_shape = check_sample_shape  # old private name
