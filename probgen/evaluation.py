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
* ``"feature"`` — for 8×8 digits and 28×28 MNIST-like images, FID, KID and the Inception-style score on the
  shipped classifiers' features (:func:`probgen.metrics.digits_features`, :func:`probgen.metrics.mnist_features`).

What each metric sees and misses is in ``docs/evaluation.md``: likelihoods punish missing modes (mode
covering), sample metrics such as precision punish samples off the data (mode seeking); look at both.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_int

__all__ = ["evaluate", "sample_metrics", "compare_figure", "has_image_features", "FEATURE_MAPS",
           "metric_sampler_options", "draw_samples", "describe_sampler"]


def _entry(value: float, *, stderr: float | None = None, unit: str = "", kind: str = "sample") -> dict[str, Any]:
    return {"value": float(value), "stderr": None if stderr is None else float(stderr), "unit": unit, "kind": kind}


def _repeat(fn, num_repeats: int) -> tuple[float, float]:
    """Mean and standard error of a stochastic metric over independent repeats."""
    values = torch.tensor([float(fn(i)) for i in range(num_repeats)], dtype=torch.float64)
    se = float(values.std(unbiased=True) / math.sqrt(num_repeats)) if num_repeats > 1 else float("nan")
    return float(values.mean()), se


#: event shape -> (name, features, class probabilities) of the shipped classifier whose features FID/KID use
FEATURE_MAPS: dict[tuple[int, ...], tuple[str, str, str]] = {
    (1, 8, 8): ("digits", "digits_features", "digits_probs"),
    (1, 28, 28): ("MNIST", "mnist_features", "mnist_probs"),
}


def has_image_features(event_shape: Any) -> bool:
    """Whether a shipped classifier gives FID/KID features for events of this shape (8×8 or 28×28 grey)."""
    return tuple(event_shape) in FEATURE_MAPS


def sample_metrics(samples: Tensor, test: Tensor, *, reference: Tensor | None = None, image_features: bool = False,
                   data_range: tuple[float, float] = (-1.0, 1.0), num_repeats: int = 3,
                   seed: int = 0) -> dict[str, dict[str, Any]]:
    """Two-sample metrics between model ``samples`` and held-out ``test`` data, both ``(N, *event)``.

    ``reference`` (e.g. training data, same size as ``test``) gives the data-vs-data noise floor of MMD², the
    value a perfect model would reach with these sample sizes. With ``image_features`` (8×8 digits or 28×28
    MNIST-like images, :data:`FEATURE_MAPS`) the metrics are computed on the shipped classifier's features, and
    FID, KID and the Inception-style score are added; images in ``data_range`` are mapped to the classifier's
    ``[-1, 1]`` first (so binarized ``{0, 1}`` data are scored as the grey images they stand for).
    """
    from probgen import metrics

    n = min(len(samples), len(test))
    samples, test = samples[:n].float(), test[:n].float()
    g = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, Any]] = {}
    if image_features:
        if tuple(samples.shape[1:]) not in FEATURE_MAPS:
            raise ValueError(f"image_features needs events of shape {' or '.join(map(str, FEATURE_MAPS))}, "
                             f"got {tuple(samples.shape[1:])}")
        label, feature_name, probs_name = FEATURE_MAPS[tuple(samples.shape[1:])]
        features, probs = getattr(metrics, feature_name), getattr(metrics, probs_name)
        low, high = float(data_range[0]), float(data_range[1])

        def scaled(x: Tensor) -> Tensor:
            return (x - low) * (2.0 / (high - low)) - 1.0

        feats_x, feats_y = features(scaled(samples)), features(scaled(test))
        out[f"FID ({label} features)"] = _entry(metrics.frechet_distance(feats_x, feats_y), kind="feature")
        # subsets of half the sample, so that they differ and their spread estimates the KID's uncertainty
        mean, std = metrics.kid(feats_x, feats_y, num_subsets=50, subset_size=max(2, min(n // 2, 1000)),
                                generator=g)
        out[f"KID ({label} features)"] = _entry(mean, stderr=std / math.sqrt(50), kind="feature")
        is_mean, is_std = metrics.inception_score(probs(scaled(samples)), num_splits=5)
        out["Inception-style score"] = _entry(is_mean, stderr=is_std / math.sqrt(5), kind="feature")
        x, y = feats_x, feats_y
        ref = None if reference is None else features(scaled(reference[:n].float()))
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


def _range(dataset) -> tuple[float, float]:
    data_range = getattr(dataset, "data_range", None)
    return (-1.0, 1.0) if data_range is None else (float(data_range[0]), float(data_range[1]))


def metric_sampler_options(model, *, method: str | None = None, steps: int | None = None) -> dict[str, Any]:
    """Sampler options for sample metrics: ``method``/``steps`` when given (checked by the family's recipe),
    otherwise the family's fast metric sampler (``Recipe.metric_sampler``: DPM-Solver++ at 20–30 network
    passes for DDPM and score SDEs instead of ancestral sampling's 1000), otherwise ``{}`` (the default sampler).

    Example:
        >>> import probgen as pg
        >>> metric_sampler_options(pg.diffusion.DDPM((2,), num_steps=50))
        {'method': 'dpm-solver', 'steps': 20}
    """
    from probgen import recipes

    recipe = recipes.for_model(model)
    if method is not None or steps is not None:
        return recipe.sample_options(method=method, steps=steps)
    return dict(recipe.metric_sampler or {})


def draw_samples(model, num_samples: int, *, sample_opts: dict[str, Any] | None = None, batch_size: int = 250,
                 callback=None) -> tuple[Tensor, int | None]:
    """``num_samples`` draws of ``model`` on the CPU, ``batch_size`` at a time, with the family's sampler and
    ``sample_opts``; returns ``(samples, nfe)`` with ``nfe`` the network evaluations per draw for
    the families that count them (diffusion samplers; ``None`` otherwise). ``callback(n)`` is called after each
    chunk of ``n`` draws (a progress bar). Seed with ``torch.manual_seed`` before the call."""
    from probgen import recipes
    from probgen.ops import chunk_sizes

    num_samples = check_int("num_samples", num_samples, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    recipe = recipes.for_model(model)
    opts = dict(sample_opts or {})
    counts = recipe.metric_sampler is not None and "method" in opts  # the diffusion samplers return their NFE
    chunks, nfe = [], None
    for n in chunk_sizes(num_samples, batch_size):
        out = recipe.sample(model, n, **({**opts, "return_nfe": True} if counts else opts))
        if isinstance(out, tuple):
            out, nfe = out[0], int(out[1])
        chunks.append(out.detach().cpu())
        if callback is not None:
            callback(n)
    return torch.cat(chunks), nfe


def describe_sampler(sample_opts: dict[str, Any], nfe: int | None) -> str:
    """Words for the sampler of :func:`draw_samples`: ``"sampler dpm-solver, 20 steps, NFE 20"``."""
    if not sample_opts:
        return "the family's default sampler" + (f", NFE {nfe}" if nfe is not None else "")
    words = [f"sampler {sample_opts['method']}" if "method" in sample_opts else "the family's default sampler"]
    if sample_opts.get("steps") is not None:
        words.append(f"{sample_opts['steps']} steps")
    if nfe is not None:
        words.append(f"NFE {nfe}")
    return ", ".join(words)


def evaluate(model, dataset, *, num_samples: int = 2000, seed: int = 0, likelihood: bool = True,
             sample_opts: dict[str, Any] | None = None, samples: Tensor | None = None) -> dict[str, dict[str, Any]]:
    """Every metric that applies to ``model``'s family on ``dataset``'s test split.

    Args:
        model: a trained probgen model (as :func:`probgen.load` returns it).
        dataset: a :class:`probgen.data.DataSet` whose events match the model's (checked).
        num_samples: model draws for the sample metrics (and the number of test points they are compared to).
        seed: seeds the sampling and the stochastic metrics.
        likelihood: include the family's likelihood metrics (exact, bounds or AIS).
        sample_opts: options for the family's sampler (``method``, ``steps``); ``None``: the family's fast
            metric sampler (:func:`metric_sampler_options`; e.g. DPM-Solver++ with 20 steps for a DDPM).
        samples: draws already made (``(N, *event)``, e.g. by :func:`draw_samples`); then ``num_samples`` and
            ``sample_opts`` are not used.

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
    if samples is None:
        torch.manual_seed(seed)
        opts = metric_sampler_options(model) if sample_opts is None else sample_opts
        samples, _ = draw_samples(model, num_samples, sample_opts=opts)
    samples = samples.detach().cpu()
    samples = samples.reshape(len(samples), *dataset.event_shape)
    out.update(sample_metrics(samples, dataset.test, reference=dataset.train[: len(dataset.test)],
                              image_features=has_image_features(dataset.event_shape),
                              data_range=_range(dataset), seed=seed))
    return out


def compare_figure(runs: dict[str, Tensor], tables: dict[str, dict[str, dict]], *, reference: Tensor | None,
                   path: str) -> Any:
    """One figure: each run's samples (beside the data) and a bar chart of the metrics they share."""
    from probgen.diagnostics import plots

    return plots.compare_runs(runs, tables, reference=reference, path=path)
