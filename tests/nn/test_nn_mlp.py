"""probgen.nn: time embeddings, MLP and ConditionedMLP."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from probgen.nn import MLP, ConditionedMLP, GaussianFourierFeatures, SinusoidalEmbedding
from probgen.ops import divergence


# ---------------------------------------------------------------- embeddings


def test_fourier_features_formula_and_buffer():
    emb = GaussianFourierFeatures(6, scale=3.0)
    w = emb.frequencies
    assert w.shape == (3,) and "frequencies" in emb.state_dict()
    t = torch.tensor([-1.5, 0.0, 2.0])
    out = emb(t)
    expected = torch.cat([torch.sin(2 * math.pi * t[:, None] * w), torch.cos(2 * math.pi * t[:, None] * w)], -1)
    torch.testing.assert_close(out, expected)
    # the frequencies are restored from a state dict, so a reloaded model embeds identically
    other = GaussianFourierFeatures(6, scale=3.0)
    other.load_state_dict(emb.state_dict())
    torch.testing.assert_close(other(t), out)


def test_fourier_frequency_scale():
    torch.manual_seed(0)
    w = GaussianFourierFeatures(20000, scale=16.0).frequencies
    # sd of 10,000 N(0, 16²) draws: relative SE of the sample sd ≈ 1/sqrt(2n) = 0.7%; allow 4 SE.
    assert abs(w.std().item() / 16.0 - 1) < 4 / math.sqrt(2 * w.numel())


def test_sinusoidal_closed_form():
    emb = SinusoidalEmbedding(4, max_period=100.0)
    t = torch.tensor([0.0, 1.0, 7.0])
    freqs = torch.tensor([1.0, 0.1])  # 100^(-k/2) for k = 0, 1
    expected = torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], -1)
    torch.testing.assert_close(emb(t), expected)
    torch.testing.assert_close(emb(torch.tensor([0, 1, 7])), expected)  # integer steps accepted
    assert emb.state_dict() == {}  # deterministic buffers are not saved


@pytest.mark.parametrize("cls", [GaussianFourierFeatures, SinusoidalEmbedding])
def test_embedding_rejects_odd_width(cls):
    with pytest.raises(ValueError, match="embed_dim must be even, got 5"):
        cls(5)


# ---------------------------------------------------------------- MLP


@pytest.mark.parametrize("activation", ["silu", "relu", "tanh", "softplus", "elu", nn.GELU, torch.sin])
def test_mlp_shapes_and_activations(activation):
    net = MLP(3, 2, hidden=(5, 4), activation=activation)
    assert net(torch.randn(7, 3)).shape == (7, 2)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [5, 4, 2]


def test_mlp_config_roundtrip():
    net = MLP(3, 2, hidden=(5,), activation="tanh")
    cfg = json.loads(json.dumps(net.config()))
    clone = MLP(**cfg)
    clone.load_state_dict(net.state_dict())
    x = torch.randn(4, 3)
    torch.testing.assert_close(clone(x), net(x))
    with pytest.raises(TypeError, match="config\\(\\) needs the activation given by name"):
        MLP(3, 2, activation=torch.sin).config()


def test_mlp_bad_arguments():
    with pytest.raises(ValueError, match="unknown activation 'gelu'; valid choices: 'silu'"):
        MLP(2, 2, activation="gelu")
    with pytest.raises(ValueError, match="in_features must be >= 1, got 0"):
        MLP(0, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 2\), got \(4, 3\)"):
        MLP(2, 2)(torch.randn(4, 3))


# ---------------------------------------------------------------- ConditionedMLP


def _small(**kw) -> ConditionedMLP:
    torch.manual_seed(0)
    defaults = dict(hidden=(16, 16), embed_dim=8)
    defaults.update(kw)
    return ConditionedMLP(3, **defaults).double()


@pytest.mark.parametrize("embedding", ["fourier", "sinusoidal"])
def test_conditioned_mlp_depends_on_time_per_sample(embedding):
    net = _small(embedding=embedding, fourier_scale=1.0)
    x = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    out = net(x, t)
    assert out.shape == (4, 3)
    t2 = t.clone()
    t2[1] = 0.9
    out2 = net(x, t2)
    assert not torch.allclose(out2[1], out[1])
    torch.testing.assert_close(out2[[0, 2, 3]], out[[0, 2, 3]])  # per-sample: other rows unchanged
    torch.testing.assert_close(net(x, torch.tensor(0.3, dtype=torch.float64)), net(x, torch.full((4,), 0.3, dtype=torch.float64)))


def test_conditioned_mlp_exact_divergence_matches_autograd():
    net = _small()
    x = torch.randn(3, 3, dtype=torch.float64)
    t = torch.rand(3, dtype=torch.float64)
    _, div = divergence(lambda z: net(z, t), x)
    ref = []
    for b in range(3):
        jac = torch.autograd.functional.jacobian(lambda z: net(z.unsqueeze(0), t[b : b + 1]).squeeze(0), x[b])
        ref.append(torch.trace(jac))
    torch.testing.assert_close(div, torch.stack(ref), rtol=1e-10, atol=1e-12)


def test_conditioned_mlp_energy_and_labels():
    energy = _small(out_features=1, time_conditioned=False, activation="softplus")
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    e = energy(x)
    assert e.shape == (5, 1)
    (g,) = torch.autograd.grad(e.sum(), x)
    assert bool((g.abs().sum(-1) > 0).all())  # not zero-initialised: the energy has a gradient

    cnet = _small(cond_features=2)
    xc = torch.randn(2, 3, dtype=torch.float64)
    t = torch.rand(2, dtype=torch.float64)
    a = cnet(xc, t, torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64))
    b = cnet(xc, t, torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64))
    assert not torch.allclose(a, b)


def test_conditioned_mlp_zero_init_and_config():
    net = _small(zero_init_last=True)
    assert torch.count_nonzero(net(torch.randn(2, 3, dtype=torch.float64), torch.rand(2, dtype=torch.float64))) == 0
    src = _small(embedding="fourier", cond_features=2)
    clone = ConditionedMLP(**json.loads(json.dumps(src.config()))).double()
    clone.load_state_dict(src.state_dict())
    x, t, c = torch.randn(2, 3, dtype=torch.float64), torch.rand(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(clone(x, t, c), src(x, t, c))


def test_conditioned_mlp_errors():
    net = _small()
    x = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="t is required"):
        net(x)
    with pytest.raises(ValueError, match="t must be None"):
        _small(time_conditioned=False)(x, torch.rand(2))
    with pytest.raises(ValueError, match=r"cond of shape \(batch, 2\) is required"):
        _small(cond_features=2)(x, torch.rand(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="cond must be None"):
        net(x, torch.rand(2, dtype=torch.float64), torch.ones(2, 1))
    with pytest.raises(ValueError, match="unknown embedding 'random'; valid choices: 'fourier', 'sinusoidal'"):
        ConditionedMLP(2, embedding="random")
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\), got \(2, 4\)"):
        net(torch.randn(2, 4), torch.rand(2))
