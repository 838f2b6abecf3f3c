"""The layout of probgen.vae: each public name lives in the module named for it, the names that used to live in
`probgen.vae.vae` still import from there, and no module of the package is over 500 lines (issue 16)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import probgen.vae as vae
from probgen.vae import iwae, observation, posterior


def test_public_names_come_from_the_modules_named_for_them():
    assert vae.ObservationModel is observation.ObservationModel and vae.LIKELIHOODS is observation.LIKELIHOODS
    assert vae.POSTERIORS is posterior.POSTERIORS
    assert vae.VAE.__module__ == "probgen.vae.vae" and vae.ConditionalVAE.__module__ == "probgen.vae.conditional"


def test_old_import_paths_still_work():
    from probgen.vae.vae import (  # noqa: F401 - the names probgen.vae.vae exported before the split
        ELBO_ESTIMATORS,
        LIKELIHOODS,
        POSTERIORS,
        VAE,
        ObservationModel,
        log_mean_exp_chunked,
        standard_normal_particles,
    )

    assert ObservationModel is observation.ObservationModel and log_mean_exp_chunked is iwae.log_mean_exp_chunked
    assert standard_normal_particles is iwae.standard_normal_particles


def test_no_module_is_over_500_lines():
    for info in pkgutil.iter_modules(vae.__path__):
        module = importlib.import_module(f"probgen.vae.{info.name}")
        assert len(inspect.getsource(module).splitlines()) <= 500, module.__name__
