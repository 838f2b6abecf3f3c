"""probgen.flows.splines: the fast rational-quadratic spline kernel against Pyro's, its inverse and
log-derivative, its gradients, the Pyro-compatible transforms and their use in Flow.

Pyro's ``_monotonic_rational_spline`` is the reference: the kernel must reproduce its values and
gradients (float64, to 1e-10) on the same preprocessed parameters (softmax widths and heights,
softplus derivatives, as Pyro's ``Spline._params`` / ``ConditionalSpline._params`` make them).
"""

from __future__ import annotations

import pyro.distributions.transforms as pyro_transforms
import pytest
import torch
import torch.nn.functional as F
from pyro.distributions.transforms.spline import _calculate_knots, _monotonic_rational_spline

import probgen.flows.flow as flow_module
from probgen.flows import Flow
from probgen.flows.splines import (
    ConditionalSpline,
    ConditionedSpline,
    Spline,
    SplineAutoregressive,
    SplineCoupling,
    rational_quadratic_spline,
)

BOUND = 3.0
TOL = dict(atol=1e-10, rtol=1e-10)

# (input shape, parameter batch shape): Pyro's cases (same batch; parameters without batch, as in a
# coupling layer's lower Spline; a context batch broadcasting over sample dims) and a size-1 batch dim
SHAPES = [
    ((64, 3), (64, 3)),
    ((64, 3), (3,)),
    ((5, 16, 2), (16, 2)),
    ((5, 16, 2), (1, 16, 2)),
    ((4, 6, 2), (4, 1, 2)),
]


def _params(batch: tuple[int, ...], num_bins: int = 8, *, generator: torch.Generator | None = None,
            requires_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Widths and heights through a softmax, derivatives through a softplus, as Pyro's splines do."""
    kw = dict(dtype=torch.float64, generator=generator)
    w = torch.randn(*batch, num_bins, **kw).softmax(-1)
    h = torch.randn(*batch, num_bins, **kw).softmax(-1)
    d = F.softplus(torch.randn(*batch, num_bins - 1, **kw))
    return tuple(t.requires_grad_(requires_grad) for t in (w, h, d))


def _knots(lengths: torch.Tensor, min_length: float = 1e-3) -> torch.Tensor:
    """Pyro's knot positions for normalised lengths (the x knots for widths, the y knots for heights)."""
    num_bins = lengths.shape[-1]
    return _calculate_knots(min_length + (1 - min_length * num_bins) * lengths, -BOUND, BOUND)[1]


def _inputs(shape: tuple[int, ...], knots: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random points in [-1.3 B, 1.3 B] (some outside the box), with ±B, the knots and points 1e-9 off a knot."""
    x = (torch.rand(shape, dtype=torch.float64, generator=generator) * 2 - 1) * 1.3 * BOUND
    knots = knots.expand(*shape, knots.shape[-1])
    flat = x.reshape(-1, shape[-1])
    n = flat.shape[0]
    # row 0: -B, row 1: +B, rows 2..: a knot (each row a different knot index), every 4th row: off by 1e-9
    flat[0], flat[1] = -BOUND, BOUND
    k_flat = knots.reshape(-1, shape[-1], knots.shape[-1])
    for row in range(2, n, 2):
        k = row % knots.shape[-1]
        flat[row] = k_flat[row, :, k] + (1e-9 if row % 4 == 0 else 0.0)
    return flat.reshape(shape)


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("shapes", SHAPES, ids=lambda s: f"x{s[0]}-p{s[1]}")
def test_values_and_logdet_match_pyro(shapes, inverse: bool) -> None:
    x_shape, p_batch = shapes
    g = torch.Generator().manual_seed(1)
    w, h, d = _params(p_batch, generator=g)
    x = _inputs(x_shape, _knots(h if inverse else w), g)
    assert ((x < -BOUND) | (x > BOUND)).any() and (x == BOUND).any()
    expected = _monotonic_rational_spline(x, w, h, d, inverse=inverse, bound=BOUND)
    actual = rational_quadratic_spline(x, w, h, d, inverse=inverse, bound=BOUND)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape == x.shape
        torch.testing.assert_close(a, e, **TOL)
    outside = (x < -BOUND) | (x > BOUND)
    assert torch.equal(actual[0][outside], x[outside]) and (actual[1][outside] == 0).all()


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_parameters_may_carry_more_batch_dims_than_inputs(inverse: bool) -> None:
    # beyond Pyro (whose gather needs the inputs to carry every batch dim): same as expanding the inputs
    g = torch.Generator().manual_seed(8)
    w, h, d = _params((4, 10, 2), generator=g)
    x = torch.randn(10, 2, dtype=torch.float64, generator=g) * 2
    actual = rational_quadratic_spline(x, w, h, d, inverse=inverse, bound=BOUND)
    expected = rational_quadratic_spline(x.expand(4, 10, 2), w, h, d, inverse=inverse, bound=BOUND)
    for a, e in zip(actual, expected):
        assert a.shape == (4, 10, 2)
        torch.testing.assert_close(a, e, **TOL)


@pytest.mark.parametrize("options", [dict(min_bin_width=0.05, min_bin_height=0.01, min_derivative=0.2, eps=1e-4),
                                     dict(min_bin_width=0.0, min_bin_height=0.0, min_derivative=0.0, eps=0.0)])
def test_floors_and_eps_match_pyro(options) -> None:
    g = torch.Generator().manual_seed(2)
    w, h, d = _params((32, 2), num_bins=5, generator=g)
    x = (torch.rand(32, 2, dtype=torch.float64, generator=g) * 2 - 1) * 1.2 * BOUND
    for inverse in (False, True):
        expected = _monotonic_rational_spline(x, w, h, d, inverse=inverse, bound=BOUND, **options)
        actual = rational_quadratic_spline(x, w, h, d, inverse=inverse, bound=BOUND, **options)
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e, **TOL)


@pytest.mark.parametrize("shapes", SHAPES[:3], ids=lambda s: f"x{s[0]}-p{s[1]}")
def test_inverse_undoes_forward(shapes) -> None:
    x_shape, p_batch = shapes
    g = torch.Generator().manual_seed(3)
    w, h, d = _params(p_batch, generator=g)
    x = _inputs(x_shape, _knots(w), g)
    y, logdet = rational_quadratic_spline(x, w, h, d, bound=BOUND)
    x_back, inv_logdet = rational_quadratic_spline(y, w, h, d, inverse=True, bound=BOUND)
    # float64 round trip through the quadratic formula: errors of a few ulp of B
    torch.testing.assert_close(x_back, x, atol=1e-11, rtol=0)
    torch.testing.assert_close(inv_logdet, -logdet, atol=1e-9, rtol=0)


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_logdet_is_the_log_of_the_autograd_derivative(inverse: bool) -> None:
    g = torch.Generator().manual_seed(4)
    w, h, d = _params((50, 3), generator=g)
    x = _inputs((50, 3), _knots(h if inverse else w), g).requires_grad_(True)
    y, logdet = rational_quadratic_spline(x, w, h, d, inverse=inverse, bound=BOUND)
    # elementwise map: d y_i / d x_i is the gradient of sum(y) (the Jacobian is diagonal)
    (derivative,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(logdet, derivative.log(), **TOL)
    # and the Jacobian really is diagonal
    jac = torch.autograd.functional.jacobian(
        lambda z: rational_quadratic_spline(z, w[:2], h[:2], d[:2], inverse=inverse, bound=BOUND)[0], x[:2].detach()
    ).reshape(6, 6)
    assert torch.equal(jac, torch.diag(torch.diagonal(jac)))


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("shapes", [SHAPES[0], SHAPES[1], SHAPES[3]], ids=lambda s: f"x{s[0]}-p{s[1]}")
def test_gradients_match_pyro(shapes, inverse: bool) -> None:
    x_shape, p_batch = shapes
    g = torch.Generator().manual_seed(5)
    w, h, d = _params(p_batch, generator=g, requires_grad=True)
    x = _inputs(x_shape, _knots((h if inverse else w).detach()), g).requires_grad_(True)
    weights = torch.randn(2, *x_shape, dtype=torch.float64, generator=g)

    def grads(kernel):
        y, logdet = kernel(x, w, h, d, inverse=inverse, bound=BOUND)
        return torch.autograd.grad((weights[0] * y + weights[1] * logdet).sum(), (x, w, h, d))

    for name, a, e in zip("xwhd", grads(rational_quadratic_spline), grads(_monotonic_rational_spline)):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, e, **TOL, msg=lambda m: f"gradient w.r.t. {name}: {m}")


def test_float32_round_trip_and_dtype() -> None:
    w, h, d = (t.float() for t in _params((128, 2), generator=torch.Generator().manual_seed(6)))
    x = torch.randn(128, 2, generator=torch.Generator().manual_seed(7)) * 2
    y, logdet = rational_quadratic_spline(x, w, h, d, bound=BOUND)
    x_back, inv_logdet = rational_quadratic_spline(y, w, h, d, inverse=True, bound=BOUND)
    assert y.dtype == logdet.dtype == torch.float32
    torch.testing.assert_close(x_back, x, atol=1e-4, rtol=0)
    torch.testing.assert_close(inv_logdet, -logdet, atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------------ transforms / Flow
def _pyro_flow(monkeypatch, *args, **kwargs) -> Flow:
    """The same Flow built on Pyro's original SplineCoupling / SplineAutoregressive."""
    with monkeypatch.context() as m:
        m.setattr(flow_module, "SplineCoupling", pyro_transforms.SplineCoupling)
        m.setattr(flow_module, "SplineAutoregressive", pyro_transforms.SplineAutoregressive)
        return Flow(*args, **kwargs)


@pytest.mark.parametrize("dim, kind, order", [(2, "spline", "quadratic"), (3, "spline-ar", "quadratic"),
                                              (3, "spline", "quadratic"), (2, "spline-ar", "linear")])
def test_flow_matches_pyro_classes_and_loads_their_state_dict(monkeypatch, dim, kind, order) -> None:
    opts = dict(num_layers=2, hidden_dims=(16,), count_bins=6, bound=2.5, order=order)
    torch.manual_seed(0)
    fast = Flow(dim, kind, **opts).double()
    torch.manual_seed(0)
    slow = _pyro_flow(monkeypatch, dim, kind, **opts).double()
    layer_type = SplineCoupling if kind == "spline" else SplineAutoregressive
    assert sum(isinstance(m, layer_type) for m in fast.layers) == 2
    assert not any(isinstance(m, layer_type) for m in slow.layers)
    # same parameter names and the same initial values: the random draws happen in the same order
    fast_state, slow_state = fast.state_dict(), slow.state_dict()
    assert list(fast_state) == list(slow_state)
    for key in slow_state:
        assert torch.equal(fast_state[key], slow_state[key]), key

    x = torch.randn(200, dim, dtype=torch.float64) * 1.5
    slow.log_prob(x)  # ActNorm data initialisation, then train the old one a little so the weights are not the init
    opt = torch.optim.Adam(slow.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        slow.loss(x).backward()
        opt.step()
    fast.load_state_dict(slow.state_dict())  # a checkpoint of the old classes loads (strict)
    torch.testing.assert_close(fast.log_prob(x), slow.log_prob(x), **TOL)
    torch.manual_seed(1)
    samples = fast.sample(50)
    torch.manual_seed(1)
    torch.testing.assert_close(samples, slow.sample(50), **TOL)
    fast_loss, slow_loss = fast.loss(x), slow.loss(x)
    fast_grads = torch.autograd.grad(fast_loss, list(fast.parameters()))
    slow_grads = torch.autograd.grad(slow_loss, list(slow.parameters()))
    for a, e in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, e, atol=1e-9, rtol=1e-9)


def test_transform_classes_are_pyro_subclasses_with_pyro_keys() -> None:
    from pyro.nn import DenseNN

    torch.manual_seed(0)
    spline = Spline(3, count_bins=5, bound=2.0, order="quadratic")
    torch.manual_seed(0)
    reference = pyro_transforms.Spline(3, count_bins=5, bound=2.0, order="quadratic")
    assert isinstance(spline, pyro_transforms.Spline) and isinstance(spline, ConditionedSpline)
    assert spline.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(20, 3) * 2
    y = spline(x)
    torch.testing.assert_close(y, reference(x), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(spline.log_abs_det_jacobian(x, y), reference.log_abs_det_jacobian(x, reference(x)),
                               atol=1e-5, rtol=1e-5)
    net = DenseNN(2, [8], [3 * 5, 3 * 5, 3 * 4])
    conditioned = ConditionalSpline(net, 3, 5, bound=2.0, order="quadratic").condition(torch.randn(20, 2))
    assert type(conditioned) is ConditionedSpline
    torch.testing.assert_close(conditioned.inv(conditioned(x)), x, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------- errors
def test_invalid_arguments_name_the_argument() -> None:
    w, h, d = _params((4, 2))
    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"bound must be > 0, got 0"):
        rational_quadratic_spline(x, w, h, d, bound=0.0)
    with pytest.raises(ValueError, match=r"bound must be > 0, got -1"):
        rational_quadratic_spline(x, w, h, d, bound=-1.0)
    with pytest.raises(ValueError, match=r"heights must have the 8 bins of widths in its last dimension, "
                                         r"got shape \(4, 2, 7\)"):
        rational_quadratic_spline(x, w, h[..., :7], d)
    with pytest.raises(ValueError, match=r"derivatives must have num_bins - 1 = 7 interior knots .* got shape "
                                         r"\(4, 2, 8\)"):
        rational_quadratic_spline(x, w, h, torch.ones(4, 2, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"min_bin_width \* num_bins must be <= 1, got min_bin_width=0.2 with "
                                         r"num_bins=8 .* use min_bin_width <= 0.125"):
        rational_quadratic_spline(x, w, h, d, min_bin_width=0.2)
    with pytest.raises(ValueError, match=r"min_bin_height \* num_bins must be <= 1"):
        rational_quadratic_spline(x, w, h, d, min_bin_height=0.2)
    with pytest.raises(ValueError, match=r"min_derivative must be >= 0, got -0.1"):
        rational_quadratic_spline(x, w, h, d, min_derivative=-0.1)
    with pytest.raises(ValueError, match=r"batch shapes of inputs and the spline parameters must broadcast, "
                                         r"got inputs \(5, 2\), widths\[\.\.\., 0\] \(4, 2\)"):
        rational_quadratic_spline(torch.randn(5, 2, dtype=torch.float64), w, h, d)
    with pytest.raises(TypeError, match=r"inputs must be a torch.Tensor, got list"):
        rational_quadratic_spline([0.0, 1.0], w, h, d)
    with pytest.raises(TypeError, match=r"widths must have the dtype and device of inputs \(torch.float32, cpu\), "
                                        r"got torch.float64"):
        rational_quadratic_spline(x.float(), w, h, d)
    with pytest.raises(TypeError, match=r"inverse must be a bool, got str 'yes'"):
        rational_quadratic_spline(x, w, h, d, inverse="yes")
    with pytest.raises(ValueError, match=r"derivatives must have at least 2 dimensions"):
        rational_quadratic_spline(x, w, h, torch.ones(7, dtype=torch.float64))
