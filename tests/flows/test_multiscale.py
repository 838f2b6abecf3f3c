"""ImageFlow: the multi-scale coupling flow (squeeze, checkerboard/channel couplings, factor-out)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

import probgen as pg
from probgen.flows.multiscale import (
    ImageActNorm,
    ImageAffineCoupling,
    ImageFlow,
    LogitTransform,
    Squeeze,
    squeeze,
    unsqueeze,
)


def _perturb(module: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    for m in module.modules():
        if isinstance(m, ImageActNorm):
            m.initialized.fill_(True)


def _to_base(flow: ImageFlow, x: torch.Tensor) -> torch.Tensor:
    v = x.reshape(x.shape[0], -1)
    for t in reversed(flow.transforms[:-1]):
        v = t.inv(v)
    return v


def test_squeeze_roundtrip_and_layout():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    s = squeeze(x)
    assert s.shape == (1, 4, 2, 2)
    # channel k of the squeezed image holds the pixel (2i + k // 2, 2j + k % 2)
    assert s[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert torch.equal(unsqueeze(s), x)


@pytest.mark.parametrize("shape,scales", [((1, 28, 28), 2), ((3, 32, 32), 3)])
def test_shapes_and_roundtrip_at_image_sizes(shape, scales):
    torch.manual_seed(0)
    flow = ImageFlow(shape, num_scales=scales, num_couplings=1, hidden=4, num_blocks=1)
    _perturb(flow, 0.05)
    x = torch.rand(3, *shape)
    lp = flow.log_prob(x)
    assert lp.shape == (3,) and torch.isfinite(lp).all()
    z = _to_base(flow, x)
    back = z
    for t in flow.transforms:
        back = t(back)
    assert torch.allclose(back, x, atol=1e-5)
    assert flow.sample(2).shape == (2, *shape)


@pytest.mark.parametrize("logit", [None, (0.0, 1.0)])
def test_log_prob_matches_autograd_jacobian_float64(logit):
    torch.manual_seed(1)
    flow = ImageFlow((1, 4, 4), num_scales=1, num_couplings=1, hidden=4, num_blocks=1, logit=logit).double()
    _perturb(flow, 0.3)
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    lp = flow.log_prob(x)
    for i in range(2):
        xi = x[i:i + 1]
        jac = jacobian(lambda v: _to_base(flow, v.reshape(1, 1, 4, 4))[0], xi.reshape(-1))
        z = _to_base(flow, xi)[0]
        expected = -0.5 * (z ** 2).sum() - 8 * math.log(2 * math.pi) + torch.linalg.slogdet(jac)[1]
        assert torch.allclose(lp[i], expected, atol=1e-8), (lp[i], expected)


def test_each_layer_log_det_against_autograd():
    torch.manual_seed(2)
    layers = [
        ImageActNorm((2, 2, 2)),
        ImageAffineCoupling((2, 2, 2), mask="checkerboard", parity=1, hidden=4, num_blocks=1),
        ImageAffineCoupling((2, 2, 2), mask="channel", parity=1, hidden=4, num_blocks=1),
        Squeeze((1, 4, 2)),
        LogitTransform(low=-1.0, high=2.0, alpha=0.1),
    ]
    for layer in layers:
        layer = layer.double()
        _perturb(layer, 0.5)
        z = torch.randn(1, 10, dtype=torch.float64) * 0.5  # 8 active + 2 passed-through entries
        y = layer(z)
        jac = jacobian(lambda v: layer(v.reshape(1, -1))[0], z[0])
        assert torch.allclose(layer.log_abs_det_jacobian(z, y)[0], torch.linalg.slogdet(jac)[1], atol=1e-9), layer
        assert torch.allclose(layer.inv(y), z, atol=1e-10), layer


def test_fresh_flow_is_standard_normal():
    flow = ImageFlow((1, 4, 4), num_scales=2, num_couplings=1, hidden=4)
    for m in flow.modules():
        if isinstance(m, ImageActNorm):
            m.initialized.fill_(True)  # identity ActNorm, zero-initialised couplings: the flow is the identity
    x = torch.randn(5, 1, 4, 4)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum((1, 2, 3))
    assert torch.allclose(flow.log_prob(x), expected, atol=1e-5)


def test_actnorm_initialises_from_first_batch():
    flow = ImageFlow((1, 4, 4), num_scales=1, num_couplings=1, hidden=4)
    x = 3.0 + 2.0 * torch.randn(64, 1, 4, 4)
    with torch.no_grad():
        z = _to_base(flow, x)
    assert abs(float(z.mean())) < 0.1 and abs(float(z.std()) - 1) < 0.1


def test_training_reduces_nll_and_bits_per_dim():
    torch.manual_seed(0)
    # a structured 1x8x8 set: smooth random blobs dequantized on 16 levels in [0, 1)
    base = torch.rand(256, 1, 2, 2)
    k = (torch.nn.functional.interpolate(base, size=(8, 8), mode="bilinear", align_corners=False) * 15).round()
    x = pg.data.dequantize(k, 16, generator=torch.Generator().manual_seed(0))
    flow = ImageFlow((1, 8, 8), num_scales=1, num_couplings=1, hidden=16, num_blocks=1, logit=(0.0, 1.0))
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(flow.loss(x))
    for _ in range(30):
        opt.zero_grad()
        flow.loss(x).backward()
        opt.step()
    with torch.no_grad():
        lp = flow.log_prob(x)
    assert -float(lp.mean()) < before - 5.0
    bpd = pg.data.bits_per_dim(lp, 64, num_levels=16, data_range=(0.0, 1.0)).mean()
    # a density can't beat the data's entropy by much on training data, and uniform is log2(16) = 4 bits
    assert 0.0 < float(bpd) < 4.0


def test_config_rebuilds_and_state_dict_loads():
    flow = ImageFlow((1, 4, 4), num_scales=1, num_couplings=1, hidden=4, logit=(0.0, 1.0))
    _perturb(flow)
    again = ImageFlow(**flow.config())
    again.load_state_dict(flow.state_dict())
    x = torch.rand(3, 1, 4, 4)
    assert torch.allclose(again.log_prob(x), flow.log_prob(x))


def test_as_distribution_is_pyro():
    flow = ImageFlow((1, 4, 4), num_scales=1, num_couplings=1, hidden=4)
    d = flow.as_distribution()
    assert tuple(d.event_shape) == (1, 4, 4)
    assert d.log_prob(torch.randn(2, 1, 4, 4)).shape == (2,)


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_scales=3 needs H and W divisible by 2\\^3 = 8, got 28×28; valid num_scales for this size: 0..2"):
        ImageFlow((1, 28, 28), num_scales=3)
    with pytest.raises(ValueError, match="event_shape must be"):
        ImageFlow((28, 28))
    with pytest.raises(ValueError, match="logit must be None or"):
        ImageFlow((1, 4, 4), logit=(1.0, 0.0))
    flow = ImageFlow((1, 4, 4), num_scales=1, num_couplings=1, hidden=4)
    with pytest.raises(ValueError):
        flow.log_prob(torch.randn(2, 1, 5, 5))


def test_checkpoint_round_trip(tmp_path):
    flow = ImageFlow((1, 4, 4), num_scales=1, num_couplings=1, hidden=4, logit=(0.0, 1.0))
    _perturb(flow)
    pg.save(tmp_path / "checkpoint.pt", flow)
    again = pg.load(tmp_path)
    assert isinstance(again, ImageFlow)
    x = torch.rand(3, 1, 4, 4)
    assert torch.allclose(again.log_prob(x), flow.log_prob(x))
