r"""DPM-Solver and DPM-Solver++: fast high-order solvers of the diffusion probability-flow ODE.

In half log-SNR time ``λ = log(α/σ)`` the probability-flow ODE of a VP diffusion has the exact solution
(Lu et al. 2022, Prop. 3.1)

.. math::

    x_t = \frac{α_t}{α_s} x_s - α_t \int_{λ_s}^{λ_t} e^{-λ}\, ε̂(x_λ, λ)\, dλ ,

whose linear part is integrated exactly; DPM-Solver-k Taylor-expands the noise prediction ``ε̂`` in ``λ``
to order ``k - 1`` (``k = 1`` is DDIM). DPM-Solver++ does the same for the data prediction
``x̂_0 = (x - σ ε̂)/α`` (Lu et al. 2022b), better suited to clipping and guidance. *Singlestep* solvers
take ``k - 1`` intermediate evaluations inside each step; *multistep* solvers reuse the previous
evaluations (one evaluation per step). With ``steps`` evaluations in all, 10–20 steps give samples
close to the ODE solution.

The schedule is a :class:`~probgen.sde.discrete.DiscreteSchedule`, read in continuous time
``t ∈ [1/N, 1]`` by its piecewise-linear ``log α(t)`` (DPM-Solver's ``NoiseScheduleVP("discrete")``).
The noise predictor is called at the *continuous* index ``t N - 1`` (a float tensor), which the
built-in sinusoidal networks embed like any other number.

References:
    Lu, Zhou, Bao, Chen, Li & Zhu (2022), DPM-Solver, arXiv:2206.00927;
    Lu et al. (2022b), DPM-Solver++, arXiv:2211.01095.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import torch
from torch import Tensor

from probgen._checks import check_bool, check_choice, check_int, check_interval
from probgen.samplers.base import Callback, SampleResult, _check_callback, _CountedScore
from probgen.samplers.ddim import _check_clip, _check_schedule, _start
from probgen.sde.discrete import DiscreteSchedule

__all__ = ["sample_dpm_solver", "DPM_SOLVER_METHODS", "DPM_SOLVER_ALGORITHMS", "TIME_GRIDS", "time_grid"]

DPM_SOLVER_METHODS: tuple[str, ...] = ("multistep", "singlestep")
DPM_SOLVER_ALGORITHMS: tuple[str, ...] = ("dpmsolver", "dpmsolver++")
TIME_GRIDS: tuple[str, ...] = ("logSNR", "time_uniform", "time_quadratic")


def time_grid(schedule: DiscreteSchedule, t_start: float, t_end: float, num: int, kind: str, *,
              dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """``num + 1`` decreasing times from ``t_start`` to ``t_end``.

    ``"logSNR"``: uniform in ``λ``; ``"time_uniform"``: uniform in ``t``; ``"time_quadratic"``:
    uniform in ``sqrt(t)`` (Lu et al. 2022, Sec. 3.3 and Appendix D).

    Example:
        >>> from probgen.sde.discrete import DiscreteSchedule, linear_betas
        >>> time_grid(DiscreteSchedule(linear_betas(10)), 1.0, 0.1, 3, "time_uniform").tolist()
        [1.0, 0.7, 0.4, 0.1]
    """
    kind = check_choice("time_grid", kind, TIME_GRIDS)
    num = check_int("steps", num, minimum=1)
    ends = torch.tensor([t_start, t_end], dtype=torch.float64)
    if kind == "logSNR":
        lam = schedule.marginal_lambda(ends)
        ts = schedule.inverse_lambda(torch.linspace(float(lam[0]), float(lam[1]), num + 1, dtype=torch.float64))
        ts[0], ts[-1] = t_start, t_end
    elif kind == "time_uniform":
        ts = torch.linspace(t_start, t_end, num + 1, dtype=torch.float64)
    else:
        ts = torch.linspace(t_start**0.5, t_end**0.5, num + 1, dtype=torch.float64) ** 2
    return ts.to(dtype=dtype, device=device)


class _Model:
    """Noise / data prediction at continuous time, with the schedule's ``α, σ, λ`` at scalar times."""

    def __init__(self, eps_fn: _CountedScore, schedule: DiscreteSchedule, data_prediction: bool,
                 clip: tuple[float, float] | None):
        self.eps_fn, self.schedule = eps_fn, schedule
        self.data_prediction, self.clip = data_prediction, clip
        # every time of the grid is visited by several steps (multistep history): interpolate each once
        self._coeffs: dict[float, tuple[Tensor, Tensor, Tensor]] = {}

    def coeffs(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(α_t, σ_t, λ_t)`` as 0-d tensors, memoised per time."""
        key = float(t)
        cached = self._coeffs.get(key)
        if cached is None:
            t1 = t.reshape(1)
            log_alpha = self.schedule.marginal_log_mean_coeff(t1)[0]
            sigma = self.schedule.marginal_std(t1)[0]
            cached = self._coeffs[key] = (log_alpha.exp(), sigma, log_alpha - sigma.log())
        return cached

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        index = self.schedule.time_to_index(t).expand(x.shape[0])
        eps = self.eps_fn(x, index)
        if not self.data_prediction and self.clip is None:
            return eps
        alpha, sigma, _ = self.coeffs(t)
        x0 = (x - sigma * eps) / alpha
        if self.clip is not None:
            x0 = x0.clamp(*self.clip)
        return x0 if self.data_prediction else (x - alpha * x0) / sigma


def _singlestep(model: _Model, x: Tensor, s: Tensor, t: Tensor, order: int, pp: bool) -> Tensor:
    """One singlestep DPM-Solver(++)-``order`` step from ``s`` to ``t`` (Lu et al. 2022, Algs. 1–2)."""
    sch = model.schedule
    alpha_s, sigma_s, lam_s = model.coeffs(s)
    alpha_t, sigma_t, lam_t = model.coeffs(t)
    h = lam_t - lam_s
    m_s = model(x, s)
    if order == 1:
        if pp:
            return sigma_t / sigma_s * x - alpha_t * torch.expm1(-h) * m_s
        return alpha_t / alpha_s * x - sigma_t * torch.expm1(h) * m_s
    r1, r2 = (0.5, None) if order == 2 else (1.0 / 3.0, 2.0 / 3.0)
    s1 = sch.inverse_lambda((lam_s + r1 * h).reshape(1))[0]
    alpha_s1, sigma_s1, _ = model.coeffs(s1)
    if pp:
        x_s1 = sigma_s1 / sigma_s * x - alpha_s1 * torch.expm1(-r1 * h) * m_s
    else:
        x_s1 = alpha_s1 / alpha_s * x - sigma_s1 * torch.expm1(r1 * h) * m_s
    m_s1 = model(x_s1, s1)
    if order == 2:
        if pp:
            phi_1 = torch.expm1(-h)
            return sigma_t / sigma_s * x - alpha_t * phi_1 * m_s - 0.5 / r1 * alpha_t * phi_1 * (m_s1 - m_s)
        phi_1 = torch.expm1(h)
        return alpha_t / alpha_s * x - sigma_t * phi_1 * m_s - 0.5 / r1 * sigma_t * phi_1 * (m_s1 - m_s)
    s2 = sch.inverse_lambda((lam_s + r2 * h).reshape(1))[0]
    alpha_s2, sigma_s2, _ = model.coeffs(s2)
    if pp:
        phi_12 = torch.expm1(-r2 * h)
        phi_22 = torch.expm1(-r2 * h) / (r2 * h) + 1.0
        x_s2 = (sigma_s2 / sigma_s * x - alpha_s2 * phi_12 * m_s
                + r2 / r1 * alpha_s2 * phi_22 * (m_s1 - m_s))
        m_s2 = model(x_s2, s2)
        phi_1 = torch.expm1(-h)
        phi_2 = phi_1 / h + 1.0
        return sigma_t / sigma_s * x - alpha_t * phi_1 * m_s + (1.0 / r2) * alpha_t * phi_2 * (m_s2 - m_s)
    phi_12 = torch.expm1(r2 * h)
    phi_22 = torch.expm1(r2 * h) / (r2 * h) - 1.0
    x_s2 = (alpha_s2 / alpha_s * x - sigma_s2 * phi_12 * m_s
            - r2 / r1 * sigma_s2 * phi_22 * (m_s1 - m_s))
    m_s2 = model(x_s2, s2)
    phi_1 = torch.expm1(h)
    phi_2 = phi_1 / h - 1.0
    return alpha_t / alpha_s * x - sigma_t * phi_1 * m_s - (1.0 / r2) * sigma_t * phi_2 * (m_s2 - m_s)


def _multistep(model: _Model, x: Tensor, history: list[tuple[Tensor, Tensor]], t: Tensor, order: int,
               pp: bool) -> Tensor:
    """One multistep DPM-Solver(++)-``order`` step to ``t`` from the last ``order`` ``(time, output)`` pairs."""
    t0, m0 = history[-1]
    alpha_0, sigma_0, lam_0 = model.coeffs(t0)
    alpha_t, sigma_t, lam_t = model.coeffs(t)
    h = lam_t - lam_0
    if pp:
        phi_1 = torch.expm1(-h)
        x_t = sigma_t / sigma_0 * x - alpha_t * phi_1 * m0
    else:
        phi_1 = torch.expm1(h)
        x_t = alpha_t / alpha_0 * x - sigma_t * phi_1 * m0
    if order == 1:
        return x_t
    t1, m1 = history[-2]
    lam_1 = model.coeffs(t1)[2]
    r0 = (lam_0 - lam_1) / h
    d1_0 = (m0 - m1) / r0
    if order == 2:
        return x_t - 0.5 * alpha_t * phi_1 * d1_0 if pp else x_t - 0.5 * sigma_t * phi_1 * d1_0
    t2, m2 = history[-3]
    lam_2 = model.coeffs(t2)[2]
    r1 = (lam_1 - lam_2) / h
    d1_1 = (m1 - m2) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    if pp:
        phi_2 = phi_1 / h + 1.0
        phi_3 = phi_2 / h - 0.5
        return x_t + alpha_t * phi_2 * d1 - alpha_t * phi_3 * d2
    phi_2 = phi_1 / h - 1.0
    phi_3 = phi_2 / h - 0.5
    return x_t - sigma_t * phi_2 * d1 - sigma_t * phi_3 * d2


def sample_dpm_solver(
    eps_fn: Callable[[Tensor, Tensor], Tensor],
    schedule: DiscreteSchedule,
    shape_or_x: Sequence[int] | Tensor,
    *,
    steps: int = 20,
    order: int = 3,
    method: str = "multistep",
    algorithm: str = "dpmsolver++",
    time_grid_type: str = "logSNR",
    t_start: float = 1.0,
    t_end: float | None = None,
    lower_order_final: bool = True,
    denoise_to_zero: bool = False,
    clip_x0: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SampleResult:
    r"""Sample with DPM-Solver / DPM-Solver++ from ``x_{t_start} ~ N(0, I)`` to ``t_end``.

    First-order step (= DDIM), noise and data prediction, with ``h = λ_t - λ_s``:

    .. math::

        x_t = \frac{α_t}{α_s} x_s - σ_t (e^{h} - 1)\, ε̂(x_s, s)
        \qquad\text{or}\qquad
        x_t = \frac{σ_t}{σ_s} x_s - α_t (e^{-h} - 1)\, \hat x_0(x_s, s);

    orders 2 and 3 add finite-difference estimates of the first (and second) ``λ``-derivatives of
    ``ε̂`` (``x̂_0``), from intermediate points (singlestep, ``r_1 = ½`` resp. ``⅓, ⅔``) or from the
    previous steps (multistep, warming up with lower orders).

    Args:
        eps_fn: ``eps_fn(x_t, index) -> ε̂`` with a *float* continuous index ``t N - 1`` of shape ``(B,)``.
        schedule: the DDPM noise schedule.
        shape_or_x: ``(B, *event)``, or the starting ``x`` at ``t_start``.
        steps: number of noise-prediction evaluations (NFE), ``>= 1``.
        order: 1, 2 or 3 (default 3, with multistep DPM-Solver++: the choice Lu et al. recommend for
            unconditional sampling).
        method: ``"multistep"`` (one evaluation per step; ``steps`` steps) or ``"singlestep"``
            (``steps // order`` steps of ``order`` evaluations, then one lower-order step for the rest).
        algorithm: ``"dpmsolver"`` (noise prediction) or ``"dpmsolver++"`` (data prediction).
        time_grid_type: ``"logSNR"``, ``"time_uniform"`` or ``"time_quadratic"`` (see :func:`time_grid`).
        t_start: starting time in ``(t_end, 1]``.
        t_end: final time, default ``1/N`` (the noise level of the first DDPM step).
        lower_order_final: multistep only: use lower orders in the last steps when ``steps < 10``
            (more stable with very few steps, as in the reference implementation).
        denoise_to_zero: finish with one extra evaluation returning ``x̂_0(x_{t_end}, t_end)``.
        clip_x0: clamp ``x̂_0`` to ``(low, high)`` inside every evaluation (``None``: no clipping).
        generator: for the initial draw.
        callback: ``callback(i, x, t)`` after each step (``t`` a 0-d tensor).
        device, dtype: of the draw when ``shape_or_x`` is a shape.

    Returns:
        ``SampleResult(samples, nfe, info={"times": t-grid, "orders": [...]})``.

    Example:
        >>> from probgen.sde.discrete import DiscreteSchedule, linear_betas
        >>> s = DiscreteSchedule(linear_betas(1000))
        >>> r = sample_dpm_solver(lambda x, i: torch.zeros_like(x), s, (4, 2), steps=10, order=3)
        >>> r.samples.shape, r.nfe
        (torch.Size([4, 2]), 10)
    """
    schedule = _check_schedule(schedule)
    counted = _CountedScore(eps_fn, "eps_fn")
    callback = _check_callback(callback)
    clip = _check_clip(clip_x0)
    steps = check_int("steps", steps, minimum=1)
    order = check_int("order", order, minimum=1, maximum=3)
    method = check_choice("method", method, DPM_SOLVER_METHODS)
    algorithm = check_choice("algorithm", algorithm, DPM_SOLVER_ALGORITHMS)
    check_choice("time_grid_type", time_grid_type, TIME_GRIDS)
    n = schedule.num_steps
    t_end = 1.0 / n if t_end is None else check_interval("t_end", t_end, 1.0 / n, 1.0)
    t_start = check_interval("t_start", t_start, 1.0 / n, 1.0)
    if not t_start > t_end:
        raise ValueError(f"t_start must be > t_end, got t_start={t_start:g}, t_end={t_end:g}")
    for name, flag in (("lower_order_final", lower_order_final), ("denoise_to_zero", denoise_to_zero)):
        check_bool(name, flag)
    x = _start(shape_or_x, generator=generator, device=device, dtype=dtype)
    pp = algorithm == "dpmsolver++"
    model = _Model(counted, schedule, pp, clip)

    if method == "multistep":
        ts = time_grid(schedule, t_start, t_end, steps, time_grid_type, dtype=x.dtype, device=x.device)
        history = [(ts[0], model(x, ts[0]))]
        orders = []
        for i in range(1, steps + 1):
            k = min(order, i)
            if lower_order_final and steps < 10:
                k = min(k, steps + 1 - i)
            orders.append(k)
            x = _multistep(model, x, history, ts[i], k, pp)
            if i < steps:
                history = [*history[-2:], (ts[i], model(x, ts[i]))]
            if callback is not None:
                callback(i - 1, x, ts[i])
    else:
        orders = [order] * (steps // order) + ([steps % order] if steps % order else [])
        ts = time_grid(schedule, t_start, t_end, len(orders), time_grid_type, dtype=x.dtype, device=x.device)
        for i, k in enumerate(orders):
            x = _singlestep(model, x, ts[i], ts[i + 1], k, pp)
            if callback is not None:
                callback(i, x, ts[i + 1])
    if denoise_to_zero:
        t_last = ts[-1]
        data = _Model(counted, schedule, True, clip)
        x = data(x, t_last)
    return SampleResult(x, counted.calls, {"times": ts, "orders": orders})

