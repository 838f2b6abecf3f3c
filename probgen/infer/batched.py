"""Compatibility path: the batched chains now live in three modules named for what they hold.

* :mod:`probgen.infer.transitions` — ULA/MALA/HMC transitions of ``C`` chains in one tensor;
* :mod:`probgen.infer.chains` — the chain driver :func:`run_chains` and :class:`ChainResult`;
* :mod:`probgen.infer.pyro_model` — :func:`model_potential`, a Pyro model as a batched potential.

``from probgen.infer.batched import ...`` keeps working; new code imports from ``probgen.infer`` or
the modules above.
"""

from __future__ import annotations

from probgen.infer.chains import ChainResult, run_chains
from probgen.infer.pyro_model import BatchedModelPotential, model_potential
from probgen.infer.transitions import (
    DIVERGENCE_THRESHOLD,
    KERNELS,
    ChainState,
    StepResult,
    find_reasonable_step_size,
    hmc_step,
    init_state,
    mala_step,
    potential_and_grad,
    ula_step,
)

__all__ = [
    "ChainState",
    "StepResult",
    "ChainResult",
    "potential_and_grad",
    "init_state",
    "ula_step",
    "mala_step",
    "hmc_step",
    "find_reasonable_step_size",
    "run_chains",
    "model_potential",
    "BatchedModelPotential",
    "KERNELS",
    "DIVERGENCE_THRESHOLD",
]
