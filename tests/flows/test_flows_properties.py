"""Properties shared by every flow kind, in float64 and seeded.

* change of variables: ``log p(y) = log p_base(z) - log|det ∂T/∂z|`` with the Jacobian of the forward
  (base → data) map taken by autograd, one sample at a time;
* inverse round trips ``T⁻¹(T(z)) = z`` (fresh tensors, so Pyro's (x, y) cache is not used);
* every parameter gets a finite gradient from ``loss``.
"""

from __future__ import annotations

import pytest
import torch

from probgen.flows import FLOW_KINDS, Flow

DIM = 3


def _small(kind: str) -> Flow:
    opts: dict = {}
    if kind == "cnf":
        opts = {"hidden_dims": (16, 16), "rtol": 1e-9, "atol": 1e-9, "adjoint": False}
    elif kind not in ("planar", "radial"):
        opts = {"hidden_dims": (16, 16)}
    torch.manual_seed(0)
    flow = Flow(DIM, kind, num_layers=2, **opts).double()
    # move every parameter off its (often identity-like) initialisation
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    # data-dependent ActNorm initialisation on a non-standard batch
    data = torch.randn(64, DIM, dtype=torch.float64) * torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64) + 1.0
    flow.log_prob(data)
    return flow


def _forward(flow: Flow, z: torch.Tensor) -> torch.Tensor:
    for t in flow.transforms:
        z = t(z)
    return z


def _inverse(flow: Flow, y: torch.Tensor) -> torch.Tensor:
    for t in reversed(flow.transforms):
        y = t.inv(y.clone())
    return y


@pytest.fixture(scope="module", params=FLOW_KINDS)
def flow(request) -> Flow:
    return _small(request.param)


def test_log_prob_matches_autograd_jacobian(flow: Flow) -> None:
    torch.manual_seed(1)
    z = torch.randn(4, DIM, dtype=torch.float64)
    y = _forward(flow, z).detach()
    expected = []
    for zi in z:
        jac = torch.autograd.functional.jacobian(lambda v: _forward(flow, v.unsqueeze(0)).squeeze(0), zi)
        expected.append(flow.base_dist.log_prob(zi) - torch.linalg.slogdet(jac).logabsdet)
    expected = torch.stack(expected)
    # a fresh copy of y: the densities come from the inverse maps, not from the cached forward pass
    got = flow.log_prob(y.clone()).detach()
    tol = 1e-4 if flow.kind == "cnf" else 1e-8
    torch.testing.assert_close(got, expected, atol=tol, rtol=0)


def test_inverse_round_trip(flow: Flow) -> None:
    torch.manual_seed(2)
    z = torch.randn(8, DIM, dtype=torch.float64)
    with torch.no_grad():
        y = _forward(flow, z)
        back = _inverse(flow, y)
    tol = 1e-6 if flow.kind == "cnf" else 1e-9
    torch.testing.assert_close(back, z, atol=tol, rtol=0)


def test_sample_shape_and_log_prob_of_samples(flow: Flow) -> None:
    torch.manual_seed(3)
    x = flow.sample(6)
    assert x.shape == (6, DIM) and x.dtype == torch.float64
    lp = flow.log_prob(x.clone())
    assert lp.shape == (6,) and bool(torch.isfinite(lp).all())


def test_every_parameter_gets_a_finite_gradient(flow: Flow) -> None:
    torch.manual_seed(4)
    flow.zero_grad()
    x = torch.randn(32, DIM, dtype=torch.float64)
    flow.loss(x).backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None, name
        assert bool(torch.isfinite(p.grad).all()), name
    assert any(float(p.grad.abs().sum()) > 0 for p in flow.parameters())
