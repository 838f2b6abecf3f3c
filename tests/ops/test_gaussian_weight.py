"""The defensive mixture of a standardized or whitened model with the fitted Gaussian (``gaussian_weight``):
its log-density is the mixture's closed form, bounded below by log w plus the Gaussian's, its samples come
from the Gaussian with probability w, it survives a checkpoint, and bad weights are refused."""

from __future__ import annotations

import math

import pytest
import torch

from probgen.checkpoint import load, save
from probgen.flows import Flow
from probgen.ops.standardize import Standardized, standardize, whiten


def _data(n=400):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=g) @ torch.tensor([[2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 3.0, 1.0]]) + 10


def test_log_prob_is_the_mixture_of_the_model_and_the_fitted_full_covariance_gaussian():
    x = _data()
    flow = Flow(3, "maf", hidden_dims=(16, 16))
    plain = whiten(flow, x)
    mixed = whiten(flow, x, gaussian_weight=0.1)
    gauss = torch.distributions.MultivariateNormal(mixed.loc.double(), scale_tril=mixed.scale_tril.double())
    pts = torch.cat([x[:5], x[:2] + 40.0])  # two far-out points
    with torch.no_grad():
        expected = torch.logaddexp(plain.log_prob(pts).double() + math.log(0.9), gauss.log_prob(pts.double())
                                   + math.log(0.1))
        got = mixed.log_prob(pts).double()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert (got >= gauss.log_prob(pts.double()) + math.log(0.1) - 1e-4).all()  # the lower bound
    # the loss is the mixture's mean NLL of z (the constant log-determinant left out)
    with torch.no_grad():
        assert float(mixed.loss(pts)) == pytest.approx(float(-(got - mixed.log_abs_det_jacobian()).mean()), rel=1e-5)


def test_standardize_mixes_the_diagonal_gaussian():
    x = _data()
    mixed = standardize(Flow(3, "maf", hidden_dims=(8,)), x, gaussian_weight=0.2)
    plain = Standardized(mixed.model, loc=mixed.loc, scale=mixed.scale)
    diag = torch.distributions.Normal(mixed.loc.double(), mixed.scale.double())
    with torch.no_grad():
        expected = torch.logaddexp(plain.log_prob(x[:4]).double() + math.log(0.8),
                                   diag.log_prob(x[:4].double()).sum(-1) + math.log(0.2))
        torch.testing.assert_close(mixed.log_prob(x[:4]).double(), expected, rtol=1e-4, atol=1e-4)


class _Far(torch.nn.Module):
    """A model of z whose every draw is the point (50, 50, 50)."""

    event_shape = (3,)

    def loss(self, z):
        return z.sum()

    def log_prob(self, z):
        return torch.zeros(z.shape[0])

    def sample(self, n):
        return torch.full((n, 3), 50.0)


def test_samples_come_from_the_gaussian_with_probability_w():
    torch.manual_seed(0)
    m = Standardized(_Far(), gaussian_weight=0.25)
    z = m.sample(20_000)
    from_gaussian = (z != 50.0).all(-1).double().mean()
    assert abs(float(from_gaussian) - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 20_000)
    assert float(z[(z != 50.0).all(-1)].std()) == pytest.approx(1.0, abs=0.03)


def test_checkpoint_round_trip_keeps_the_weight(tmp_path):
    x = _data()
    m = whiten(Flow(3, "maf", hidden_dims=(8,)), x, gaussian_weight=0.05)
    save(tmp_path / "m.pt", m)
    again = load(tmp_path / "m.pt")
    assert again.gaussian_weight == 0.05
    with torch.no_grad():
        torch.testing.assert_close(again.log_prob(x[:5]), m.log_prob(x[:5]))


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match=r"gaussian_weight must lie in \[0, 1\), got 1"):
        Standardized(_Far(), gaussian_weight=1)
    with pytest.raises(TypeError, match=r"gaussian_weight must be a number"):
        Standardized(_Far(), gaussian_weight="0.1")

    class NoDensity(_Far):
        log_prob = None

    with pytest.raises(ValueError, match=r"gaussian_weight=0.1 mixes the wrapped model's log_prob .* NoDensity has none"):
        Standardized(NoDensity(), gaussian_weight=0.1)
