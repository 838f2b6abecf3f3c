"""The layout of probgen.gan: objectives in `losses`, networks in `nets`, the two-player machinery in
`adversarial`, the two families in `models`; the public names stay in `probgen.gan`, and the old single module
`probgen.gan.gan` still imports with a DeprecationWarning."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import warnings

import pytest

import probgen.gan as gan
from probgen.gan import adversarial, losses, models


def test_public_names_come_from_the_modules_named_for_them():
    assert gan.GAN is models.GAN and gan.WGANGP is models.WGANGP
    assert gan.AdversarialModel is adversarial.AdversarialModel and gan.BATCH_MODES is adversarial.BATCH_MODES
    for name in losses.__all__:
        assert getattr(gan, name) is getattr(losses, name)
    assert set(losses.__all__) | set(adversarial.__all__) | set(models.__all__) | {"mode_coverage"} == set(gan.__all__)


def test_families_share_one_constructor():
    """GAN and WGANGP declare only their own options; the shared ones go to AdversarialModel once."""
    g = gan.GAN(2, latent_dim=3, hidden=(8,), d_steps=2, batch_mode="split")
    w = gan.WGANGP(2, latent_dim=3, hidden=(8,), n_critic=3, gp_weight=1.0)
    assert (g.latent_dim, g.hidden, g.d_steps, g.batch_mode, g.betas) == (3, (8,), 2, "split", (0.5, 0.999))
    assert (w.latent_dim, w.n_critic, w.gp_weight, w.betas) == (3, 3, 1.0, (0.0, 0.9))
    assert g.config()["d_steps"] == 2 and w.config()["n_critic"] == 3 and "num_updates" not in w.config()
    assert type(w)(**w.config()).config() == w.config()


def test_the_old_module_is_a_deprecated_alias():
    sys.modules.pop("probgen.gan.gan", None)
    with pytest.warns(DeprecationWarning, match=r"probgen.gan.gan is deprecated: import from probgen.gan"):
        old = importlib.import_module("probgen.gan.gan")
    assert old.GAN is gan.GAN and old.gradient_penalty is gan.gradient_penalty and old.__all__ == gan.__all__


def test_num_updates_name_argument_is_deprecated():
    class Custom(gan.GAN):
        def __init__(self, event_shape, *, k=1, **options):
            gan.AdversarialModel.__init__(self, event_shape, num_updates=k, num_updates_name="k", **options)

    with pytest.warns(DeprecationWarning, match="num_updates_name=...\\) is deprecated"):
        m = Custom(2, k=3, hidden=(4,))
    assert m.num_updates == 3 and m.config()["k"] == 3


def test_no_module_is_over_500_lines():
    for info in pkgutil.iter_modules(gan.__path__):
        with warnings.catch_warnings():  # probgen.gan.gan, the deprecated alias, warns on import
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module(f"probgen.gan.{info.name}")
        assert len(inspect.getsource(module).splitlines()) <= 500, module.__name__
