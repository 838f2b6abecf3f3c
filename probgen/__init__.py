"""probgen: deep generative models as Pyro programs.

Subpackages: ``data``, ``nn``, ``ops``, ``sde``, ``samplers``, ``infer``, ``flows``, ``vae``, ``ebm``,
``diffusion``, ``gan``, ``metrics``, ``diagnostics``. The one training loop is :func:`probgen.fit`;
checkpoints are read back with :func:`probgen.load`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from probgen import data, ops, nn, sde, samplers, infer, metrics  # noqa: E402  shared packages
from probgen import flows, vae, ebm, diffusion, gan  # noqa: E402  families
from probgen import diagnostics  # noqa: E402
from probgen.protocol import ModelDistribution  # noqa: E402
from probgen.training import fit, History  # noqa: E402
from probgen.checkpoint import load, save  # noqa: E402

__all__ = [
    "__version__",
    "data", "ops", "nn", "sde", "samplers", "infer", "metrics",
    "flows", "vae", "ebm", "diffusion", "gan", "diagnostics",
    "ModelDistribution",
    "fit", "History", "load", "save",
]
