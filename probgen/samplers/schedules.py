"""Deprecated home of the DDPM schedules: they now live in :mod:`probgen.sde.discrete`.

``import probgen.samplers.schedules`` keeps working (with a ``DeprecationWarning``) and gives the same
objects as :mod:`probgen.sde.discrete`.
"""

from __future__ import annotations

import warnings

from probgen.sde.discrete import (  # noqa: F401  (re-exported for old scripts)
    SCHEDULES,
    DiscreteSchedule,
    DiscreteVPSDE,
    cosine_betas,
    linear_betas,
    make_betas,
    uniform_timesteps,
)

__all__ = ["SCHEDULES", "DiscreteSchedule", "DiscreteVPSDE", "linear_betas", "cosine_betas", "make_betas",
           "uniform_timesteps"]

warnings.warn("probgen.samplers.schedules is deprecated: import from probgen.sde (probgen.sde.discrete)",
              DeprecationWarning, stacklevel=2)
