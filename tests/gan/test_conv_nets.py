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
    from probgen.gan.conv_nets import DCGANDiscriminator, DCGANGenerator

    arches = {"dcgan": (DCGANGenerator, DCGANDiscriminator), "upsample": (ConvGenerator, ConvDiscriminator)}
    for cls in (pg.gan.GAN, pg.gan.WGANGP):
        for arch, (gen_cls, disc_cls) in arches.items():
            torch.manual_seed(0)
            g = cls((1, 28, 28), latent_dim=8, conv_channels=(4, 8), conv_arch=arch)
            assert isinstance(g.generator, gen_cls) and isinstance(g.discriminator, disc_cls)
            assert g.config()["conv_channels"] == [4, 8] and g.config()["conv_arch"] == arch
            g.training_step((torch.rand(6, 1, 28, 28),), g.configure_optimizers(1e-3))  # BN statistics move
            path = pg.save(tmp_path / f"{cls.__name__}-{arch}.pt", g)
            loaded = pg.load(path)
            z = torch.randn(3, 8)
            assert torch.equal(loaded.generator.eval()(z), g.generator.eval()(z))
            x = torch.randn(3, 1, 28, 28)
            assert torch.allclose(loaded.discriminator.eval()(x), g.discriminator.eval()(x))
    with pytest.raises(ValueError, match=r"conv_channels needs an image event shape \(C, H, W\), got \(2,\)"):
        pg.gan.GAN(2, conv_channels=(4,))
    with pytest.raises(TypeError, match=r"conv_channels must be a sequence of positive ints"):
        pg.gan.GAN((1, 28, 28), conv_channels="64")
    with pytest.raises(ValueError, match=r"conv_channels must hold at least 1 width"):
        pg.gan.GAN((1, 28, 28), conv_channels=())
    assert pg.gan.GAN((1, 28, 28), conv_channels=4).conv_channels == (4,)  # one level, as hidden=64 means (64,)


# ---------------------------------------------------------------------------------------------- DCGAN nets


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (1, 7, 9)])
def test_dcgan_nets_shapes_and_parameter_counts(shape):
    """Transposed 4×4 stride-2 convolutions restore every size (odd ones by output_padding); parameter counts
    in closed form: dense (no bias) + BN, one hidden ConvT (no bias) + BN, the output ConvT with bias."""
    from probgen.gan.conv_nets import DCGANDiscriminator, DCGANGenerator

    c, h, w = shape
    c0, c1, latent = 4, 8, 6
    top = c1 * (h // 4) * (w // 4)
    g = DCGANGenerator(latent, shape, channels=(c0, c1)).eval()
    x = g(torch.randn(3, latent))
    assert x.shape == (3, *shape) and float(x.detach().abs().max()) < 1  # tanh output
    assert sum(p.numel() for p in g.parameters()) == latent * top + 2 * top + c1 * c0 * 16 + 2 * c0 + c0 * c * 16 + c
    d = DCGANDiscriminator(shape, channels=(c0, c1))
    assert d(x).shape == (3,)
    assert sum(p.numel() for p in d.parameters()) == (c * c0 * 16 + c0) + (c0 * c1 * 16 + c1) + (top + 1)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())


def test_dcgan_discriminator_norms():
    """Spectral norm: every weight's largest singular value is driven to 1 by the power iterations; layer norm
    and no norm: each output row depends on its own input row only (the gradient penalty stays exact)."""
    from probgen.gan.conv_nets import DCGANDiscriminator

    torch.manual_seed(0)
    d = DCGANDiscriminator((1, 28, 28), channels=(4, 8), norm="spectral")
    x = torch.randn(5, 1, 28, 28)
    for _ in range(30):
        d(x)  # training mode: one power iteration per call
    weights = [d.trunk[0].weight, d.trunk[2].weight, d.head.weight]
    sigmas = [float(torch.linalg.matrix_norm(wt.detach().flatten(1), ord=2)) for wt in weights]
    assert sigmas == pytest.approx([1.0, 1.0, 1.0], abs=1e-3)
    for norm in ("none", "layer"):
        d = DCGANDiscriminator((3, 32, 32), channels=(4, 8), norm=norm)
        y = x.new_zeros(2, 3, 32, 32).normal_()
        z = y.clone()
        z[1] += 1
        assert torch.allclose(d(y)[0], d(z)[0])
    with pytest.raises(ValueError, match=r"unknown norm 'batch'; valid choices: 'none', 'spectral', 'layer'"):
        DCGANDiscriminator((1, 28, 28), norm="batch")


@pytest.mark.parametrize("cls", [GAN, WGANGP])
def test_sample_uses_running_statistics_and_restores_the_mode(cls):
    """The batch-normalised generator samples in eval mode: each draw is G(z) of its own z (running
    statistics), not a function of the rest of the batch; training mode is restored afterwards."""
    import pyro.poutine as poutine

    torch.manual_seed(0)
    model = cls((1, 28, 28), latent_dim=6, conv_channels=(4, 8))
    model.training_step((torch.rand(8, 1, 28, 28) * 2 - 1,), model.configure_optimizers(1e-3))
    model.train()
    trace = poutine.trace(model.sample).get_trace(4)
    z, x = trace.nodes["z"]["value"], trace.nodes["_RETURN"]["value"]
    assert model.generator.training  # restored
    with torch.no_grad():
        one_by_one = torch.cat([model.generator.eval()(z[i:i + 1]) for i in range(4)])
        batch_stats = model.generator.train()(z)
    assert torch.allclose(x, one_by_one, atol=1e-6)
    assert not torch.allclose(x, batch_stats, atol=1e-3)  # the test would see batch statistics


def test_conv_options_are_checked():
    with pytest.raises(ValueError, match=r"unknown conv_arch 'resnet'; valid choices: 'dcgan', 'upsample'"):
        GAN((1, 28, 28), conv_channels=(4, 8), conv_arch="resnet")
    with pytest.raises(ValueError, match=r"conv_norm='spectral' needs conv_arch='dcgan'"):
        GAN((1, 28, 28), conv_channels=(4, 8), conv_arch="upsample", conv_norm="spectral")
    assert GAN((1, 28, 28), conv_channels=(4, 8)).conv_norm == "none"
    assert GAN((1, 28, 28), conv_channels=(4, 8), conv_norm="spectral").config()["conv_norm"] == "spectral"


def test_image_rows_of_the_gan_recipes():
    """grayscale / colour rows: DCGAN nets (32, 64) with a 64-d latent; GAN 3000 steps, WGAN-GP 700 (each of its
    steps costs n_critic = 5 critic updates with the penalty's double backward); the other rows are the GAN's."""
    from probgen import registry
    from probgen.data.dataset import DataSet
    from probgen.gan.conv_nets import DCGANDiscriminator, DCGANGenerator

    for shape in ((1, 28, 28), (3, 32, 32), (1, 8, 8)):
        x = torch.rand(8, *shape) * 2 - 1
        data = DataSet(name="tiny", train=x[:4], test=x[4:], event_shape=shape, log_prob=None, entropy=None,
                       num_levels=None, data_range=(-1.0, 1.0), labels_train=None, labels_test=None, kind="image")
        for family, steps in (("gan", 3000), ("wgan-gp", 700)):
            recipe = registry.recipe(family)
            model = recipe.build(data)
            assert isinstance(model.generator, DCGANGenerator) and isinstance(model.discriminator, DCGANDiscriminator)
            assert model.latent_dim == 64 and model.conv_channels == (32, 64) and model.conv_norm == "none"
            assert recipe.fit_options(data)["steps"] == steps
    gan, wgan = registry.recipe("gan").settings, registry.recipe("wgan-gp").settings
    assert all(wgan[row] == gan[row] for row in gan if row not in ("grayscale", "colour"))
