"""probgen's lean Dormand–Prince integrator (probgen.ops.dopri) against torchdiffeq's dopri5, step for step."""

from __future__ import annotations

import pytest
import torch
from torchdiffeq import odeint

from probgen.ops import ode
from probgen.ops.dopri import dopri5_solve


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)).double()


def _fields(net, t0, t1, shape):
    def velocity(x, t):
        return net(torch.cat([x, t[:, None]], 1))
    lo, hi = min(t0, t1), max(t0, t1)
    return (ode._Field(velocity, lo, hi, "exact", None, shape), ode._Field(velocity, lo, hi, "exact", None, shape))


def _torchdiffeq(field, state, t0, t1, batch, tol=1e-6):
    times = torch.tensor([t0, t1], dtype=state.dtype)
    return odeint(field, state, times, method="dopri5", rtol=tol, atol=tol,
                  options={"step_t": times[1:], "norm": ode._mixed_norm(batch)})[-1]


@pytest.mark.parametrize("t0, t1", [(0.0, 1.0), (1.0, 0.0), (0.3, 2.5)])
def test_same_steps_and_end_state_as_torchdiffeq_in_float64(t0, t1):
    net = _net()
    x = torch.randn(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    theirs, ours = _fields(net, t0, t1, x.shape)
    state = ode._flat_state(x)
    with torch.no_grad():
        expected = _torchdiffeq(theirs, state, t0, t1, 40)
        got, nfe = dopri5_solve(ours, state, t0, t1, rtol=1e-6, atol=1e-6, norm=ode._mixed_norm(40))
    # the same algorithm: the same accepted and rejected steps, so the same evaluations and (up to rounding)
    # the same end point and log-determinant
    assert nfe == ours.nfe == theirs.nfe
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)


def test_gradients_through_the_solve_equal_torchdiffeqs():
    net = _net()
    x = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    grads = []
    for lean in (True, False):
        xx = x.clone().requires_grad_(True)
        velocity = lambda y, t: net(torch.cat([y, t[:, None]], 1))  # noqa: E731
        if lean:
            end, logdet, _ = ode.odeint_logdet(velocity, xx, 0.0, 1.0, solver=ode.ODESolver(rtol=1e-7, atol=1e-7))
        else:
            field = ode._Field(velocity, 0.0, 1.0, "exact", None, xx.shape)
            state = _torchdiffeq(field, ode._flat_state(xx), 0.0, 1.0, 16, tol=1e-7)
            end, logdet = state[:-16].view(xx.shape), state[-16:]
        loss = (end**2).sum() + logdet.sum()
        grads.append(torch.autograd.grad(loss, [xx, *net.parameters()]))
    for ours, theirs in zip(*grads):
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-9)


def test_ode_core_uses_it_for_dopri5_and_counts_its_evaluations():
    calls = []
    x = torch.ones(3, 2, dtype=torch.float64)

    def velocity(y, t):
        calls.append(t)
        return -y

    end, logdet, nfe = ode.odeint_logdet(velocity, x, 0.0, 1.0)
    assert nfe == len(calls) and all(isinstance(t, torch.Tensor) and t.shape == (3,) for t in calls)
    assert torch.allclose(end, x * torch.exp(torch.tensor(-1.0, dtype=torch.float64)), atol=1e-6)
    assert torch.allclose(logdet, torch.full((3,), -2.0, dtype=torch.float64), atol=1e-6)
    xs, nfe_v = ode.odeint_velocity(lambda y, t: -y, x, 1.0, 0.0, solver=ode.ODESolver())
    assert xs.shape == (2, 3, 2) and torch.equal(xs[0], x)
    assert torch.allclose(xs[-1], x * torch.exp(torch.tensor(1.0, dtype=torch.float64)), atol=1e-6)


def test_a_non_finite_field_is_a_clear_error():
    def bad(t, y):
        return y * float("nan") if t > 0.5 else -y

    rms = lambda e: e.pow(2).mean().sqrt()  # noqa: E731
    with pytest.raises(FloatingPointError, match="non-finite state in the ODE solve"):
        dopri5_solve(bad, torch.ones(4), 0.0, 1.0, rtol=1e-5, atol=1e-5, norm=rms)


def test_zero_span_returns_the_start_without_evaluating():
    y = torch.ones(2)
    out, nfe = dopri5_solve(lambda t, y: y, y, 0.5, 0.5, rtol=1e-5, atol=1e-5, norm=lambda e: e.abs().max())
    assert out is y and nfe == 0
