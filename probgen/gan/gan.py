"""Deprecated: the old single module of :mod:`probgen.gan`, split into ``losses``, ``nets``,
``adversarial`` and ``models``.

Import from :mod:`probgen.gan` instead; this alias will be removed in a later release.
"""

from __future__ import annotations

import warnings

from probgen.gan import (  # noqa: F401 - re-exported
    BATCH_MODES,
    GAN,
    WGANGP,
    AdversarialModel,
    __all__,
    discriminator_loss,
    gradient_penalty,
    mode_coverage,
    nonsaturating_generator_loss,
    sample_diversity,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)

warnings.warn("probgen.gan.gan is deprecated: import from probgen.gan (the code now lives in probgen.gan.losses, "
              "probgen.gan.nets, probgen.gan.adversarial and probgen.gan.models)", DeprecationWarning, stacklevel=2)
