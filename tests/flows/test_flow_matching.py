"""Flow matching: closed-form loss, exact likelihood with the analytic velocity, OT coupling, sampling."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from probgen.flows import FlowMatching, ot_coupling

DT = torch.float64
MU = torch.tensor([1.0, -0.5], dtype=DT)
S2 = torch.tensor([0.25, 2.25], dtype=DT)


class ExactVelocity(nn.Module):
    """The marginal velocity ``E[α' x0 + σ' z | x_t]`` of data N(MU, diag S2) on the model's path."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def forward(self, x, t):
        a, s = self.path.mean_scale(t)[:, None], self.path.std(t)[:, None]
        da, ds = self.path.d_mean_scale(t)[:, None], self.path.d_std(t)[:, None]
        r = (x - a * MU) / (a**2 * S2 + s**2)
        return da * (MU + a * S2 * r) + ds * s * r


def exact_model(path: str) -> FlowMatching:
    model = FlowMatching(2, path=path, net_options={"hidden": [4]})
    model.net = ExactVelocity(model.path)
    return model


def closed_form_loss(model: FlowMatching) -> float:
    """``∫_0^1 Σ_d Var[u_t | x_t] dt`` (Gauss–Legendre, 200 nodes): the loss of the optimal velocity."""
    nodes, weights = np.polynomial.legendre.leggauss(200)
    t = torch.tensor((nodes + 1) / 2, dtype=DT)
    w = torch.tensor(weights / 2, dtype=DT)
    p = model.path
    a, s, da, ds = (f(t)[:, None] for f in (p.mean_scale, p.std, p.d_mean_scale, p.d_std))
    var_u = da**2 * S2 + ds**2
    cov = da * a * S2 + ds * s
    var_x = a**2 * S2 + s**2
    return float((w * (var_u - cov**2 / var_x).sum(-1)).sum())


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_loss_of_the_exact_velocity_is_the_closed_form(path):
    model = exact_model(path)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x = MU + S2.sqrt() * torch.randn(n, 2, generator=g, dtype=DT)
    z = torch.randn(n, 2, generator=g, dtype=DT)
    t = torch.rand(n, generator=g, dtype=DT)
    x_t, u = model.conditional(x, z, t)
    per_point = ((model.net(x_t, t) - u) ** 2).sum(-1)
    se = float(per_point.std() / math.sqrt(n))
    expected = closed_form_loss(model)
    assert abs(float(per_point.mean()) - expected) < 4 * se, (float(per_point.mean()), expected, se)
    # model.loss draws its own (t, z): the same expectation
    torch.manual_seed(1)
    assert abs(float(model.loss(x, generator=g)) - expected) < 4 * se


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_ode_log_likelihood_with_the_analytic_velocity_is_the_true_density(path):
    model = exact_model(path)
    x = MU + S2.sqrt() * torch.randn(6, 2, generator=torch.Generator().manual_seed(2), dtype=DT)
    true = torch.distributions.Normal(MU, S2.sqrt()).log_prob(x).sum(-1)
    lp = model.log_prob(x, rtol=1e-7, atol=1e-7)
    assert (lp - true).abs().max() < 5e-3
    lp_h = torch.stack([model.log_prob(x, trace="hutchinson", rtol=1e-5, atol=1e-5,
                                       generator=torch.Generator().manual_seed(k)) for k in range(16)])
    se = lp_h.std(0) / 4
    assert ((lp_h.mean(0) - true).abs() < 4 * se + 1e-4).all()


def test_minibatch_ot_is_the_brute_force_optimum():
    g = torch.Generator().manual_seed(3)
    x, z = torch.randn(6, 2, generator=g, dtype=DT), torch.randn(6, 2, generator=g, dtype=DT)
    cost = torch.cdist(x, z) ** 2
    best = min(float(cost[range(6), list(p)].sum()) for p in itertools.permutations(range(6)))
    perm = ot_coupling(x, z)
    assert sorted(perm.tolist()) == list(range(6))
    assert math.isclose(float(cost[range(6), perm].sum()), best, rel_tol=1e-12)


@pytest.mark.parametrize("method, steps", [("dopri5", None), ("heun", 40), ("dpm++2m", 40)])
def test_sampling_the_exact_flow_gives_the_data_moments(method, steps):
    model = exact_model("linear").double()
    x = model.sample(4000, method=method, steps=steps, generator=torch.Generator().manual_seed(4))
    assert ((x.mean(0) - MU).abs() < 5 * (S2 / 4000).sqrt()).all()
    assert ((x.var(0) / S2 - 1).abs() < 0.1).all()


def test_reflow_pairs_and_paired_loss_and_errors():
    model = exact_model("linear")
    x0, z = model.reflow_pairs(16, generator=torch.Generator().manual_seed(5), method="rk4", steps=20)
    assert x0.shape == z.shape == (16, 2)
    assert torch.isfinite(model.loss(x0, noise=z))
    with pytest.raises(ValueError, match="noise must pair with x"):
        model.loss(x0, noise=z[:3])
    with pytest.raises(ValueError, match="unknown path 'ot'"):
        FlowMatching(2, path="ot")
    with pytest.raises(ValueError, match="unknown coupling 'sinkhorn'"):
        FlowMatching(2, coupling="sinkhorn")
    ot = FlowMatching(2, coupling="ot", net_options={"hidden": [8]})
    assert torch.isfinite(ot.loss(torch.randn(32, 2)))
    assert FlowMatching(**ot.config()).coupling == "ot"


def test_reflow_straightens_the_paths():
    # a bimodal 1-D target: the noise near 0 must split, so the first flow's paths bend and a 2-step Euler
    # sample lands far from the ODE solution; reflow (Liu et al. 2023) trains on the flow's own (x̂0, z) pairs,
    # whose straight interpolations do not cross in 1-D, so the reflowed flow is nearly straight
    from probgen.flows.matching import reflow, straightness
    from probgen.training import fit

    g = torch.Generator().manual_seed(0)
    x = torch.where(torch.rand(2048, 1, generator=g) < 0.5, -2.0, 2.0) + 0.3 * torch.randn(2048, 1, generator=g)
    torch.manual_seed(0)
    base = FlowMatching(1, net_options={"hidden": [32, 32]})
    fit(base, x, steps=300, batch_size=128, lr=3e-3, lr_schedule="cosine", seed=0, progress=False)
    flat = reflow(base, num_pairs=2048, steps=300, batch_size=128, lr=3e-3, seed=1)
    err = {name: straightness(m, 1000, steps=2, generator=torch.Generator().manual_seed(2))
           for name, m in (("base", base), ("reflow", flat))}
    assert err["reflow"] < 0.4 * err["base"], err
    assert flat is not base and base.training  # the input model is left as it was
    with pytest.raises(TypeError, match="model must be a FlowMatching"):
        reflow(torch.nn.Linear(1, 1), num_pairs=4, steps=1)
    with pytest.raises(ValueError, match="num_pairs"):
        reflow(base, num_pairs=0, steps=1)


def test_cli_reflow_and_cnf_objectives(tmp_path, capsys):
    import json

    import numpy as np

    from probgen.checkpoint import load, read_checkpoint
    from probgen.cli import main

    data = tmp_path / "two.npy"
    g = np.random.default_rng(0)
    np.save(data, (g.standard_normal((200, 2)) + np.array([[3.0, 0.0]]) * g.integers(0, 2, (200, 1))).astype(np.float32))
    common = ["--data", str(data), "--steps", "5", "--eval", "none", "--no-progress", "--num-samples", "8"]
    assert main(["fit", "fm", *common, "--reflow", "1", "--out", str(tmp_path / "fm")]) == 0
    out = capsys.readouterr().out
    assert "reflow: 1 round(s)" in out
    summary = json.loads((tmp_path / "fm" / "summary.json").read_text())
    assert summary["reflow_rounds"] == 1
    assert read_checkpoint(tmp_path / "fm" / "checkpoint.pt")["extra"] == {"reflow_rounds": 1}
    assert load(tmp_path / "fm" / "checkpoint.pt").inner_family == "fm"
    # `fit cnf` trains by flow matching by default; --objective ffjord keeps maximum likelihood through the ODE
    assert main(["fit", "cnf", *common, "--out", str(tmp_path / "cnf")]) == 0
    assert "trained by flow matching" in json.loads((tmp_path / "cnf" / "summary.json").read_text())["model"]
    assert main(["fit", "cnf", *common, "--objective", "ffjord", "--out", str(tmp_path / "ffjord")]) == 0
    assert json.loads((tmp_path / "ffjord" / "summary.json").read_text())["model"].startswith("continuous normalizing")
    capsys.readouterr()
    for argv, pattern in ((["fit", "cnf", "--objective", "ffjord", "--reflow", "1"], "--reflow is used by flow matching"),
                          (["fit", "flow", "--reflow", "1"], "--reflow is used by flow matching"),
                          (["fit", "cnf", "--objective", "ml"], "unknown --objective 'ml'"),
                          (["fit", "fm", "--reflow", "0"], "--reflow.*positive integer")):
        assert main([*argv, *common, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and pytest.importorskip("re").search(pattern, err[0]), err
