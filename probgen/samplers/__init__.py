"""Samplers as short functions (k-diffusion style), no progress bars; each algorithm written once.

On the σ-space denoiser every diffusion-type family exposes (``model.denoiser()``, :mod:`probgen.samplers.denoiser`),
one signature ``sample_<name>(model, x, sigmas, *, callback=None, generator=None, ...)``:
:func:`sample_euler` (DDIM), :func:`sample_heun` (EDM), :func:`sample_euler_ancestral` (DDPM ancestral /
DDIM-η), :func:`sample_euler_inverse` (DDIM inversion), :func:`sample_dpm_solver_sigma` (DPM-Solver(++),
orders 1–3, single/multistep), :func:`sample_dpmpp_2m`, :func:`sample_probability_flow` (adaptive ODE),
:func:`sample_reverse_sde` (torchsde), :func:`sample_predictor_corrector`, :func:`sample_annealed_langevin`.

The earlier samplers over a score and an SDE (or an ε-network and a DDPM schedule) are front ends of those:
they build the denoiser and the σ grid, run the one implementation and map back (``x = α(t) x̃``):

``sampler(score_fn, sde_or_schedule, shape, *, steps=..., generator=None, callback=None, ...)``
returns a :class:`SampleResult` ``(samples, nfe, info)``:

* :func:`sample_ancestral`, :func:`sample_ddim`, :func:`ddim_invert`, :func:`sample_dpm_solver` (DDPM schedules);
* :func:`sample_sde` — reverse-time SDE through ``torchsde``;
* :func:`sample_pc` — predictor–corrector (Song et al., 2021);
* :func:`sample_ode` — probability-flow ODE through ``torchdiffeq``;
* :func:`annealed_langevin` — annealed Langevin dynamics over noise levels (Song & Ermon, 2019);
* :func:`langevin` — unadjusted Langevin on a time-independent score (EBMs).
"""

from __future__ import annotations

from probgen.samplers.annealed import annealed_langevin, geometric_sigmas, sample_annealed_langevin
from probgen.samplers.base import SampleResult
from probgen.samplers.unadjusted import langevin
from probgen.samplers.ode import ADAPTIVE_METHODS, FIXED_STEP_METHODS, ODE_METHODS, sample_ode, sample_probability_flow
from probgen.samplers.pc import CORRECTORS, PREDICTORS, sample_pc, sample_predictor_corrector
from probgen.samplers.sde import SDE_METHODS, sample_reverse_sde, sample_sde
from probgen.samplers.dpm_solver import sample_dpm_solver, sample_dpm_solver_sigma
from probgen.samplers.denoiser import PREDICTIONS, Denoiser, PathDenoiser, denoiser_log_prob
from probgen.samplers.karras import (
    KARRAS_SAMPLERS,
    karras_sigmas,
    sample_denoiser,
    sample_dpmpp_2m,
    sample_euler,
    sample_euler_ancestral,
    sample_euler_inverse,
    sample_heun,
)
from probgen.samplers.ddim import ddim_invert, sample_ancestral, sample_ddim

__all__ = [
    "Denoiser",
    "PathDenoiser",
    "PREDICTIONS",
    "denoiser_log_prob",
    "karras_sigmas",
    "sample_denoiser",
    "sample_euler",
    "sample_heun",
    "sample_euler_ancestral",
    "sample_euler_inverse",
    "sample_dpm_solver_sigma",
    "sample_dpmpp_2m",
    "sample_probability_flow",
    "sample_reverse_sde",
    "sample_predictor_corrector",
    "sample_annealed_langevin",
    "KARRAS_SAMPLERS",
    "sample_ancestral",
    "sample_ddim",
    "ddim_invert",
    "sample_dpm_solver",
    "SampleResult",
    "sample_sde",
    "sample_pc",
    "sample_ode",
    "annealed_langevin",
    "geometric_sigmas",
    "langevin",
    "SDE_METHODS",
    "ODE_METHODS",
    "ADAPTIVE_METHODS",
    "FIXED_STEP_METHODS",
    "PREDICTORS",
    "CORRECTORS",
]


_MOVED_TO_SDE = ("DiscreteSchedule", "DiscreteVPSDE", "linear_betas", "cosine_betas", "make_betas")


def __getattr__(name: str):
    """Deprecated aliases: the DDPM schedules moved to :mod:`probgen.sde`."""
    if name in _MOVED_TO_SDE:
        import warnings

        import probgen.sde as _sde

        warnings.warn(f"probgen.samplers.{name} is deprecated: use probgen.sde.{name}", DeprecationWarning,
                      stacklevel=2)
        return getattr(_sde, name)
    raise AttributeError(f"module 'probgen.samplers' has no attribute {name!r}")
