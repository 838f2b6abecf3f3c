"""A fast rational-quadratic spline kernel and the Pyro spline transforms that use it.

:func:`rational_quadratic_spline` computes the monotonic rational-quadratic spline of Durkan et al.
(2019) and its inverse, elementwise, with exactly the semantics of Pyro's
``pyro.distributions.transforms.spline._monotonic_rational_spline`` (quadratic order): the same
minimum bin widths, heights and derivatives, the same boundary derivatives ``1 - min_derivative``,
the same ``eps``-shifted bin search and the identity outside ``[-bound, bound]``. It does the same
work with fewer tensor operations: the knots come from one cumulative sum, the bin index from one
``torch.searchsorted``, and the six quantities of each input's bin (left and right knot in ``x``
and ``y``, left and right derivative) from one ``gather`` on a stacked tensor (Pyro's kernel runs
seven gathers and a comparison-sum search).

The classes below are Pyro's spline transforms with only that kernel swapped in (rational-linear
splines, ``order="linear"``, fall back to Pyro's kernel). Their parameters, module names and
``state_dict`` keys are Pyro's, so a checkpoint of a flow built on Pyro's classes loads unchanged:

* :class:`ConditionedSpline` — Pyro's ``ConditionedSpline`` (the spline of given parameters);
* :class:`Spline` — Pyro's ``Spline`` (free parameters; the first half of a coupling layer);
* :class:`ConditionalSpline` — Pyro's ``ConditionalSpline``, whose ``condition`` returns a
  :class:`ConditionedSpline`;
* :class:`SplineCoupling`, :class:`SplineAutoregressive` — Pyro's layers built on the above.

Reference: Durkan, Bekasov, Murray & Papamakarios (2019), *Neural Spline Flows*, arXiv:1906.04032.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms.spline import ConditionalSpline as _PyroConditionalSpline
from pyro.distributions.transforms.spline import ConditionedSpline as _PyroConditionedSpline
from pyro.distributions.transforms.spline import Spline as _PyroSpline
from pyro.distributions.transforms.spline_autoregressive import SplineAutoregressive as _PyroSplineAutoregressive
from pyro.distributions.transforms.spline_coupling import SplineCoupling as _PyroSplineCoupling
from torch import Tensor

from probgen._checks import check_bool, check_nonnegative, check_positive, check_tensor

__all__ = [
    "rational_quadratic_spline",
    "ConditionedSpline",
    "Spline",
    "ConditionalSpline",
    "SplineCoupling",
    "SplineAutoregressive",
]


def rational_quadratic_spline(
    inputs: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    *,
    inverse: bool = False,
    bound: float = 3.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
    eps: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Monotonic rational-quadratic spline on ``[-B, B]`` (identity outside) and its log-derivative.

    The normalised bin widths ``w`` and heights ``h`` (each summing to 1 over the ``K`` bins, e.g. a
    softmax) and the positive interior derivatives ``d`` (e.g. a softplus) are first floored,

    .. math::

        w_k \\leftarrow m_w + (1 - K m_w) w_k, \\quad h_k \\leftarrow m_h + (1 - K m_h) h_k,
        \\quad d_k \\leftarrow m_d + d_k, \\quad d_0 = d_K = 1 - m_d,

    and the knots are ``x_k = -B + 2B \\sum_{j<k} w_j`` and ``y_k = -B + 2B \\sum_{j<k} h_j``
    (``x_0 = y_0 = -B``, ``x_K = y_K = B``). In bin ``k`` (the ``k`` with
    ``x_k + \\epsilon \\le x < x_{k+1} + \\epsilon``), with ``\\xi = (x - x_k) / (x_{k+1} - x_k)`` and
    slope ``s_k = (y_{k+1} - y_k) / (x_{k+1} - x_k)`` (Durkan et al. 2019, eqs. 4 and 5),

    .. math::

        y = y_k + \\frac{(y_{k+1} - y_k)\\,[s_k \\xi^2 + d_k \\xi (1 - \\xi)]}
                        {s_k + (d_{k+1} + d_k - 2 s_k)\\, \\xi (1 - \\xi)},

        \\frac{dy}{dx} = \\frac{s_k^2\\,[d_{k+1} \\xi^2 + 2 s_k \\xi (1 - \\xi) + d_k (1 - \\xi)^2]}
                              {[s_k + (d_{k+1} + d_k - 2 s_k)\\, \\xi (1 - \\xi)]^2}.

    The inverse solves the quadratic ``a \\xi^2 + b \\xi + c = 0`` for ``\\xi`` with the numerically
    stable root ``\\xi = 2c / (-b - \\sqrt{b^2 - 4ac})`` (eqs. 6 to 8). Outside ``[-B, B]`` the map is
    the identity with log-derivative 0. The values and gradients are those of Pyro's
    ``_monotonic_rational_spline`` with ``lambdas=None``; unlike it, no host synchronisation is made
    (Pyro asserts that the discriminant is non-negative; here a round-off negative one is clamped to 0).

    Shapes: ``inputs: (..., D)``; ``widths, heights: (..., D, K)``; ``derivatives: (..., D, K - 1)``.
    The parameters' batch dimensions broadcast against those of ``inputs`` (e.g. a ``(D, K)``
    parameter set for a ``(B, D)`` batch, or ``(B, D, K)`` parameters computed from a context).

    Args:
        inputs: points ``x`` (``y`` when ``inverse=True``).
        widths: normalised bin widths, positive and summing to 1 over the last dimension.
        heights: normalised bin heights, positive and summing to 1 over the last dimension.
        derivatives: positive derivatives at the ``K - 1`` interior knots.
        inverse: compute ``x = g^{-1}(y)`` and ``log|dx/dy|`` instead.
        bound: half-width ``B > 0`` of the box ``[-B, B] x [-B, B]``.
        min_bin_width: floor ``m_w`` of the bin widths, as a fraction of ``2B`` (``K m_w <= 1``).
        min_bin_height: floor ``m_h`` of the bin heights, as a fraction of ``2B`` (``K m_h <= 1``).
        min_derivative: floor ``m_d`` added to the interior derivatives.
        eps: shift of the knots in the bin search (a point on a knot belongs to the bin on its left).

    Returns:
        ``(outputs, logabsdet)``, both of the broadcast shape of ``inputs`` and the parameters'
        batch shape: ``g(x)`` and ``log|g'(x)|`` elementwise (or ``g^{-1}(y)`` and
        ``log|dg^{-1}/dy|``, which is ``-log|g'(g^{-1}(y))|``).

    Raises:
        ValueError: for a non-positive ``bound``, a bin count that differs between ``widths``,
            ``heights`` and ``derivatives``, floors too large for the bin count, or batch shapes that
            do not broadcast.
        TypeError: for non-tensors, non-floating tensors, or tensors of different dtypes or devices.

    Reference:
        Durkan, Bekasov, Murray & Papamakarios (2019), *Neural Spline Flows*, arXiv:1906.04032.

    Example:
        >>> x = torch.linspace(-4.0, 4.0, 5).reshape(1, 5)
        >>> w, h = torch.full((5, 8), 1 / 8).softmax(-1), torch.rand(5, 8).softmax(-1)
        >>> d = torch.nn.functional.softplus(torch.randn(5, 7))
        >>> y, logdet = rational_quadratic_spline(x, w, h, d, bound=3.0)
        >>> x_back, inv_logdet = rational_quadratic_spline(y, w, h, d, inverse=True, bound=3.0)
        >>> bool(torch.allclose(x_back, x, atol=1e-5)), bool(torch.allclose(inv_logdet, -logdet, atol=1e-5))
        (True, True)
        >>> y[0, 0].item(), logdet[0, 0].item()          # identity outside [-3, 3]
        (-4.0, 0.0)
    """
    _check_spline_args(inputs, widths, heights, derivatives, inverse, bound, min_bin_width, min_bin_height,
                       min_derivative, eps)
    return _rational_quadratic_spline(
        inputs, widths, heights, derivatives, inverse=inverse, bound=float(bound),
        min_bin_width=float(min_bin_width), min_bin_height=float(min_bin_height),
        min_derivative=float(min_derivative), eps=float(eps),
    )


def _check_spline_args(inputs: Any, widths: Any, heights: Any, derivatives: Any, inverse: Any, bound: Any,
                       min_bin_width: Any, min_bin_height: Any, min_derivative: Any, eps: Any) -> None:
    """Validate the arguments of :func:`rational_quadratic_spline` (no host synchronisation)."""
    check_tensor("inputs", inputs, min_ndim=1, finite=False, nonempty=False)
    for name, t in (("widths", widths), ("heights", heights), ("derivatives", derivatives)):
        check_tensor(name, t, min_ndim=2, finite=False, nonempty=False)
        if t.dtype != inputs.dtype or t.device != inputs.device:
            raise TypeError(
                f"{name} must have the dtype and device of inputs ({inputs.dtype}, {inputs.device}), "
                f"got {t.dtype} on {t.device}"
            )
    check_bool("inverse", inverse)
    check_positive("bound", bound)
    num_bins = widths.shape[-1]
    if num_bins < 1:
        raise ValueError(f"widths must have at least 1 bin in its last dimension, got shape {tuple(widths.shape)}")
    if heights.shape[-1] != num_bins:
        raise ValueError(
            f"heights must have the {num_bins} bins of widths in its last dimension, got shape "
            f"{tuple(heights.shape)} (widths: {tuple(widths.shape)})"
        )
    if derivatives.shape[-1] != num_bins - 1:
        raise ValueError(
            f"derivatives must have num_bins - 1 = {num_bins - 1} interior knots in its last dimension, got shape "
            f"{tuple(derivatives.shape)} (widths: {tuple(widths.shape)})"
        )
    for name, value in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
        if check_nonnegative(name, value) * num_bins > 1.0:
            raise ValueError(
                f"{name} * num_bins must be <= 1, got {name}={value} with num_bins={num_bins} "
                f"(product {value * num_bins:g}); use {name} <= {1.0 / num_bins:g}"
            )
    check_nonnegative("min_derivative", min_derivative)
    check_nonnegative("eps", eps)
    shapes = {"inputs": tuple(inputs.shape), "widths[..., 0]": tuple(widths.shape[:-1]),
              "heights[..., 0]": tuple(heights.shape[:-1]), "derivatives[..., 0]": tuple(derivatives.shape[:-1])}
    try:
        torch.broadcast_shapes(*shapes.values())
    except RuntimeError:
        listing = ", ".join(f"{k} {v}" for k, v in shapes.items())
        raise ValueError(
            f"the batch shapes of inputs and the spline parameters must broadcast, got {listing}"
        ) from None


def _rational_quadratic_spline(
    inputs: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    *,
    inverse: bool = False,
    bound: float = 3.0,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
    eps: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """:func:`rational_quadratic_spline` without argument checks (for callers that built the parameters).

    The operation count is what costs on small batches, so the parameters go through few, fused steps:
    widths and heights are floored and cumulatively summed as one ``(..., D, 2, K)`` tensor; the interior knots and
    derivatives form one ``(..., D, 3, K - 1)`` tensor, padded once and shifted by the constant end
    values (``-B``, ``B`` for the knots, ``1 - min_derivative`` for the derivatives; no gradient flows
    to the ends, as in Pyro); one ``gather`` then reads the left and right knot and derivative of each
    input's bin.
    """
    num_bins = widths.shape[-1]
    if min_bin_width == min_bin_height:
        lengths = torch.stack((widths, heights), dim=-2) * (1.0 - min_bin_width * num_bins) + min_bin_width
    else:
        lengths = torch.stack((widths * (1.0 - min_bin_width * num_bins) + min_bin_width,
                               heights * (1.0 - min_bin_height * num_bins) + min_bin_height), dim=-2)
    # interior knots x_1..x_{K-1}, y_1..y_{K-1} and derivatives d_1..d_{K-1}: (..., D, 3, K - 1)
    interior = torch.cat(
        (torch.cumsum(lengths[..., :-1], dim=-1) * (2.0 * bound) - bound, (derivatives + min_derivative).unsqueeze(-2)),
        dim=-2,
    )
    ends = interior.new_zeros(3, num_bins + 1)
    ends[:2, 0], ends[:2, -1] = -bound, bound
    ends[2, 0] = ends[2, -1] = 1.0 - min_derivative
    rows = F.pad(interior, (1, 1)) + ends  # (..., D, 3, K + 1): knots x, knots y, derivatives d

    batch = torch.broadcast_shapes(inputs.shape, rows.shape[:-2])
    knots = rows[..., 1 if inverse else 0, :].detach() + eps
    if knots.shape[:-1] != batch:
        knots = knots.expand(*batch, num_bins + 1).contiguous()
    values = inputs.detach().unsqueeze(-1)
    if values.shape[:-1] != batch:
        values = values.expand(*batch, 1)
    values = values.contiguous()  # searchsorted copies (and warns about) non-contiguous arguments
    # k = (number of knots with knot + eps <= input) - 1, clamped to a bin: Pyro's comparison-sum search
    bin_idx = torch.searchsorted(knots, values, right=True).sub_(1).clamp_(0, num_bins - 1)
    index = (bin_idx + torch.arange(2, device=bin_idx.device)).unsqueeze(-2).expand(*batch, 3, 2)
    selected = rows.expand(*batch, 3, num_bins + 1).gather(-1, index)  # (..., D, 3, 2)
    x_k, x_k1, y_k, y_k1, d_k, d_k1 = selected.flatten(-2).unbind(-1)

    w_k = x_k1 - x_k
    h_k = y_k1 - y_k
    delta = h_k / w_k
    two_delta = 2 * delta
    slope_sum = d_k + d_k1 - two_delta
    inside = inputs.abs() <= bound  # [-B, B]; NaN is outside, as in Pyro's two comparisons
    if inverse:
        dy = inputs - y_k
        a = dy * slope_sum + h_k * (delta - d_k)
        b = h_k * d_k - dy * slope_sum
        c = -delta * dy
        discriminant = (b.square() - 4 * a * c).masked_fill(~inside, 0.0).clamp_min(0.0)
        theta = (2 * c) / (-b - discriminant.sqrt())
        outputs = theta * w_k + x_k
    else:
        theta = (inputs - x_k) / w_k
    one_minus_theta = 1 - theta
    theta_one_minus_theta = theta * one_minus_theta
    theta_sq = theta.square()
    denominator = delta + slope_sum * theta_one_minus_theta
    if not inverse:
        outputs = y_k + h_k * (delta * theta_sq + d_k * theta_one_minus_theta) / denominator
    derivative_numerator = delta.square() * (
        d_k1 * theta_sq + two_delta * theta_one_minus_theta + d_k * one_minus_theta.square()
    )
    logabsdet = torch.log(derivative_numerator / denominator.square())  # log(num) - 2 log(den), one log
    if inverse:
        logabsdet = -logabsdet
    outputs = torch.where(inside, outputs, inputs)
    logabsdet = torch.where(inside, logabsdet, 0.0)
    return outputs, logabsdet


# ---------------------------------------------------------------------------------------- transforms
class ConditionedSpline(_PyroConditionedSpline):
    """Pyro's ``ConditionedSpline`` computed with :func:`rational_quadratic_spline` (quadratic order).

    Same constructor ``ConditionedSpline(params, bound=3.0, order="linear")``: ``params`` is a tuple
    ``(widths, heights, derivatives, lambdas)`` or a callable returning one (see Pyro's
    ``ConditionalSpline``). ``order="linear"`` (rational-linear splines of Dolatabadi et al. 2020)
    uses Pyro's kernel.

    Example:
        >>> w, h = torch.rand(3, 8).softmax(-1), torch.rand(3, 8).softmax(-1)
        >>> d = torch.nn.functional.softplus(torch.randn(3, 7))
        >>> t = ConditionedSpline((w, h, d, None), bound=3.0, order="quadratic")
        >>> x = torch.randn(10, 3)
        >>> bool(torch.allclose(t.inv(t(x)), x, atol=1e-5))
        True
    """

    def spline_op(self, x: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
        if self.order != "quadratic":
            return super().spline_op(x, **kwargs)
        w, h, d, _ = self._params() if callable(self._params) else self._params
        return _rational_quadratic_spline(x, w, h, d, bound=self.bound, **kwargs)


class Spline(ConditionedSpline, _PyroSpline):
    """Pyro's ``Spline`` (free parameters per dimension) computed with :func:`rational_quadratic_spline`.

    Same constructor ``Spline(input_dim, count_bins=8, bound=3.0, order="linear")`` and parameters
    (``unnormalized_widths``, ``unnormalized_heights``, ``unnormalized_derivatives`` and, for
    ``order="linear"``, ``unnormalized_lambdas``).

    Example:
        >>> t = Spline(3, count_bins=8, bound=3.0, order="quadratic")
        >>> x = torch.randn(10, 3)
        >>> bool(torch.allclose(t.inv(t(x)), x, atol=1e-5))
        True
    """


class ConditionalSpline(_PyroConditionalSpline):
    """Pyro's ``ConditionalSpline`` whose :meth:`condition` returns a fast :class:`ConditionedSpline`.

    Same constructor ``ConditionalSpline(nn, input_dim, count_bins, bound=3.0, order="linear")``.

    Example:
        >>> from pyro.nn import DenseNN
        >>> net = DenseNN(2, [16], [3 * 8, 3 * 8, 3 * 7])
        >>> t = ConditionalSpline(net, 3, 8, bound=3.0, order="quadratic").condition(torch.randn(10, 2))
        >>> t(torch.randn(10, 3)).shape
        torch.Size([10, 3])
    """

    def condition(self, context: Tensor) -> ConditionedSpline:
        return ConditionedSpline(partial(self._params, context), bound=self.bound, order=self.order)


class SplineCoupling(_PyroSplineCoupling):
    """Pyro's ``SplineCoupling`` over the fast :class:`Spline` and :class:`ConditionalSpline`.

    Same constructor ``SplineCoupling(input_dim, split_dim, hypernet, count_bins=8, bound=3.0,
    order="linear", identity=False)``, submodules (``lower_spline``, ``upper_spline``) and
    ``state_dict`` keys; the parameters are drawn from the global generator in the same order.

    Example:
        >>> from pyro.nn import DenseNN
        >>> net = DenseNN(1, [16], [1 * 8, 1 * 8, 1 * 7])
        >>> t = SplineCoupling(2, 1, net, count_bins=8, order="quadratic")
        >>> x = torch.randn(10, 2)
        >>> bool(torch.allclose(t.inv(t(x)), x, atol=1e-5))
        True
    """

    def __init__(self, input_dim: int, split_dim: int, hypernet: Any, count_bins: int = 8, bound: float = 3.0,
                 order: str = "linear", identity: bool = False) -> None:
        # Pyro's __init__ with the fast classes: building Pyro's lower spline first and replacing it would
        # draw extra random numbers and change the initialisation of every later layer.
        TransformModule.__init__(self, cache_size=1)
        self.lower_spline = Spline(split_dim, count_bins, bound, order)
        self.upper_spline = ConditionalSpline(hypernet, input_dim - split_dim, count_bins, bound, order)
        self.split_dim = split_dim
        self.identity = identity


class SplineAutoregressive(_PyroSplineAutoregressive):
    """Pyro's ``SplineAutoregressive`` over the fast :class:`ConditionalSpline`.

    Same constructor ``SplineAutoregressive(input_dim, autoregressive_nn, count_bins=8, bound=3.0,
    order="linear")``, submodules (``arn``, ``spline``) and ``state_dict`` keys.

    Example:
        >>> from pyro.nn import AutoRegressiveNN
        >>> arn = AutoRegressiveNN(3, [16], param_dims=[8, 8, 7])
        >>> t = SplineAutoregressive(3, arn, count_bins=8, order="quadratic")
        >>> x = torch.randn(10, 3)
        >>> bool(torch.allclose(t.inv(t(x)), x, atol=1e-5))
        True
    """

    def __init__(self, input_dim: int, autoregressive_nn: Any, count_bins: int = 8, bound: float = 3.0,
                 order: str = "linear") -> None:
        super().__init__(input_dim, autoregressive_nn, count_bins=count_bins, bound=bound, order=order)
        self.spline = ConditionalSpline(autoregressive_nn, input_dim, count_bins, bound, order)
