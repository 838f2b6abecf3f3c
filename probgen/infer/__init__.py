"""probgen.infer: Langevin kernels for Pyro's MCMC, batched chains in one tensor, and AIS.

* :class:`MALA`, :class:`ULA` — :class:`pyro.infer.mcmc.mcmc_kernel.MCMCKernel` subclasses (``model``
  xor ``potential_fn``), for :class:`pyro.infer.MCMC`;
* :func:`run_chains` — ``C`` ULA/MALA/HMC chains of a batched potential as one tensor
  (:func:`model_potential` builds one from a Pyro model);
* :func:`annealed_importance_sampling` — AIS estimates of log normalising constants (a stochastic
  lower bound on ``log Z``) and :func:`reverse_ais` (RAISE, a stochastic lower bound on ``log p(x)``),
  both in the module :mod:`probgen.infer.ais` (calling that module, the old ``pg.infer.ais(...)``,
  still works with a ``DeprecationWarning``);
* :func:`posterior_sample` — posterior draws of a site whose prior is a probgen model (DPS, ΠGDM, DDRM,
  annealed Langevin, SMC, MCMC), :class:`LinearGaussian` observations with mask/blur/subsample/dense
  operators, :func:`posterior_calibration` against exact Gaussian-mixture posteriors
  (:mod:`probgen.infer.posterior`).

Modules: ``langevin`` (the Pyro kernels), ``transitions`` (batched ULA/MALA/HMC steps), ``chains``
(the batched driver), ``pyro_model`` (a Pyro model as a batched potential), ``adaptation`` (dual
averaging, Stan's windows), ``targets`` (benchmark potentials), ``ais`` (forward AIS; re-exports
``ais_schedules``, ``ais_weights`` and ``ais_reverse`` — RAISE), ``posterior`` (conditioning).
"""

from __future__ import annotations

from probgen.infer.adaptation import DualAveragingStepSize, PooledWelfordVariance, adaptation_windows
from probgen.infer import ais
from probgen.infer.ais import (
    AISResult,
    RAISEResult,
    ais_reliability,
    ais_schedule,
    annealed_importance_sampling,
    reverse_ais,
)
from probgen.infer.chains import ChainResult, run_chains
from probgen.infer.langevin import MALA, ULA
from probgen.infer.pyro_model import BatchedModelPotential, model_potential
from probgen.infer.transitions import ChainState, StepResult, hmc_step, mala_step, ula_step
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
    "annealed_importance_sampling",
    "reverse_ais",
    "ais_schedule",
    "ais_reliability",
    "AISResult",
    "RAISEResult",
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
