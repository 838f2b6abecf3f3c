r"""What every sampler shares: the entry checks, and the bridge from the front ends to the σ-space samplers.

Every algorithm is written once, on the σ-space denoiser (:mod:`probgen.samplers.denoiser`), in the one
signature ``sample_<name>(model, x, sigmas, *, callback=None, generator=None, **options) -> Tensor``
(:func:`check_sigma_sampler` is its entry check). The older front ends over a score and an SDE, or an
ε-network and a DDPM schedule,

    sampler(score_fn, sde_or_schedule, shape_or_x, *, steps=..., generator=None, callback=None, ...)
        -> SampleResult(samples, nfe, info)

build the denoiser and the σ grid of their time grid (:func:`as_denoiser`, :func:`run_on_path`), run the
one implementation on ``x̃ = x / α(t)`` and map the result back, ``x = α(t) x̃``; ``nfe`` counts calls
of the network (each on the whole batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_bool, check_int, check_output_shape, check_real, check_tensor
from probgen.sde.base import SDE, check_sample_shape
from probgen.sde.discrete import DiscreteSchedule, uniform_timesteps

__all__ = ["SampleResult", "Callback", "SigmaCallback", "check_sde", "check_callback", "check_eps",
           "check_sigma_sampler", "as_denoiser", "run_on_path", "run_on_sde", "schedule_denoiser",
           "positive_levels", "denoise_to_zero", "check_clip"]

Callback = Callable[[int, Tensor, Any], None]
"""``callback(i, x, t)``: called after step ``i`` with the current state and time (or noise level)."""

SigmaCallback = Callable[[int, Tensor, float, Any], None]
"""``callback(i, x, sigma, denoised)`` of the σ-space samplers, after step ``i`` (``x`` now at ``sigma``)."""


@dataclass
class SampleResult:
    """The output of a sampler.

    Attributes:
        samples: the draws, ``(B, *event)``.
        nfe: number of score-function evaluations (each on the whole batch).
        info: sampler-specific extras (e.g. the final time, the step count).
    """

    samples: Tensor
    nfe: int
    info: dict[str, Any] = field(default_factory=dict)


class _CountedScore:
    """Wrap ``score_fn`` to count its calls and check its output shape against its input.

    The output is detached: samplers never record an autograd graph through the score across steps
    (memory stays flat), while ``score_fn`` itself may still use autograd inside (an EBM's ``-grad E``).
    """

    def __init__(self, score_fn: Callable[..., Tensor], name: str = "score_fn"):
        if not callable(score_fn):
            raise TypeError(f"{name} must be callable, got {type(score_fn).__name__}")
        self.score_fn = score_fn
        self.name = name
        self.calls = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return check_output_shape(self.name, self.score_fn(x, t), x.shape).detach()


def check_sde(sde: Any) -> SDE:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a probgen.sde.SDE (VPSDE, SubVPSDE, VESDE, ...), got {type(sde).__name__}")
    return sde


def check_callback(callback: Any) -> Callback | None:
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(i, x, t) or None, got {type(callback).__name__}")
    return callback


def check_eps(eps: Any, T: float) -> float:
    v = check_real("eps", eps)
    if not (0.0 < v < T):
        raise ValueError(f"eps must lie in (0, {T:g}) (the final time of the reverse process), got {eps}")
    return v


def _initial_state(
    sde: SDE,
    shape: Sequence[int],
    *,
    x_init: Tensor | None,
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> Tensor:
    """``x_init`` if given (checked against ``shape``), else a draw from the prior ``p_T``."""
    shape = check_sample_shape("shape", shape)
    if x_init is None:
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        return sde.prior_sample(shape, generator=generator, device=device, dtype=dtype)
    check_tensor("x_init", x_init)
    if tuple(x_init.shape) != shape:
        raise ValueError(f"x_init must have shape {shape} (the shape argument), got {tuple(x_init.shape)}")
    return x_init.detach().to(device=device if device is not None else x_init.device, dtype=dtype or x_init.dtype)


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


# ------------------------------------------------------------------------ the σ-space samplers' entry
def check_sigma_sampler(model: Any, x: Any, sigmas: Any, callback: Any, *,
                        increasing: bool = False) -> tuple[Tensor, Tensor]:
    """The entry check of every ``sample_<name>(model, x, sigmas, ...)``: returns ``(x, sigmas)`` with
    ``x`` detached and ``sigmas`` in its dtype and device (non-negative, decreasing; increasing for inversion)."""
    if not callable(model):
        raise TypeError(f"model must be a Denoiser (callable as model(x, sigma)), got {type(model).__name__}")
    check_tensor("x", x, min_ndim=2)
    check_tensor("sigmas", sigmas, ndim=1)
    if sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must hold at least 2 noise levels (start and end), got {sigmas.shape[0]}")
    wrong = (sigmas[1:] < sigmas[:-1]) if increasing else (sigmas[1:] > sigmas[:-1])
    if bool(wrong.any()) or bool((sigmas < 0).any()):
        order = "increasing" if increasing else "decreasing (e.g. karras_sigmas(...))"
        raise ValueError(f"sigmas must be non-negative and {order}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(i, x, sigma, denoised) or None, "
                        f"got {type(callback).__name__}")
    return x.detach(), sigmas.to(dtype=x.dtype, device=x.device)


def full_sigma(x: Tensor, sigma: Tensor) -> Tensor:
    """``sigma`` (0-d) as a ``(B,)`` batch."""
    return sigma.expand(x.shape[0])


def positive_levels(sigmas: Tensor) -> Tensor:
    """The non-zero levels of ``sigmas`` (only a last one may be 0), for the samplers that integrate over them."""
    positive = sigmas[sigmas > 0]
    if positive.shape[0] < sigmas.shape[0] - 1:
        raise ValueError("sigmas must be positive except for a last 0")
    return positive


def denoise_to_zero(model: Any, x: Tensor, sigmas: Tensor, callback: SigmaCallback | None) -> Tensor:
    """A last step to ``σ = 0`` (when ``sigmas`` ends at 0): Tweedie's ``D(x, σ_{N-1})``."""
    if float(sigmas[-1]) != 0.0:
        return x
    denoised = model(x, full_sigma(x, sigmas[-2]))
    if callback is not None:
        callback(sigmas.shape[0] - 2, denoised, 0.0, denoised)
    return denoised


# ------------------------------------------------------------------------ front ends -> σ-space
def as_denoiser(fn: Any, path: Any, *, prediction: str, name: str, t_min: float, t_max: float) -> Any:
    """``fn`` itself when it is a :class:`~probgen.samplers.denoiser.Denoiser` (a model's ``denoiser()``),
    else the σ-space denoiser of the network ``fn(x_t, t)`` predicting ``prediction`` on ``path``
    (its output shape checked under ``name``, detached)."""
    from probgen.samplers.denoiser import Denoiser, PathDenoiser

    if isinstance(fn, Denoiser):
        return fn
    return PathDenoiser(path, _CountedScore(fn, name), prediction=prediction, t_min=t_min, t_max=t_max)


def run_on_path(
    sampler: Callable[..., Tensor],
    denoiser: Any,
    path: Any,
    times: Tensor,
    x: Tensor,
    *,
    to_zero: bool,
    callback: Callback | None = None,
    marks: Sequence[Any] | None = None,
    generator: torch.Generator | None = None,
    **options: Any,
) -> tuple[Tensor, int]:
    r"""Run the σ-space ``sampler`` over the times ``t_0, …, t_K`` of a Gaussian path and map back.

    ``σ̃_k = σ(t_k)/α(t_k)`` (then ``σ = 0`` when ``to_zero``), ``x̃ = x/α(t_0)``; returns
    ``(α(t_K) x̃_K, nfe)`` (``x̃`` itself after a last step to ``σ = 0``). ``callback(i, α x̃, marks[i])``
    after step ``i`` for ``i < len(marks)`` (``marks`` default: the times reached).
    """
    times = times.to(torch.float64).cpu()
    alpha = path.mean_scale(times)
    sigmas = path.std(times) / alpha
    if to_zero:
        sigmas, alpha = torch.cat([sigmas, sigmas.new_zeros(1)]), torch.cat([alpha, alpha.new_ones(1)])
    scale = alpha.tolist()
    marks = list(times[1:].tolist()) + [0.0] if marks is None else list(marks)
    inner = None
    if callback is not None:
        def inner(i: int, x_tilde: Tensor, sigma: float, denoised: Any) -> None:
            if i < len(marks):
                callback(i, x_tilde * scale[i + 1], marks[i])
    start = denoiser.nfe
    out = sampler(denoiser, x / scale[0], sigmas.to(dtype=x.dtype, device=x.device), callback=inner,
                  generator=generator, **options)
    return out * scale[-1], denoiser.nfe - start


def run_on_sde(
    sampler: Callable[..., Tensor],
    score_fn: Any,
    sde: Any,
    shape: Sequence[int],
    *,
    num_steps: int,
    eps: Any,
    denoise: Any,
    callback: Any,
    x_init: Tensor | None,
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    report_start: bool = False,
    **options: Any,
) -> tuple[Tensor, int, float]:
    """The front ends over ``(score_fn, sde)``: check ``sde``, ``eps``, ``callback``, ``denoise``; draw ``x_T``
    (or take ``x_init``); run ``sampler`` on the σ grid of ``T = t_0 > … > t_{num_steps} = eps`` (then
    ``σ = 0`` with ``denoise``) by :func:`run_on_path`. ``callback(i, x, t)`` after step ``i`` (with
    ``report_start``, first ``callback(0, x_T, T)`` and the steps from 1). Returns ``(x, nfe, eps)``."""
    sde = check_sde(sde)
    eps = check_eps(eps, sde.T)
    callback = check_callback(callback)
    check_bool("denoise", denoise)
    x = _initial_state(sde, shape, x_init=x_init, generator=generator, device=device, dtype=dtype)
    denoiser = as_denoiser(score_fn, sde, prediction="score", name="score_fn", t_min=eps, t_max=sde.T)
    times = torch.linspace(sde.T, eps, num_steps + 1, dtype=torch.float64)
    if report_start and callback is not None:
        callback(0, x, sde.T)
        report = callback
        callback = lambda i, x_i, t: report(i + 1, x_i, t)  # noqa: E731
    x, nfe = run_on_path(sampler, denoiser, sde, times, x, to_zero=denoise, callback=callback,
                         marks=times[1:].tolist(), generator=generator, **options)
    return x, nfe, eps


# ------------------------------------------------------------------------ DDPM schedules (front ends)
def _check_schedule(schedule: Any) -> DiscreteSchedule:
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(
            f"schedule must be a probgen.sde.discrete.DiscreteSchedule, got {type(schedule).__name__}"
        )
    return schedule


def _check_timesteps(schedule: DiscreteSchedule, steps: Any, timesteps: Any, device: torch.device) -> Tensor:
    """Increasing distinct network indices in ``[0, N-1]`` from ``timesteps`` or ``steps`` (uniform)."""
    n = schedule.num_steps
    if timesteps is None:
        steps = check_int("steps", 50 if steps is None else steps, minimum=1, maximum=n)
        return uniform_timesteps(n, steps, device=device)
    if steps is not None:
        raise ValueError("give steps or timesteps, not both")
    if isinstance(timesteps, (list, tuple)):
        timesteps = torch.tensor(timesteps)
    if not isinstance(timesteps, Tensor) or timesteps.dim() != 1 or timesteps.is_floating_point() or not len(timesteps):
        raise TypeError(f"timesteps must be a non-empty 1-D integer sequence of indices in [0, {n - 1}], "
                        f"got {timesteps!r:.80}")
    timesteps = timesteps.long().to(device)
    if bool((timesteps < 0).any()) or bool((timesteps > n - 1).any()):
        raise ValueError(f"timesteps must lie in [0, {n - 1}] (num_steps = {n}), "
                         f"got values in [{int(timesteps.min())}, {int(timesteps.max())}]")
    if len(timesteps) > 1 and bool((timesteps[1:] <= timesteps[:-1]).any()):
        raise ValueError("timesteps must be strictly increasing (indices of the steps kept, e.g. [0, 20, 40, ...])")
    return timesteps


def check_clip(clip_x0: Any) -> tuple[float, float] | None:
    """``clip_x0`` (a range to clamp ``x̂_0`` to) as ``(low, high)`` floats with ``low < high``, or ``None``."""
    if clip_x0 is None:
        return None
    if (not isinstance(clip_x0, (tuple, list)) or len(clip_x0) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in clip_x0)
            or not clip_x0[0] < clip_x0[1]):
        raise ValueError(f"clip_x0 must be None or (low, high) with low < high, got {clip_x0!r}")
    return float(clip_x0[0]), float(clip_x0[1])


def _start(
    shape_or_x: Sequence[int] | Tensor,
    *,
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
) -> Tensor:
    """A standard normal draw of ``shape`` (``x_T ~ N(0, I)``), or the given starting tensor."""
    if isinstance(shape_or_x, Tensor):
        x = check_tensor("x_init", shape_or_x, min_ndim=2)
        return x.to(device=device if device is not None else x.device, dtype=dtype or x.dtype)
    shape = check_sample_shape("shape", shape_or_x)
    if len(shape) < 2:
        raise ValueError(f"shape must be (batch, *event) with at least one event dimension, got {shape}")
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    return torch.randn(shape, generator=generator, dtype=dtype, device=device)


def schedule_denoiser(eps_fn: Any, schedule: DiscreteSchedule, *, clip_x0: tuple[float, float] | None = None,
                      integer_index: bool = True, path: Any = None,
                      name: str = "eps_fn", detach: bool = True) -> tuple[Any, Any]:
    """``(path, denoiser)`` of a noise predictor ``eps_fn(x_t, index)`` on a DDPM schedule.

    The path is the schedule's VP bridge (default: :class:`~probgen.sde.DiscreteVPSDE` with the
    piecewise-linear ``log α`` of :class:`~probgen.sde.discrete.DiscreteSchedule`); the network sees the index
    ``t N - 1`` of the time, as a ``LongTensor`` at the steps when ``integer_index`` (within 1e-3 of an
    integer, so that a float32 time still lands on its step) and a float tensor between them. ``eps_fn`` may
    also be a :class:`~probgen.samplers.denoiser.Denoiser` already (a model's ``denoiser()``). With
    ``clip_x0 = (low, high)`` the denoiser's ``x̂_0`` is clamped (``ε̂`` follows from it). The network's output
    shape is checked (under ``name``) and, with ``detach``, detached (samplers record no graph).
    """
    from probgen.samplers.denoiser import Denoiser, PathDenoiser
    from probgen.sde.discrete import DiscreteVPSDE

    path = path if path is not None else DiscreteVPSDE(schedule, interpolation="linear")

    def predict(x: Tensor, t: Tensor) -> Tensor:
        index = schedule.time_to_index(t)
        if integer_index:
            rounded = index.round()
            if bool(((index - rounded).abs() < 1e-3).all()):
                index = rounded.long()
        return eps_fn(x, index)

    if isinstance(eps_fn, Denoiser):
        denoiser = eps_fn
    else:
        fn = _CountedScore(predict, name) if detach else predict
        denoiser = PathDenoiser(path, fn, prediction="eps", t_min=1.0 / schedule.num_steps, t_max=1.0)
    if clip_x0 is not None:
        denoiser = denoiser.clamped(*clip_x0)
    return path, denoiser


# old private names
_check_sde, _check_callback, _check_eps = check_sde, check_callback, check_eps
