"""ConvEncoder / ConvDecoder inside probgen.vae.VAE at 28×28 and 32×32×3."""

from __future__ import annotations

import pytest
import torch

from probgen.vae import VAE
from probgen.vae.conv import ConvDecoder, ConvEncoder


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 7, 9)])
def test_shapes(shape):
    enc = ConvEncoder(shape, 4, channels=(4, 8), hidden=16)
    dec = ConvDecoder(4, shape, channels=(4, 8), hidden=16)
    loc, scale = enc(torch.zeros(2, 3, *shape))
    assert loc.shape == scale.shape == (2, 3, 4) and bool((scale > 0).all())
    assert dec(torch.zeros(5, 4)).shape == (5, *shape)


def _binary_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # bars: each image is one random horizontal or vertical bar pattern, plus a little pixel noise
    x = torch.zeros(n, 1, 28, 28)
    rows = torch.randint(0, 28, (n,), generator=g)
    vertical = torch.rand(n, generator=g) < 0.5
    for i in range(n):
        if vertical[i]:
            x[i, 0, :, rows[i]] = 1
        else:
            x[i, 0, rows[i], :] = 1
    flip = torch.rand(x.shape, generator=g) < 0.02
    return torch.where(flip, 1 - x, x)


def test_vae_with_conv_nets_trains_and_evaluates():
    torch.manual_seed(0)
    x = _binary_images(64)
    vae = VAE(ConvEncoder((1, 28, 28), 4, channels=(8, 16), hidden=32),
              ConvDecoder(4, (1, 28, 28), channels=(8, 16), hidden=32), latent_dim=4, likelihood="bernoulli")
    assert vae.event_shape == (1, 28, 28)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(vae.loss(x))
    assert torch.isfinite(torch.tensor(before))
    for _ in range(25):
        opt.zero_grad()
        vae.loss(x).backward()
        opt.step()
    with torch.no_grad():
        after = float(vae.loss(x))
        ll = vae.log_likelihood(x[:4], num_particles=8)
    assert after < before - 50.0  # starts at ~784 log 2 ≈ 543 nats; the bars are far more predictable
    assert ll.shape == (4,) and torch.isfinite(ll).all()
    # the IWAE bound is at least the (single-sample) ELBO on average, up to Monte Carlo noise
    assert float(ll.mean()) > -after - 20.0
    assert vae.sample(3).shape == (3, 1, 28, 28)


def test_colour_vae_loss_is_finite():
    vae = VAE(ConvEncoder((3, 32, 32), 4, channels=(4, 8), hidden=16),
              ConvDecoder(4, (3, 32, 32), channels=(4, 8), hidden=16), latent_dim=4, obs_scale=0.1)
    assert torch.isfinite(vae.loss(torch.rand(3, 3, 32, 32)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="event_shape must be an image shape"):
        ConvEncoder((784,), 4)
    with pytest.raises(ValueError, match="too small"):
        ConvDecoder(4, (1, 4, 4), channels=(4, 4, 4))


def test_built_in_conv_nets_round_trip_through_checkpoint(tmp_path):
    import probgen as pg

    vae = VAE(latent_dim=4, event_shape=(1, 28, 28), likelihood="bernoulli", hidden=(32,), conv_channels=(4, 8))
    assert isinstance(vae.encoder, ConvEncoder) and isinstance(vae.decoder, ConvDecoder)
    pg.save(tmp_path / "checkpoint.pt", vae)
    again = pg.load(tmp_path)
    assert again.config() == vae.config() and again.config()["conv_channels"] == [4, 8]
    x = torch.bernoulli(torch.full((2, 1, 28, 28), 0.3))
    with torch.no_grad():
        assert torch.equal(again.encoder(x)[0], vae.encoder(x)[0])
        assert torch.equal(again.decoder(torch.zeros(1, 4)), vae.decoder(torch.zeros(1, 4)))
    with pytest.raises(ValueError, match="conv_channels needs an image event_shape"):
        VAE(latent_dim=2, event_shape=(4,), conv_channels=(4,))


def test_conv_nets_with_flow_posterior():
    vae = VAE(latent_dim=4, event_shape=(1, 8, 8), likelihood="bernoulli", hidden=(16,), conv_channels=(4,),
              posterior="iaf", num_flows=1)
    assert torch.isfinite(vae.loss(torch.bernoulli(torch.full((3, 1, 8, 8), 0.5))))
