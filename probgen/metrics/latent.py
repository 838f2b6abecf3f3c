"""Latent-space and reconstruction metrics: clustering of latents, MSE, PSNR and SSIM.

* :func:`clustering_scores`: k-means on the latents (scikit-learn) scored against the true labels with
  homogeneity, completeness and V-measure (Rosenberg and Hirschberg 2007) and the adjusted Rand index —
  how well an unsupervised latent space (a VAE's, a flow's) separates the classes.
* :func:`reconstruction_metrics`, :func:`psnr`, :func:`ssim`: how close an auto-encoder's reconstruction
  ``x_hat`` is to ``x``. SSIM (Wang, Bovik, Sheikh, Simoncelli 2004) is computed in torch with a Gaussian
  window and "valid" filtering, as in the authors' reference code.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from probgen._checks import check_int, check_positive, check_tensor
from probgen.ops.shapes import batch_mean, flatten_event

__all__ = ["clustering_scores", "reconstruction_metrics", "psnr", "ssim"]


def clustering_scores(
    latents: Tensor,
    labels: Tensor,
    *,
    num_clusters: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Cluster the latents with k-means and score the clusters against the labels.

    With classes :math:`C` and clusters :math:`K`: homogeneity :math:`h = 1 - H(C\\mid K)/H(C)` (each
    cluster holds one class), completeness :math:`c = 1 - H(K\\mid C)/H(K)` (each class sits in one
    cluster), and the V-measure :math:`v = 2hc/(h + c)`. All three are 1 for a perfect clustering and
    do not depend on how clusters are numbered.

    Args:
        latents: ``(N, *latent)`` latent codes (flattened to ``(N, d)``); ``N >= 2``.
        labels: ``(N,)`` integer class labels.
        num_clusters: ``k`` of k-means; ``None`` uses the number of distinct labels.
        seed: k-means initialisation seed (``n_init=10`` restarts).

    Returns:
        ``{"homogeneity", "completeness", "v_measure", "adjusted_rand", "num_clusters"}`` as floats
        (``num_clusters`` as int).

    Reference:
        Rosenberg, Hirschberg (2007), "V-Measure: a conditional entropy-based external cluster evaluation
        measure", EMNLP-CoNLL.

    Example:
        >>> z = torch.cat([torch.zeros(5, 2), torch.full((5, 2), 10.0)])
        >>> clustering_scores(z, torch.tensor([0] * 5 + [1] * 5))["v_measure"]
        1.0
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, homogeneity_completeness_v_measure

    latents = check_tensor("latents", latents, min_ndim=2)
    labels = check_tensor("labels", labels, ndim=1, floating=False)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    n = latents.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},) to match latents {tuple(latents.shape)}, got {tuple(labels.shape)}")
    if n < 2:
        raise ValueError(f"latents must have at least 2 rows, got shape {tuple(latents.shape)}")
    if num_clusters is None:
        num_clusters = int(labels.unique().numel())
    num_clusters = check_int("num_clusters", num_clusters, minimum=1, maximum=n)
    seed = check_int("seed", seed, minimum=0)
    z = flatten_event(latents).detach().cpu().double().numpy()
    y = labels.detach().cpu().numpy()
    pred = KMeans(n_clusters=num_clusters, n_init=10, random_state=seed).fit_predict(z)
    h, c, v = homogeneity_completeness_v_measure(y, pred)
    return {
        "homogeneity": float(h),
        "completeness": float(c),
        "v_measure": float(v),
        "adjusted_rand": float(adjusted_rand_score(y, pred)),
        "num_clusters": num_clusters,
    }


def _check_recon(x: Any, x_hat: Any) -> tuple[Tensor, Tensor]:
    x = check_tensor("x", x, min_ndim=2)
    x_hat = check_tensor("x_hat", x_hat, min_ndim=2)
    if x.shape != x_hat.shape:
        raise ValueError(f"x_hat must have the shape of x {tuple(x.shape)}, got {tuple(x_hat.shape)}")
    if x.device != x_hat.device or x.dtype != x_hat.dtype:
        raise ValueError(
            f"x and x_hat must share device and dtype, got {x.device}/{x.dtype} and {x_hat.device}/{x_hat.dtype}"
        )
    return x, x_hat


def psnr(x: Tensor, x_hat: Tensor, *, data_range: float = 2.0) -> Tensor:
    """Peak signal-to-noise ratio per sample, in dB: ``10 log10(R² / MSE_b)``.

    Args:
        x, x_hat: ``(B, *event)`` originals and reconstructions.
        data_range: ``R = high - low`` of the data (2 for data scaled to ``[-1, 1]``).

    Returns:
        ``(B,)`` PSNR values (``inf`` for an exact reconstruction).

    Example:
        >>> psnr(torch.zeros(1, 4), torch.full((1, 4), 0.02)).round()  # 10 log10(4 / 4e-4)
        tensor([40.])
    """
    x, x_hat = _check_recon(x, x_hat)
    r = check_positive("data_range", data_range)
    mse = batch_mean((x - x_hat).pow(2))
    return 10.0 * torch.log10(r**2 / mse)


def _gaussian_window(size: int, sigma: float, like: Tensor) -> Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2.0
    w = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return w / w.sum()


def _default_window(min_side: int) -> int:
    if min_side >= 11:
        return 11
    if min_side >= 5:
        return 5
    if min_side >= 3:
        return 3
    raise ValueError(f"images must be at least 3×3 pixels for SSIM, got a smallest side of {min_side}")


def ssim(
    x: Tensor,
    x_hat: Tensor,
    *,
    data_range: float = 2.0,
    window_size: int | None = None,
    sigma: float | None = None,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Structural similarity index per image (Wang et al. 2004), Gaussian window, valid filtering.

    With local (windowed) means :math:`\\mu`, variances :math:`\\sigma^2` and covariance
    :math:`\\sigma_{x\\hat x}`, :math:`C_1 = (k_1 R)^2`, :math:`C_2 = (k_2 R)^2`,

    .. math::

        \\mathrm{SSIM}(x, \\hat x) = \\operatorname{mean}_{\\text{windows, channels}}
        \\frac{(2\\mu_x\\mu_{\\hat x} + C_1)(2\\sigma_{x\\hat x} + C_2)}
             {(\\mu_x^2 + \\mu_{\\hat x}^2 + C_1)(\\sigma_x^2 + \\sigma_{\\hat x}^2 + C_2)}.

    The window defaults to the reference 11×11 with ``sigma = 1.5`` when the images are at least 11
    pixels on each side. Smaller images get a smaller window with the same width-to-sigma ratio:
    5×5 (``sigma = 1.5 · 5/11 ≈ 0.68``) from 5 pixels up — so 8×8 digits are scored on 4×4 = 16 local
    windows each — and 3×3 below. SSIM is 1 for identical images.

    Args:
        x, x_hat: ``(B, C, H, W)`` images.
        data_range: ``R`` (2 for data in ``[-1, 1]``).
        window_size: odd window side (``None``: see above).
        sigma: Gaussian window std (``None``: ``1.5 · window_size / 11``).
        k1, k2: stabilising constants of the paper.

    Returns:
        ``(B,)`` SSIM values in ``[-1, 1]``.

    Reference:
        Wang, Bovik, Sheikh, Simoncelli (2004), "Image quality assessment: from error visibility to
        structural similarity", IEEE Trans. Image Process. 13(4).

    Example:
        >>> x = torch.rand(2, 1, 8, 8)
        >>> ssim(x, x)
        tensor([1., 1.])
    """
    x, x_hat = _check_recon(x, x_hat)
    if x.dim() != 4:
        raise ValueError(f"x must be images of shape (batch, channels, height, width), got {tuple(x.shape)}")
    r = check_positive("data_range", data_range)
    min_side = min(x.shape[-2:])
    if window_size is None:
        window_size = _default_window(min_side)
    window_size = check_int("window_size", window_size, minimum=1, maximum=min_side)
    if window_size % 2 == 0:
        raise ValueError(f"window_size must be odd, got {window_size}")
    sigma = 1.5 * window_size / 11.0 if sigma is None else check_positive("sigma", sigma)
    c1, c2 = (check_positive("k1", k1) * r) ** 2, (check_positive("k2", k2) * r) ** 2
    channels = x.shape[1]
    w = _gaussian_window(window_size, sigma, x)
    w_rows = w.reshape(1, 1, -1, 1).expand(channels, 1, -1, 1)
    w_cols = w.reshape(1, 1, 1, -1).expand(channels, 1, 1, -1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, w_rows, groups=channels), w_cols, groups=channels)

    mu_x, mu_y = blur(x), blur(x_hat)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(x_hat * x_hat) - mu_y**2
    cov = blur(x * x_hat) - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return batch_mean(num / den)


def reconstruction_metrics(
    x: Tensor,
    x_hat: Tensor,
    *,
    data_range: float = 2.0,
    window_size: int | None = None,
    sigma: float | None = None,
) -> dict[str, float]:
    """Mean squared error, PSNR and (for images) SSIM of reconstructions ``x_hat`` of ``x``.

    ``mse`` is the mean over all entries; ``psnr = 10 log10(R² / mse)`` is computed from that pooled MSE
    (so one perfect image does not make it infinite); ``ssim`` is the mean of :func:`ssim` over the batch
    and is present only for 4-D ``(B, C, H, W)`` inputs.

    Args:
        x, x_hat: ``(B, *event)`` originals and reconstructions of the same shape.
        data_range: ``R = high - low`` of the data (2 for data in ``[-1, 1]``, e.g. the digits).
        window_size, sigma: SSIM window (see :func:`ssim`; 5×5 for 8×8 digits).

    Returns:
        ``{"mse", "psnr"[, "ssim"]}`` as floats.

    Example:
        >>> x = torch.zeros(2, 1, 8, 8)
        >>> m = reconstruction_metrics(x, x + 0.02)
        >>> round(m["mse"], 6), round(m["psnr"], 3), round(m["ssim"], 3)
        (0.0004, 40.0, 0.5)
    """
    x, x_hat = _check_recon(x, x_hat)
    r = check_positive("data_range", data_range)
    with torch.no_grad():
        mse = float((x - x_hat).pow(2).mean())
        out = {"mse": mse, "psnr": 10.0 * math.log10(r**2 / mse) if mse > 0 else math.inf}
        if x.dim() == 4:
            out["ssim"] = float(ssim(x, x_hat, data_range=r, window_size=window_size, sigma=sigma).mean())
    return out
