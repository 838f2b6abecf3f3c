r"""Discrete variance-preserving noise schedules (DDPM) and their continuous-time interpolation.

A DDPM forward chain ``q(x_t | x_{t-1}) = N(\sqrt{1 - β_t}\, x_{t-1}, β_t I)``, ``t = 1, …, N``, has
the marginals ``q(x_t | x_0) = N(\sqrt{ᾱ_t}\, x_0, (1 - ᾱ_t) I)`` with ``ᾱ_t = ∏_{s ≤ t} (1 - β_s)``
(Ho et al. 2020, eq. 4). :class:`DiscreteSchedule` holds ``β_t``, ``ᾱ_t`` and the posterior
``q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I)`` (Ho et al. eqs. 6–7), and interpolates ``log α(t)``
(``α = \sqrt{ᾱ}``) piecewise-linearly in continuous time ``t ∈ [0, 1]`` through the grid
``t_i = i / N``, ``log α(t_i) = ½ log ᾱ_i`` (``ᾱ_0 = 1``) — the ``NoiseScheduleVP("discrete")`` of
DPM-Solver, with the extra knot at ``t = 0`` so that ``σ(0) = 0``. A discrete step ``t`` (the
network index ``t - 1``) sits at continuous time ``t / N``; the continuous index of time ``t`` is
``t N - 1``.

:class:`DiscreteVPSDE` is the VP SDE whose marginals are exactly that interpolation,
``β(t) = -2\, d\log α/dt = -N \log(1 - β_i)`` on ``((i-1)/N, i/N]`` — that is ``β(t) ≈ N β_t``, the
``N → ∞`` limit of Song et al. (2021); for the linear schedule with ``N = 1000`` it agrees with
``VPSDE(beta_min=0.1, beta_max=20)`` up to ``O(β²)``.

References:
    Ho, Jain & Abbeel (2020), arXiv:2006.11239; Nichol & Dhariwal (2021), arXiv:2102.09672 (cosine
    schedule); Lu et al. (2022), DPM-Solver, arXiv:2206.00927 (``NoiseScheduleVP``); Song et al.
    (2021), arXiv:2011.13456.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_choice, check_int, check_positive, check_probability, check_tensor
from probgen.ops.shapes import append_dims
from probgen.sde.base import SDE

__all__ = [
    "SCHEDULES",
    "DiscreteSchedule",
    "DiscreteVPSDE",
    "linear_betas",
    "cosine_betas",
    "make_betas",
    "uniform_timesteps",
]

SCHEDULES: tuple[str, ...] = ("linear", "cosine")
"""Names of the built-in β schedules (:func:`make_betas`)."""


def linear_betas(num_steps: int, *, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Ho et al.'s linear schedule ``β_t = linspace(beta_start, beta_end, num_steps)`` (float64).

    Example:
        >>> linear_betas(3).tolist()
        [0.0001, 0.01005, 0.02]
    """
    num_steps = check_int("num_steps", num_steps, minimum=1)
    beta_start = check_probability("beta_start", beta_start, open_low=True, open_high=True)
    beta_end = check_probability("beta_end", beta_end, open_low=True, open_high=True)
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int, *, offset: float = 0.008, max_beta: float = 0.999) -> Tensor:
    r"""Nichol & Dhariwal's cosine schedule (float64).

    .. math::

        ᾱ_t = f(t) / f(0),\quad f(t) = \cos^2\Big(\frac{t/N + s}{1 + s}\frac{\pi}{2}\Big),\quad
        β_t = \min(1 - ᾱ_t / ᾱ_{t-1},\ \text{max\_beta}).

    Reference: Nichol & Dhariwal (2021), arXiv:2102.09672, eq. 17.

    Example:
        >>> b = cosine_betas(1000)
        >>> float(b[-1])
        0.999
    """
    num_steps = check_int("num_steps", num_steps, minimum=1)
    offset = check_positive("offset", offset)
    max_beta = check_probability("max_beta", max_beta, open_low=True, open_high=True)
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=max_beta)


def make_betas(schedule: str | Tensor | Sequence[float], num_steps: int) -> Tensor:
    """β's (float64, ``(num_steps,)``) from a name in :data:`SCHEDULES` or a user sequence/tensor.

    A user schedule must have ``num_steps`` finite entries in ``(0, 1)``.

    Example:
        >>> make_betas("linear", 1000).shape
        torch.Size([1000])
    """
    num_steps = check_int("num_steps", num_steps, minimum=1)
    if isinstance(schedule, str):
        name = check_choice("schedule", schedule, SCHEDULES)
        return linear_betas(num_steps) if name == "linear" else cosine_betas(num_steps)
    betas = _check_betas(schedule)
    if betas.shape[0] != num_steps:
        raise ValueError(f"schedule must have num_steps = {num_steps} betas, got {betas.shape[0]}")
    return betas


def _check_betas(betas: Any) -> Tensor:
    if isinstance(betas, (list, tuple)):
        try:
            betas = torch.tensor(betas, dtype=torch.float64)
        except (TypeError, ValueError) as error:
            raise TypeError(f"betas must be a 1-D sequence of numbers, got {betas!r:.80}") from error
    if not isinstance(betas, Tensor):
        raise TypeError(
            f"schedule must be one of {', '.join(repr(s) for s in SCHEDULES)} or a 1-D tensor of betas, "
            f"got {type(betas).__name__}"
        )
    check_tensor("betas", betas, ndim=1)
    betas = betas.detach().to(torch.float64)
    if bool((betas <= 0).any()) or bool((betas >= 1).any()):
        raise ValueError(
            f"betas must lie in (0, 1), got values in [{betas.min().item():g}, {betas.max().item():g}]"
        )
    return betas


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of ``(xp, fp)`` at ``x`` (``xp`` increasing), extrapolating linearly."""
    idx = torch.searchsorted(xp, x.contiguous(), right=False).clamp(1, xp.shape[0] - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    f0, f1 = fp[idx - 1], fp[idx]
    return f0 + (x - x0) * (f1 - f0) / (x1 - x0)


class DiscreteSchedule:
    r"""A DDPM noise schedule ``β_1, …, β_N`` with its derived quantities (Ho et al. 2020).

    Step ``t ∈ {1, …, N}`` is stored at index ``t - 1`` (the network's ``t_index``):

    .. math::

        ᾱ_t = \prod_{s=1}^t (1 - β_s),\qquad
        β̃_t = \frac{1 - ᾱ_{t-1}}{1 - ᾱ_t} β_t,\qquad
        μ̃_t(x_t, x_0) = \frac{\sqrt{ᾱ_{t-1}} β_t}{1 - ᾱ_t} x_0 + \frac{\sqrt{1-β_t}(1 - ᾱ_{t-1})}{1 - ᾱ_t} x_t .

    Continuous time (DPM-Solver's ``NoiseScheduleVP("discrete")``, plus a knot at ``t = 0``):
    ``log α(t)`` piecewise linear through ``(i/N, ½ log ᾱ_i)``, ``i = 0, …, N``;
    ``σ(t) = \sqrt{1 - α(t)^2}``, ``λ(t) = log α(t) - log σ(t)`` (half log-SNR).

    All tables are float64 on the CPU; the methods return values in the dtype and device of their
    argument.

    Args:
        betas: ``(N,)`` values in ``(0, 1)`` (see :func:`make_betas`).

    Reference: Ho, Jain & Abbeel (2020), arXiv:2006.11239, eqs. 4, 6, 7; Lu et al. (2022),
    arXiv:2206.00927, Appendix.

    Example:
        >>> s = DiscreteSchedule(linear_betas(1000))
        >>> round(float(s.alphas_cumprod[-1]), 8)
        4.036e-05
        >>> t = torch.tensor([0.001], dtype=torch.float64)
        >>> torch.allclose(s.marginal_alpha(t) ** 2, s.alphas_cumprod[:1])
        True
    """

    def __init__(self, betas: Tensor | Sequence[float]):
        self.betas = _check_betas(betas)
        self.num_steps = int(self.betas.shape[0])
        self.alphas = 1.0 - self.betas
        log_alphas = torch.log1p(-self.betas)
        self.log_alphas_cumprod = torch.cumsum(log_alphas, 0)
        self.alphas_cumprod = self.log_alphas_cumprod.exp()
        self.alphas_cumprod_prev = torch.cat([self.betas.new_ones(1), self.alphas_cumprod[:-1]])
        one_minus = -torch.expm1(self.log_alphas_cumprod)
        self.one_minus_alphas_cumprod = one_minus
        self.posterior_variance = self.betas * (1.0 - self.alphas_cumprod_prev) / one_minus
        self.posterior_mean_coef_x0 = self.betas * self.alphas_cumprod_prev.sqrt() / one_minus
        self.posterior_mean_coef_xt = self.alphas.sqrt() * (1.0 - self.alphas_cumprod_prev) / one_minus
        # continuous-time knots: t_i = i / N, log alpha(t_i) = 0.5 log abar_i, i = 0..N
        self.t_grid = torch.arange(self.num_steps + 1, dtype=torch.float64) / self.num_steps
        self.log_alpha_grid = torch.cat([self.betas.new_zeros(1), 0.5 * self.log_alphas_cumprod])
        self.continuous_betas = -self.num_steps * log_alphas  # beta(t) on ((i-1)/N, i/N]

    @classmethod
    def from_name(cls, schedule: str | Tensor | Sequence[float], num_steps: int) -> DiscreteSchedule:
        """``DiscreteSchedule(make_betas(schedule, num_steps))``."""
        return cls(make_betas(schedule, num_steps))

    def __repr__(self) -> str:
        return (f"DiscreteSchedule(num_steps={self.num_steps}, beta_1={float(self.betas[0]):.4g}, "
                f"beta_N={float(self.betas[-1]):.4g})")

    # ------------------------------------------------------------------ discrete tables
    def gather(self, table: Tensor, index: Tensor, like: Tensor) -> Tensor:
        """``table[index]`` as ``(B,)`` in ``like``'s dtype and device (``index: (B,)`` integer, 0-based)."""
        return table.to(device=index.device)[index].to(dtype=like.dtype, device=like.device)

    # ------------------------------------------------------------------ continuous time
    def _on(self, t: Tensor, *tables: Tensor) -> list[Tensor]:
        """``tables`` in ``t``'s dtype and device, converted once per (table, dtype, device) and cached: the
        samplers call the continuous-time methods at every step."""
        cache = self.__dict__.setdefault("_converted", {})
        out = []
        for tab in tables:
            key = (id(tab), t.dtype, t.device)
            if key not in cache:
                cache[key] = (tab, tab.to(device=t.device, dtype=t.dtype))  # the source kept alive: its id stays its own
            out.append(cache[key][1])
        return out

    def marginal_log_mean_coeff(self, t: Tensor) -> Tensor:
        """``log α(t)``, piecewise linear in ``t ∈ [0, 1]``; ``t: (B,) -> (B,)``."""
        xp, fp = self._on(t, self.t_grid, self.log_alpha_grid)
        return _interp(t, xp, fp)

    def marginal_alpha(self, t: Tensor) -> Tensor:
        """``α(t) = exp(log α(t))`` (``α(i/N)² = ᾱ_i``)."""
        return self.marginal_log_mean_coeff(t).exp()

    def marginal_std(self, t: Tensor) -> Tensor:
        """``σ(t) = sqrt(1 - α(t)²)``."""
        return (-torch.expm1(2.0 * self.marginal_log_mean_coeff(t))).clamp_min(0.0).sqrt()

    def marginal_lambda(self, t: Tensor) -> Tensor:
        """Half log-SNR ``λ(t) = log α(t) - log σ(t)`` (decreasing in ``t``)."""
        log_alpha = self.marginal_log_mean_coeff(t)
        log_sigma = 0.5 * torch.log(-torch.expm1(2.0 * log_alpha))
        return log_alpha - log_sigma

    def inverse_lambda(self, lamb: Tensor) -> Tensor:
        """The time ``t`` with ``λ(t) = lamb`` (inverse of :meth:`marginal_lambda`)."""
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lamb), -2.0 * lamb)
        xp, fp = self._on(lamb, self.log_alpha_grid, self.t_grid)
        return _interp(-log_alpha, -xp, fp)

    def continuous_beta(self, t: Tensor) -> Tensor:
        """``β(t) = -2 d log α / dt`` of the interpolation: ``-N log(1 - β_i)`` on ``((i-1)/N, i/N]``."""
        idx = torch.ceil(t * self.num_steps).long().clamp(1, self.num_steps) - 1
        return self.continuous_betas.to(device=t.device)[idx].to(t.dtype)

    def time_to_index(self, t: Tensor) -> Tensor:
        """Continuous network index ``t N - 1`` of time ``t`` (step ``i`` ↔ ``t = i / N`` ↔ index ``i - 1``)."""
        return t * self.num_steps - 1.0

    def index_to_time(self, index: Tensor) -> Tensor:
        """Inverse of :meth:`time_to_index`: ``(index + 1) / N`` (any dtype; returns floats)."""
        if not index.is_floating_point():
            index = index.to(torch.get_default_dtype())
        return (index + 1.0) / self.num_steps


def uniform_timesteps(num_steps: int, steps: int, *, device: torch.device | str | None = None) -> Tensor:
    """``steps`` distinct network indices evenly spread over ``0, …, num_steps - 1``, increasing.

    ``round(linspace(0, N - 1, steps))``: the first is 0 (step 1) and the last ``N - 1`` (step N).

    Example:
        >>> uniform_timesteps(1000, 5).tolist()
        [0, 250, 500, 749, 999]
    """
    num_steps = check_int("num_steps", num_steps, minimum=1)
    steps = check_int("steps", steps, minimum=1, maximum=num_steps)
    if steps == 1:
        return torch.tensor([num_steps - 1], dtype=torch.long, device=device)
    return torch.linspace(0, num_steps - 1, steps, dtype=torch.float64).round().long().to(device)


def _pchip_slopes(y: Tensor, h: float) -> Tensor:
    """Fritsch–Carlson slopes of the monotone C¹ cubic Hermite interpolant through ``(i h, y_i)``.

    Interior slopes are the harmonic mean of the neighbouring secants (zero where they change sign),
    end slopes the end secants.
    """
    d = (y[1:] - y[:-1]) / h
    m = torch.empty_like(y)
    m[0], m[-1] = d[0], d[-1]
    prod = d[:-1] * d[1:]
    m[1:-1] = torch.where(prod > 0, 2.0 * prod / (d[:-1] + d[1:]), torch.zeros_like(prod))
    return m


def _spline_slopes(y: Tensor, h: float) -> Tensor:
    """Knot slopes of the C² cubic spline through ``(i h, y_i)``, clamped to the end secants.

    Solves ``m_{i-1} + 4 m_i + m_{i+1} = 3 (y_{i+1} - y_{i-1}) / h`` (Thomas algorithm, float64).
    """
    values = y.tolist()
    n = len(values) - 1
    m = [0.0] * (n + 1)
    m[0], m[n] = (values[1] - values[0]) / h, (values[n] - values[n - 1]) / h
    if n >= 2:
        rhs = [3.0 * (values[i + 1] - values[i - 1]) / h for i in range(1, n)]
        rhs[0] -= m[0]
        rhs[-1] -= m[n]
        diag, r = [4.0] * (n - 1), rhs
        for i in range(1, n - 1):  # forward elimination of the unit sub-diagonal
            w = 1.0 / diag[i - 1]
            diag[i] -= w
            r[i] -= w * r[i - 1]
        m[n - 1] = r[-1] / diag[-1]
        for i in range(n - 3, -1, -1):
            m[i + 1] = (r[i] - m[i + 2]) / diag[i]
    return torch.tensor(m, dtype=y.dtype)


def _smooth_slopes(y: Tensor, h: float) -> Tensor:
    """The C² spline's slopes when it keeps ``y`` monotone (``β(t) > 0``), else the C¹ monotone ones."""
    m = _spline_slopes(y, h)
    d = (y[1:] - y[:-1]) / h
    # a cubic Hermite piece is monotone when its end slopes have the secant's sign and at most 3 times
    # its size (Fritsch & Carlson's sufficient condition)
    a, b = m[:-1] / d, m[1:] / d
    if bool(((a >= 0) & (b >= 0) & (a <= 3) & (b <= 3)).all()):
        return m
    return _pchip_slopes(y, h)


class DiscreteVPSDE(SDE):
    r"""The VP SDE whose marginals interpolate a discrete DDPM schedule exactly at ``t = i/N``.

    .. math::

        dx = -\tfrac12 β(t) x\,dt + \sqrt{β(t)}\,dw,\qquad β(t) = -2\,\frac{d \log α(t)}{dt},

    so ``p_t(x_t | x_0) = N(α(t) x_0, σ(t)^2 I)`` with ``α(i/N)^2 = ᾱ_i``. By default (``interpolation="cubic"``)
    ``log α`` is the C² cubic spline through the knots ``(i/N, ½ log ᾱ_i)`` (clamped to the end secants;
    where that spline would not be monotone, as for a clipped cosine schedule, the monotone C¹
    Fritsch–Carlson cubic): ``β(t)`` is then continuous (C¹ for the spline) and positive, so an adaptive
    ODE solver converges with its tolerance (a piecewise constant ``β`` with ``N`` jumps leaves an
    error floor of about 1e-2 nats that no tolerance removes).
    ``interpolation="linear"`` gives the piecewise-linear ``log α`` of :class:`DiscreteSchedule`
    (``β(t) = -N log(1 - β_i)`` on ``((i-1)/N, i/N]``). Either way ``β(t) ≈ N β_t``, the ``N → ∞`` limit of
    Song et al. (2021). This is the probability-flow ODE a DDPM's likelihood is computed with
    (:meth:`probgen.diffusion.DDPM.log_prob`); it works for any schedule (linear, cosine, user β's).

    Args:
        betas: ``(N,)`` DDPM β's in ``(0, 1)`` (a list for ``config()``), or a :class:`DiscreteSchedule`.
        interpolation: ``"cubic"`` (smooth bridge, default) or ``"linear"``.

    Reference: Song et al. (2021), arXiv:2011.13456, Appendix B; Lu et al. (2022), arXiv:2206.00927;
    Fritsch & Carlson (1980), "Monotone piecewise cubic interpolation", SIAM J. Numer. Anal. 17(2).

    Example:
        >>> sde = DiscreteVPSDE(linear_betas(1000))
        >>> t = torch.tensor([0.5], dtype=torch.float64)
        >>> round(float(sde.g(t) ** 2), 2)  # β(1/2) ≈ N β_500 ≈ 1000 × 0.0101
        10.1
    """

    INTERPOLATIONS = ("cubic", "linear")

    def __init__(self, betas: Tensor | Sequence[float] | DiscreteSchedule, *, interpolation: str = "cubic"):
        self.schedule = betas if isinstance(betas, DiscreteSchedule) else DiscreteSchedule(betas)
        self.interpolation = check_choice("interpolation", interpolation, self.INTERPOLATIONS)
        self._h = 1.0 / self.schedule.num_steps
        self._slopes = _smooth_slopes(self.schedule.log_alpha_grid, self._h)

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"betas": self.schedule.betas.tolist()}
        if self.interpolation != "cubic":
            cfg["interpolation"] = self.interpolation
        return cfg

    @property
    def prior_std(self) -> float:
        return 1.0

    def _log_alpha_and_rate(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(log α(t), d log α/dt)`` of the cubic interpolant; ``t: (B,)`` in ``[0, 1]``."""
        n = self.schedule.num_steps
        y, m = self.schedule._on(t, self.schedule.log_alpha_grid, self._slopes)
        k = torch.floor(t * n).long().clamp(0, n - 1)
        s = t * n - k.to(t.dtype)
        y0, y1, m0, m1 = y[k], y[k + 1], m[k] * self._h, m[k + 1] * self._h
        s2, s3 = s * s, s * s * s
        value = (2 * s3 - 3 * s2 + 1) * y0 + (s3 - 2 * s2 + s) * m0 + (3 * s2 - 2 * s3) * y1 + (s3 - s2) * m1
        rate = ((6 * s2 - 6 * s) * (y0 - y1) + (3 * s2 - 4 * s + 1) * m0 + (3 * s2 - 2 * s) * m1) * n
        return value, rate

    def beta(self, t: Tensor) -> Tensor:
        """``β(t) = -2 d log α / dt: (B,) -> (B,)``."""
        return self.g(_check_time_01(t)) ** 2

    def _log_alpha(self, t: Tensor) -> Tensor:
        if self.interpolation == "linear":
            return self.schedule.marginal_log_mean_coeff(t)
        return self._log_alpha_and_rate(t)[0]

    def _beta(self, t: Tensor) -> Tensor:
        if self.interpolation == "linear":
            return self.schedule.continuous_beta(t)
        return (-2.0 * self._log_alpha_and_rate(t)[1]).clamp_min(0.0)

    def time_of_sigma(self, sigma: Tensor) -> Tensor:
        """The time with ``σ(t)/α(t) = sigma``: ``log α(t) = -½ log(1 + σ²)``, by Newton on the interpolant.

        Starts from the piecewise-linear inverse over the knots; ``β(t) > 0`` makes ``log α`` strictly
        decreasing, so a few Newton steps reach float precision. Clamped to ``[0, 1]``.
        """
        target = -0.5 * torch.log1p(sigma**2)
        xp, fp = self.schedule._on(sigma, self.schedule.log_alpha_grid, self.schedule.t_grid)
        xp = -xp
        t = _interp(-target, xp, fp).clamp(0.0, 1.0)
        if self.interpolation == "linear":
            return t
        for _ in range(6):
            value, rate = self._log_alpha_and_rate(t)
            t = (t - (value - target) / rate.clamp(max=-1e-12)).clamp(0.0, 1.0)
        return t

    def f(self, x: Tensor, t: Tensor) -> Tensor:
        return -0.5 * append_dims(self._beta(t), x.dim()) * x

    def g(self, t: Tensor) -> Tensor:
        return self._beta(t).sqrt()

    def mean_scale(self, t: Tensor) -> Tensor:
        return self._log_alpha(t).exp()

    def std(self, t: Tensor) -> Tensor:
        return (-torch.expm1(2.0 * self._log_alpha(t))).clamp_min(0.0).sqrt()

    def corrector_alpha(self, t: Tensor, dt: float) -> Tensor:
        return 1.0 - (self._beta(t) * dt).clamp(max=1.0)

    def __repr__(self) -> str:
        return f"DiscreteVPSDE(num_steps={self.schedule.num_steps}, interpolation={self.interpolation!r})"


def _check_time_01(t: Any) -> Tensor:
    check_tensor("t", t, ndim=1)
    if not t.is_floating_point():
        raise TypeError(f"t must be a floating tensor, got {t.dtype}")
    if bool((t < 0).any()) or bool((t > 1).any()):
        raise ValueError(f"t must lie in [0, 1], got values in [{float(t.min()):g}, {float(t.max()):g}]")
    return t
