"""The U-Net and the diffusion models' default net at MNIST (1×28×28) and CIFAR-10 (3×32×32) sizes."""

from __future__ import annotations

import pytest
import torch

from probgen.diffusion import DDPM
from probgen.nn import UNet


@pytest.mark.parametrize("channels,size,mults", [(1, 28, (1, 2, 2)), (3, 32, (1, 2, 2)), (1, 28, (1, 2))])
def test_unet_shapes_at_image_sizes(channels, size, mults):
    torch.manual_seed(0)
    net = UNet(channels, image_size=size, base_channels=4, channel_mults=mults, embed_dim=8, groups=4,
               attention=True)
    x = torch.randn(2, channels, size, size)
    out = net(x, torch.tensor([1, 5]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_unet_rows_are_independent_at_28():
    """No batch statistic: row 0's output must not change when row 1 changes (the exact divergence relies on it)."""
    torch.manual_seed(0)
    net = UNet(1, image_size=28, base_channels=4, channel_mults=(1, 2, 2), embed_dim=8, groups=4)
    x = torch.randn(2, 1, 28, 28)
    y = x.clone()
    y[1] += 1.0
    t = torch.tensor([3, 3])
    assert torch.allclose(net(x, t)[0], net(y, t)[0], atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_ddpm_default_net_at_image_sizes(shape):
    torch.manual_seed(0)
    model = DDPM(shape, num_steps=10, net_options={"base_channels": 4, "channel_mults": [1, 2], "embed_dim": 8,
                                                   "groups": 4})
    x = torch.rand(2, *shape) * 2 - 1
    assert torch.isfinite(model.loss(x))
    assert model.sample(1).shape == (1, *shape)
