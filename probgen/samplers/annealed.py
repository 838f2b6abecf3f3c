"""Annealed Langevin dynamics over a decreasing sequence of noise levels (Song & Ermon, 2019, Alg. 1).

For noise levels ``sigma_1 > ... > sigma_L`` and a noise-conditional score
``s(x, sigma) = grad_x log p_sigma(x)`` (``p_sigma`` the data convolved with ``N(0, sigma^2 I)``), run
``K`` Langevin moves per level with step ``alpha_i = step_lr * sigma_i^2 / sigma_L^2``:

.. math::

    x \\leftarrow x + \\tfrac{\\alpha_i}{2} s(x, \\sigma_i) + \\sqrt{\\alpha_i}\\, z, \\qquad z \\sim N(0, I).

:func:`sample_annealed_langevin` is the one implementation (σ-space, on any family's denoiser, with
``s = (D - x)/σ²``); :func:`annealed_langevin` its front end for a noise-conditional score ``s(x, σ)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from probgen._checks import check_bool, check_int, check_positive, check_tensor
from probgen.ops.shapes import append_dims
from probgen.samplers.base import (
    Callback,
    SampleResult,
    SigmaCallback,
    _check_callback,
    _CountedScore,
    _randn_like,
    check_sigma_sampler,
    full_sigma,
)
from probgen.samplers.denoiser import Denoiser
from probgen.sde.base import check_sample_shape

__all__ = ["sample_annealed_langevin", "annealed_langevin", "geometric_sigmas"]


def geometric_sigmas(
    sigma_max: float,
    sigma_min: float,
    num_levels: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """The decreasing geometric sequence ``sigma_i = sigma_max (sigma_min / sigma_max)^{(i-1)/(L-1)}``.

    Example:
        >>> [round(s, 6) for s in geometric_sigmas(1.0, 0.01, 3).tolist()]
        [1.0, 0.1, 0.01]
    """
    sigma_max = check_positive("sigma_max", sigma_max)
    sigma_min = check_positive("sigma_min", sigma_min)
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min:g}, sigma_max={sigma_max:g}")
    num_levels = check_int("num_levels", num_levels, minimum=2)
    logs = torch.linspace(torch.log(torch.tensor(sigma_max, dtype=torch.float64)).item(),
                          torch.log(torch.tensor(sigma_min, dtype=torch.float64)).item(), num_levels,
                          dtype=torch.float64)
    return logs.exp().to(device=device, dtype=dtype or torch.get_default_dtype())


def _check_sigmas(sigmas: Tensor | Sequence[float]) -> Tensor:
    if not isinstance(sigmas, Tensor):
        try:
            sigmas = torch.as_tensor(sigmas, dtype=torch.get_default_dtype())
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"sigmas must be a 1-D tensor of decreasing noise levels, got {sigmas!r}") from err
    check_tensor("sigmas", sigmas, ndim=1)
    if bool((sigmas <= 0).any()) or (sigmas.numel() > 1 and bool((sigmas[1:] >= sigmas[:-1]).any())):
        raise ValueError(f"sigmas must be positive and strictly decreasing, got {sigmas.tolist()}")
    return sigmas


@torch.no_grad()
def sample_annealed_langevin(model: Denoiser, x: Tensor, sigmas: Tensor, *,
                             callback: SigmaCallback | None = None, generator: torch.Generator | None = None,
                             steps_per_level: int = 100, step_lr: float = 2e-5, denoise: bool = True) -> Tensor:
    r"""Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1) over the non-zero ``sigmas``:
    ``steps_per_level`` moves ``x ← x + ½α_i s(x, σ_i) + \sqrt{α_i} z`` with ``α_i = step_lr σ_i²/σ_L²`` and
    ``s = (D - x)/σ²``; then, if ``denoise``, Tweedie's ``x ← D(x, σ_L)``. ``L K (+1)`` evaluations.

    Example:
        >>> d = Denoiser(lambda x, s: x / (1 + s[:, None] ** 2), sigma_min=0.1, sigma_max=1.0)   # N(0, 1) data
        >>> x = sample_annealed_langevin(d, torch.randn(4000, 1), torch.tensor([1.0, 0.5, 0.0]),
        ...                              steps_per_level=100, step_lr=0.1, denoise=False)
        >>> abs(float(x.var()) - 1.25 / (1 - 0.1 / 5)) < 0.1   # N(0, 1 + 0.5²), ULA's stationary bias included
        True
    """
    x, sigmas = check_sigma_sampler(model, x, sigmas, callback)
    steps_per_level = check_int("steps_per_level", steps_per_level, minimum=1)
    step_lr = check_positive("step_lr", step_lr)
    check_bool("denoise", denoise)
    levels = sigmas[sigmas > 0]
    last = levels[-1]
    for i, sigma in enumerate(levels):
        alpha = step_lr * (sigma / last) ** 2
        for _ in range(steps_per_level):
            score = (model(x, full_sigma(x, sigma)) - x) / sigma**2
            x = x + 0.5 * alpha * score + alpha.sqrt() * _randn_like(x, generator)
        if callback is not None:
            callback(i, x, float(sigma), None)
    if denoise:
        x = model(x, full_sigma(x, last))
    return x


def annealed_langevin(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    sigmas: Tensor | Sequence[float],
    shape: Sequence[int],
    *,
    steps_per_level: int = 100,
    step_lr: float = 2e-5,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    x_init: Tensor | None = None,
) -> SampleResult:
    """Annealed Langevin dynamics (NCSN sampling), the front end of :func:`sample_annealed_langevin` for a
    noise-conditional score.

    .. math::

        x \\leftarrow x + \\tfrac{\\alpha_i}{2} s(x, \\sigma_i) + \\sqrt{\\alpha_i} z,\\quad
        \\alpha_i = \\epsilon\\, \\sigma_i^2 / \\sigma_L^2,

    ``K = steps_per_level`` times for each level ``i = 1..L``; then, if ``denoise``, Tweedie's step
    ``x <- x + sigma_L^2 s(x, sigma_L)`` (Jolicoeur-Martineau et al., 2021; Song & Ermon, 2020).

    Args:
        score_fn: ``score_fn(x, sigma) -> Tensor like x`` with ``x: (B, *event)``, ``sigma: (B,)``; it
            becomes the denoiser ``D = x + σ² s`` of the noised data; or a VE-type model's
            :class:`~probgen.samplers.Denoiser` itself.
        sigmas: noise levels ``(L,)``, positive and strictly decreasing (e.g. :func:`geometric_sigmas`).
        shape: ``(B, *event)`` of the draws.
        steps_per_level: ``K >= 1``.
        step_lr: ``epsilon > 0``, the step at the smallest level.
        denoise: finish with the Tweedie denoising step (one more score call).
        generator: seeds the initial draw and the Langevin noise.
        callback: ``callback(i, x, sigma_i)`` after the moves of level ``i``.
        device, dtype: of the initial draw (default: those of ``sigmas``).
        x_init: start here; default ``N(0, sigma_1^2 I)``, the noised data law at the top level when
            ``sigma_1`` dominates the data scale.

    Returns:
        :class:`SampleResult` with ``samples`` and ``nfe = L K (+1)``.

    Reference:
        Song & Ermon (2019), "Generative Modeling by Estimating Gradients of the Data Distribution",
        arXiv:1907.05600, Algorithm 1.

    Example:
        >>> sig = geometric_sigmas(1.0, 0.1, 4)
        >>> score = lambda x, s: -x / (1 + s[:, None] ** 2)
        >>> annealed_langevin(score, sig, (16, 2), steps_per_level=5).nfe
        21
    """
    sigmas = _check_sigmas(sigmas)
    shape = check_sample_shape("shape", shape)
    steps_per_level = check_int("steps_per_level", steps_per_level, minimum=1)
    step_lr = check_positive("step_lr", step_lr)
    callback = _check_callback(callback)
    device = device if device is not None else sigmas.device
    dtype = dtype if dtype is not None else sigmas.dtype
    if x_init is None:
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype) * sigmas[0].to(device, dtype)
    else:
        check_tensor("x_init", x_init)
        if tuple(x_init.shape) != shape:
            raise ValueError(f"x_init must have shape {shape} (the shape argument), got {tuple(x_init.shape)}")
        x = x_init.detach()
    if isinstance(score_fn, Denoiser):
        denoiser = score_fn
    else:
        score = _CountedScore(score_fn)
        sigma_min, sigma_max = float(sigmas[-1]), float(sigmas[0])
        denoiser = Denoiser(lambda y, sigma: y + append_dims(sigma**2, y.dim()) * score(y, sigma),
                            sigma_min=sigma_min,
                            sigma_max=sigma_max if sigma_max > sigma_min else math.nextafter(sigma_min, math.inf))
    start = denoiser.nfe
    inner = None if callback is None else (lambda i, y, sigma, denoised: callback(i, y, sigma))
    x = sample_annealed_langevin(denoiser, x, torch.cat([sigmas, sigmas.new_zeros(1)]).to(x), callback=inner,
                                 generator=generator, steps_per_level=steps_per_level, step_lr=step_lr,
                                 denoise=denoise)
    return SampleResult(samples=x, nfe=denoiser.nfe - start, info={"num_levels": sigmas.shape[0]})
