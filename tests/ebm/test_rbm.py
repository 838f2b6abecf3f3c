"""RBMs: exact and AIS partition functions, Gibbs sampling, CD-k gradients, validation. Float64.

Ground truth comes from enumeration: for a tiny RBM, ``log Z = logsumexp_{v,h} -E(v, h)`` over both
layers, the visible law is ``p(v) = exp(-F(v)) / Z`` and the exact log-likelihood gradient is the
autograd gradient of ``mean_b log p(v_b)`` with the enumerated (differentiable) ``log Z``.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from probgen.ebm import BernoulliRBM, GaussianBernoulliRBM
from probgen.ebm.rbm_base import binary_states as _binary_states


def random_rbm(n_visible: int, n_hidden: int, *, scale: float = 1.0, seed: int = 0, cls=BernoulliRBM, **kw):
    rbm = cls(n_visible, n_hidden, **kw).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rbm.weight.copy_(scale * torch.randn(n_visible, n_hidden, generator=g, dtype=torch.float64))
        rbm.visible_bias.copy_(0.5 * torch.randn(n_visible, generator=g, dtype=torch.float64))
        rbm.hidden_bias.copy_(0.5 * torch.randn(n_hidden, generator=g, dtype=torch.float64))
    return rbm


def all_states(m: int) -> torch.Tensor:
    return _binary_states(m, 0, 1 << m, dtype=torch.float64, device=torch.device("cpu"))


@pytest.mark.parametrize("n_visible, n_hidden", [(4, 3), (3, 5)])  # enumerates hidden, then visible
def test_exact_log_partition_equals_brute_force_over_both_layers(n_visible, n_hidden):
    rbm = random_rbm(n_visible, n_hidden)
    v, h = all_states(n_visible), all_states(n_hidden)
    vv = v.repeat_interleave(h.shape[0], 0)
    hh = h.repeat(v.shape[0], 1)
    brute = torch.logsumexp(-rbm.energy(vv, hh), 0)
    assert torch.allclose(rbm.log_partition("exact"), brute, atol=1e-10)
    # free energy = -log Σ_h exp(-E(v, h)); log_prob sums to one
    fe = -torch.logsumexp(-rbm.energy(vv, hh).reshape(v.shape[0], h.shape[0]), 1)
    assert torch.allclose(rbm.free_energy(v), fe, atol=1e-10)
    assert torch.allclose(rbm.log_prob(v).exp().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_gaussian_rbm_log_partition_equals_quadrature():
    rbm = random_rbm(2, 3, scale=0.8, cls=GaussianBernoulliRBM, sigma=0.7, learn_sigma=True)
    with torch.no_grad():
        rbm.log_sigma.copy_(torch.log(torch.tensor([0.7, 1.1], dtype=torch.float64)))
    grid = torch.linspace(-9.0, 9.0, 721, dtype=torch.float64)
    dx = (grid[1] - grid[0]).item()
    xy = torch.cartesian_prod(grid, grid)
    log_z_quad = torch.logsumexp(-rbm.free_energy(xy), 0) + 2 * math.log(dx)
    assert torch.allclose(rbm.log_partition("exact"), log_z_quad, atol=1e-6)
    # the joint energy marginalises to the free energy (Gaussian integral over nothing: sum over h)
    h = all_states(3)
    v = torch.randn(5, 2, dtype=torch.float64)
    joint = -rbm.energy(v.repeat_interleave(8, 0), h.repeat(5, 1)).reshape(5, 8)
    assert torch.allclose(-torch.logsumexp(joint, 1), rbm.free_energy(v), atol=1e-10)


@pytest.mark.parametrize("cls, kw", [(BernoulliRBM, {}), (GaussianBernoulliRBM, {"sigma": 0.8})])
def test_ais_log_partition_within_three_standard_errors(cls, kw):
    rbm = random_rbm(12, 10, scale=0.6, seed=1, cls=cls, **kw)
    exact = rbm.log_partition("exact")
    log_z, se = rbm.log_partition("ais", return_stderr=True, num_chains=200, num_steps=300,
                                  generator=torch.Generator().manual_seed(0))
    assert 0 < se.item() < 0.1  # the check below is only meaningful with a small standard error
    assert abs(log_z.item() - exact.item()) < 3 * se.item()


def test_ais_with_data_fitted_base():
    rbm = random_rbm(10, 8, scale=0.5, seed=2)
    data = torch.bernoulli(torch.full((50, 10), 0.3, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    exact = rbm.log_partition("exact")
    log_z, se = rbm.log_partition("ais", data=data, return_stderr=True, num_chains=200, num_steps=300,
                                  generator=torch.Generator().manual_seed(4))
    assert abs(log_z.item() - exact.item()) < 3 * se.item()
    ll, se2 = rbm.log_likelihood(data, num_particles=100, num_steps=100, data=data, return_stderr=True,
                                 generator=torch.Generator().manual_seed(5))
    assert ll.shape == (50,)
    assert torch.allclose(ll, rbm.log_prob(data), atol=5 * se2.item() + 1e-6)


def test_gibbs_sampler_matches_enumerated_distribution():
    rbm = random_rbm(3, 2, scale=1.5, seed=3)
    n = 4000
    v = rbm.sample(n, gibbs_steps=30, generator=torch.Generator().manual_seed(0))
    codes = (v * torch.tensor([1, 2, 4], dtype=torch.float64)).sum(-1).long()
    counts = torch.bincount(codes, minlength=8).double()
    states = all_states(3)  # row i has bits of i in the same order: code(row i) = i
    probs = rbm.log_prob(states).exp().detach()
    expected = n * probs
    chi2 = (((counts - expected) ** 2) / expected).sum().item()
    # Pearson's χ² with 7 degrees of freedom; 24.32 is its 0.999 quantile
    assert chi2 < 24.32


def _exact_and_cd_gradients(rbm, data, k, replicas, seed):
    params = [rbm.weight, rbm.visible_bias, rbm.hidden_bias]
    exact = torch.autograd.grad(-rbm.log_prob(data).mean(), params)
    exact = torch.cat([g.reshape(-1) for g in exact])
    torch.manual_seed(seed)
    batch = data.repeat(replicas, 1)
    cd = torch.autograd.grad(rbm.loss(batch), params)
    cd = torch.cat([g.reshape(-1) for g in cd])
    # per-chain gradient of F at the negatives (∂F/∂W = -v σᵀ, ∂F/∂b = -v, ∂F/∂c = -σ) gives the MC error
    torch.manual_seed(seed)
    v_neg, _ = rbm.gibbs(batch, steps=k)
    s = torch.sigmoid(rbm.hidden_logits(v_neg)).detach()
    per_chain = torch.cat([-(v_neg[:, :, None] * s[:, None, :]).reshape(len(v_neg), -1), -v_neg, -s], 1)
    se = per_chain.std(0) / math.sqrt(len(v_neg))
    return exact, cd, se


def test_cd_k_gradient_matches_exact_gradient_for_large_k():
    rbm = random_rbm(4, 3, scale=1.0, seed=4, k=50)
    data = all_states(4)[[1, 3, 6, 9, 12, 15]]
    exact, cd, se = _exact_and_cd_gradients(rbm, data, k=50, replicas=1000, seed=0)
    # 19 components; each is an average of 6000 chains: z-scores within 4.5 (family-wise)
    assert ((cd - exact).abs() < 4.5 * se).all()


def test_cd_1_gradient_is_biased():
    # known result (Carreira-Perpiñán & Hinton 2005): one Gibbs sweep from the data does not reach the
    # model distribution, so CD-1 is a biased estimate of the likelihood gradient (strong weights here)
    rbm = random_rbm(4, 3, scale=2.0, seed=5, k=1)
    data = all_states(4)[[0, 5, 10, 15]]
    exact, cd, se = _exact_and_cd_gradients(rbm, data, k=1, replicas=1000, seed=0)
    assert ((cd - exact).abs() / se).max() > 8


def test_pcd_loss_advances_persistent_chains():
    rbm = random_rbm(6, 4, objective="pcd", num_chains=20, k=2)
    before = rbm.chains.clone()
    data = torch.bernoulli(torch.full((8, 6), 0.5, dtype=torch.float64))
    loss = rbm.loss(data)
    loss.backward()
    assert rbm.chains.shape == (20, 6) and not torch.equal(before, rbm.chains)
    assert rbm.weight.grad is not None and torch.isfinite(rbm.weight.grad).all()


def test_event_shape_and_config_round_trip():
    rbm = BernoulliRBM(16, 5, event_shape=(1, 4, 4), objective="pcd", k=3, num_chains=7)
    clone = BernoulliRBM(**rbm.config())
    clone.load_state_dict(rbm.state_dict())
    v = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    assert torch.allclose(clone.free_energy(v), rbm.free_energy(v))
    assert rbm.sample(2, gibbs_steps=2).shape == (2, 1, 4, 4)
    g = GaussianBernoulliRBM(3, 2, sigma=0.5, learn_sigma=True)
    g2 = GaussianBernoulliRBM(**g.config())
    g2.load_state_dict(g.state_dict())
    assert g2.family == "gaussian-rbm" and rbm.family == "rbm"
    assert "log_sigma" in dict(g.named_parameters())


def test_as_distribution_scores_with_normalized_log_prob():
    import pyro
    import pyro.distributions as dist

    rbm = random_rbm(4, 3)
    data = all_states(4)

    def model():
        pyro.sample("v", rbm.as_distribution(), obs=data)

    trace = pyro.poutine.trace(model).get_trace()
    assert torch.allclose(trace.log_prob_sum(), rbm.log_prob(data).sum())
    d = rbm.as_distribution()
    assert d.support.event_dim == 1 and isinstance(d, dist.TorchDistribution)
    assert bool(d.support.check(torch.tensor([0.0, 1.0, 1.0, 0.0])))


def test_bad_inputs():
    rbm = BernoulliRBM(64, 30)
    with pytest.raises(ValueError, match=r"v must be binary \(0/1\) for a BernoulliRBM; got 2 entries not in \{0, 1\}, e.g. 0.5, 2"):
        v = torch.zeros(3, 64)
        v[0, 0], v[1, 1] = 0.5, 2.0
        rbm.free_energy(v)
    with pytest.raises(ValueError, match=r"shape \(batch, 64\)"):
        rbm.free_energy(torch.zeros(3, 63))
    with pytest.raises(ValueError, match="n_visible=64, n_hidden=30, so m=30 > max_units=20; use method='ais'"):
        rbm.log_partition("exact")
    with pytest.raises(ValueError, match="unknown method 'mc'; valid choices: 'exact', 'ais'"):
        rbm.log_partition("mc")
    with pytest.raises(ValueError, match="unknown objective 'cd1'; valid choices: 'cd', 'pcd'"):
        BernoulliRBM(4, 3, objective="cd1")
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        BernoulliRBM(4, 3, k=0)
    with pytest.raises(ValueError, match="event_shape"):
        BernoulliRBM(4, 3, event_shape=(1, 3, 3))
    with pytest.raises(ValueError, match="n_hidden=25 > max_units=20"):
        GaussianBernoulliRBM(3, 25).log_partition("exact")
    with pytest.raises(ValueError, match="sigma must be > 0"):
        GaussianBernoulliRBM(3, 2, sigma=0.0)
    v = torch.zeros(2, 64)
    with pytest.raises(ValueError, match="unknown upper 'exact'; valid choices: 'reverse', 'raise'"):
        rbm.log_likelihood_bracket(v, upper="exact")
    with pytest.raises(ValueError, match="tolerance must be > 0"):
        rbm.log_likelihood_bracket(v, tolerance=0.0)
    with pytest.raises(ValueError, match="max_steps must be >= 100"):
        rbm.log_likelihood_bracket(v, num_steps=100, max_steps=50)


# ---- AIS defaults, data statistics, RAISE bracket -------------------------------------------------


def test_ais_defaults_rule():
    assert BernoulliRBM(784, 20).ais_defaults() == (400, 16 * math.ceil(math.sqrt(784 * 20)))
    assert BernoulliRBM(12, 10).ais_defaults() == (100, 500)
    assert BernoulliRBM(784, 500).ais_defaults() == (400, 16 * 627)
    assert BernoulliRBM(3000, 1000).ais_defaults() == (400, 20000)


def test_loss_saves_running_data_mean_and_checkpoint_round_trip():
    rbm = random_rbm(6, 4)
    g = torch.Generator().manual_seed(0)
    batches = [torch.bernoulli(torch.full((n, 6), 0.3, dtype=torch.float64), generator=g) for n in (5, 7, 3)]
    for b in batches:
        rbm.loss(b)
    allv = torch.cat(batches)
    assert float(rbm.data_count) == 15
    torch.testing.assert_close(rbm.data_mean, allv.mean(0))
    rbm.eval()
    rbm.loss(batches[0])  # evaluation-mode losses do not count
    assert float(rbm.data_count) == 15
    clone = BernoulliRBM(**rbm.config()).double()
    clone.load_state_dict(rbm.state_dict())
    torch.testing.assert_close(clone.data_mean, rbm.data_mean)
    assert float(clone.data_count) == 15
    # a state dict from before the statistics existed still loads (strict), with no statistics
    old = {k: v for k, v in rbm.state_dict().items() if not k.startswith("data_")}
    clone2 = BernoulliRBM(**rbm.config()).double()
    clone2.load_state_dict(old, strict=True)
    assert float(clone2.data_count) == 0
    # the base AIS uses is fitted to the saved statistics: same as passing the data explicitly
    b_saved, src = rbm._base_visible_bias(None, None, 10, None)
    b_data, _ = rbm._base_visible_bias(allv, None, 10, None)
    assert src == "saved"
    torch.testing.assert_close(b_saved, b_data)


@pytest.mark.parametrize("source", ["saved", "gibbs", "own-bias"])
def test_default_ais_matches_exact_for_every_base(source):
    """log_partition("ais") with no options, whatever the base: within 3.5 standard errors of exact."""
    rbm = random_rbm(12, 10, scale=0.6, seed=1)
    if source == "saved":
        rbm.update_data_statistics(rbm.sample(200, gibbs_steps=50, generator=torch.Generator().manual_seed(3)))
        kw = {}
    elif source == "gibbs":
        kw = {}
    else:
        kw = {"base_visible_bias": rbm.visible_bias.detach()}
    assert rbm._base_visible_bias(None, kw.get("base_visible_bias"), 10, None)[1] == (
        "given" if source == "own-bias" else source)
    exact = rbm.log_partition("exact")
    log_z, se = rbm.log_partition("ais", return_stderr=True, generator=torch.Generator().manual_seed(0), **kw)
    assert 0 < se.item() < 0.05
    assert abs(log_z.item() - exact.item()) < 3.5 * se.item()


def test_bracket_contains_exact_log_z_and_log_likelihood():
    rbm = random_rbm(12, 10, scale=0.6, seed=1)
    v = rbm.sample(200, gibbs_steps=100, generator=torch.Generator().manual_seed(1))
    br = rbm.log_likelihood_bracket(v, num_raise_points=100, generator=torch.Generator().manual_seed(2))
    exact = rbm.log_partition("exact")
    assert br.warning is None and 0 < br.upper_stderr.item() < 0.05
    assert br.log_z_lower - 3 * br.lower_stderr <= exact <= br.log_z_upper + 3 * br.upper_stderr
    # the bracket is tight here: both ends within 0.05 nats
    assert abs(br.log_z_upper - br.log_z_lower) < 0.05
    lp = rbm.log_prob(v)
    torch.testing.assert_close(br.log_likelihood_upper, -rbm.free_energy(v) - br.log_z_lower)
    torch.testing.assert_close(br.log_likelihood_lower, -rbm.free_energy(v) - br.log_z_upper)
    assert ((br.log_likelihood_lower - 3 * br.upper_stderr <= lp)
            & (lp <= br.log_likelihood_upper + 3 * br.lower_stderr)).all()


def test_raise_upper_end_contains_log_z_on_model_samples():
    """upper="raise" (RAISE from the points, towards the model's own marginals) on points sampled from the
    RBM itself, where the annealed model and the RBM agree: the bracket contains the exact log Z."""
    rbm = random_rbm(12, 10, scale=0.6, seed=1)
    v = rbm.sample(200, gibbs_steps=100, generator=torch.Generator().manual_seed(1))
    exact = rbm.log_partition("exact")
    br = rbm.log_likelihood_bracket(v, upper="raise", num_raise_points=100, generator=torch.Generator().manual_seed(2))
    assert br.warning is None and br.num_steps == 500
    assert br.log_z_lower - 3 * br.lower_stderr <= exact <= br.log_z_upper + 3 * br.upper_stderr


def test_gaussian_rbm_default_ais_and_bracket():
    rbm = random_rbm(6, 5, scale=0.4, seed=2, cls=GaussianBernoulliRBM, sigma=0.8)
    v = rbm.sample(100, gibbs_steps=100, generator=torch.Generator().manual_seed(1))
    rbm.update_data_statistics(v)
    exact = rbm.log_partition("exact")
    br = rbm.log_likelihood_bracket(v, generator=torch.Generator().manual_seed(3))
    assert br.log_z_lower - 3 * br.lower_stderr <= exact <= br.log_z_upper + 3 * br.upper_stderr


def test_default_ais_warns_when_unreliable():
    """A strongly coupled RBM with a bad base and a 2-level schedule: the weights degenerate and the
    call must say so (the error is then far outside the reported standard error)."""
    rbm = random_rbm(12, 10, scale=3.0, seed=4)
    with pytest.warns(RuntimeWarning, match="BernoulliRBM.log_partition: AIS estimate is unreliable"):
        rbm.log_partition("ais", num_steps=2, num_chains=50, base_visible_bias=torch.full((12,), -5.0,
                          dtype=torch.float64), generator=torch.Generator().manual_seed(0))


def _digits_28x28_binary() -> torch.Tensor:
    """scikit-learn's 1,797 8×8 digits (shipped with it, no download), upsampled to 28×28 and binarized."""
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    return (x > 0.35).float().reshape(-1, 784)


@pytest.mark.slow
def test_default_ais_within_tenth_of_a_nat_at_784_x_20():
    """Salakhutdinov & Murray-style check at scale: a 784-visible, 20-hidden RBM trained briefly by CD-1
    on binarized 28×28 digits; exact log Z by enumerating the 2^20 hidden states; the default AIS (base
    from the data statistics the RBM saved while training) within 0.1 nats and 4 standard errors; the
    default bracket (forward AIS, reverse AIS from its particles) contains the exact value up to 3
    standard errors and is narrower than its 1-nat tolerance."""
    torch.manual_seed(0)
    data = _digits_28x28_binary()
    rbm = BernoulliRBM(784, 20)
    opt = torch.optim.SGD(rbm.parameters(), lr=0.05, momentum=0.9)
    for _ in range(10):
        for batch in data[torch.randperm(len(data))].split(50):
            opt.zero_grad()
            rbm.loss(batch).backward()
            opt.step()
    rbm = rbm.double().eval()
    assert float(rbm.data_count) == 10 * len(data)
    exact = rbm.log_partition("exact")
    br = rbm.log_likelihood_bracket(data.double(), generator=torch.Generator().manual_seed(0))
    err = (br.log_z_lower - exact).item()
    assert br.warning is None and br.lower_stderr.item() < 0.05
    assert abs(err) < 0.1 and abs(err) < 4 * br.lower_stderr.item(), (err, br.lower_stderr.item())
    assert br.log_z_lower - 3 * br.lower_stderr <= exact <= br.log_z_upper + 3 * br.upper_stderr
    assert (br.log_z_upper - br.log_z_lower).item() < 1.0


def test_inverted_bracket_warns(monkeypatch):
    """If RAISE's end lands below AIS's (the annealed model is not the RBM) the call must say so: here
    the reverse weights are shifted by 50 nats to force it."""
    rbm = random_rbm(8, 6, scale=0.5, seed=3)
    v = rbm.sample(40, gibbs_steps=50, generator=torch.Generator().manual_seed(1))
    original = rbm._anneal

    def shifted(*args, reverse, **kw):
        log_w, x = original(*args, reverse=reverse, **kw)
        return (log_w - 50.0 if reverse else log_w), x

    monkeypatch.setattr(rbm, "_anneal", shifted)
    with pytest.warns(RuntimeWarning, match="BernoulliRBM.log_likelihood_bracket: the bracket is inverted"):
        br = rbm.log_likelihood_bracket(v, max_steps=1000, generator=torch.Generator().manual_seed(0))
    assert "increase max_steps" in br.warning
    assert br.log_z_upper < br.log_z_lower - 40
    # an inverted bracket is not "agreement": the schedule grew to max_steps before giving up
    assert [h[0] for h in br.history] == [500, 1000] and br.num_steps == 1000


@functools.lru_cache(maxsize=1)
def _digits_rbm_64_x_12() -> tuple[BernoulliRBM, torch.Tensor]:
    """A 64-12 RBM trained by CD-1 on scikit-learn's binarized 8×8 digits (shipped, no download): a model
    with real structure whose log Z is exact by enumerating the 2^12 hidden states."""
    from sklearn.datasets import load_digits

    x = (torch.tensor(load_digits().data) > 7).double()
    torch.manual_seed(0)
    rbm = BernoulliRBM(64, 12).double()
    opt = torch.optim.SGD(rbm.parameters(), lr=0.1, momentum=0.9)
    for _ in range(15):
        for batch in x[torch.randperm(len(x))].split(50):
            opt.zero_grad()
            rbm.loss(batch).backward()
            opt.step()
    return rbm.eval(), x


def test_default_bracket_contains_exact_log_z_on_a_trained_rbm():
    """The bracket with every default (base from the saved data statistics, K from ais_defaults, reverse
    AIS from the forward particles): no warning, narrower than the 1-nat tolerance, and it contains the
    exact log Z and the exact test log-likelihood up to 2 standard errors."""
    rbm, x = _digits_rbm_64_x_12()
    exact = rbm.log_partition("exact")
    br = rbm.log_likelihood_bracket(x, generator=torch.Generator().manual_seed(0))
    assert br.warning is None, br.warning
    assert br.num_steps == rbm.ais_defaults()[1] and len(br.history) == 1
    # the ends agree to within the noise (each end is stochastic: they may cross by a standard error or two)
    assert -2 * (br.lower_stderr + br.upper_stderr) <= br.log_z_upper - br.log_z_lower < 1.0
    assert br.log_z_lower - 2 * br.lower_stderr <= exact <= br.log_z_upper + 2 * br.upper_stderr, (
        br.log_z_lower.item(), exact.item(), br.log_z_upper.item())
    ll = (-rbm.free_energy(x) - exact).mean()
    assert br.log_likelihood_lower.mean() - 2 * br.upper_stderr <= ll <= br.log_likelihood_upper.mean() + 2 * br.lower_stderr


def test_too_short_schedule_warns_with_the_width():
    """One temperature (plain importance sampling) and no room to grow (num_steps given, max_steps not): the
    bracket stays wide and the call says so, with its width."""
    rbm, x = _digits_rbm_64_x_12()
    with pytest.warns(RuntimeWarning, match=r"log_likelihood_bracket: .*the bracket on log Z is [0-9.]+ nats wide"):
        br = rbm.log_likelihood_bracket(x, num_steps=1, generator=torch.Generator().manual_seed(0))
    width = (br.log_z_upper - br.log_z_lower).item()
    assert width > 1.0 and f"{width:.2f} nats wide" in br.warning and br.num_steps == 1
