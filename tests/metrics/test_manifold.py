"""Improved precision/recall (Kynkäänniemi et al. 2019): exact extreme cases, mode dropping, blocking."""

from __future__ import annotations

import importlib

import pytest
import torch

import probgen.metrics as M

pr_module = importlib.import_module("probgen.metrics.manifold")


def test_identical_sets_are_fully_covered_and_disjoint_sets_not_at_all():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 4, generator=g)
    p, r = M.precision_recall(x, x.clone())  # every point lies in its own ball
    assert (p.item(), r.item()) == (1.0, 1.0)
    p, r = M.precision_recall(x, torch.randn(300, 4, generator=g) + 100.0)
    assert (p.item(), r.item()) == (0.0, 0.0)


def test_two_samples_of_one_distribution_score_near_one():
    # independent samples of N(0, I_2), n = 1000, k = 3: a fresh point falls outside the union of 3-NN balls
    # only in the sparse tails, so both values are near 1 (above 0.9)
    g = torch.Generator().manual_seed(1)
    p, r = M.precision_recall(torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g))
    assert p.item() > 0.9 and r.item() > 0.9


def test_mode_dropping_lowers_recall_not_precision():
    # real: two far-apart modes with equal weight; fake: only the first mode. Every fake point looks real
    # (precision near 1), but the second mode's half of the real data is not covered (recall near 1/2;
    # the number of covered real points in mode 1 is at most 500, so recall <= 0.5 exactly)
    g = torch.Generator().manual_seed(2)
    real = torch.cat([torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g) + 20.0])
    fake = torch.randn(1000, 2, generator=g)
    p, r = M.precision_recall(real, fake)
    assert p.item() > 0.9
    assert 0.4 < r.item() <= 0.5


def test_knn_radii_and_blocking(monkeypatch):
    pts = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    torch.testing.assert_close(M.knn_radii(pts, k=1), torch.tensor([1.0, 1.0, 2.0, 4.0]))
    torch.testing.assert_close(M.knn_radii(pts, k=2), torch.tensor([3.0, 2.0, 3.0, 6.0]))
    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(97, 3, generator=g), torch.randn(83, 3, generator=g) * 1.5
    want = M.precision_recall(real, fake, k=5)
    monkeypatch.setattr(pr_module, "_MAX_BLOCK_ENTRIES", 500)  # a few rows per block
    got = M.precision_recall(real, fake, k=5)
    assert want[0].item() == got[0].item() and want[1].item() == got[1].item()


def test_errors():
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"real_feats must have more than k=3 samples"):
        M.precision_recall(x, torch.randn(10, 2))
    with pytest.raises(ValueError, match="same number of features"):
        M.precision_recall(torch.randn(10, 2), torch.randn(10, 3))
    with pytest.raises(ValueError, match="k must be >= 1"):
        M.precision_recall(torch.randn(10, 2), torch.randn(10, 2), k=0)
