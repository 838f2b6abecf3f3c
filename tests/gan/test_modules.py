"""The layout of probgen.gan: objectives in `losses`, networks in `nets`, models in `models`; the public names stay
in `probgen.gan`, and the old single module `probgen.gan.gan` still imports with a DeprecationWarning."""

from __future__ import annotations

import importlib
import sys

import pytest

import probgen.gan as gan
from probgen.gan import losses, models


def test_public_names_come_from_the_modules_named_for_them():
    assert gan.GAN is models.GAN and gan.WGANGP is models.WGANGP and gan.AdversarialModel is models.AdversarialModel
    for name in losses.__all__:
        assert getattr(gan, name) is getattr(losses, name)
    assert set(losses.__all__) | set(models.__all__) | {"mode_coverage"} == set(gan.__all__)


def test_the_old_module_is_a_deprecated_alias():
    sys.modules.pop("probgen.gan.gan", None)
    with pytest.warns(DeprecationWarning, match=r"probgen.gan.gan is deprecated: import from probgen.gan"):
        old = importlib.import_module("probgen.gan.gan")
    assert old.GAN is gan.GAN and old.gradient_penalty is gan.gradient_penalty and old.__all__ == gan.__all__
