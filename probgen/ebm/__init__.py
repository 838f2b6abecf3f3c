"""probgen.ebm: energy-based models and restricted Boltzmann machines."""

from __future__ import annotations

from probgen.ebm.energy import EBM, INIT_NOISES, OBJECTIVES, READOUTS, SAMPLE_METHODS
from probgen.ebm.rbm import (
    LOG_PARTITION_METHODS,
    MAX_ENUMERATION_UNITS,
    RBM_OBJECTIVES,
    BernoulliRBM,
    GaussianBernoulliRBM,
)
from probgen.ebm.objectives import FlatGaussian, ReplayBuffer, contrastive_divergence_loss, fit_gaussian, nce_loss

__all__ = [
    "EBM",
    "BernoulliRBM",
    "GaussianBernoulliRBM",
    "RBM_OBJECTIVES",
    "LOG_PARTITION_METHODS",
    "MAX_ENUMERATION_UNITS",
    "OBJECTIVES",
    "READOUTS",
    "SAMPLE_METHODS",
    "INIT_NOISES",
    "ReplayBuffer",
    "contrastive_divergence_loss",
    "nce_loss",
    "fit_gaussian",
    "FlatGaussian",
]
