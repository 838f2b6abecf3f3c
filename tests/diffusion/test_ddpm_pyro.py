"""DDPM as Pyro programs: Trace_ELBO on (model, guide) estimates -elbo(x).sum(), site by site."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from probgen.diffusion.ddpm import DDPM
from probgen.sde.discrete import DiscreteSchedule

DT = torch.float64
MU = torch.tensor([0.3, -0.2], dtype=DT)
SIGMA = torch.tensor([[0.25, 0.1], [0.1, 0.2]], dtype=DT)
NUM_STEPS = 10


def gaussian_eps(schedule: DiscreteSchedule):
    def eps(x, index):
        abar = schedule.marginal_alpha(schedule.index_to_time(index).to(x.dtype)) ** 2
        cov = abar[:, None, None] * SIGMA + (1 - abar)[:, None, None] * torch.eye(2, dtype=DT)
        r = x - abar.sqrt()[:, None] * MU
        return (1 - abar).sqrt()[:, None] * torch.linalg.solve(cov, r.unsqueeze(-1)).squeeze(-1)

    return eps


def _data(levels):
    g = torch.Generator().manual_seed(0)
    x = MU + torch.randn(32, 2, generator=g, dtype=DT) @ torch.linalg.cholesky(SIGMA).T
    if levels is not None:  # snap to L levels on [-1, 1]
        step = 2.0 / (levels - 1)
        x = torch.round((x.clamp(-1, 1) + 1) / step) * step - 1
    return x


@pytest.mark.parametrize("variance,levels", [("beta", None), ("beta_tilde", 5)])
def test_trace_elbo_estimates_minus_closed_form_elbo(variance, levels):
    schedule = DiscreteSchedule.from_name("linear", NUM_STEPS)
    model = DDPM((2,), NUM_STEPS, eps_net=gaussian_eps(schedule), variance=variance, data_levels=levels)
    x = _data(levels)
    # both are unbiased for -ELBO summed over the batch; compare means with the SE of the difference
    trace = torch.tensor([pyro.infer.Trace_ELBO().loss(model.model, model.guide, x) for _ in range(40)], dtype=DT)
    closed = torch.stack([-model.elbo(x).sum() for _ in range(200)])
    se = math.sqrt(float(trace.var()) / len(trace) + float(closed.var()) / len(closed))
    assert abs(float(trace.mean() - closed.mean())) < 3 * se, (float(trace.mean()), float(closed.mean()), se)


def test_sites_are_one_per_step_with_the_forward_process_as_guide():
    schedule = DiscreteSchedule.from_name("linear", NUM_STEPS)
    model = DDPM((2,), NUM_STEPS, eps_net=gaussian_eps(schedule))
    x = _data(None)
    guide_tr = pyro.poutine.trace(model.guide).get_trace(x)
    model_tr = pyro.poutine.trace(pyro.poutine.replay(model.model, trace=guide_tr)).get_trace(x)
    latent = [n for n, s in guide_tr.nodes.items() if s["type"] == "sample" and n.startswith("x_")]
    want = [f"x_{t}" for t in range(1, NUM_STEPS)] + ["x_T"]
    assert latent == want
    assert model_tr.nodes["x_0"]["is_observed"] and torch.equal(model_tr.nodes["x_0"]["value"], x)
    # the guide's first site is q(x_1 | x_0) = N(sqrt(1 - β_1) x_0, β_1 I)
    fn = guide_tr.nodes["x_1"]["fn"].base_dist
    b1 = float(schedule.betas[0])
    assert torch.allclose(fn.loc, math.sqrt(1 - b1) * x) and torch.allclose(fn.scale, torch.full_like(x, math.sqrt(b1)))
    assert model_tr.nodes["x_T"]["fn"].batch_shape == (x.shape[0],)


def test_svi_step_updates_the_network():
    torch.manual_seed(0)
    model = DDPM((2,), 5, net_options={"hidden": [8], "zero_init_last": False})
    before = [p.detach().clone() for p in model.eps_net.parameters()]
    svi = pyro.infer.SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    loss = svi.step(torch.randn(16, 2))
    assert math.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.eps_net.parameters()))
