"""Improved precision and recall for generative models (k-nearest-neighbour manifolds).

The support of a sample :math:`\\Phi` is estimated by the union of balls around each point with radius
its distance to the ``k``-th nearest other point of the sample:

.. math::

    \\mathrm{manifold}(\\Phi) = \\bigcup_{\\phi \\in \\Phi} B\\big(\\phi,\\, \\lVert \\phi - \\mathrm{NN}_k(\\phi) \\rVert\\big),
    \\qquad
    \\mathrm{precision} = \\frac{1}{|\\Phi_g|}\\sum_{\\phi \\in \\Phi_g} 1[\\phi \\in \\mathrm{manifold}(\\Phi_r)],
    \\quad
    \\mathrm{recall} = \\frac{1}{|\\Phi_r|}\\sum_{\\phi \\in \\Phi_r} 1[\\phi \\in \\mathrm{manifold}(\\Phi_g)].

Precision is the fraction of generated samples that look real (sample quality, what a mode-seeking model
maximises); recall the fraction of real samples the model covers (diversity, what mode dropping destroys).
A single number such as FID mixes the two.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen._checks import check_int
from probgen.metrics.two_sample import _check_features, _check_pair, _sq_dists

__all__ = ["precision_recall", "knn_radii"]

_MAX_BLOCK_ENTRIES = 1 << 22


def _rows_per_block(n: int) -> int:
    return max(1, _MAX_BLOCK_ENTRIES // max(1, n))


def knn_radii(feats: Tensor, *, k: int = 3) -> Tensor:
    """Distance from each row to its ``k``-th nearest *other* row, computed in blocks.

    Args:
        feats: ``(N, F)`` with ``N > k``.
        k: neighbour rank, ``>= 1``.

    Returns:
        ``(N,)`` radii.

    Example:
        >>> knn_radii(torch.tensor([[0.0], [1.0], [3.0]]), k=1)
        tensor([1., 1., 2.])
    """
    feats = _check_features("feats", feats)
    k = check_int("k", k, minimum=1)
    n = feats.shape[0]
    if n <= k:
        raise ValueError(f"need more than k={k} samples to find the k-th nearest neighbour, got {n}")
    out = []
    rows = _rows_per_block(n)
    for i in range(0, n, rows):
        d = _sq_dists(feats[i : i + rows], feats)
        # each point is its own nearest neighbour (distance 0): take the (k+1)-th smallest
        d[torch.arange(d.shape[0], device=d.device), torch.arange(i, i + d.shape[0], device=d.device)] = -1.0
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, -1])
    return torch.cat(out).clamp_min(0.0).sqrt()


def _coverage(queries: Tensor, centers: Tensor, radii: Tensor) -> Tensor:
    """Fraction of ``queries`` inside at least one ball ``B(centers[i], radii[i])``."""
    inside = []
    r2 = radii.pow(2).unsqueeze(0)
    rows = _rows_per_block(centers.shape[0])
    for i in range(0, queries.shape[0], rows):
        d = _sq_dists(queries[i : i + rows], centers)
        inside.append((d <= r2).any(dim=1))
    return torch.cat(inside).to(queries.dtype).mean()


def precision_recall(real_feats: Tensor, fake_feats: Tensor, *, k: int = 3) -> tuple[Tensor, Tensor]:
    """Improved precision and recall of Kynkäänniemi et al. (2019) with ``k``-NN radii.

    Distances are computed in blocks of bounded size, on the features' device. Both sets should have
    similar sizes (the paper uses equal sizes): the manifold estimate grows with the number of points.
    For two samples of one distribution both values are close to, but below, 1 (a new point can fall
    outside the union of ``k``-NN balls); larger ``k`` gives larger balls and values nearer 1.

    Args:
        real_feats: ``(N_r, F)`` features of real data, ``N_r > k``.
        fake_feats: ``(N_g, F)`` features of generated data, ``N_g > k``.
        k: neighbour rank defining the radii (3 in the paper).

    Returns:
        ``(precision, recall)``, two 0-d tensors in ``[0, 1]``.

    Reference:
        Kynkäänniemi, Karras, Laine, Lehtinen, Aila (2019), "Improved precision and recall metric for
        assessing generative models", arXiv:1904.06991.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> real = torch.randn(500, 2, generator=g)
        >>> p, r = precision_recall(real, real + 100.0)
        >>> float(p), float(r)
        (0.0, 0.0)
    """
    real, fake = _check_pair("real_feats", real_feats, "fake_feats", fake_feats)
    k = check_int("k", k, minimum=1)
    for name, f in (("real_feats", real), ("fake_feats", fake)):
        if f.shape[0] <= k:
            raise ValueError(f"{name} must have more than k={k} samples (rows), got shape {tuple(f.shape)}")
    real_r = knn_radii(real, k=k)
    fake_r = knn_radii(fake, k=k)
    precision = _coverage(fake, real, real_r)
    recall = _coverage(real, fake, fake_r)
    return precision, recall
