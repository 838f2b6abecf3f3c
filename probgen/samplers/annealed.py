"""Annealed Langevin dynamics over a decreasing sequence of noise levels (Song & Ermon, 2019, Alg. 1).

For noise levels ``sigma_1 > ... > sigma_L`` and a noise-conditional score
``s(x, sigma) = grad_x log p_sigma(x)`` (``p_sigma`` the data convolved with ``N(0, sigma^2 I)``), run
``K`` Langevin moves per level with step ``alpha_i = step_lr * sigma_i^2 / sigma_L^2``:

.. math::

    x \\leftarrow x + \\tfrac{\\alpha_i}{2} s(x, \\sigma_i) + \\sqrt{\\alpha_i}\\, z, \\qquad z \\sim N(0, I).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from probgen._checks import check_int, check_positive, check_tensor
from probgen.ops.shapes import append_dims
from probgen.samplers.base import Callback, SampleResult, _check_callback, _CountedScore, _randn_like
from probgen.sde.base import check_sample_shape

__all__ = ["annealed_langevin", "geometric_sigmas"]


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
    """Annealed Langevin dynamics (NCSN sampling).

    .. math::

        x \\leftarrow x + \\tfrac{\\alpha_i}{2} s(x, \\sigma_i) + \\sqrt{\\alpha_i} z,\\quad
        \\alpha_i = \\epsilon\\, \\sigma_i^2 / \\sigma_L^2,

    ``K = steps_per_level`` times for each level ``i = 1..L``; then, if ``denoise``, Tweedie's step
    ``x <- x + sigma_L^2 s(x, sigma_L)`` (Jolicoeur-Martineau et al., 2021; Song & Ermon, 2020).

    Args:
        score_fn: ``score_fn(x, sigma) -> Tensor like x`` with ``x: (B, *event)``, ``sigma: (B,)``.
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
    score = _CountedScore(score_fn)
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
    sigmas = sigmas.to(device=x.device, dtype=x.dtype)
    sigma_last = sigmas[-1]
    for i in range(sigmas.shape[0]):
        sigma = sigmas[i].expand(x.shape[0])
        alpha = step_lr * (sigmas[i] / sigma_last) ** 2
        for _ in range(steps_per_level):
            x = x + 0.5 * alpha * score(x, sigma) + alpha.sqrt() * _randn_like(x, generator)
        if callback is not None:
            callback(i, x, float(sigmas[i]))
    if denoise:
        sigma = sigma_last.expand(x.shape[0])
        x = x + append_dims(sigma**2, x.dim()) * score(x, sigma)
    return SampleResult(samples=x, nfe=score.calls, info={"num_levels": sigmas.shape[0]})
