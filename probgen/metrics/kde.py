"""Gaussian kernel density (Parzen window) log-likelihood of data under a model's samples.

A model that can only be sampled (a GAN, or any sampler) is given a density by placing an isotropic
Gaussian of width ``h`` on each of its ``N`` samples :math:`s_i \\in \\mathbb{R}^D`:

.. math::

    \\log \\hat p_h(x) = \\operatorname{logsumexp}_i \\Big(-\\frac{\\lVert x - s_i \\rVert^2}{2h^2}\\Big)
    - \\log N - \\frac{D}{2}\\log(2\\pi h^2),

and ``h`` is chosen by held-out (cross-validated) likelihood, as in Breuleux, Bengio and Vincent
(2011) and the GAN papers' Parzen estimates (Goodfellow et al. 2014, arXiv:1406.2661).

Warning:
    In high dimension this estimate is poor: its bias decays like :math:`N^{-2/(D+4)}` and, as Theis,
    van den Oord and Bethge (2016, "A note on the evaluation of generative models", arXiv:1511.01844)
    show, a Parzen estimate of a good model can score worse than that of a model which memorises the
    training set, and even the true data distribution is badly under-estimated with feasible ``N``.
    Report it only for low-dimensional data, or alongside exact likelihoods where the model has one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from probgen._checks import check_int, check_positive, check_tensor
from probgen.metrics.two_sample import _sq_dists
from probgen.ops.shapes import flatten_event

__all__ = ["kde_log_likelihood", "select_bandwidth"]

_MAX_BLOCK_ENTRIES = 1 << 18  # entries per (candidates × points × samples) block: cache-sized, ~2 MiB in float64


def _flat_pair(samples: object, x: object) -> tuple[Tensor, Tensor]:
    samples = check_tensor("samples", samples, min_ndim=2)
    x = check_tensor("x", x, min_ndim=1)
    if x.dim() == samples.dim() - 1 and tuple(x.shape) == tuple(samples.shape[1:]):
        x = x.unsqueeze(0)  # a single point
    if tuple(x.shape[1:]) != tuple(samples.shape[1:]):
        raise ValueError(
            f"x must have shape (batch, {', '.join(map(str, samples.shape[1:]))}) to match samples "
            f"{tuple(samples.shape)}, got {tuple(x.shape)}"
        )
    if x.device != samples.device:
        raise ValueError(f"x and samples must be on the same device, got {x.device} and {samples.device}")
    if x.dtype != samples.dtype:
        raise TypeError(f"x and samples must have the same dtype, got {x.dtype} and {samples.dtype}")
    return flatten_event(samples), flatten_event(x)


def _log_kernel_sums(samples: Tensor, x: Tensor, bandwidths: Tensor, batch_size: int) -> Tensor:
    """``logsumexp_i -|x_b - s_i|² / (2 h_c²)`` for every candidate ``h_c``: returns ``(C, B)``.

    Blocks over ``x`` (``batch_size`` rows) and over the samples, with a running ``logaddexp``.
    """
    inv = (-0.5 / bandwidths**2).reshape(-1, 1, 1)  # (C, 1, 1)
    C = bandwidths.numel()
    s_block = max(1, min(samples.shape[0], _MAX_BLOCK_ENTRIES // max(1, C * min(batch_size, x.shape[0]))))
    out = []
    for i in range(0, x.shape[0], batch_size):
        xi = x[i : i + batch_size]
        acc = torch.full((C, xi.shape[0]), -math.inf, dtype=x.dtype, device=x.device)
        for j in range(0, samples.shape[0], s_block):
            d = _sq_dists(xi, samples[j : j + s_block])  # (b, s)
            acc = torch.logaddexp(acc, torch.logsumexp(inv * d, dim=-1))
        out.append(acc)
    return torch.cat(out, dim=1)


def _log_normalizer(bandwidths: Tensor, num_samples: int, dim: int) -> Tensor:
    return -math.log(num_samples) - 0.5 * dim * torch.log(2.0 * math.pi * bandwidths**2)


def select_bandwidth(
    samples: Tensor,
    *,
    candidates: Tensor | list[float] | None = None,
    folds: int = 5,
    batch_size: int = 1024,
    return_scores: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Choose the Parzen bandwidth ``h`` by ``folds``-fold cross-validated log-likelihood.

    The samples are split into ``folds`` interleaved folds (row ``i`` goes to fold ``i mod folds``, so
    the choice is deterministic); for each candidate ``h`` the score is the mean held-out
    log-likelihood :math:`\\frac{1}{N}\\sum_k \\sum_{x \\in F_k} \\log \\hat p_h(x \\mid S \\setminus F_k)`,
    and the best candidate is returned. Shuffle ``samples`` first if their order is not random.

    The default candidates are 16 values spaced logarithmically over ``[0.05, 2] × h_s`` around
    Scott's rule :math:`h_s = \\bar\\sigma\\, N^{-1/(D+4)}` (``σ̄`` the mean per-coordinate std).

    Args:
        samples: ``(N, *event)`` model samples, ``N >= folds >= 2``.
        candidates: 1-D positive bandwidths to try, or ``None`` for the default grid.
        folds: number of folds.
        batch_size: rows per distance block.
        return_scores: also return ``(candidates, scores)``.

    Returns:
        The chosen ``h`` as a 0-d tensor (on ``samples``'s device and dtype), or
        ``(h, candidates, scores)`` with ``scores[c]`` the mean held-out log-likelihood of ``candidates[c]``.

    Reference:
        Breuleux, Bengio, Vincent (2011), "Quickly generating representative samples from an RBM-derived
        process", Neural Computation 23(8); Goodfellow et al. (2014), arXiv:1406.2661.

    Example:
        >>> s = torch.randn(500, 1, generator=torch.Generator().manual_seed(0))
        >>> h = select_bandwidth(s)
        >>> bool(0.1 < h < 1.0)
        True
    """
    samples = check_tensor("samples", samples, min_ndim=2)
    folds = check_int("folds", folds, minimum=2)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    s = flatten_event(samples)
    n, d = s.shape
    if n < folds:
        raise ValueError(f"samples must have at least folds={folds} rows for cross-validation, got {n}")
    if candidates is None:
        sigma = s.std(dim=0).mean().clamp_min(torch.finfo(s.dtype).tiny)
        scott = sigma * n ** (-1.0 / (d + 4))
        cands = scott * torch.logspace(math.log10(0.05), math.log10(2.0), 16, dtype=s.dtype, device=s.device)
    else:
        cands = torch.as_tensor(candidates, dtype=s.dtype, device=s.device)
        check_tensor("candidates", cands, ndim=1)
        if bool((cands <= 0).any()):
            raise ValueError(f"candidates must all be > 0, got {cands.tolist()}")
    idx = torch.arange(n, device=s.device)
    scores = torch.zeros_like(cands)
    for k in range(folds):
        held = idx % folds == k
        train, test = s[~held], s[held]
        ll = _log_kernel_sums(train, test, cands, batch_size) + _log_normalizer(cands, train.shape[0], d).unsqueeze(-1)
        scores = scores + ll.sum(-1)
    scores = scores / n
    best = cands[scores.argmax()]
    if return_scores:
        return best, cands, scores
    return best


def kde_log_likelihood(
    samples: Tensor,
    x: Tensor,
    *,
    bandwidth: str | float | Tensor = "cv",
    batch_size: int = 1024,
) -> Tensor:
    """Gaussian KDE (Parzen window) log-density of the points ``x`` under the model's ``samples``.

    .. math::

        \\log \\hat p_h(x) = \\operatorname{logsumexp}_{i=1}^{N}
        \\Big(-\\frac{\\lVert x - s_i \\rVert^2}{2h^2}\\Big) - \\log N - \\frac{D}{2}\\log(2\\pi h^2)

    computed in blocks (``batch_size`` points at a time) with a running log-sum-exp, so memory stays bounded
    for any ``N`` and ``B``. Events are flattened (``D = prod(event)``). Read the module warning
    before using this in high dimension (Theis et al. 2016, arXiv:1511.01844).

    Args:
        samples: ``(N, *event)`` model samples.
        x: ``(B, *event)`` evaluation points (a single ``event``-shaped point is accepted too).
        bandwidth: ``"cv"`` (:func:`select_bandwidth` on the samples), or a positive number or 0-d
            tensor ``h`` (a tensor keeps its autograd graph).
        batch_size: rows per block.

    Returns:
        ``(B,)`` log-densities in nats.

    Reference:
        Parzen (1962); Breuleux, Bengio, Vincent (2011); Theis, van den Oord, Bethge (2016),
        arXiv:1511.01844.

    Example:
        >>> s = torch.zeros(1, 2)
        >>> kde_log_likelihood(s, torch.zeros(1, 2), bandwidth=1.0)  # log N(0; 0, I_2)
        tensor([-1.8379])
    """
    s, xf = _flat_pair(samples, x)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if isinstance(bandwidth, str):
        if bandwidth != "cv":
            raise ValueError(f"unknown bandwidth {bandwidth!r}; valid choices: 'cv', a positive number or tensor")
        h = select_bandwidth(samples, batch_size=batch_size)
    elif isinstance(bandwidth, Tensor):
        if bandwidth.numel() != 1:
            raise ValueError(f"bandwidth must be a scalar tensor, got shape {tuple(bandwidth.shape)}")
        check_positive("bandwidth", bandwidth.detach())
        h = bandwidth.reshape(()).to(device=s.device, dtype=s.dtype)
    else:
        h = torch.as_tensor(check_positive("bandwidth", bandwidth), dtype=s.dtype, device=s.device)
    h = h.reshape(1)
    ll = _log_kernel_sums(s, xf, h, batch_size)[0]
    return ll + _log_normalizer(h, s.shape[0], s.shape[1])
