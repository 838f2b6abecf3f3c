"""probgen.infer: Langevin kernels for Pyro's MCMC, batched chains in one tensor, and AIS.

* :class:`MALA`, :class:`ULA` — :class:`pyro.infer.mcmc.mcmc_kernel.MCMCKernel` subclasses (``model``
  xor ``potential_fn``), for :class:`pyro.infer.MCMC`;
* :func:`run_chains` — ``C`` ULA/MALA/HMC chains of a batched potential as one tensor
  (:func:`model_potential` builds one from a Pyro model);
* :func:`ais` — annealed importance sampling estimates of log normalising constants;
* :func:`posterior_sample` — posterior draws of a site whose prior is a probgen model (DPS, ΠGDM, DDRM,
  annealed Langevin, SMC, MCMC), :class:`LinearGaussian` observations with mask/blur/subsample/dense
  operators, :func:`posterior_calibration` against exact Gaussian-mixture posteriors
  (:mod:`probgen.infer.posterior`).
"""

from __future__ import annotations

from probgen.infer.adaptation import DualAveragingStepSize, PooledWelfordVariance, adaptation_windows
from probgen.infer.ais import AISResult, ais, ais_schedule
from probgen.infer.batched import (
    BatchedModelPotential,
    ChainResult,
    ChainState,
    StepResult,
    hmc_step,
    mala_step,
    model_potential,
    run_chains,
    ula_step,
)
from probgen.infer.langevin import MALA, ULA
from probgen.infer.posterior import (
    BlurOperator,
    DenseOperator,
    GaussianMixture,
    LinearGaussian,
    LinearOperator,
    MaskOperator,
    PosteriorResult,
    SubsampleOperator,
    posterior_calibration,
    posterior_sample,
)

__all__ = [
    "MALA",
    "ULA",
    "run_chains",
    "model_potential",
    "BatchedModelPotential",
    "ChainResult",
    "ChainState",
    "StepResult",
    "ula_step",
    "mala_step",
    "hmc_step",
    "DualAveragingStepSize",
    "PooledWelfordVariance",
    "adaptation_windows",
    "ais",
    "ais_schedule",
    "AISResult",
    "posterior_sample",
    "PosteriorResult",
    "LinearGaussian",
    "LinearOperator",
    "MaskOperator",
    "DenseOperator",
    "BlurOperator",
    "SubsampleOperator",
    "posterior_calibration",
    "GaussianMixture",
]
