r"""One denoiser interface for every diffusion-type family, and the conversions between predictions.

Every Gaussian path ``x_t = α(t) x_0 + σ(t) z`` (a VP/sub-VP/VE SDE, a DDPM's VP bridge, EDM's
``α = 1, σ = t``, flow matching's linear or cosine path) is, after the change of variables
``x̃ = x_t / α(t)``, ``σ̃ = σ(t) / α(t)``, the same *σ-space* family ``x̃ = x_0 + σ̃ z`` (Karras et al.
2022, Sec. 2). In σ-space a model is one function, the denoiser ``D(x̃, σ̃) ≈ E[x_0 | x̃]``, and

.. math::

    ε̂ = \frac{x̃ - D}{σ̃}, \qquad s = \nabla_{x̃}\log p = \frac{D - x̃}{σ̃^2}, \qquad
    \frac{dx̃}{dσ̃} = \frac{x̃ - D(x̃, σ̃)}{σ̃} \quad \text{(probability-flow ODE)}.

:class:`Denoiser` is that function with its σ range; :class:`PathDenoiser` builds it from any
family's native prediction (``"eps"``, ``"score"``, ``"x0"`` or ``"velocity"``) on its path, with the
conversions below written once. The samplers of :mod:`probgen.samplers.karras` take a
:class:`Denoiser`, so each of them runs on every family.

Shapes: ``x: (B, *event)``, ``sigma: (B,)``.

References: Karras, Aittala, Aila & Laine (2022), EDM, arXiv:2206.00364; Song et al. (2021),
arXiv:2011.13456; Lipman et al. (2023), arXiv:2210.02747 (velocity on a Gaussian path).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor

from probgen._checks import check_choice, check_output_shape, check_tensor
from probgen.ops.ode import ODESolver, odeint_logdet
from probgen.ops.shapes import append_dims, batch_sum

__all__ = [
    "Denoiser",
    "PathDenoiser",
    "GaussianPath",
    "PREDICTIONS",
    "x0_from_eps",
    "eps_from_x0",
    "score_from_eps",
    "eps_from_score",
    "x0_from_velocity",
    "time_of_sigma",
    "denoiser_log_prob",
]

PREDICTIONS = ("eps", "score", "x0", "velocity")
"""What a family's network predicts on its path."""


class GaussianPath(Protocol):
    """A path ``x_t = α(t) x_0 + σ(t) z``: ``mean_scale(t) = α(t)``, ``std(t) = σ(t)``, both ``(B,) -> (B,)``.

    Every :class:`probgen.sde.SDE` is one (its unvalidated solver interface).
    """

    def mean_scale(self, t: Tensor) -> Tensor: ...

    def std(self, t: Tensor) -> Tensor: ...


# ---------------------------------------------------------------------------------- conversions (once)
def x0_from_eps(x: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """``x̂_0 = (x_t - σ ε̂) / α``; ``alpha, sigma: (B,)``."""
    n = x.dim()
    return (x - append_dims(sigma, n) * eps) / append_dims(alpha, n)


def eps_from_x0(x: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """``ε̂ = (x_t - α x̂_0) / σ``."""
    n = x.dim()
    return (x - append_dims(alpha, n) * x0) / append_dims(sigma, n)


def score_from_eps(eps: Tensor, sigma: Tensor) -> Tensor:
    """``s = -ε̂ / σ``."""
    return -eps / append_dims(sigma, eps.dim())


def eps_from_score(score: Tensor, sigma: Tensor) -> Tensor:
    """``ε̂ = -σ s``."""
    return -append_dims(sigma, score.dim()) * score


def x0_from_velocity(x: Tensor, velocity: Tensor, alpha: Tensor, sigma: Tensor, d_alpha: Tensor,
                     d_sigma: Tensor) -> Tensor:
    """``x̂_0`` from the path velocity ``v = α' x_0 + σ' z`` at ``x_t = α x_0 + σ z``:
    ``x̂_0 = (σ' x_t - σ v) / (σ' α - σ α')`` (for the linear path ``x̂_0 = x_t - t v``)."""
    n = x.dim()
    det = d_sigma * alpha - sigma * d_alpha
    return (append_dims(d_sigma, n) * x - append_dims(sigma, n) * velocity) / append_dims(det, n)


def time_of_sigma(path: GaussianPath, sigma: Tensor, t_min: float, t_max: float, *, iters: int = 60) -> Tensor:
    """The time ``t`` with ``σ(t) / α(t) = sigma`` on ``[t_min, t_max]`` (bisection; ``σ/α`` increasing).

    Example:
        >>> from probgen.sde import VESDE
        >>> t = time_of_sigma(VESDE(), torch.tensor([1.0]), 0.0, 1.0)
        >>> round(float(VESDE().std(t)), 6)
        1.0
    """
    lo = torch.full_like(sigma, t_min)
    hi = torch.full_like(sigma, t_max)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        above = path.std(mid) / path.mean_scale(mid) > sigma
        hi = torch.where(above, mid, hi)
        lo = torch.where(above, lo, mid)
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------------- the interface
class Denoiser:
    """``D(x, σ) ≈ E[x_0 | x_0 + σ z = x]`` in σ-space, with the conversions every sampler needs.

    Args:
        fn: ``fn(x, sigma) -> x̂_0``, ``x: (B, *event)``, ``sigma: (B,)``.
        sigma_min, sigma_max: the σ range the model covers (samplers start at ``sigma_max``).

    Attributes:
        nfe: number of calls of ``fn`` so far.

    Example:
        >>> d = Denoiser(lambda x, s: x / (1 + s[:, None] ** 2), sigma_min=0.01, sigma_max=10.0)  # N(0, I) data
        >>> x, s = torch.ones(2, 3), torch.full((2,), 1.0)
        >>> d.score(x, s)[0].tolist()   # score of N(0, (1 + σ²) I)
        [-0.5, -0.5, -0.5]
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], *, sigma_min: float, sigma_max: float):
        if not callable(fn):
            raise TypeError(f"fn must be callable as fn(x, sigma), got {type(fn).__name__}")
        if not 0.0 < float(sigma_min) < float(sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.fn = fn
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.nfe = 0

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        self.nfe += 1
        return self.fn(x, sigma)

    def eps(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``ε̂ = (x - D) / σ``."""
        return (x - self(x, sigma)) / append_dims(sigma, x.dim())

    def score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``∇ log p_σ(x) = (D - x) / σ²``."""
        return (self(x, sigma) - x) / append_dims(sigma**2, x.dim())

    def velocity(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Probability-flow ``dx/dσ = (x - D) / σ``."""
        return self.eps(x, sigma)

    def clamped(self, low: float, high: float) -> Denoiser:
        """This denoiser with ``x̂_0`` clamped to ``[low, high]`` at every call (``ε̂``, score and velocity
        follow from the clamped value), as Ho et al. (2020) clip the prediction for images in ``[-1, 1]``.

        At high noise, ``x̂_0 = (x̃ - σ̃ ε̂)`` multiplies the network's error by ``σ̃`` (hundreds at the start of
        a VP path), so an under-trained network throws samples far outside the data's range; clamping keeps
        every step's target inside it. The clamped denoiser counts its own ``nfe``.

        Example:
            >>> d = Denoiser(lambda x, s: 3 * x, sigma_min=0.01, sigma_max=10.0).clamped(-1.0, 1.0)
            >>> d(torch.tensor([[0.2, 2.0]]), torch.ones(1)).tolist()
            [[0.6000000238418579, 1.0]]
        """
        low, high = float(low), float(high)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"clamped needs finite low < high, got ({low}, {high})")
        inner = self
        return Denoiser(lambda x, sigma: inner(x, sigma).clamp(low, high), sigma_min=self.sigma_min,
                        sigma_max=self.sigma_max)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma_min={self.sigma_min:g}, sigma_max={self.sigma_max:g})"


class PathDenoiser(Denoiser):
    """The σ-space denoiser of a model that predicts ``eps``/``score``/``x0``/``velocity`` on a Gaussian path.

    ``D(x̃, σ̃) = x̂_0(α(t) x̃, t)`` with ``t = time_of_sigma(σ̃)`` (or ``path.time_of_sigma`` when the path
    has a closed form), ``x̂_0`` converted from the prediction by the functions of this module.

    Args:
        path: ``mean_scale(t)``, ``std(t)`` (an SDE, or a flow-matching path); for ``"velocity"`` also
            ``d_mean_scale(t)``, ``d_std(t)``.
        predict: ``predict(x_t, t) -> Tensor like x_t``, the family's network on its own path.
        prediction: one of :data:`PREDICTIONS`.
        t_min, t_max: the time range the model was trained on (its σ range follows).

    Example:
        >>> from probgen.sde import VPSDE
        >>> d = PathDenoiser(VPSDE(), lambda x, t: -x, prediction="score", t_min=1e-3, t_max=1.0)  # N(0, I) data
        >>> [round(v, 5) for v in d(torch.ones(1, 2), torch.tensor([1.0]))[0].tolist()]   # E[x0 | x0 + z] = x / 2
        [0.5, 0.5]
    """

    def __init__(self, path: Any, predict: Callable[[Tensor, Tensor], Tensor], *, prediction: str,
                 t_min: float, t_max: float):
        self.prediction = check_choice("prediction", prediction, PREDICTIONS)
        self.path, self.predict = path, predict
        self.t_min, self.t_max = float(t_min), float(t_max)
        bounds = torch.tensor([self.t_min, self.t_max], dtype=torch.float64)
        s = path.std(bounds) / path.mean_scale(bounds)
        super().__init__(self._denoise, sigma_min=float(s[0]), sigma_max=float(s[1]))

    def time(self, sigma: Tensor) -> Tensor:
        """``t(σ̃)`` on the path."""
        if hasattr(self.path, "time_of_sigma"):
            return self.path.time_of_sigma(sigma)
        return time_of_sigma(self.path, sigma, self.t_min, self.t_max)

    def _denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        # samplers pass one σ for the whole batch: invert the path and evaluate its coefficients once, not B times
        const = sigma.numel() > 1 and bool((sigma == sigma[0]).all())
        tc = self.time(sigma[:1] if const else sigma)

        def coef(fn: Callable[[Tensor], Tensor]) -> Tensor:
            value = fn(tc)
            return value.expand(sigma.shape) if const else value

        t = tc.expand(sigma.shape) if const else tc
        alpha, std = coef(self.path.mean_scale), coef(self.path.std)
        x_t = append_dims(alpha, x.dim()) * x
        out = check_output_shape("model prediction", self.predict(x_t, t), x.shape)
        if self.prediction == "x0":
            return out
        if self.prediction == "eps":
            return x0_from_eps(x_t, out, alpha, std)
        if self.prediction == "score":
            return x0_from_eps(x_t, eps_from_score(out, std), alpha, std)
        return x0_from_velocity(x_t, out, alpha, std, coef(self.path.d_mean_scale), coef(self.path.d_std))


# ---------------------------------------------------------------------------------- exact likelihood
def denoiser_log_prob(
    denoiser: Denoiser,
    x: Tensor,
    *,
    prior_log_prob: Callable[[Tensor], Tensor] | None = None,
    solver: ODESolver | None = None,
    **opts: Any,
) -> Tensor:
    r"""``log p_{σ_min}(x)`` in nats through the σ-space probability-flow ODE, in ``u = log σ``.

    .. math::

        \frac{dx}{du} = x - D(x, e^u), \qquad
        \log p_{σ_{min}}(x) = \log p_{σ_{max}}(x_{u_{max}}) + \int_{u_{min}}^{u_{max}} \nabla\cdot(x - D)\,du,

    integrated by :func:`probgen.ops.odeint_logdet` (``log σ`` keeps the ODE smooth near ``σ_min``). The
    density is of the σ-space variable ``x̃ = x_t / α(t)`` at ``σ_min``; the default prior is
    ``N(0, σ_max² I)`` (pass the exact one when it is known).

    Args:
        denoiser: a :class:`Denoiser`.
        x: ``(B, *event)``.
        prior_log_prob: ``(B, *event) -> (B,)`` at ``σ_max``.
        solver: an :class:`~probgen.ops.ODESolver` (default dopri5, ``rtol = atol = 1e-5``).
        **opts: ``trace``, ``num_probes``, ``noise``, ``generator``, ``batch_size`` of
            :func:`~probgen.ops.odeint_logdet`.

    Returns:
        ``(B,)`` log-densities.

    Example:
        >>> d = Denoiser(lambda x, s: torch.zeros_like(x), sigma_min=1e-3, sigma_max=1.0)  # a point mass at 0
        >>> round(float(denoiser_log_prob(d, torch.zeros(1, 1, dtype=torch.float64))), 3)  # log N(0; 0, σ_min²)
        5.989
    """
    check_tensor("x", x, min_ndim=2)

    def velocity(y: Tensor, u: Tensor) -> Tensor:
        return y - denoiser(y, u.exp())

    u0, u1 = math.log(denoiser.sigma_min), math.log(denoiser.sigma_max)
    x_end, logdet, _ = odeint_logdet(velocity, x, u0, u1, solver=solver, **opts)
    if prior_log_prob is None:
        s = denoiser.sigma_max
        prior = -0.5 * x[0].numel() * math.log(2 * math.pi * s * s) - 0.5 * batch_sum(x_end**2) / (s * s)
    else:
        prior = check_output_shape("prior_log_prob", prior_log_prob(x_end), (x.shape[0],))
    return prior + logdet
