r"""Score-matching objectives for any score function: exact, sliced and denoising.

A model with an unnormalized density ``p_θ(x) ∝ exp(-E_θ(x))`` has a score ``s_θ(x) = ∇ₓ log p_θ(x)
= -∇ₓ E_θ(x)`` that does not involve the normalizer. Hyvärinen (2005) showed that the Fisher divergence
``½ E_p ‖s_θ(x) - ∇ log p(x)‖²`` equals, up to a constant free of θ,

.. math::

    J(\theta) = \mathbb{E}_{p}\Big[\operatorname{tr}\nabla_x s_\theta(x) + \tfrac12\lVert s_\theta(x)
    \rVert^2\Big],

which only needs samples of ``p``. The three functions here estimate ``J`` (or a close relative) on a
batch, for any ``score_fn: (B, *event) -> (B, *event)`` — an EBM's ``-∇E``, a score network, a
noise predictor turned into a score. They know nothing about SDEs or energies, so both the EBM and
the diffusion families use them.

* :func:`exact_score_matching_loss` — the trace by ``D`` batched vector–Jacobian products
  (:func:`probgen.ops.divergence`); exact, cost ``O(D)`` backward passes: small ``D`` only.
* :func:`sliced_score_matching_loss` — the trace replaced by random projections ``vᵀ∇s v``
  (Song et al. 2019, arXiv:1905.07088); one extra backward pass per projection, any ``D``.
* :func:`denoising_score_matching_loss` — regress ``s(x + σz)`` on ``-z/σ`` (Vincent, 2011); no
  derivative of ``s`` at all, but it matches the score of the σ-smoothed data, not of the data.

All three take ``x: (B, *event)`` and ``reduction="mean" | "sum" | "none"`` (``"none"``: ``(B,)``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from probgen._checks import check_bool, check_choice, check_int, check_output_shape, check_positive, check_tensor
from probgen.ops.trace import PROBE_NOISES, divergence, sample_probes
from probgen.ops.shapes import append_dims, batch_sum

__all__ = [
    "exact_score_matching_loss",
    "sliced_score_matching_loss",
    "denoising_score_matching_loss",
    "REDUCTIONS",
]

REDUCTIONS = ("mean", "sum", "none")

ScoreFn = Callable[..., Tensor]


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _check_common(score_fn: ScoreFn, x: Tensor, reduction: str) -> Tensor:
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(x) -> Tensor like x, got {type(score_fn).__name__}")
    check_tensor("x", x, min_ndim=2)
    check_choice("reduction", reduction, REDUCTIONS)
    return x


def exact_score_matching_loss(
    score_fn: ScoreFn,
    x: Tensor,
    *,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    r"""Hyvärinen's score-matching objective with the exact trace of the score's Jacobian.

    .. math::

        J(\theta) = \frac1B\sum_{b=1}^{B}\Big[\operatorname{tr}\nabla_x s_\theta(x_b)
        + \tfrac12\lVert s_\theta(x_b)\rVert^2\Big].

    For an energy, ``s = -∇E`` and ``tr ∇s = -tr ∇²E`` (minus the Laplacian of the energy). The trace
    is computed with ``D`` vector–Jacobian products batched by ``torch.func.vmap``
    (:func:`probgen.ops.divergence`, ``method="exact"``), keeping the graph so that ``J`` can be
    differentiated with respect to the parameters of ``score_fn``.

    Args:
        score_fn: ``(B, *event) -> (B, *event)``, acting per sample, differentiable in ``x`` and in
            its parameters (it may use ``torch.autograd.grad`` inside, as an EBM's ``-∇E`` does).
        x: data ``(B, *event)``, ``D = prod(event)``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-sample ``(B,)``).
        chunk_size: at most this many VJPs at once (memory bound for larger ``D``).

    Returns:
        a scalar, or ``(B,)`` with ``reduction="none"``.

    Reference:
        Hyvärinen (2005), "Estimation of non-normalized statistical models by score matching", JMLR 6.

    Example:
        >>> # s(x) = -x (standard normal): tr ∇s = -D, so J = -D + ½‖x‖²
        >>> x = torch.ones(3, 2)
        >>> exact_score_matching_loss(lambda z: -z, x).item()
        -1.0
    """
    _check_common(score_fn, x, reduction)
    x = x.detach().requires_grad_(True)
    s, div = divergence(score_fn, x, method="exact", create_graph=True, chunk_size=chunk_size)
    per_sample = div + 0.5 * batch_sum(s**2)
    return _reduce(per_sample, reduction)


def sliced_score_matching_loss(
    score_fn: ScoreFn,
    x: Tensor,
    *,
    num_projections: int = 1,
    noise: str = "gaussian",
    variance_reduction: bool = True,
    reduction: str = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Sliced score matching: the trace of ``∇s`` estimated with random projections.

    .. math::

        J_{\text{SSM}}(\theta) = \frac1{BP}\sum_{b,p}\Big[v_{bp}^\top \nabla_x s_\theta(x_b)\, v_{bp}
        + \tfrac12\big(v_{bp}^\top s_\theta(x_b)\big)^2\Big],
        \qquad \mathbb{E}[v v^\top] = I,

    and with ``variance_reduction=True`` (SSM-VR) the second term is replaced by its expectation
    ``½‖s_θ(x_b)‖²``. Both are unbiased for Hyvärinen's ``J`` (``E[vᵀAv] = tr A``); each projection
    costs one extra backward pass (``vᵀ∇s`` is the gradient of ``vᵀs``), whatever ``D``.

    Args:
        score_fn: ``(B, *event) -> (B, *event)``, differentiable in ``x`` and its parameters.
        x: data ``(B, *event)``.
        num_projections: ``P >= 1`` projections per sample (the batch is repeated ``P`` times).
        noise: law of ``v``: ``"gaussian"`` (Song et al.) or ``"rademacher"`` (lower variance).
        variance_reduction: use ``½‖s‖²`` instead of ``½(vᵀs)²`` (SSM-VR).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B,)``, averaged over projections).
        generator: seeds the projections.

    Returns:
        a scalar, or ``(B,)`` with ``reduction="none"``.

    Reference:
        Song, Garg, Shi & Ermon (2019), "Sliced score matching", arXiv:1905.07088.

    Example:
        >>> # s(x) = -x: vᵀ∇s v = -‖v‖² (Rademacher: exactly -D), so SSM-VR equals exact SM here
        >>> x = torch.ones(3, 2)
        >>> sliced_score_matching_loss(lambda z: -z, x, noise="rademacher").item()
        -1.0
    """
    _check_common(score_fn, x, reduction)
    num_projections = check_int("num_projections", num_projections, minimum=1)
    check_choice("noise", noise, PROBE_NOISES)
    check_bool("variance_reduction", variance_reduction)
    batch = x.shape[0]
    xr = x.detach().repeat(num_projections, *([1] * (x.dim() - 1))).requires_grad_(True)
    v = sample_probes(xr, num_probes=1, noise=noise, generator=generator)[0]
    with torch.enable_grad():
        s = check_output_shape("score_fn", score_fn(xr), xr.shape)
        sv = batch_sum(s * v)
        (grad_sv,) = torch.autograd.grad(sv.sum(), xr, create_graph=True)
    quad = batch_sum(grad_sv * v)  # vᵀ ∇s v
    second = 0.5 * batch_sum(s**2) if variance_reduction else 0.5 * sv**2
    per_sample = (quad + second).reshape(num_projections, batch).mean(0)
    return _reduce(per_sample, reduction)


def denoising_score_matching_loss(
    score_fn: ScoreFn,
    x: Tensor,
    sigma: float | Tensor,
    *,
    weighting: str = "none",
    reduction: str = "mean",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Denoising score matching at noise level ``σ``: regress ``s(x + σz)`` on ``-z/σ``.

    .. math::

        J_{\text{DSM}}(\theta) = \frac1B\sum_{b}\ \lambda(\sigma_b)\,\tfrac12\Big\lVert
        s_\theta(x_b + \sigma_b z_b) + \frac{z_b}{\sigma_b}\Big\rVert^2,\qquad z_b\sim N(0, I).

    ``-z/σ = ∇ log q_σ(x̃ | x)`` for ``x̃ = x + σz``, so the minimizer is the score of the smoothed data
    ``p_σ = p * N(0, σ²I)`` (Vincent, 2011): for Gaussian data ``N(m, Σ)`` it is the score of
    ``N(m, Σ + σ²I)`` — a bias that vanishes as ``σ → 0``, while the variance of the target grows like
    ``1/σ²``.

    Args:
        score_fn: ``score_fn(x̃) -> Tensor like x̃`` when ``sigma`` is a number; when ``sigma`` is a
            tensor ``(B,)`` (one level per sample, NCSN style) it is called as ``score_fn(x̃, sigma)``.
        x: clean data ``(B, *event)``.
        sigma: noise level ``σ > 0``, a number or a tensor ``(B,)``.
        weighting: ``"none"`` (``λ = 1``) or ``"sigma2"`` (``λ(σ) = σ²``, Song & Ermon 2019,
            which makes the terms of different levels comparable).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B,)``).
        generator: seeds ``z``.

    Returns:
        a scalar, or ``(B,)`` with ``reduction="none"``.

    References:
        Vincent (2011), "A connection between score matching and denoising autoencoders", Neural
        Computation 23(7). Song & Ermon (2019), arXiv:1907.05600.

    Example:
        >>> # the optimal score of N(0, 1) data smoothed by σ = 1 is -x̃ / 2
        >>> torch.manual_seed(0) and None
        >>> x = torch.randn(20000, 1)
        >>> loss = lambda c: denoising_score_matching_loss(lambda z: -c * z, x, 1.0,
        ...                                                generator=torch.Generator().manual_seed(1))
        >>> bool(loss(0.5) < loss(0.3)) and bool(loss(0.5) < loss(0.7))
        True
    """
    _check_common(score_fn, x, reduction)
    check_choice("weighting", weighting, ("none", "sigma2"))
    conditional = isinstance(sigma, Tensor) and sigma.dim() > 0
    if conditional:
        check_tensor("sigma", sigma, ndim=1)
        if sigma.shape[0] != x.shape[0]:
            raise ValueError(f"sigma must be a number or a tensor of shape ({x.shape[0]},), got {tuple(sigma.shape)}")
        if bool((sigma <= 0).any()):
            raise ValueError(f"sigma must be > 0, got a minimum of {sigma.min().item():g}")
        sig = append_dims(sigma.to(dtype=x.dtype, device=x.device), x.dim())
    else:
        sig = check_positive("sigma", sigma)
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    x_noisy = x.detach() + sig * z
    s = score_fn(x_noisy, sigma) if conditional else score_fn(x_noisy)
    check_output_shape("score_fn", s, x.shape)
    per_sample = 0.5 * batch_sum((s + z / sig) ** 2)
    if weighting == "sigma2":
        per_sample = per_sample * (sig.reshape(-1) ** 2 if conditional else sig**2)
    return _reduce(per_sample, reduction)
