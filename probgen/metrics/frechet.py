"""Fréchet distance between Gaussians fitted to feature sets (FID on any feature map).

For :math:`\\mathcal N(\\mu_1, \\Sigma_1)` and :math:`\\mathcal N(\\mu_2, \\Sigma_2)` the squared
2-Wasserstein (Fréchet) distance is

.. math::

    d^2 = \\lVert \\mu_1 - \\mu_2 \\rVert^2
    + \\operatorname{tr}\\Big(\\Sigma_1 + \\Sigma_2 - 2\\big(\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2}\\big)^{1/2}\\Big)

(Dowson and Landau 1982). The FID of Heusel et al. (2017, arXiv:1706.08500) is this distance between
Gaussians fitted to Inception features of real and generated images; here any feature map can be used,
by default the penultimate layer of probgen's shipped 8×8 digits classifier
(:func:`probgen.metrics.classifier.digits_features`).

Numerics: everything is done in float64 with symmetric eigendecompositions only. ``Σ1^{1/2}`` comes from
``eigh(Σ1)`` with negative round-off eigenvalues clamped to zero, and the trace term is the sum of square
roots of the (clamped) eigenvalues of the symmetric PSD matrix ``Σ1^{1/2} Σ2 Σ1^{1/2}``. This avoids the
complex parts and the failures that ``scipy.linalg.sqrtm(Σ1 Σ2)`` (non-symmetric) produces on singular
covariances.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from probgen._checks import check_choice_or_callable, check_int, check_tensor
from probgen.metrics.classifier import digits_features
from probgen.metrics.two_sample import _check_pair

__all__ = ["gaussian_frechet", "frechet_distance", "fid", "FEATURE_MAPS"]

#: Names accepted by ``fid(features=...)`` (a callable ``(B, *event) -> (B, F)`` is accepted too).
FEATURE_MAPS = ("digits", "inception", "mnist")


def _psd_sqrt(a: Tensor) -> Tensor:
    evals, evecs = torch.linalg.eigh(a)
    return (evecs * evals.clamp_min(0.0).sqrt().unsqueeze(-2)) @ evecs.mT


def gaussian_frechet(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> Tensor:
    """Squared Fréchet (2-Wasserstein) distance between two Gaussians, in float64.

    .. math::

        d^2 = \\lVert \\mu_1 - \\mu_2 \\rVert^2 + \\operatorname{tr}\\Sigma_1 + \\operatorname{tr}\\Sigma_2
        - 2 \\sum_j \\sqrt{\\lambda_j\\big(\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2}\\big)}

    For commuting covariances (e.g. both diagonal) this is
    ``|μ1 - μ2|² + |Σ1^{1/2} - Σ2^{1/2}|_F²``. The result is clamped at zero against round-off.

    Args:
        mu1, mu2: ``(F,)`` means.
        cov1, cov2: ``(F, F)`` symmetric positive semi-definite covariances.

    Returns:
        0-d float64 tensor on the inputs' device.

    Reference:
        Dowson, Landau (1982), "The Fréchet distance between multivariate normal distributions", J.
        Multivariate Anal. 12(3); Heusel et al. (2017), arXiv:1706.08500.

    Example:
        >>> I = torch.eye(2)
        >>> float(gaussian_frechet(torch.zeros(2), I, torch.ones(2), 4 * I))  # 2 + 2 * (2 - 1)²
        4.0
    """
    mu1 = check_tensor("mu1", mu1, ndim=1)
    mu2 = check_tensor("mu2", mu2, ndim=1)
    cov1 = check_tensor("cov1", cov1, ndim=2)
    cov2 = check_tensor("cov2", cov2, ndim=2)
    f = mu1.shape[0]
    for name, v, shape in (("mu2", mu2, (f,)), ("cov1", cov1, (f, f)), ("cov2", cov2, (f, f))):
        if tuple(v.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} to match mu1 of shape {(f,)}, got {tuple(v.shape)}")
    mu1, mu2, cov1, cov2 = (t.to(torch.float64) for t in (mu1, mu2, cov1, cov2))
    cov1 = 0.5 * (cov1 + cov1.mT)
    cov2 = 0.5 * (cov2 + cov2.mT)
    s1 = _psd_sqrt(cov1)
    middle = s1 @ cov2 @ s1
    evals = torch.linalg.eigvalsh(0.5 * (middle + middle.mT)).clamp_min(0.0)
    d2 = (mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2.0 * evals.sqrt().sum()
    return d2.clamp_min(0.0)


def _mean_cov(x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.to(torch.float64)
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.mT @ xc / (x.shape[0] - 1)


def frechet_distance(x_feats: Tensor, y_feats: Tensor) -> Tensor:
    """FID formula: the Fréchet distance between Gaussians fitted to two feature matrices.

    Means and unbiased covariances (divisor ``N - 1``, like ``numpy.cov``) are computed in float64 and
    passed to :func:`gaussian_frechet`. The plug-in estimate is biased upwards by ``O(F / N)``; compare
    FIDs only at equal sample sizes (or use :func:`probgen.metrics.kid`, which is unbiased).

    Args:
        x_feats: ``(N1, F)`` features of the real data, ``N1 >= 2``.
        y_feats: ``(N2, F)`` features of the generated data, ``N2 >= 2``.

    Returns:
        0-d float64 tensor on the features' device.

    Reference:
        Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter (2017), "GANs trained by a two time-scale
        update rule converge to a local Nash equilibrium", arXiv:1706.08500.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(4000, 2, generator=g, dtype=torch.float64)
        >>> round(float(frechet_distance(x, x + 3.0)), 6)  # a shift moves only the mean term
        18.0
    """
    x, y = _check_pair("x_feats", x_feats, "y_feats", y_feats, min_samples=2)
    mu1, cov1 = _mean_cov(x)
    mu2, cov2 = _mean_cov(y)
    return gaussian_frechet(mu1, cov1, mu2, cov2)


def _apply_features(name: str, fn: Callable[[Tensor], Tensor], x: Tensor, batch_size: int) -> Tensor:
    outs = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            out = fn(x[i : i + batch_size])
            if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != min(batch_size, x.shape[0] - i):
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"features must map (B, *event) to a (B, F) tensor; on {name} it returned {shape}")
            outs.append(out)
    return torch.cat(outs)


def fid(
    x: Tensor,
    y: Tensor,
    *,
    features: str | Callable[[Tensor], Tensor] = "digits",
    batch_size: int = 512,
) -> Tensor:
    """Fréchet distance between the feature distributions of two sets of samples.

    ``features`` maps a batch ``(B, *event)`` to ``(B, F)``; it is applied in batches of ``batch_size``
    without gradients, then :func:`frechet_distance` is taken. ``"digits"`` is the penultimate layer
    of the shipped 8×8 digits classifier (inputs ``(B, 1, 8, 8)`` or ``(B, 64)`` scaled to ``[-1, 1]``).

    Args:
        x: ``(N1, *event)`` real samples.
        y: ``(N2, *event)`` generated samples.
        features: ``"digits"``, ``"inception"`` (torch-fidelity's InceptionV3, only when it and its weights
            are installed locally: :mod:`probgen.metrics.inception`), ``"mnist"`` (the shipped 28×28 MNIST
            classifier, :func:`probgen.metrics.mnist_features`), or a callable feature map.
        batch_size: rows per feature-map call.

    Returns:
        0-d float64 tensor.

    Reference:
        Heusel et al. (2017), arXiv:1706.08500.

    Example:
        >>> from probgen.data import digits
        >>> real, _ = digits("test")
        >>> bool(fid(real[:180], real[180:]) < fid(real, torch.rand_like(real) * 2 - 1))
        True
    """
    x = check_tensor("x", x, min_ndim=2)
    y = check_tensor("y", y, min_ndim=2)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    features = check_choice_or_callable("features", features, FEATURE_MAPS)
    if features == "digits":
        features = digits_features
    elif features == "inception":  # torch-fidelity's network, from weights already on disk only
        from probgen.metrics.inception import inception_features

        features = inception_features
    elif features == "mnist":  # the shipped 28x28 MNIST classifier
        from probgen.metrics.mnist_net import mnist_features

        features = mnist_features
    fx = _apply_features("x", features, x, batch_size)
    fy = _apply_features("y", features, y, batch_size)
    return frechet_distance(fx, fy)
