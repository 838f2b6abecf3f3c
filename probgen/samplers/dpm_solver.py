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

The algorithm is written once, :func:`sample_dpm_solver_sigma`, in the one signature on the σ-space
denoiser of any family (``x̃ = x/α``, ``σ̃ = σ/α``, ``λ = -log σ̃``: the formulas are unchanged).
:func:`sample_dpm_solver` is its front end for an ε-network and a DDPM schedule: the schedule is read in
continuous time ``t ∈ [1/N, 1]`` by its piecewise-linear ``log α(t)`` (DPM-Solver's
``NoiseScheduleVP("discrete")``), the time grid becomes a σ grid, and the noise predictor is called at the
*continuous* index ``t N - 1`` (a float tensor), which the built-in sinusoidal networks embed like any
other number.

References:
    Lu, Zhou, Bao, Chen, Li & Zhu (2022), DPM-Solver, arXiv:2206.00927;
    Lu et al. (2022b), DPM-Solver++, arXiv:2211.01095.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from probgen._checks import check_bool, check_choice, check_int, check_interval
from probgen.samplers.base import (
    Callback,
    SampleResult,
    SigmaCallback,
    _check_callback,
    check_clip,
    _check_schedule,
    _start,
    check_sigma_sampler,
    full_sigma,
    run_on_path,
    schedule_denoiser,
)
from probgen.samplers.denoiser import Denoiser
from probgen.sde.discrete import DiscreteSchedule

__all__ = ["sample_dpm_solver", "sample_dpm_solver_sigma", "dpm_solver_orders", "DPM_SOLVER_METHODS",
           "DPM_SOLVER_ALGORITHMS", "TIME_GRIDS", "time_grid"]

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


def dpm_solver_orders(num_steps: int, order: int, *, lower_order_final: bool = True) -> list[int]:
    """Orders of the ``num_steps`` multistep steps: warm-up ``1, 2, …`` then ``order``; with
    ``lower_order_final`` and fewer than 10 steps, lower orders again at the end (as Lu et al.'s code).

    Example:
        >>> dpm_solver_orders(5, 3)
        [1, 2, 3, 2, 1]
    """
    orders = []
    for i in range(1, num_steps + 1):
        k = min(order, i)
        if lower_order_final and num_steps < 10:
            k = min(k, num_steps + 1 - i)
        orders.append(k)
    return orders


def _predict(model: Denoiser, x: Tensor, sigma: Tensor, pp: bool) -> Tensor:
    """Data prediction ``D`` (DPM-Solver++) or noise prediction ``ε̂ = (x - D)/σ`` (DPM-Solver)."""
    denoised = model(x, full_sigma(x, sigma))
    return denoised if pp else (x - denoised) / sigma


def _singlestep(model: Denoiser, x: Tensor, s: Tensor, t: Tensor, order: int, pp: bool) -> tuple[Tensor, Tensor]:
    """One singlestep DPM-Solver(++)-``order`` step from ``σ = s`` to ``σ = t`` (Lu et al. 2022, Algs. 1–2,
    with ``α = 1``, ``λ = -log σ``); returns ``(x_t, m_s)``."""
    h = s.log() - t.log()
    m_s = _predict(model, x, s, pp)
    if order == 1:
        return (t / s * x - torch.expm1(-h) * m_s if pp else x - t * torch.expm1(h) * m_s), m_s
    r1, r2 = (0.5, None) if order == 2 else (1.0 / 3.0, 2.0 / 3.0)
    s1 = s * torch.exp(-r1 * h)
    x_s1 = s1 / s * x - torch.expm1(-r1 * h) * m_s if pp else x - s1 * torch.expm1(r1 * h) * m_s
    m_s1 = _predict(model, x_s1, s1, pp)
    if order == 2:
        if pp:
            phi_1 = torch.expm1(-h)
            return t / s * x - phi_1 * m_s - 0.5 / r1 * phi_1 * (m_s1 - m_s), m_s
        phi_1 = torch.expm1(h)
        return x - t * phi_1 * m_s - 0.5 / r1 * t * phi_1 * (m_s1 - m_s), m_s
    s2 = s * torch.exp(-r2 * h)
    if pp:
        phi_12 = torch.expm1(-r2 * h)
        phi_22 = phi_12 / (r2 * h) + 1.0
        x_s2 = s2 / s * x - phi_12 * m_s + r2 / r1 * phi_22 * (m_s1 - m_s)
        m_s2 = _predict(model, x_s2, s2, pp)
        phi_1 = torch.expm1(-h)
        phi_2 = phi_1 / h + 1.0
        return t / s * x - phi_1 * m_s + (1.0 / r2) * phi_2 * (m_s2 - m_s), m_s
    phi_12 = torch.expm1(r2 * h)
    phi_22 = phi_12 / (r2 * h) - 1.0
    x_s2 = x - s2 * phi_12 * m_s - r2 / r1 * s2 * phi_22 * (m_s1 - m_s)
    m_s2 = _predict(model, x_s2, s2, pp)
    phi_1 = torch.expm1(h)
    phi_2 = phi_1 / h - 1.0
    return x - t * phi_1 * m_s - (1.0 / r2) * t * phi_2 * (m_s2 - m_s), m_s


def _multistep(x: Tensor, history: list[tuple[Tensor, Tensor]], t: Tensor, order: int, pp: bool) -> Tensor:
    """One multistep DPM-Solver(++)-``order`` step to ``σ = t`` from the last ``order`` ``(σ, output)`` pairs."""
    s0, m0 = history[-1]
    h = s0.log() - t.log()
    if pp:
        phi_1 = torch.expm1(-h)
        x_t = t / s0 * x - phi_1 * m0
    else:
        phi_1 = torch.expm1(h)
        x_t = x - t * phi_1 * m0
    if order == 1:
        return x_t
    s1, m1 = history[-2]
    r0 = (s1.log() - s0.log()) / h
    d1_0 = (m0 - m1) / r0
    if order == 2:
        return x_t - 0.5 * phi_1 * d1_0 if pp else x_t - 0.5 * t * phi_1 * d1_0
    s2, m2 = history[-3]
    r1 = (s2.log() - s1.log()) / h
    d1_1 = (m1 - m2) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    if pp:
        phi_2 = phi_1 / h + 1.0
        phi_3 = phi_2 / h - 0.5
        return x_t + phi_2 * d1 - phi_3 * d2
    phi_2 = phi_1 / h - 1.0
    phi_3 = phi_2 / h - 0.5
    return x_t - t * phi_2 * d1 - t * phi_3 * d2


@torch.no_grad()
def sample_dpm_solver_sigma(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    *,
    callback: SigmaCallback | None = None,
    generator: torch.Generator | None = None,
    order: int | Sequence[int] = 3,
    method: str = "multistep",
    algorithm: str = "dpmsolver++",
    lower_order_final: bool = True,
) -> Tensor:
    r"""DPM-Solver / DPM-Solver++ on any family's σ-space denoiser (one algorithm for every family).

    In σ-space (``α = 1``, half log-SNR ``λ = -\log σ``, step ``h = λ_{i+1} - λ_i``) the first-order steps,
    noise and data prediction, are

    .. math::

        x_{i+1} = x_i - σ_{i+1}(e^{h} - 1)\, ε̂(x_i, σ_i)
        \qquad	ext{or}\qquad
        x_{i+1} = rac{σ_{i+1}}{σ_i} x_i - (e^{-h} - 1)\, D(x_i, σ_i)

    (both DDIM); orders 2 and 3 add finite-difference estimates of the ``λ``-derivatives of ``ε̂`` (``D``)
    from intermediate points (singlestep, ``r_1 = ½`` resp. ``⅓, ⅔``: ``order`` evaluations per step) or
    from the previous steps (multistep: one evaluation per step, warming up with lower orders). Dividing
    a VP path's ``x_t = α x̃`` by ``α`` leaves every formula of Lu et al. unchanged, so this is their
    solver for DDPM, ScoreSDE, EDM and flow matching alike. A last step to ``σ = 0`` returns ``D``.

    Args:
        model, x, sigmas, callback, generator: the one signature (``generator`` unused: deterministic).
        order: 1, 2 or 3, or one order per step to a ``σ > 0`` (e.g. ``[3, 3, 3, 1]``).
        method: ``"multistep"`` or ``"singlestep"``.
        algorithm: ``"dpmsolver"`` (noise prediction) or ``"dpmsolver++"`` (data prediction).
        lower_order_final: multistep with fewer than 10 steps: lower orders at the end (ignored when
            ``order`` is a sequence).

    Reference: Lu, Zhou, Bao, Chen, Li & Zhu (2022), arXiv:2206.00927; Lu et al. (2022b), DPM-Solver++,
    arXiv:2211.01095.

    Example:
        >>> from probgen.samplers.karras import karras_sigmas
        >>> d = Denoiser(lambda x, s: x / (1 + s[:, None] ** 2), sigma_min=0.002, sigma_max=80.0)   # N(0, 1) data
        >>> x = sample_dpm_solver_sigma(d, 80.0 * torch.randn(4000, 1, generator=torch.Generator().manual_seed(0)),
        ...                             karras_sigmas(15, 0.002, 80.0))
        >>> round(float(x.std()), 1), d.nfe
        (1.0, 15)
    """
    x, sigmas = check_sigma_sampler(model, x, sigmas, callback)
    method = check_choice("method", method, DPM_SOLVER_METHODS)
    pp = check_choice("algorithm", algorithm, DPM_SOLVER_ALGORITHMS) == "dpmsolver++"
    check_bool("lower_order_final", lower_order_final)
    num_positive = int((sigmas[1:] > 0).sum())
    if isinstance(order, int) and not isinstance(order, bool):
        order = check_int("order", order, minimum=1, maximum=3)
        orders = ([order] * num_positive if method == "singlestep"
                  else dpm_solver_orders(num_positive, order, lower_order_final=lower_order_final))
    else:
        orders = [check_int("order", k, minimum=1, maximum=3) for k in order]
        if len(orders) != num_positive:
            raise ValueError(f"order must be an int or one order per step to a sigma > 0 ({num_positive}), "
                             f"got {len(orders)}")
    history: list[tuple[Tensor, Tensor]] = []
    for i in range(sigmas.shape[0] - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if method == "multistep" or float(sigma_next) == 0.0:
            history = [*history[-2:], (sigma, _predict(model, x, sigma, pp))]
            m = history[-1][1]
            denoised = m if pp else x - sigma * m
            x = denoised if float(sigma_next) == 0.0 else _multistep(x, history, sigma_next, min(orders[i], i + 1), pp)
        else:
            x_start = x
            x, m = _singlestep(model, x, sigma, sigma_next, orders[i], pp)
            denoised = m if pp else x_start - sigma * m
        if callback is not None:
            callback(i, x, float(sigma_next), denoised)
    return x


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
    callback = _check_callback(callback)
    clip = check_clip(clip_x0)
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
    if method == "multistep":
        orders = dpm_solver_orders(steps, order, lower_order_final=lower_order_final)
    else:
        orders = [order] * (steps // order) + ([steps % order] if steps % order else [])
    ts = time_grid(schedule, t_start, t_end, len(orders), time_grid_type)
    path, denoiser = schedule_denoiser(eps_fn, schedule, clip_x0=clip, integer_index=False)
    x, nfe = run_on_path(sample_dpm_solver_sigma, denoiser, path, ts, x, to_zero=denoise_to_zero, callback=callback,
                         marks=[*ts.to(x)[1:], ts.to(x)[-1]], order=orders, method=method, algorithm=algorithm)
    return SampleResult(x, nfe, {"times": ts.to(x), "orders": orders})
