"""Evaluate any trained model on equal terms: every metric that applies to its family.

:func:`evaluate` returns a flat table ``name -> {"value", "stderr", "unit", "kind"}`` where ``kind`` is

* ``"likelihood"`` — exact NLL, bounds (ELBO, IWAE) or AIS estimates, from the family's recipe
  (:mod:`probgen.recipes`), in nats and bits/dim;
* ``"sample"`` — two-sample metrics between ``num_samples`` model draws and the test split: MMD² (with its
  data-vs-data noise floor), sliced Wasserstein, precision/recall (Kynkäänniemi et al. 2019), and the KDE
  log-likelihood of the test data under the samples (the only likelihood a GAN has; unreliable in high
  dimension, Theis et al. 2016);
* ``"latent"`` — for VAEs, reconstruction MSE/PSNR/SSIM and, with labels, clustering scores of the
  posterior means (homogeneity, completeness, V-measure);
* ``"feature"`` — for 8×8 digits, FID, KID and the Inception-style score on the shipped digits classifier's
  features (:func:`probgen.metrics.digits_features`).

What each metric sees and misses is in ``docs/evaluation.md``: likelihoods punish missing modes (mode
covering), sample metrics such as precision punish samples off the data (mode seeking); look at both.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_int

__all__ = ["evaluate", "sample_metrics", "compare_figure"]


def _entry(value: float, *, stderr: float | None = None, unit: str = "", kind: str = "sample") -> dict[str, Any]:
    return {"value": float(value), "stderr": None if stderr is None else float(stderr), "unit": unit, "kind": kind}


def _repeat(fn, num_repeats: int) -> tuple[float, float]:
    """Mean and standard error of a stochastic metric over independent repeats."""
    values = torch.tensor([float(fn(i)) for i in range(num_repeats)], dtype=torch.float64)
    se = float(values.std(unbiased=True) / math.sqrt(num_repeats)) if num_repeats > 1 else float("nan")
    return float(values.mean()), se


def sample_metrics(samples: Tensor, test: Tensor, *, reference: Tensor | None = None, image_features: bool = False,
                   num_repeats: int = 3, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Two-sample metrics between model ``samples`` and held-out ``test`` data, both ``(N, *event)``.

    ``reference`` (e.g. training data, same size as ``test``) gives the data-vs-data noise floor of MMD², the
    value a perfect model would reach with these sample sizes. With ``image_features`` (8×8 digits) the
    metrics are computed on the shipped classifier's features, and FID, KID and the Inception-style score
    are added.
    """
    from probgen import metrics

    n = min(len(samples), len(test))
    samples, test = samples[:n].float(), test[:n].float()
    g = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, Any]] = {}
    if image_features:
        feats_x, feats_y = metrics.digits_features(samples), metrics.digits_features(test)
        out["FID (digits features)"] = _entry(metrics.frechet_distance(feats_x, feats_y), kind="feature")
        # subsets of half the sample, so that they differ and their spread estimates the KID's uncertainty
        mean, std = metrics.kid(feats_x, feats_y, num_subsets=50, subset_size=max(2, min(n // 2, 1000)),
                                generator=g)
        out["KID (digits features)"] = _entry(mean, stderr=std / math.sqrt(50), kind="feature")
        is_mean, is_std = metrics.inception_score(metrics.digits_probs(samples), num_splits=5)
        out["Inception-style score"] = _entry(is_mean, stderr=is_std / math.sqrt(5), kind="feature")
        x, y = feats_x, feats_y
        ref = None if reference is None else metrics.digits_features(reference[:n].float())
    else:
        x, y = samples.reshape(n, -1), test.reshape(n, -1)
        ref = None if reference is None else reference[:n].float().reshape(n, -1)
    out["MMD² (unbiased)"] = _entry(metrics.mmd(x, y, unbiased=True))
    if ref is not None:
        out["MMD² noise floor (data vs data)"] = _entry(metrics.mmd(ref, y, unbiased=True))
    sw, sw_se = _repeat(lambda i: metrics.sliced_wasserstein(
        x, y, num_projections=128, generator=torch.Generator().manual_seed(seed + i)), num_repeats)
    out["sliced Wasserstein"] = _entry(sw, stderr=sw_se)
    precision, recall = metrics.precision_recall(y, x, k=3)
    out["precision"] = _entry(precision)
    out["recall"] = _entry(recall)
    if not image_features and x.shape[1] <= 10:
        kde = metrics.kde_log_likelihood(x, y, bandwidth="cv")
        out["KDE NLL of test data"] = _entry(-kde.mean(), stderr=kde.std() / math.sqrt(len(kde)), unit="nats")
    return out


def evaluate(model, dataset, *, num_samples: int = 2000, seed: int = 0, likelihood: bool = True,
             sample_opts: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every metric that applies to ``model``'s family on ``dataset``'s test split.

    Args:
        model: a trained probgen model (as :func:`probgen.load` returns it).
        dataset: a :class:`probgen.data.DataSet` whose events match the model's (checked).
        num_samples: model draws for the sample metrics (and the number of test points they are compared to).
        seed: seeds the sampling and the stochastic metrics.
        likelihood: include the family's likelihood metrics (exact, bounds or AIS).
        sample_opts: options for the family's sampler (``method``, ``steps``).

    Returns:
        ``name -> {"value", "stderr", "unit", "kind"}``.
    """
    from probgen import recipes

    num_samples = check_int("num_samples", num_samples, minimum=10)
    recipe = recipes.for_model(model)
    recipe.check_data(model, dataset)
    model.eval()
    out: dict[str, dict[str, Any]] = {}
    if likelihood and recipe.has_likelihood:
        torch.manual_seed(seed)
        for name, stat in recipe.evaluate(model, dataset).items():
            out[name] = {"value": stat["value"], "stderr": stat.get("stderr"), "unit": stat.get("unit", "nats"),
                         "kind": "likelihood"}
    out.update(recipe.extra_metrics(model, dataset))
    torch.manual_seed(seed)
    samples = recipe.sample(model, num_samples, **(sample_opts or {})).detach().cpu()
    samples = samples.reshape(len(samples), *dataset.event_shape)
    image = tuple(dataset.event_shape) == (1, 8, 8)
    out.update(sample_metrics(samples, dataset.test, reference=dataset.train[: len(dataset.test)],
                              image_features=image, seed=seed))
    return out


def compare_figure(runs: dict[str, Tensor], tables: dict[str, dict[str, dict]], *, reference: Tensor | None,
                   path: str) -> Any:
    """One figure: each run's samples (beside the data) and a bar chart of the metrics they share."""
    from probgen.diagnostics import plots

    return plots.compare_runs(runs, tables, reference=reference, path=path)
