"""Generative adversarial networks as Pyro programs: :class:`GAN` (non-saturating) and :class:`WGANGP`.

The generator is the Pyro program ``z ~ N(0, I)``, ``x = G(z)`` (sites ``"z"`` and ``"x"``); training is the
two-player game run by :meth:`~probgen.gan.AdversarialModel.training_step`, which :func:`probgen.fit` calls,
recording the diagnostics (``d_loss``, ``g_loss``, ``d_acc`` / ``gp`` / ``wasserstein_estimate``,
``grad_norm_d``, ``grad_norm_g``, ``diversity``) in ``history.metrics``. :func:`mode_coverage` (the
mode-collapse count) lives in :mod:`probgen.metrics` and is re-exported here. See ``docs/gan.md``.

Modules: :mod:`~probgen.gan.losses` (the objectives and ``sample_diversity``), :mod:`~probgen.gan.nets`
(the built-in MLP generator and discriminator), :mod:`~probgen.gan.conv_nets` (DCGAN-style image nets),
:mod:`~probgen.gan.adversarial` (``AdversarialModel``, the shared two-player machinery, and ``BATCH_MODES``),
:mod:`~probgen.gan.models` (``GAN``, ``WGANGP``: the two objectives).
"""

from __future__ import annotations

from probgen.gan.losses import (
    discriminator_loss,
    gradient_penalty,
    nonsaturating_generator_loss,
    sample_diversity,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)
from probgen.gan.adversarial import BATCH_MODES, AdversarialModel
from probgen.gan.models import GAN, WGANGP
from probgen.gan import adversarial, losses, models  # for their __all__
from probgen.metrics.coverage import mode_coverage  # re-exported: probgen.gan.mode_coverage predates its move

__all__ = [*models.__all__, *adversarial.__all__, *losses.__all__, "mode_coverage"]


def __getattr__(name: str):
    # ``probgen.gan.gan`` (the old single module) still imports, with a DeprecationWarning
    if name == "gan":
        import importlib

        return importlib.import_module("probgen.gan.gan")
    raise AttributeError(f"module 'probgen.gan' has no attribute {name!r}")
