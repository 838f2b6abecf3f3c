"""Tests of the machinery ScoreSDE and DDPM share (probgen.diffusion.base), run over both classes:
argument errors that name each model's own network argument, the EMA of the weights against its closed
form, the probability-flow log_prob's gradient switch, and as_distribution's checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from probgen.diffusion import DDPM, ScoreSDE

# (class, positional args, name of the network argument, small default-net options)
MODELS = [
    (ScoreSDE, ((2,),), "net", {"hidden": [8]}),
    (DDPM, ((2,), 10), "eps_net", {"hidden": [8]}),
]
IDS = ["ScoreSDE", "DDPM"]


class _TimeLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x, t):
        return self.lin(x)


@pytest.mark.parametrize("cls,args,net_arg,opts", MODELS, ids=IDS)
def test_network_argument_errors_name_the_model_argument(cls, args, net_arg, opts):
    with pytest.raises(TypeError, match="net_options must be a dict or None, got int"):
        cls(*args, net_options=3)
    with pytest.raises(ValueError, match=f"they cannot be combined with {net_arg}=..."):
        cls(*args, **{net_arg: _TimeLinear()}, net_options=opts)
    with pytest.raises(TypeError, match=f"{net_arg} must be .*, got int"):
        cls(*args, **{net_arg: 3})
    with pytest.raises(ValueError, match=r"net_options must not set \['dim'\]"):
        cls(*args, net_options={"dim": 3})
    with pytest.raises(ValueError, match=r"ema_decay must"):
        cls(*args, ema_decay=1.5)
    with pytest.raises(ValueError, match=r"event_shape\[0\] must be >= 1, got 0"):
        cls((0,), *args[1:])


@pytest.mark.parametrize("cls,args,net_arg,opts", MODELS, ids=IDS)
def test_ema_is_a_frozen_copy_updated_by_the_warmup_formula(cls, args, net_arg, opts):
    model = cls(*args, net_options=opts, ema_decay=0.9)
    online = getattr(model, net_arg)
    assert not any(p.requires_grad for p in model.ema_net.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.ema_net.parameters(), online.parameters()))
    start = [p.detach().clone() for p in online.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    model.on_fit_step(0)
    # first update: d = min(0.9, (1 + 0)/(10 + 0)) = 0.1, so θ_ema = 0.1 θ_start + 0.9 (θ_start + 1) = θ_start + 0.9
    assert int(model.ema_updates) == 1
    for e, s in zip(model.ema_net.parameters(), start):
        torch.testing.assert_close(e, s + 0.9)
    # once updated, the EMA weights are the default; use_ema=False picks the trained ones
    assert model._pick_net(None) is model.ema_net and model._pick_net(False) is online


@pytest.mark.parametrize("cls,args,net_arg,opts", MODELS, ids=IDS)
def test_without_ema(cls, args, net_arg, opts):
    model = cls(*args, net_options=opts)
    assert model.ema_net is None
    model.on_fit_step(0)  # a no-op without EMA weights
    with pytest.raises(ValueError, match=r"update_ema\(\) needs EMA weights"):
        model.update_ema()
    with pytest.raises(ValueError, match="use_ema=True but this model keeps no EMA weights"):
        model.log_prob(torch.randn(3, 2), use_ema=True)


@pytest.mark.parametrize("cls,args,net_arg,opts", MODELS, ids=IDS)
def test_log_prob_gradient_switch_and_errors(cls, args, net_arg, opts):
    torch.manual_seed(0)
    model = cls(*args, net_options=opts)
    x = torch.randn(3, 2, requires_grad=True)
    assert not model.log_prob(x, rtol=1e-3, atol=1e-3).requires_grad
    lp = model.log_prob(x, rtol=1e-3, atol=1e-3, differentiable=True)
    (grad,) = torch.autograd.grad(lp.sum(), x)
    assert grad.shape == x.shape and bool(torch.isfinite(grad).all())
    with pytest.raises(ValueError, match="unknown trace 'diag'; valid choices: 'exact', 'hutchinson'"):
        model.log_prob(x, trace="diag")
    with pytest.raises(TypeError, match="differentiable must be a bool, got int"):
        model.log_prob(x, differentiable=1)


@pytest.mark.parametrize("cls,args,net_arg,opts", MODELS, ids=IDS)
def test_as_distribution_checks(cls, args, net_arg, opts):
    model = cls(*args, net_options=opts)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        model.as_distribution(method="nope")
    with pytest.raises(ValueError, match="unknown trace 'diag'"):
        model.as_distribution(trace="diag")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        model.as_distribution(steps=0)
    d = model.as_distribution(steps=5, rtol=1e-3, atol=1e-3)
    x = torch.randn(4, 2)
    torch.testing.assert_close(d.log_prob(x), model.log_prob(x, rtol=1e-3, atol=1e-3))


def test_ddpm_as_distribution_steps_are_capped_at_num_steps():
    with pytest.raises(ValueError, match="steps must be <= 10"):
        DDPM((2,), 10, net_options={"hidden": [8]}).as_distribution(steps=11)


def test_clamp_range_is_the_data_range_of_quantized_models_only():
    # where probgen fit/sample/evaluate/condition clamp x̂_0: a DDPM of quantized data, a ScoreSDE carrying a range
    from probgen.diffusion import DDPM, EDM, ScoreSDE
    from probgen.diffusion.base import clamp_range

    small = {"net_options": {"hidden": [8]}}
    assert clamp_range(DDPM((2,), num_steps=10, **small)) is None  # continuous data: data_range is only a default
    assert clamp_range(DDPM((2,), num_steps=10, data_levels=4, data_range=(0, 3), **small)) == (0.0, 3.0)
    assert clamp_range(ScoreSDE((2,), **small)) is None
    assert clamp_range(ScoreSDE((2,), data_range=(-1, 1), **small)) == (-1.0, 1.0)
    assert clamp_range(EDM((2,), **small)) is None
