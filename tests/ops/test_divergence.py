"""probgen.ops.divergence: exact trace against autograd Jacobians, Hutchinson unbiasedness, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from probgen.ops import divergence, divergence_fn, sample_probes


def _mlp(dim: int, hidden: int = 16) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, dim)).double()


def _autograd_traces(f, x: torch.Tensor) -> torch.Tensor:
    """Per-sample trace of the full Jacobian from torch.autograd.functional.jacobian (the reference)."""
    traces = []
    for xb in x:
        jac = torch.autograd.functional.jacobian(lambda z: f(z.unsqueeze(0)).squeeze(0), xb)
        d = xb.numel()
        traces.append(torch.trace(jac.reshape(d, d)))
    return torch.stack(traces)


def test_exact_matches_autograd_jacobian_mlp():
    net = _mlp(5)
    x = torch.randn(6, 5, dtype=torch.float64)
    out, div = divergence(net, x)
    assert out.shape == x.shape and div.shape == (6,)
    torch.testing.assert_close(out, net(x).detach())
    torch.testing.assert_close(div, _autograd_traces(net, x), rtol=1e-10, atol=1e-12)


def test_exact_matches_autograd_jacobian_linear_image():
    torch.manual_seed(2)
    a = torch.randn(16, 16, dtype=torch.float64)

    def f(x):  # a linear map on (B, 1, 4, 4) images: tr = tr(A) for every sample
        return (x.reshape(x.shape[0], -1) @ a.T).reshape(x.shape)

    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    _, div = divergence(f, x)
    torch.testing.assert_close(div, torch.full((3,), torch.trace(a).item(), dtype=torch.float64))
    torch.testing.assert_close(div, _autograd_traces(f, x), rtol=1e-12, atol=1e-12)
    _, div_chunked = divergence(f, x, chunk_size=5)
    torch.testing.assert_close(div_chunked, div)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(noise):
    net = _mlp(4)
    x = torch.randn(3, 4, dtype=torch.float64)
    _, exact = divergence(net, x)
    num_probes = 4000
    gen = torch.Generator().manual_seed(3)
    # One probe per row of a repeated batch gives the per-probe estimates vᵀJv (f acts per sample).
    xs = x.repeat(num_probes, 1)
    probes = sample_probes(xs, noise=noise, generator=gen)[0]
    _, single = divergence(net, xs, method="hutchinson", probes=probes)
    single = single.reshape(num_probes, 3)
    mean = single.mean(0)
    se = single.std(0) / math.sqrt(num_probes)  # standard error of the probe average
    assert bool(((mean - exact).abs() < 4 * se).all()), (mean, exact, se)
    assert bool((se > 0).all())
    # The library's own averaging over num_probes equals the mean of the individual estimates.
    p = probes.reshape(num_probes, 3, 4)[:50]
    _, avg = divergence(net, x, method="hutchinson", probes=p)
    torch.testing.assert_close(avg, single[:50].mean(0))


def test_hutchinson_rademacher_exact_for_diagonal_jacobian():
    # For a diagonal Jacobian, vᵀJv = Σ J_ii v_i² = tr J exactly when v_i² = 1 (Rademacher).
    x = torch.randn(4, 3, dtype=torch.float64)
    _, div = divergence(lambda z: torch.sin(z), x, method="hutchinson", num_probes=1)
    torch.testing.assert_close(div, torch.cos(x).sum(-1))


def test_probes_shape_and_fixed_probes_reproducible():
    net = _mlp(3)
    x = torch.randn(2, 3, dtype=torch.float64)
    v = sample_probes(x, num_probes=3, generator=torch.Generator().manual_seed(0))
    assert v.shape == (3, 2, 3)
    _, d1 = divergence(net, x, method="hutchinson", probes=v)
    _, d2 = divergence(net, x, method="hutchinson", probes=v)
    torch.testing.assert_close(d1, d2)
    _, d3 = divergence(net, x, method="hutchinson", probes=v[0])  # (B, *event) means one probe
    _, d4 = divergence(net, x, method="hutchinson", probes=v[:1])
    torch.testing.assert_close(d3, d4)


def test_gradient_through_exact_divergence_matches_double_backward():
    net = _mlp(3, hidden=8)
    x = torch.randn(4, 3, dtype=torch.float64)
    _, div = divergence(net, x, create_graph=True)
    assert div.requires_grad
    grads = torch.autograd.grad(div.sum(), list(net.parameters()), allow_unused=True, materialize_grads=True)

    # Second route: build each Jacobian diagonal with ordinary autograd (create_graph) and differentiate.
    xr = x.clone().requires_grad_(True)
    out = net(xr)
    ref = 0.0
    for i in range(3):
        (g,) = torch.autograd.grad(out[:, i].sum(), xr, create_graph=True)
        ref = ref + g[:, i]
    ref_grads = torch.autograd.grad(ref.sum(), list(net.parameters()), allow_unused=True, materialize_grads=True)
    assert any(bool(g.abs().sum() > 0) for g in grads)  # the last bias has zero gradient, others do not
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


def test_gradient_through_hutchinson_matches_finite_differences():
    lin = nn.Linear(3, 3).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    v = sample_probes(x, num_probes=2, generator=torch.Generator().manual_seed(1))
    _, div = divergence(lin, x, method="hutchinson", probes=v, create_graph=True)
    (g,) = torch.autograd.grad(div.sum(), lin.weight)
    h = 1e-6
    fd = torch.zeros_like(lin.weight)
    with torch.no_grad():
        for i in range(3):
            for j in range(3):
                lin.weight[i, j] += h
                up = divergence(lin, x, method="hutchinson", probes=v)[1].sum()
                lin.weight[i, j] -= 2 * h
                down = divergence(lin, x, method="hutchinson", probes=v)[1].sum()
                lin.weight[i, j] += h
                fd[i, j] = (up - down) / (2 * h)
    torch.testing.assert_close(g, fd, rtol=1e-6, atol=1e-8)


def test_no_graph_by_default():
    net = _mlp(2)
    out, div = divergence(net, torch.randn(3, 2, dtype=torch.float64))
    assert not out.requires_grad and not div.requires_grad


def test_divergence_fn_binds_options():
    est = divergence_fn("exact")
    x = torch.randn(2, 3)
    _, d = est(lambda z: 2 * z, x)
    torch.testing.assert_close(d, torch.full((2,), 6.0))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"method": "trace"}, ValueError, "unknown method 'trace'.*'exact', 'hutchinson'"),
        ({"method": "hutchinson", "noise": "uniform"}, ValueError, "unknown noise 'uniform'.*'rademacher'"),
        ({"method": "hutchinson", "num_probes": 0}, ValueError, "num_probes must be >= 1"),
        ({"method": "hutchinson", "probes": torch.ones(3, 2)}, ValueError, r"probes must have shape \(2, 3\)"),
        ({"probes": torch.ones(2, 3)}, ValueError, "only used with method='hutchinson'"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
    ],
)
def test_bad_arguments_raise(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        divergence(lambda z: z, torch.ones(2, 3), **kwargs)


def test_bad_f_raises():
    with pytest.raises(TypeError, match="f must be a callable"):
        divergence("net", torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"f returned shape \(2, 2\); expected \(2, 3\)"):
        divergence(lambda z: z[:, :2], torch.ones(2, 3))
    with pytest.raises(ValueError, match="x must have at least 2 dimensions"):
        divergence(lambda z: z, torch.ones(3))
