"""probgen.diagnostics.arviz: InferenceData from pyro MCMC / batched chains, R-hat, ESS, summary."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import pyro
import pyro.distributions as dist
from pyro.infer import HMC, MCMC, NUTS

from probgen.diagnostics import ess, plot_trace, rhat, summary, to_inference_data


def _az():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def _normal_model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


@pytest.fixture(scope="module")
def nuts_run():
    pyro.set_rng_seed(0)
    y = torch.randn(20) + 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "num_chains=2 is more than available_cpu"
        mcmc = MCMC(NUTS(_normal_model), num_samples=200, warmup_steps=100, num_chains=2, disable_progbar=True)
        mcmc.run(y)
    return mcmc, y


def test_mcmc_to_inference_data_and_known_posterior(nuts_run):
    mcmc, y = nuts_run
    idata = to_inference_data(mcmc)
    draws = idata.posterior["mu"].values
    assert draws.shape == (2, 200)
    np.testing.assert_array_equal(draws, mcmc.get_samples(group_by_chain=True)["mu"].numpy())
    div = idata.sample_stats["diverging"].values
    assert div.shape == (2, 200) and div.dtype == bool
    assert len(idata.sample_stats.attrs["acceptance_rate"]) == 2
    # Conjugate posterior: mu | y ~ N(sum(y) / (n + 1), 1 / (n + 1)). Allow 4 Monte Carlo SEs.
    n = y.shape[0]
    post_mean = float(y.sum()) / (n + 1)
    df = summary(idata)
    mcse = float(df.loc["mu", "mcse_mean"])
    assert abs(float(df.loc["mu", "mean"]) - post_mean) < 4 * mcse + 1e-3
    # sd: relative SE of a sample sd from ESS draws is about 1/sqrt(2 ESS); allow 4 of them.
    ess_bulk = float(df.loc["mu", "ess_bulk"])
    assert abs(float(df.loc["mu", "sd"]) * (n + 1) ** 0.5 - 1) < 4 / (2 * ess_bulk) ** 0.5


def test_rhat_ess_equal_arviz_on_same_arrays(nuts_run):
    mcmc, _ = nuts_run
    az = _az()
    arr = mcmc.get_samples(group_by_chain=True)["mu"].numpy()
    r, e = rhat(mcmc), ess(mcmc)
    assert set(r) == {"mu"} and r["mu"].dtype == torch.float64 and r["mu"].shape == ()
    assert abs(float(r["mu"]) - float(az.rhat(arr))) < 1e-10
    assert abs(float(e["mu"]) - float(az.ess(arr))) < 1e-10
    assert abs(float(ess(mcmc, method="tail")["mu"]) - float(az.ess(arr, method="tail"))) < 1e-10
    assert abs(float(rhat(mcmc, method="split")["mu"]) - float(az.rhat(arr, method="split"))) < 1e-10
    assert float(r["mu"]) < 1.05  # two well-mixed chains


def test_tensor_and_dict_inputs_with_chain_dims():
    az = _az()
    gen = torch.Generator().manual_seed(0)
    chains = torch.randn(3, 200, 2, generator=gen, dtype=torch.float64)
    r = rhat(chains)
    assert r.shape == (2,)
    for j in range(2):
        assert abs(float(r[j]) - float(az.rhat(chains[:, :, j].numpy()))) < 1e-10
        assert abs(float(ess(chains)[j]) - float(az.ess(chains[:, :, j].numpy()))) < 1e-10
    idata = to_inference_data({"theta": chains, "sigma": chains[..., 0].exp()},
                              coords={"k": ["a", "b"]}, dims={"theta": ["k"]})
    assert dict(idata.posterior["theta"].sizes) == {"chain": 3, "draw": 200, "k": 2}
    assert list(idata.posterior["k"].values) == ["a", "b"]
    out = ess(idata, var_names=["sigma"])
    assert set(out) == {"sigma"}
    # Chains stuck at different levels have R-hat far above 1.
    stuck = torch.randn(2, 100, generator=gen) + torch.tensor([[0.0], [5.0]])
    assert float(rhat(stuck)) > 1.5


def test_divergences_land_in_sample_stats():
    diverging = torch.zeros(2, 50, dtype=torch.bool)
    diverging[0, [3, 7]] = True
    idata = to_inference_data({"mu": torch.randn(2, 50)}, sample_stats={"diverging": diverging.int()})
    div = idata.sample_stats["diverging"].values
    assert div.dtype == bool and int(div.sum()) == 2 and div[0, 3] and div[0, 7]


def test_mcmc_divergences_recorded():
    # A step far too large for a narrow target: leapfrog energy errors explode and NUTS/HMC flags them.
    def narrow():
        pyro.sample("z", dist.Normal(0.0, 0.01))

    pyro.set_rng_seed(1)
    mcmc = MCMC(HMC(narrow, step_size=3.0, num_steps=3, adapt_step_size=False), num_samples=20,
                warmup_steps=0, disable_progbar=True)
    mcmc.run()
    idata = to_inference_data(mcmc)
    expected = np.zeros((1, 20), dtype=bool)
    expected[0, mcmc.diagnostics()["divergences"]["chain 0"]] = True
    assert expected.any()
    np.testing.assert_array_equal(idata.sample_stats["diverging"].values, expected)


def test_summary_columns():
    df = summary({"theta": torch.randn(2, 100, 3)})
    for col in ("mean", "sd", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"):
        assert col in df.columns
    assert list(df.index) == ["theta[0]", "theta[1]", "theta[2]"]


def test_plot_trace_returns_figure(tmp_path):
    out = tmp_path / "trace.png"
    fig = plot_trace({"mu": torch.randn(2, 40)}, path=out)
    assert hasattr(fig, "savefig") and out.stat().st_size > 0


@pytest.mark.parametrize(
    "samples, kwargs, exc, match",
    [
        ([1, 2], {}, TypeError, "samples must be a pyro.infer.MCMC, a dict"),
        ({"mu": torch.randn(5)}, {}, ValueError, r"samples\['mu'\] must have shape \(chains, draws, \*shape\)"),
        ({"a": torch.randn(2, 5), "b": torch.randn(3, 5)}, {}, ValueError, r"samples\['b'\] has \(chains, draws\)"),
        ({"a": torch.randn(2, 5)}, {"sample_stats": {"diverging": torch.zeros(2, 4)}}, ValueError,
         r"sample_stats\['diverging'\] must have shape \(chains, draws\) = \(2, 5\)"),
    ],
)
def test_bad_inputs(samples, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        to_inference_data(samples, **kwargs)


def test_bad_method_names():
    with pytest.raises(ValueError, match="unknown method 'foo'; valid choices: 'rank'"):
        rhat(torch.randn(2, 10), method="foo")
    with pytest.raises(ValueError, match="unknown method 'foo'; valid choices: 'bulk'"):
        ess(torch.randn(2, 10), method="foo")


def test_unrun_mcmc_raises():
    mcmc = MCMC(NUTS(_normal_model), num_samples=5, disable_progbar=True)
    with pytest.raises(ValueError, match="has not been run"):
        to_inference_data(mcmc)
