"""Unadjusted Langevin algorithm on a time-independent score (EBMs: ``score = -grad E``).

.. math::

    x_{k+1} = x_k + h\\, s(x_k) + \\sqrt{2 h \\tau}\\, z_k, \\qquad z_k \\sim N(0, I),

the Euler–Maruyama discretisation of ``dx = s(x) dt + sqrt(2 tau) dW``, whose stationary law is
``p(x)^{1/tau}``; the discretisation leaves an ``O(h)`` bias (no accept/reject — MALA lives in
:mod:`probgen.infer`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from probgen._checks import check_int, check_output_shape, check_positive, check_tensor
from probgen.samplers.base import Callback, SampleResult, _check_callback, _randn_like

__all__ = ["langevin"]


def langevin(
    score_fn: Callable[[Tensor], Tensor],
    x_init: Tensor,
    *,
    steps: int,
    step_size: float,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> SampleResult:
    """Run ``steps`` unadjusted Langevin moves ``x <- x + h s(x) + sqrt(2 h tau) z`` from ``x_init``.

    Args:
        score_fn: ``score_fn(x) -> Tensor like x``, ``x: (B, *event)`` (chains batched along ``B``).
            An EBM passes ``lambda x: -grad E(x)``; autograd may be used inside.
        x_init: initial states ``(B, *event)``.
        steps: number of moves (``>= 1``).
        step_size: ``h > 0``.
        temperature: ``tau > 0``; the chain targets ``p^{1/tau}``.
        generator: seeds the Gaussian noise.
        callback: ``callback(i, x, None)`` after move ``i``.

    Returns:
        :class:`SampleResult` with the final states and ``nfe = steps``.

    Reference:
        Roberts & Tweedie (1996), Bernoulli 2(4); Welling & Teh (2011) for the ML use;
        Du & Mordatch (2019), arXiv:1903.08689 for EBMs.

    Example:
        >>> out = langevin(lambda x: -x, torch.zeros(4, 2), steps=10, step_size=0.1)
        >>> out.samples.shape, out.nfe
        (torch.Size([4, 2]), 10)
    """
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(x), got {type(score_fn).__name__}")
    x = check_tensor("x_init", x_init, min_ndim=1).detach()
    steps = check_int("steps", steps, minimum=1)
    step_size = check_positive("step_size", step_size)
    temperature = check_positive("temperature", temperature)
    callback = _check_callback(callback)
    noise_scale = math.sqrt(2.0 * step_size * temperature)
    for i in range(steps):
        grad = check_output_shape("score_fn", score_fn(x), x.shape).detach()
        x = x + step_size * grad + noise_scale * _randn_like(x, generator)
        if callback is not None:
            callback(i, x, None)
    return SampleResult(samples=x, nfe=steps, info={"step_size": step_size, "temperature": temperature})
