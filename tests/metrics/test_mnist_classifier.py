"""The shipped 28x28 MNIST classifier: a small weights file that loads safely and gives FID/KID features."""

from __future__ import annotations

import pytest
import torch

import probgen as pg
from probgen.metrics.mnist_net import MNIST_WEIGHTS_PATH, MnistClassifier, mnist_weights_info


def test_weights_are_small_and_recorded():
    assert MNIST_WEIGHTS_PATH.stat().st_size < 1_000_000
    info = mnist_weights_info()
    assert info["test_accuracy"] >= 0.98 and info["num_test"] == 10_000
    assert "train_mnist_classifier.py" in info["command"]
    net = pg.metrics.mnist_classifier()
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in MnistClassifier().parameters())


def test_features_shapes_and_fid():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 28, 28, generator=g) * 2 - 1
    f = pg.metrics.mnist_features(x, batch_size=16)
    assert f.shape == (40, 128) and bool((f >= 0).all())
    torch.testing.assert_close(pg.metrics.mnist_features(x.reshape(40, 784)), f)
    torch.testing.assert_close(pg.metrics.mnist_probs(x).sum(-1), torch.ones(40))
    assert float(pg.metrics.fid(x, x, features="mnist")) == pytest.approx(0.0, abs=1e-6)
    blank = -torch.ones(40, 1, 28, 28)
    assert float(pg.metrics.fid(x, blank + 0.01 * torch.randn(blank.shape, generator=g), features="mnist")) > 1.0
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 1, 28, 28\)"):
        pg.metrics.mnist_features(torch.zeros(2, 1, 8, 8))


def test_accuracy_on_real_mnist_when_present():
    try:
        ds = pg.data.load_dataset("mnist", n_train=1, n_test=2000)  # $PROBGEN_DATA_DIR or ~/.cache/probgen/data
    except FileNotFoundError:
        pytest.skip("MNIST files not in the data folder (tests never download)")
    acc = float((pg.metrics.mnist_probs(ds.test).argmax(-1) == ds.labels_test).float().mean())
    assert acc >= 0.97
