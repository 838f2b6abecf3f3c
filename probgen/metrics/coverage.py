r"""Mode coverage: how a sample spreads over known mode centres (the mode-collapse test of GAN papers).

.. math::

    c_k = \tfrac1N \#\{n : \lVert x_n - μ_k \rVert_2 \le r\},\qquad
    \text{off} = 1 - \tfrac1N \#\{n : \min_k \lVert x_n - μ_k \rVert_2 \le r\}.

A mode counts as *covered* when it receives a set share of the samples (e.g. 2%); ``off`` is the share of
samples near no centre. For mixtures with known centres only (8gaussians, 25gaussians, ...).

Reference:
    Metz, Poole, Pfau & Sohl-Dickstein (2016), "Unrolled Generative Adversarial Networks",
    arXiv:1611.02163 (the 8-Gaussians mode-collapse setting).
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen._checks import check_positive, check_tensor

__all__ = ["mode_coverage"]


def mode_coverage(samples: Tensor, centers: Tensor, *, radius: float) -> tuple[Tensor, Tensor]:
    r"""Fraction of samples within ``radius`` of each mode centre, and the fraction near none of them.

    .. math::

        c_k = \tfrac1N \#\{n : \lVert x_n - μ_k \rVert_2 \le r\},\qquad
        \text{off} = 1 - \textstyle\sum_k c_k \quad(\text{balls assumed disjoint}).

    For 8gaussians (Metz et al. 2016) the centres are ``2√2 (cos kπ/4, sin kπ/4)`` and the component
    standard deviation is ``σ = 1/(2√2)``; ``radius = 3σ`` gives disjoint balls, and a mode counts as
    covered when it receives a set share of the samples (e.g. 2%).

    Args:
        samples: ``(N, D)``.
        centers: ``(K, D)``.
        radius: ``r > 0``.

    Returns:
        ``(per_mode, off_mode)``: ``(K,)`` fractions and a scalar fraction.

    Reference:
        Metz et al. (2016), arXiv:1611.02163.

    Example:
        >>> c = torch.tensor([[0.0, 0.0], [5.0, 0.0]])
        >>> per, off = mode_coverage(torch.tensor([[0.1, 0.0], [5.0, 0.2], [9.0, 9.0], [0.0, 0.0]]), c, radius=1.0)
        >>> per.tolist(), off.item()
        ([0.5, 0.25], 0.25)
    """
    check_tensor("samples", samples, ndim=2)
    check_tensor("centers", centers, ndim=2)
    if samples.shape[1] != centers.shape[1]:
        raise ValueError(
            f"samples and centers must have the same dimension, got {samples.shape[1]} and {centers.shape[1]}"
        )
    radius = check_positive("radius", radius)
    dist_to = torch.cdist(samples, centers.to(samples))
    near = dist_to <= radius
    per_mode = near.to(samples.dtype).mean(0)
    off = 1.0 - near.any(1).to(samples.dtype).mean()
    return per_mode, off
