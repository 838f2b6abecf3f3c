"""The shipped digits classifier (accuracy from the shipped weights), its feature maps, and the IS."""

from __future__ import annotations

import math

import pytest
import torch

import probgen.metrics as M
from probgen.data import digits
from probgen.metrics.classifier import WEIGHTS_PATH, weights_info


def test_shipped_weights_reach_95_percent_test_accuracy():
    x, y = digits("test")
    net = M.digits_classifier()
    assert not net.training
    assert all(not p.requires_grad for p in net.parameters())
    acc = (net(x).argmax(-1) == y).double().mean().item()
    assert acc >= 0.95
    # the JSON record next to the weights states this accuracy
    assert weights_info()["test_accuracy"] == pytest.approx(acc, abs=1e-5)
    assert WEIGHTS_PATH.stat().st_size < 400_000
    # the probabilities route gives the same predictions
    assert torch.equal(M.digits_probs(x).argmax(-1), net(x).argmax(-1))


def test_weights_are_a_plain_state_dict():
    state = torch.load(WEIGHTS_PATH, weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert set(state) == set(M.DigitsClassifier().state_dict())


def test_feature_map_shapes_dtypes_and_input_layouts():
    x, _ = digits("test")
    f = M.digits_features(x[:20])
    assert f.shape == (20, 64) and f.dtype == torch.float32 and bool((f >= 0).all())
    torch.testing.assert_close(M.digits_features(x[:20].reshape(20, 64)), f)
    torch.testing.assert_close(M.digits_features(x[:20, 0], batch_size=3), f)
    f64 = M.digits_features(x[:20].double())
    assert f64.dtype == torch.float64
    torch.testing.assert_close(f64, f.double(), rtol=1e-5, atol=1e-5)
    p = M.digits_probs(x[:20])
    torch.testing.assert_close(p.sum(-1), torch.ones(20))


def test_inception_score_constant_and_uniform_one_hot():
    # identical predictions for every sample: p(y|x) = p(y), KL = 0, IS = 1
    p = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64).repeat(60, 1)
    mean, std = M.inception_score(p, num_splits=6)
    assert mean.item() == pytest.approx(1.0, abs=1e-12) and std.item() == pytest.approx(0.0, abs=1e-12)
    # confident one-hot predictions, K classes used equally in every split: IS = exp(log K) = K
    K = 7
    p = torch.eye(K, dtype=torch.float64).repeat(30, 1)  # 210 rows, 10 splits of 21 = 3 of each class
    mean, std = M.inception_score(p, num_splits=10)
    assert mean.item() == pytest.approx(K, rel=1e-12) and std.item() == pytest.approx(0.0, abs=1e-12)


def test_inception_score_two_class_closed_form_and_logits():
    # half the rows (a, 1-a), half (1-a, a): marginal (1/2, 1/2), KL = log 2 - H(a), IS = 2 exp(-H(a))
    a = 0.9
    p = torch.tensor([[a, 1 - a], [1 - a, a]], dtype=torch.float64).repeat(50, 1)
    entropy = -(a * math.log(a) + (1 - a) * math.log(1 - a))
    mean, _ = M.inception_score(p, num_splits=5)
    assert mean.item() == pytest.approx(2 * math.exp(-entropy), rel=1e-12)
    logits = torch.randn(40, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a_ = M.inception_score(logits, from_logits=True, num_splits=4)
    b_ = M.inception_score(torch.softmax(logits, -1), num_splits=4)
    assert a_[0].item() == pytest.approx(b_[0].item(), rel=1e-10)
    assert a_[1].item() == pytest.approx(b_[1].item(), rel=1e-8)


def test_real_digits_score_high():
    # a >= 95% accurate classifier on the balanced test set: predictions are nearly one-hot and the 10
    # classes are used equally, so the score must be close to its maximum 10 (well above 8)
    x, _ = digits("test")
    mean, _ = M.inception_score(M.digits_probs(x), num_splits=1)
    assert 8.0 < mean.item() <= 10.0


def test_errors():
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 1, 8, 8\)"):
        M.digits_features(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="pass from_logits=True"):
        M.inception_score(torch.randn(10, 3))
    with pytest.raises(ValueError, match="num_splits must be <= 10"):
        M.inception_score(torch.full((10, 2), 0.5), num_splits=11)
