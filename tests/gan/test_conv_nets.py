"""DCGAN-style ConvGenerator / ConvDiscriminator inside GAN and WGAN-GP."""

from __future__ import annotations

import pytest
import torch

from probgen.gan import GAN, WGANGP
from probgen.gan.conv_nets import ConvDiscriminator, ConvGenerator


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_shapes(shape):
    g = ConvGenerator(6, shape, channels=(4, 8), output="tanh")
    d = ConvDiscriminator(shape, channels=(4, 8))
    x = g(torch.randn(3, 6))
    assert x.shape == (3, *shape) and float(x.detach().abs().max()) < 1
    assert d(x).shape == (3,)


@pytest.mark.parametrize("cls", [GAN, WGANGP])
def test_one_training_step(cls):
    torch.manual_seed(0)
    shape = (1, 28, 28)
    model = cls(shape, latent_dim=6, generator=ConvGenerator(6, shape, channels=(4, 8)),
                discriminator=ConvDiscriminator(shape, channels=(4, 8)))
    opts = model.configure_optimizers(1e-3)
    before = [p.detach().clone() for p in model.generator.parameters()]
    out = model.training_step((torch.rand(4, *shape),), opts)
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.generator.parameters()))
    assert model.sample(2).shape == (2, *shape)


def test_critic_rows_are_independent():
    """No batch statistics: the gradient penalty's per-sample gradients are exact."""
    d = ConvDiscriminator((3, 32, 32), channels=(4, 8))
    x = torch.randn(2, 3, 32, 32)
    y = x.clone()
    y[1] += 1
    assert torch.allclose(d(x)[0], d(y)[0])


def test_conv_channels_builds_dcgan_nets_that_checkpoints_rebuild(tmp_path):
    """``conv_channels=`` makes an image GAN whose config() rebuilds the same conv nets (custom nets cannot)."""
    import probgen as pg
    from probgen.gan.conv_nets import ConvDiscriminator, ConvGenerator

    for cls in (pg.gan.GAN, pg.gan.WGANGP):
        torch.manual_seed(0)
        g = cls((1, 28, 28), latent_dim=8, conv_channels=(4, 8))
        assert isinstance(g.generator, ConvGenerator) and isinstance(g.discriminator, ConvDiscriminator)
        assert g.config()["conv_channels"] == [4, 8]
        path = pg.save(tmp_path / f"{cls.__name__}.pt", g)
        loaded = pg.load(path)
        z = torch.randn(3, 8)
        assert torch.equal(loaded.generator(z), g.generator(z))
    with pytest.raises(ValueError, match=r"conv_channels needs an image event shape \(C, H, W\), got \(2,\)"):
        pg.gan.GAN(2, conv_channels=(4,))
    with pytest.raises(TypeError, match=r"conv_channels must be a sequence of positive ints"):
        pg.gan.GAN((1, 28, 28), conv_channels="64")
    with pytest.raises(ValueError, match=r"conv_channels must hold at least 1 width"):
        pg.gan.GAN((1, 28, 28), conv_channels=())
    assert pg.gan.GAN((1, 28, 28), conv_channels=4).conv_channels == (4,)  # one level, as hidden=64 means (64,)
