"""Diffusion models: continuous-time score SDEs, their losses and exact likelihoods.

* :class:`ScoreSDE` — a score network with a forward SDE (Song et al. 2021, arXiv:2011.13456);
* :func:`ode_log_prob`, :func:`bits_per_dim` — exact log-density through the probability-flow ODE;
* :func:`dsm_loss`, :func:`multi_noise_dsm_loss`, :func:`sliced_score_matching_loss` — score matching
  objectives (continuous-time DSM with the σ² or likelihood weighting, NCSN's multi-noise DSM, sliced SM);
* :class:`DDPM` — Ho et al. (2020)'s discrete-time model (``probgen.diffusion.ddpm``, its own issue);
* :class:`EDM` — Karras et al. (2022)'s σ-parameterised model with preconditioning and Heun sampling.
"""

from __future__ import annotations

from probgen.diffusion.ddpm import DDPM
from probgen.diffusion.edm import EDM, edm_preconditioning
from probgen.diffusion.likelihood import bits_per_dim, ode_log_prob
from probgen.diffusion.losses import (
    dsm_loss,
    multi_noise_dsm_loss,
    sample_importance_time,
    sliced_score_matching_loss,
)
from probgen.diffusion.score_sde import ScoreSDE

__all__ = [
    "ScoreSDE",
    "DDPM",
    "EDM",
    "edm_preconditioning",
    "ode_log_prob",
    "bits_per_dim",
    "dsm_loss",
    "multi_noise_dsm_loss",
    "sliced_score_matching_loss",
    "sample_importance_time",
]
