"""Normalizing flows over Pyro transforms, a continuous normalizing flow (FFJORD) and MADE.

* :class:`Flow` — ``Flow(dim, kind, num_layers=None, **options)`` with ``kind`` in
  :data:`FLOW_KINDS`: ``"planar"``, ``"radial"``, ``"realnvp"``, ``"maf"``, ``"iaf"``, ``"spline"``,
  ``"spline-ar"``, ``"cnf"``; ``.dist`` is a Pyro ``TransformedDistribution``.
* :class:`CNFTransform` — a Pyro ``TransformModule`` integrating ``dx/dt = f(x, t)`` with torchdiffeq.
* :class:`ActNorm`, :class:`Permutation`, :class:`InvertiblePlanar`, :class:`InvertibleRadial`,
  :class:`AffineAutoregressive` — the transforms Pyro lacks (or lacks an inverse for).
* :class:`ImageFlow` — multi-scale coupling flow for images ``(C, H, W)`` (RealNVP/Glow).
* :class:`MADE` — masked autoregressive Bernoulli model for binary vectors.
"""

from __future__ import annotations

from probgen.flows.cnf import ODE_METHODS, CNFTransform
from probgen.flows.flow import FLOW_KINDS, Flow, flow_options
from probgen.flows.made import MADE, MaskedLinear
from probgen.flows.matching import FlowMatching, ot_coupling, reflow, straightness
from probgen.flows.multiscale import ImageFlow
from probgen.flows.transforms import ActNorm, AffineAutoregressive, InvertiblePlanar, InvertibleRadial, Permutation

__all__ = [
    "Flow",
    "FLOW_KINDS",
    "flow_options",
    "CNFTransform",
    "FlowMatching",
    "ot_coupling",
    "reflow",
    "straightness",
    "ODE_METHODS",
    "ActNorm",
    "Permutation",
    "InvertiblePlanar",
    "InvertibleRadial",
    "AffineAutoregressive",
    "MADE",
    "MaskedLinear",
    "ImageFlow",
]
