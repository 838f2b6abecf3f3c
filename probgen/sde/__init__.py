"""Forward SDEs of score-based generative models, continuous and discrete, and their reverse-time counterparts.

``VPSDE`` (DDPM's continuous limit), ``SubVPSDE``, ``VESDE`` (SMLD's) and ``DiscreteVPSDE`` (a DDPM
schedule read in continuous time) share the :class:`SDE` interface. User-facing members validate
their input (``drift``, ``diffusion``, ``marginal``, ``prior_sample``, ``prior_log_prob``,
``discretize``, ``reverse_drift``, ``ode_drift``, ``reverse``); the documented *solver interface*
(``f``, ``g``, ``mean_scale``, ``std``, ``step_coefficients``, ``corrector_alpha``, ``reverse_f``,
``tweedie``, ``log_prior``) does not, and is what samplers call inside their loops after checking once.

The DDPM β schedules (:func:`linear_betas`, :func:`cosine_betas`, :func:`make_betas`) and their
tables (:class:`DiscreteSchedule`) live in :mod:`probgen.sde.discrete`.

Reference: Song et al. (2021), arXiv:2011.13456.
"""

from __future__ import annotations

from probgen.sde.base import SDE, ReverseSDE, ScoreFn, check_sample_shape
from probgen.sde.discrete import (
    SCHEDULES,
    DiscreteSchedule,
    DiscreteVPSDE,
    cosine_betas,
    linear_betas,
    make_betas,
    uniform_timesteps,
)
from probgen.sde.subvp import SubVPSDE
from probgen.sde.ve import VESDE
from probgen.sde.vp import VPSDE

__all__ = [
    "SDE",
    "ReverseSDE",
    "ScoreFn",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "DiscreteVPSDE",
    "DiscreteSchedule",
    "SCHEDULES",
    "linear_betas",
    "cosine_betas",
    "make_betas",
    "uniform_timesteps",
    "check_sample_shape",
]
