"""Tensor operations shared by every family: shape helpers, divergence estimators (:mod:`probgen.ops.trace`)
and the one ODE core (:mod:`probgen.ops.ode`)."""

from probgen.ops.trace import DIVERGENCE_METHODS, PROBE_NOISES, divergence, divergence_fn, sample_probes
from probgen.ops.ode import (
    ADAPTIVE_METHODS,
    FIXED_STEP_METHODS,
    ODE_METHODS,
    ODESolver,
    odeint_logdet,
    odeint_velocity,
)
from probgen.ops.shapes import (
    append_dims,
    batch_mean,
    batch_sum,
    chunk_sizes,
    event_numel,
    flatten_event,
    unflatten_event,
)

__all__ = [
    "append_dims",
    "chunk_sizes",
    "batch_mean",
    "batch_sum",
    "event_numel",
    "flatten_event",
    "unflatten_event",
    "divergence",
    "divergence_fn",
    "sample_probes",
    "DIVERGENCE_METHODS",
    "PROBE_NOISES",
    "ODESolver",
    "odeint_velocity",
    "odeint_logdet",
    "ODE_METHODS",
    "ADAPTIVE_METHODS",
    "FIXED_STEP_METHODS",
]
