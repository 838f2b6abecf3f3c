"""probgen.nn.UNet: shapes at 8×8 and 28×28, per-sample independence, exact divergence, config."""

from __future__ import annotations

import json

import pytest
import torch

from probgen.nn import UNet
from probgen.ops import divergence


def test_default_unet_is_small():
    net = UNet()
    n = sum(p.numel() for p in net.parameters())
    assert 1e5 < n < 1e6, n
    assert net(torch.randn(3, 1, 8, 8), torch.tensor([0, 500, 999])).shape == (3, 1, 8, 8)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(image_size=28, base_channels=8, channel_mults=(1, 2, 2), embed_dim=16),  # 28 -> 14 -> 7
        dict(image_size=28, base_channels=8, channel_mults=(1, 1, 1, 1), embed_dim=16, attention=True),  # 7 -> 4
        dict(image_size=8, base_channels=8, channel_mults=(1, 2), embed_dim=16, out_channels=2,
             embedding="fourier", num_res_blocks=2, dropout=0.1),
    ],
)
def test_unet_shapes(kwargs):
    net = UNet(1, **kwargs).eval()
    size = kwargs["image_size"]
    out = net(torch.randn(2, 1, size, size), torch.rand(2))
    assert out.shape == (2, kwargs.get("out_channels", 1), size, size)
    assert bool(torch.isfinite(out).all())


def _tiny() -> UNet:
    torch.manual_seed(0)
    return UNet(1, image_size=4, base_channels=4, channel_mults=(1, 2), embed_dim=8, groups=2,
                attention=True, embedding="fourier", fourier_scale=1.0).double()


def test_unet_per_sample_and_time_dependent():
    net = _tiny()
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    out = net(x, t)
    x2 = x.clone()
    x2[0] += 1.0
    t2 = t.clone()
    t2[2] = 0.2
    out2 = net(x2, t2)
    torch.testing.assert_close(out2[1], out[1])  # row 1 untouched by changes to rows 0 and 2
    assert not torch.allclose(out2[0], out[0]) and not torch.allclose(out2[2], out[2])


def test_unet_exact_divergence_matches_autograd():
    net = _tiny()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    t = torch.rand(2, dtype=torch.float64)
    _, div = divergence(lambda z: net(z, t), x, chunk_size=8)
    for b in range(2):
        jac = torch.autograd.functional.jacobian(lambda z: net(z.unsqueeze(0), t[b : b + 1]).squeeze(0), x[b])
        torch.testing.assert_close(div[b], torch.trace(jac.reshape(16, 16)), rtol=1e-9, atol=1e-10)


def test_unet_config_roundtrip():
    src = _tiny()
    clone = UNet(**json.loads(json.dumps(src.config()))).double()
    clone.load_state_dict(src.state_dict())
    x, t = torch.randn(2, 1, 4, 4, dtype=torch.float64), torch.rand(2, dtype=torch.float64)
    torch.testing.assert_close(clone(x, t), src(x, t))


def test_unet_errors():
    with pytest.raises(ValueError, match="base_channels must be a multiple of groups=8, got 12"):
        UNet(base_channels=12)
    with pytest.raises(ValueError, match="channel_mults must be a non-empty sequence"):
        UNet(channel_mults=())
    net = UNet(1, image_size=8, base_channels=8, embed_dim=8)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 1, 8, 8\), got \(2, 1, 7, 7\)"):
        net(torch.randn(2, 1, 7, 7), torch.rand(2))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        net(torch.randn(2, 1, 8, 8), torch.rand(3))
