"""Every sampler on every family it claims, on a Gaussian target with the exact network.

Data ``N(μ, diag s²)`` in D = 2: in σ-space ``D(x, σ) = μ + s²/(s² + σ²)(x - μ)``. Each family gets its
exact network in its *own* parameterisation (ScoreSDE: the score of ``p_t``; DDPM: ``ε`` at the step index;
EDM: the preconditioned ``F``; flow matching: the marginal velocity), so the test exercises each family's
conversion to the shared denoiser as well as the one implementation of each sampler.

Tolerances from standard errors: with ``n`` draws the sample mean has SE ``s/√n`` and the sample variance
SE ``s²√(2/n)``; means must lie within 4 SE, variances within 4 SE plus the sampler's measured
discretisation bias at its (small) step count where it has one (``BIAS``).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from probgen.diffusion import DDPM, ScoreSDE
from probgen.sde import linear_betas
from probgen.samplers import (
    karras_sigmas,
    sample_annealed_langevin,
    sample_dpm_solver_sigma,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
    sample_euler_inverse,
    sample_heun,
    sample_predictor_corrector,
    sample_probability_flow,
    sample_reverse_sde,
)

DT = torch.float64
MU = torch.tensor([1.0, -0.5], dtype=DT)
S2 = torch.tensor([0.25, 2.25], dtype=DT)
N = 1000


def path_coeffs(x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor):
    """``(x̂0, ε)`` of the Gaussian data at ``x_t = α x0 + σ z``."""
    a, s = alpha[:, None], sigma[:, None]
    xt_tilde, st = x / a, s / a
    x0 = MU + S2 / (S2 + st**2) * (xt_tilde - MU)
    return x0, (x - a * x0) / s


class ExactScore(nn.Module):
    def __init__(self, sde):
        super().__init__()
        self.sde = sde

    def forward(self, x, t):
        alpha, sigma = self.sde.mean_scale(t), self.sde.std(t)
        return -path_coeffs(x, alpha, sigma)[1] / sigma[:, None]


def scoresde_vp():
    model = ScoreSDE((2,), {"name": "vp"}, net_options={"hidden": [4]}, parameterization="score")
    model.net = ExactScore(model.sde).double()
    return model


def scoresde_ve():
    model = ScoreSDE((2,), {"name": "ve", "sigma_min": 0.01, "sigma_max": 20.0}, net_options={"hidden": [4]},
                     parameterization="score")
    model.net = ExactScore(model.sde).double()
    return model


def ddpm():
    model = DDPM((2,), 100, linear_betas(100, beta_end=0.2), net_options={"hidden": [4]})  # ᾱ_N = 1.6e-5

    class ExactEps(nn.Module):
        def forward(self, x, index):
            t = model.schedule.index_to_time(index).to(x.dtype)
            return path_coeffs(x, model.sde.mean_scale(t), model.sde.std(t))[1]

    model.eps_net = ExactEps()
    return model


def edm():
    from probgen.diffusion import EDM, edm_preconditioning

    model = EDM(2, net_options={"hidden": [4]})

    class ExactF(nn.Module):
        def forward(self, x_in, c_noise):
            sigma = (4 * c_noise).exp()
            c_skip, c_out, c_in, _ = edm_preconditioning(sigma, model.sigma_data)
            x = x_in / c_in[:, None]
            x0 = MU + S2 / (S2 + sigma[:, None] ** 2) * (x - MU)
            return (x0 - c_skip[:, None] * x) / c_out[:, None]

    model.net = ExactF()
    return model


def flow_matching():
    from probgen.flows import FlowMatching

    model = FlowMatching(2, net_options={"hidden": [4]})
    path = model.path

    class ExactVelocity(nn.Module):
        def forward(self, x, t):
            x0, eps = path_coeffs(x, path.mean_scale(t), path.std(t))
            return path.d_mean_scale(t)[:, None] * x0 + path.d_std(t)[:, None] * eps

    model.net = ExactVelocity()
    return model


FAMILIES = {"scoresde-vp": scoresde_vp, "scoresde-ve": scoresde_ve, "ddpm": ddpm, "edm": edm,
            "flow-matching": flow_matching}

# sampler -> (function, levels on the Karras grid, options, relative variance bias measured at these levels
# with 20000 draws, the largest over the families, rounded up; added to the 4-SE tolerance)
SAMPLERS = {
    "euler": (sample_euler, 50, {}, 0.15),
    "heun": (sample_heun, 24, {}, 0.1),
    "ancestral": (sample_euler_ancestral, 100, {"eta": 1.0}, 0.15),
    "dpm++2m": (sample_dpmpp_2m, 24, {}, 0.1),
    "dpm-solver-3m": (sample_dpm_solver_sigma, 24, {"order": 3}, 0.05),
    "ode-dopri5": (sample_probability_flow, 2, {"rtol": 1e-3, "atol": 1e-3}, 0.03),
    "reverse-sde": (sample_reverse_sde, 50, {}, 0.08),
    "pc": (sample_predictor_corrector, 60, {"snr": 0.1}, 0.16),
    "annealed-langevin": (sample_annealed_langevin, 20, {"steps_per_level": 100, "step_lr": 0.05}, 0.3),  # × σ_min²
}
# the options of each sampler that take another code path, run on two families
VARIANTS = {
    "heun-churn": (sample_heun, 24, {"s_churn": 10.0, "s_tmin": 0.05, "s_tmax": 50.0}, 0.2),
    "ddim-eta": (sample_euler_ancestral, 50, {"eta": 0.5}, 0.15),
    "dpm-solver-2s": (sample_dpm_solver_sigma, 12, {"order": 2, "method": "singlestep"}, 0.15),
    "dpm-solver-3s-eps": (sample_dpm_solver_sigma, 9, {"order": 3, "method": "singlestep", "algorithm": "dpmsolver"},
                          0.05),
    "ode-rk4": (sample_probability_flow, 12, {"method": "rk4"}, 0.05),
    "reverse-sde-heun": (sample_reverse_sde, 30, {"method": "reversible_heun"}, 0.06),
    "pc-em": (sample_predictor_corrector, 60, {"snr": 0.1, "predictor": "euler_maruyama"}, 0.08),
}

# annealed Langevin is claimed for ScoreSDE-VE only (as ScoreSDE.sample does): NCSN's step rule α ∝ σ²
# stops mixing below σ ≈ data std (by design: the variance of that level stays), and over EDM's range
# [0.002, 80] it measured +17 % variance.
PAIRS = [(f, s) for f in FAMILIES for s in SAMPLERS if s != "annealed-langevin" or f == "scoresde-ve"]
PAIRS += [(f, s) for f in ("scoresde-vp", "edm") for s in VARIANTS]


def check_moments(x: torch.Tensor, label: str, bias: float = 0.0) -> None:
    assert torch.isfinite(x).all(), label
    n = x.shape[0]
    assert ((x.mean(0) - MU).abs() < 4 * (S2 / n).sqrt()).all(), (label, x.mean(0))
    assert ((x.var(0) / S2 - 1).abs() < 4 * math.sqrt(2 / n) + bias).all(), (label, x.var(0))


@pytest.fixture(scope="module")
def models():
    return {}


def _model(models, name):
    if name not in models:
        models[name] = FAMILIES[name]()
    return models[name]


@pytest.mark.parametrize(("family", "sampler"), PAIRS)
def test_every_sampler_on_every_family(models, family, sampler):
    denoiser = _model(models, family).denoiser()
    fn, levels, opts, bias = {**SAMPLERS, **VARIANTS}[sampler]
    g = torch.Generator().manual_seed(0)
    sigmas = karras_sigmas(levels, denoiser.sigma_min, denoiser.sigma_max, dtype=DT)
    x = denoiser.sigma_max * torch.randn(N, 2, generator=g, dtype=DT)
    if sampler == "annealed-langevin":  # Langevin steps α_i = step_lr σ_i² / σ_min²: ε = α_i / σ_i² = 0.05
        opts = {**opts, "step_lr": opts["step_lr"] * denoiser.sigma_min**2}
    check_moments(fn(denoiser, x, sigmas, generator=g, **opts), f"{family}/{sampler}", bias)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_ddim_inversion_on_every_family(models, name):
    """DDIM inversion followed by DDIM (Euler) on the reversed grid gives the data back."""
    denoiser = _model(models, name).denoiser()
    up = karras_sigmas(12, denoiser.sigma_min, 10.0, dtype=DT)[:-1].flip(0)
    x0 = MU + S2.sqrt() * torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=DT)
    z = sample_euler_inverse(denoiser, x0, torch.cat([up.new_zeros(1), up]), fixed_point_iters=15)
    back = sample_euler(denoiser, z, torch.cat([up.flip(0), up.new_zeros(1)]))
    assert (back - x0).abs().max() < 1e-4, (name, (back - x0).abs().max())


# the models' own method names, each claimed by its family, run through model.denoiser()
MODEL_METHODS = [
    ("ddpm", "ancestral", {}), ("ddpm", "ddim", {"steps": 50}), ("ddpm", "dpm-solver", {"steps": 12}),
    ("ddpm", "dpm-solver", {"steps": 12, "order": 2, "algorithm": "dpmsolver"}),
    ("scoresde-vp", "sde", {"steps": 100}), ("scoresde-vp", "pc", {"steps": 50, "snr": 0.1}),
    ("scoresde-vp", "ode", {"rtol": 1e-3, "atol": 1e-3}), ("scoresde-ve", "sde", {"steps": 100}),
    ("scoresde-ve", "annealed-langevin", {"steps": 20, "steps_per_level": 100, "step_lr": 0.05 * 0.01**2}),
]


@pytest.mark.parametrize(("name", "method", "opts"), MODEL_METHODS)
def test_model_methods_run_on_the_denoiser(models, name, method, opts):
    model = _model(models, name)
    kw = {"dtype": DT} if name == "ddpm" else {}
    x = model.sample(N, method=method, generator=torch.Generator().manual_seed(2), **kw, **opts)
    bias = {"annealed-langevin": 0.3, "pc": 0.2}.get(method, 0.1)
    check_moments(x.to(DT), f"{name}/{method}", bias)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_models_sample_with_heun_and_dpm_solver(models, name):
    model = _model(models, name)
    for method, steps, nfe in (("heun", 24, 47), ("dpm-solver-sigma", 16, 16)):
        kw = {"dtype": DT} if name in ("ddpm", "edm") else {}
        x, used = model.sample(N, method=method, steps=steps, generator=torch.Generator().manual_seed(1),
                               return_nfe=True, **kw)
        check_moments(x.to(DT), f"{name}/{method}", 0.08)
        assert used == nfe


if __name__ == "__main__":  # the bias table of docs/score_sde.md: python tests/samplers/test_every_family.py
    for family, sampler in PAIRS:
        denoiser = FAMILIES[family]().denoiser()
        fn, levels, opts, bias = {**SAMPLERS, **VARIANTS}[sampler]
        g = torch.Generator().manual_seed(5)
        x = denoiser.sigma_max * torch.randn(20000, 2, generator=g, dtype=DT)
        if sampler == "annealed-langevin":
            opts = {**opts, "step_lr": opts["step_lr"] * denoiser.sigma_min**2}
        out = fn(denoiser, x, karras_sigmas(levels, denoiser.sigma_min, denoiser.sigma_max, dtype=DT), generator=g,
                 **opts)
        rel = (out.var(0) / S2 - 1).tolist()
        print(f"{family:14s} {sampler:18s} levels {levels:3d} NFE {denoiser.nfe:5d} variance bias "
              f"{rel[0]:+.3f} {rel[1]:+.3f} (allowed {bias})", flush=True)
