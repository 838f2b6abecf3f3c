"""Generative adversarial networks as Pyro programs: :class:`GAN` (non-saturating) and :class:`WGANGP`.

The generator is the Pyro program ``z ~ N(0, I)``, ``x = G(z)`` (sites ``"z"`` and ``"x"``); training is the
two-player game run by :meth:`~probgen.gan.AdversarialModel.training_step`, which :func:`probgen.fit` calls,
recording the diagnostics (``d_loss``, ``g_loss``, ``d_acc`` / ``gp`` / ``wasserstein_estimate``,
``grad_norm_d``, ``grad_norm_g``, ``diversity``) in ``history.metrics``. :func:`mode_coverage` (the
mode-collapse count) lives in :mod:`probgen.metrics` and is re-exported here. See ``docs/gan.md``.
"""

from __future__ import annotations

from probgen.gan import gan
from probgen.gan.gan import (
    BATCH_MODES,
    GAN,
    WGANGP,
    AdversarialModel,
    discriminator_loss,
    gradient_penalty,
    mode_coverage,
    nonsaturating_generator_loss,
    sample_diversity,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)

# the public names are those of probgen.gan.gan (mode_coverage, now in probgen.metrics, is re-exported there)
__all__ = list(gan.__all__)
