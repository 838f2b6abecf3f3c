"""The standardizing bijection: exact change of variables, inverse for sampling, checkpoints, and the same
fit whatever the data's units."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import probgen as pg
from probgen.ops.standardize import Standardized, standardize

D = 2


def _pair(make):
    """The same weights standardized for data x and for 50 x + 100."""
    torch.manual_seed(0)
    x = torch.randn(400, D) * torch.tensor([1.0, 3.0]) + torch.tensor([0.5, -2.0])
    inner = make()
    return x, standardize(inner, x), standardize(copy.deepcopy(inner), x * 50 + 100)


@pytest.mark.parametrize("make", [lambda: pg.flows.Flow(D, "realnvp", num_layers=2),
                                  lambda: pg.flows.Flow(D, "spline-ar", num_layers=2, hidden_dims=(16,))],
                         ids=["realnvp", "spline-ar"])
def test_log_prob_of_scaled_data_is_the_unscaled_one_minus_d_log_50(make):
    x, plain, scaled = _pair(make)
    torch.testing.assert_close(scaled.loc, plain.loc * 50 + 100)
    torch.testing.assert_close(scaled.scale, plain.scale * 50)
    y = x[:16]
    torch.testing.assert_close(scaled.log_prob(y * 50 + 100), plain.log_prob(y) - D * math.log(50),
                               rtol=1e-5, atol=1e-4)
    # and the wrapper is the change of variables of the inner model
    z = (y - plain.loc) / plain.scale
    torch.testing.assert_close(plain.log_prob(y), plain.model.log_prob(z) - plain.scale.log().sum())


def test_score_sde_and_ddpm_densities_and_bounds_shift_by_d_log_50():
    x, plain, scaled = _pair(lambda: pg.diffusion.ScoreSDE((D,)))
    y = x[:4].double()
    plain.double(), scaled.double()
    lp = plain.log_prob(y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(scaled.log_prob(y * 50 + 100, rtol=1e-6, atol=1e-6), lp - D * math.log(50),
                               rtol=1e-6, atol=1e-5)
    x, plain, scaled = _pair(lambda: pg.diffusion.DDPM((D,), num_steps=20))
    torch.manual_seed(1)
    elbo = plain.elbo(x[:8])
    torch.manual_seed(1)
    torch.testing.assert_close(scaled.elbo(x[:8] * 50 + 100), elbo - D * math.log(50), rtol=1e-4, atol=1e-3)


def test_sample_maps_draws_back_to_the_data_units():
    _, plain, scaled = _pair(lambda: pg.flows.Flow(D, "realnvp", num_layers=2))
    torch.manual_seed(3)
    a = plain.sample(50)
    torch.manual_seed(3)
    b = scaled.sample(50)
    torch.testing.assert_close(b, a * 50 + 100, rtol=1e-5, atol=1e-3)
    torch.manual_seed(3)
    torch.testing.assert_close(a, plain.from_standard(plain.model.sample(50)))


def test_log_det_is_the_autograd_jacobian():
    m = Standardized(pg.flows.Flow(3, "realnvp", num_layers=1), loc=torch.tensor([1.0, 2.0, 3.0]),
                     scale=torch.tensor([0.5, 4.0, 10.0]))
    jac = torch.autograd.functional.jacobian(lambda v: m.to_standard(v[None])[0], torch.zeros(3))
    torch.testing.assert_close(m.log_abs_det_jacobian().float(), torch.linalg.slogdet(jac)[1])
    v = torch.randn(5, 3)
    torch.testing.assert_close(m.from_standard(m.to_standard(v)), v)


def test_checkpoint_round_trip_keeps_loc_and_scale(tmp_path):
    x, _, scaled = _pair(lambda: pg.flows.Flow(D, "realnvp", num_layers=2))
    pg.save(tmp_path / "m.pt", scaled)
    loaded = pg.load(tmp_path / "m.pt")
    assert type(loaded) is Standardized and type(loaded.model) is pg.flows.Flow and loaded.kind == "realnvp"
    torch.testing.assert_close(loaded.loc, scaled.loc, rtol=0, atol=0)
    torch.testing.assert_close(loaded.log_prob(x[:5] * 50 + 100), scaled.eval().log_prob(x[:5] * 50 + 100))


def test_constant_column_is_shifted_not_blown_up():
    x = torch.stack([torch.randn(100), torch.full((100,), 7.0)], 1)
    m = standardize(pg.flows.Flow(2, "realnvp", num_layers=1), x)
    assert m.scale[1] == 1.0 and m.loc[1] == 7.0


def test_bad_inputs_name_the_argument():
    flow = pg.flows.Flow(2, "realnvp", num_layers=1)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        Standardized(flow, scale=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="data must be a tensor .* N >= 2"):
        standardize(flow, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="data must be finite"):
        standardize(flow, torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]))
    with pytest.raises(ValueError, match="model: GAN trains with its own training_step"):
        Standardized(pg.gan.GAN(2, hidden=(8,)))
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        Standardized("flow", event_shape=(2,))


@pytest.mark.slow
def test_scaled_and_shifted_8gaussians_reach_the_same_kl():
    """KL(p_data || p_model) of the 2-D flow recipe (short budget) on 8gaussians and on 50 x + 100: the same
    within two standard errors of the difference (paired over the same test points)."""
    from probgen import registry
    from probgen.data import load_dataset

    data = load_dataset("8gaussians", n_train=20_000, n_test=5_000)
    recipe = registry.recipe("flow")
    gaps = []
    for a, b in ((1.0, 0.0), (50.0, 100.0)):
        torch.manual_seed(0)
        model = recipe.build(data)  # the 2d row: spline-ar, standardized
        model = standardize(model.model, data.train * a + b)
        pg.fit(model, data.train * a + b, steps=600, batch_size=512, lr=3e-3, lr_schedule="cosine", seed=0,
               progress=False)
        with torch.no_grad():
            lp = model.log_prob(data.test * a + b).double() + D * math.log(a)  # density of the unscaled points
        gaps.append(data.log_prob(data.test.double()) - lp)
    kl, kl_scaled = (g.mean().item() for g in gaps)
    diff = gaps[1] - gaps[0]
    se = diff.std().item() / math.sqrt(len(diff))
    assert kl < 0.3 and abs(kl_scaled - kl) <= 2 * se + 1e-3, (kl, kl_scaled, se)
