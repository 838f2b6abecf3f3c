"""Forward SDEs of score-based generative models and their reverse-time counterparts.

``VPSDE`` (DDPM's continuous limit), ``SubVPSDE`` and ``VESDE`` (SMLD's) share the :class:`SDE`
interface: ``drift``, ``diffusion``, ``marginal``, ``prior_sample``, ``prior_log_prob``,
``discretize``, ``reverse_drift``, ``ode_drift`` and ``reverse``.

Reference: Song et al. (2021), arXiv:2011.13456.
"""

from __future__ import annotations

from probgen.sde.base import SDE, ReverseSDE, ScoreFn
from probgen.sde.subvp import SubVPSDE
from probgen.sde.ve import VESDE
from probgen.sde.vp import VPSDE

__all__ = ["SDE", "ReverseSDE", "ScoreFn", "VPSDE", "SubVPSDE", "VESDE"]
