"""The whitening bijection (probgen.ops.standardize.Whitened): its log-determinant against autograd's Jacobian,
the identity covariance of whitened data, log_prob of the original values, and a checkpoint round trip."""

from __future__ import annotations

import math

import pytest
import torch

import probgen as pg
from probgen.flows import Flow
from probgen.ops.standardize import Whitened, whiten


def _data(n=4000):
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[3.0, 0.0, 0.0], [2.0, 0.5, 0.0], [-1.0, 1.0, 1.0]])
    return torch.randn(n, 3, generator=g) @ mix.T * 40 + 100


def test_whitened_data_have_identity_covariance_and_the_log_det_is_autograds():
    x = _data()
    model = whiten(Flow(3, "maf", num_layers=1), x)
    z = model.to_standard(x.double())
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-3, rtol=0)  # float32
    torch.testing.assert_close(torch.cov(z.T), torch.eye(3, dtype=torch.float64), atol=1e-3, rtol=0)
    jac = torch.autograd.functional.jacobian(lambda v: model.to_standard(v[None].double())[0], x[0].double())
    assert float(model.log_abs_det_jacobian()) == pytest.approx(float(torch.linalg.slogdet(jac)[1]), abs=1e-8)
    back = model.from_standard(model.to_standard(x[:5].double()))
    torch.testing.assert_close(back, x[:5].double(), atol=1e-6, rtol=1e-6)


def test_log_prob_is_the_density_of_the_original_values():
    x = _data(500)
    flow = Flow(3, "maf", num_layers=2)
    model = whiten(flow, x)
    tril = model.scale_tril.double()
    with torch.no_grad():
        expected = flow.log_prob(model.to_standard(x[:8])).double() - torch.diagonal(tril).log().sum()
        torch.testing.assert_close(model.log_prob(x[:8]).double(), expected, atol=1e-4, rtol=1e-5)
        # a flow at the identity is N(0, I) in z: the whitened model is then the Gaussian fitted to the data
        gauss = torch.distributions.MultivariateNormal(model.loc.double(), scale_tril=tril)
        ident = whiten(Flow(3, "realnvp", num_layers=1, actnorm=False), x)
        for p in ident.model.parameters():
            p.zero_()
        torch.testing.assert_close(ident.log_prob(x[:8]).double(), gauss.log_prob(x[:8].double()),
                                   atol=1e-3, rtol=1e-5)


def test_checkpoint_round_trip_and_bad_arguments(tmp_path):
    x = _data(300)
    model = whiten(Flow(3, "maf", num_layers=1), x)
    pg.save(tmp_path / "w.pt", model)
    again = pg.load(tmp_path / "w.pt")
    assert isinstance(again, Whitened) and torch.equal(again.scale_tril, model.scale_tril)
    with torch.no_grad():
        torch.testing.assert_close(again.log_prob(x[:4]), model.log_prob(x[:4]))
    with pytest.raises(ValueError, match=r"scale_tril must have shape \(3, 3\)"):
        Whitened(Flow(3, "maf"), scale_tril=torch.eye(2))
    with pytest.raises(ValueError, match="lower-triangular with a positive diagonal"):
        Whitened(Flow(3, "maf"), scale_tril=torch.ones(3, 3))
    with pytest.raises(ValueError, match=r"data must be a tensor \(N, D\)"):
        whiten(Flow(3, "maf"), x[:1])
    assert math.isfinite(float(model.log_abs_det_jacobian()))
