"""probgen.evaluation: the metric table behind `probgen evaluate` / `compare`."""

from __future__ import annotations

import math

import pytest
import torch

import probgen as pg
from probgen.evaluation import evaluate, sample_metrics


def test_sample_metrics_separate_a_good_model_from_a_shifted_one():
    g = torch.Generator().manual_seed(0)
    test, same, ref = (torch.randn(800, 2, generator=g) for _ in range(3))
    shifted = same + torch.tensor([1.5, 0.0])
    good, bad = sample_metrics(same, test, reference=ref), sample_metrics(shifted, test, reference=ref)
    assert good["MMD² (unbiased)"]["value"] < bad["MMD² (unbiased)"]["value"]
    assert good["sliced Wasserstein"]["value"] < bad["sliced Wasserstein"]["value"]
    assert good["precision"]["value"] > 0.85 and good["recall"]["value"] > 0.85
    # KDE NLL of N(0, I) test data under N(0, I) samples approaches the entropy log(2πe) = 2.84 nats
    assert abs(good["KDE NLL of test data"]["value"] - math.log(2 * math.pi * math.e)) < 0.15


def test_evaluate_a_vae_on_digits_reports_likelihood_latent_and_feature_metrics():
    torch.manual_seed(0)
    data = pg.data.load_dataset("digits")
    vae = pg.vae.VAE(latent_dim=4, likelihood="gaussian", event_shape=(1, 8, 8), hidden=(32,))
    table = evaluate(vae, data, num_samples=100)
    for name in ("test -ELBO", "test NLL (IWAE, K=1000) bits/dim", "reconstruction mse", "latent v_measure",
                 "FID (digits features)", "KID (digits features)", "Inception-style score", "precision"):
        assert name in table and math.isfinite(table[name]["value"]), name
    assert table["KID (digits features)"]["stderr"] > 0  # subsets differ, so their spread is an uncertainty
    assert 1.0 <= table["Inception-style score"]["value"] <= 10.0  # between one class and all ten


def test_evaluate_refuses_data_of_another_shape():
    flow = pg.flows.Flow(2, "realnvp")
    with pytest.raises(ValueError, match="has events of shape"):
        evaluate(flow, pg.data.load_dataset("digits"))


def test_28x28_images_get_fid_kid_on_the_mnist_classifier_and_their_data_range():
    from probgen.evaluation import has_image_features, sample_metrics

    g = torch.Generator().manual_seed(0)
    a = (torch.rand(64, 1, 28, 28, generator=g) > 0.7).float()  # binary images in {0, 1}
    b = (torch.rand(64, 1, 28, 28, generator=g) > 0.7).float()
    assert has_image_features((1, 28, 28)) and has_image_features((1, 8, 8)) and not has_image_features((3, 32, 32))
    binary = sample_metrics(a, b, image_features=True, data_range=(0.0, 1.0))
    grey = sample_metrics(2 * a - 1, 2 * b - 1, image_features=True)  # the same images in [-1, 1]
    assert {"FID (MNIST features)", "KID (MNIST features)", "Inception-style score"} <= set(binary)
    assert binary["FID (MNIST features)"]["value"] == pytest.approx(grey["FID (MNIST features)"]["value"], rel=1e-4)
    unscaled = sample_metrics(a, b, image_features=True)  # {0, 1} read as if in [-1, 1]: other features
    assert unscaled["FID (MNIST features)"]["value"] != pytest.approx(binary["FID (MNIST features)"]["value"], rel=1e-2)
    with pytest.raises(ValueError, match="image_features needs events of shape"):
        sample_metrics(torch.zeros(8, 3, 32, 32), torch.zeros(8, 3, 32, 32), image_features=True)
