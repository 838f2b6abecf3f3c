"""Sample-quality and likelihood metrics for generative models.

What each metric sees (details and caveats in ``docs/evaluation.md``):

* likelihood of data under samples: :func:`kde_log_likelihood` (Parzen window; unreliable in high
  dimension, Theis et al. 2016, arXiv:1511.01844), :func:`select_bandwidth`;
* two-sample distances: :func:`mmd` (MMD², Gretton et al. 2012), :func:`mmd_test` (permutation test),
  :func:`kid` (Bińkowski et al. 2018), :func:`sliced_wasserstein`;
* feature-space scores: :func:`frechet_distance` / :func:`fid` / :func:`gaussian_frechet` (Heusel et al.
  2017), :func:`inception_score`, :func:`precision_recall` (Kynkäänniemi et al. 2019);
* the shipped 8×8 digits classifier: :func:`digits_classifier`, :func:`digits_features` (default FID
  feature map), :func:`digits_probs`; the shipped 28×28 MNIST classifier: :func:`mnist_classifier`,
  :func:`mnist_features` (``fid(..., features="mnist")``), :func:`mnist_probs`;
* latent and reconstruction quality: :func:`clustering_scores`, :func:`reconstruction_metrics`,
  :func:`psnr`, :func:`ssim`;
* mixtures with known centres: :func:`mode_coverage` (share of samples near each mode; Metz et al. 2016).

This is a shared package: it never imports a model family.
"""

from __future__ import annotations

from probgen.metrics.classifier import (
    DigitsClassifier,
    digits_classifier,
    digits_features,
    digits_logits,
    digits_probs,
    inception_score,
)
from probgen.metrics.coverage import mode_coverage
from probgen.metrics.frechet import FEATURE_MAPS, fid, frechet_distance, gaussian_frechet
from probgen.metrics.kde import kde_log_likelihood, select_bandwidth
from probgen.metrics.mnist_net import (
    MnistClassifier,
    mnist_classifier,
    mnist_features,
    mnist_logits,
    mnist_probs,
)
from probgen.metrics.latent import clustering_scores, psnr, reconstruction_metrics, ssim
from probgen.metrics.two_sample import KERNELS, kid, median_bandwidth, mmd, mmd_test
from probgen.metrics.manifold import knn_radii, precision_recall
from probgen.metrics.sliced import sliced_wasserstein, wasserstein_1d

__all__ = [
    "kde_log_likelihood",
    "select_bandwidth",
    "mmd",
    "mmd_test",
    "kid",
    "median_bandwidth",
    "KERNELS",
    "frechet_distance",
    "gaussian_frechet",
    "fid",
    "FEATURE_MAPS",
    "inception_score",
    "DigitsClassifier",
    "digits_classifier",
    "digits_features",
    "digits_logits",
    "digits_probs",
    "MnistClassifier",
    "mnist_classifier",
    "mnist_features",
    "mnist_logits",
    "mnist_probs",
    "sliced_wasserstein",
    "wasserstein_1d",
    "precision_recall",
    "knn_radii",
    "clustering_scores",
    "reconstruction_metrics",
    "psnr",
    "ssim",
    "mode_coverage",
]
