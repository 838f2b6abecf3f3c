r"""Scale-free models: continuous data standardized *inside* the model by an affine bijection.

:class:`Standardized` wraps any model of continuous data (a flow, a CNF, a score SDE, a DDPM) in the
per-dimension affine bijection

.. math::

    z = (x - \mu) / s, \qquad
    \log p_X(x) = \log p_Z(z) - \sum_{i=1}^{D} \log s_i,

with ``loc`` :math:`\mu` and ``scale`` :math:`s` fitted once from the training data (their mean and
standard deviation per dimension, :func:`standardize`) and stored as buffers, so checkpoints round-trip.
The wrapped model trains on ``z``; ``log_prob``, ``elbo`` and ``log_likelihood`` add the log-determinant,
so they stay densities (or bounds) of the *original* values, and ``sample`` maps draws back through
:math:`x = \mu + s z`. Data in metres or in thousands, or shifted by 100, then train as unit-scale data do.

Example:
    >>> import torch
    >>> from probgen.flows import Flow
    >>> x = torch.randn(500, 2) * 50 + 100
    >>> model = standardize(Flow(2, "realnvp", num_layers=2), x)
    >>> model.loc.shape, model.log_prob(x[:3]).shape, model.sample(4).shape
    (torch.Size([2]), torch.Size([3]), torch.Size([4, 2]))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Standardized", "standardize", "Whitened", "whiten"]

#: members of the wrapped model that the wrapper does not pass through: they would see unstandardized data
_NOT_FORWARDED = frozenset({"training_step", "configure_optimizers", "score", "energy", "encode", "reconstruct"})


class Standardized(nn.Module):
    r"""A model of ``z = (x - loc) / scale`` presented as a model of ``x`` (see the module docstring).

    Args:
        model: the wrapped model of standardized data (an ``nn.Module`` with ``loss`` and ``sample``), or,
            when rebuilt from a checkpoint, ``{"family": ..., "config": {...}}`` naming it in the family table.
        event_shape: shape of one data point (default: ``model.event_shape``).
        loc: per-dimension shift :math:`\mu`, broadcastable to ``event_shape`` (default 0).
        scale: per-dimension scale :math:`s > 0` (default 1).
        gaussian_weight: :math:`w \in [0, 1)`; with ``w > 0`` the model of ``z`` is the defensive mixture
            :math:`p_Z(z) = (1 - w)\, q(z) + w\, \mathcal N(z; 0, I)` of the wrapped model :math:`q` and the
            standard normal, which in ``x`` is the Gaussian fitted to the data (diagonal here, full covariance
            for :class:`Whitened`). It bounds the log-density of any point from below by
            :math:`\log w` plus the Gaussian's, so a test point far outside the training data costs at most
            :math:`-\log w` nats more than under the Gaussian (a flow's layers extrapolate without such a
            bound), at a price of at most :math:`-\log(1 - w)` nats anywhere (Hesterberg, 1995, "Weighted average
            importance sampling and defensive mixture distributions"). ``loss`` is then the mixture's mean
            negative log-likelihood, so the wrapped model needs a differentiable ``log_prob`` (flows).

    Attributes:
        family: ``"standardized"`` (checkpoint registry key); ``inner_family`` is the wrapped model's.

    Other attributes (``kind``, ``sde``, ``num_steps``, ...) read through to the wrapped model.

    Example:
        >>> import torch, math
        >>> from probgen.flows import Flow
        >>> flow = Flow(2, "realnvp", num_layers=2)
        >>> m = Standardized(flow, loc=torch.tensor([100.0, 100.0]), scale=torch.tensor([50.0, 50.0]))
        >>> z = torch.randn(3, 2)
        >>> bool(torch.allclose(m.log_prob(100 + 50 * z), flow.log_prob(z) - 2 * math.log(50), atol=1e-4))
        True
    """

    family = "standardized"

    def __init__(
        self,
        model: nn.Module | dict[str, Any],
        *,
        event_shape: tuple[int, ...] | list[int] | None = None,
        loc: Tensor | None = None,
        scale: Tensor | None = None,
        gaussian_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(model, dict):
            from probgen.checkpoint import resolve_family

            if set(model) != {"family", "config"}:
                raise ValueError(f"model must be an nn.Module or {{'family': ..., 'config': {{...}}}}, got keys "
                                 f"{sorted(model)}")
            model = resolve_family(model["family"])(**model["config"])
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if callable(getattr(model, "training_step", None)):
            raise ValueError(f"model: {type(model).__name__} trains with its own training_step; only models "
                             "trained through loss(x) can be standardized")
        if event_shape is None:
            event_shape = getattr(model, "event_shape", None)
            if event_shape is None:
                raise ValueError(f"event_shape is required: {type(model).__name__} has no event_shape")
        self.model = model
        self.event_shape = tuple(int(s) for s in event_shape)
        loc = torch.zeros(self.event_shape) if loc is None else torch.as_tensor(loc, dtype=torch.float32)
        scale = torch.ones(self.event_shape) if scale is None else torch.as_tensor(scale, dtype=torch.float32)
        loc, scale = (t.expand(self.event_shape).clone() for t in (loc, scale))
        if not (torch.isfinite(scale).all() and (scale > 0).all() and torch.isfinite(loc).all()):
            raise ValueError("scale must be finite and > 0 and loc finite in every dimension")
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)
        self.gaussian_weight = _check_gaussian_weight(gaussian_weight, model)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in _NOT_FORWARDED or name.startswith("__") or name == "model":
                raise
        return getattr(super().__getattr__("model"), name)

    @property
    def inner_family(self) -> str | None:
        """``family`` of the wrapped model."""
        return getattr(type(self.model), "family", None)

    # --- the bijection ----------------------------------------------------------------------------------
    def to_standard(self, x: Tensor) -> Tensor:
        """``z = (x - loc) / scale`` for ``x: (B, *event_shape)``."""
        return (x - self.loc.to(x.dtype)) / self.scale.to(x.dtype)

    def from_standard(self, z: Tensor) -> Tensor:
        """``x = loc + scale * z``."""
        return self.loc.to(z.dtype) + self.scale.to(z.dtype) * z

    def log_abs_det_jacobian(self) -> Tensor:
        r"""``log |det ∂z/∂x| = -Σ_i log s_i`` (a scalar, the same for every point)."""
        return -self.scale.double().log().sum()

    def _shift(self, out, x: Tensor):
        ladj = self.log_abs_det_jacobian().to(x.dtype if x.is_floating_point() else torch.float32)
        if isinstance(out, tuple):
            return (out[0] + ladj.to(out[0].dtype), *out[1:])
        return out + ladj.to(out.dtype)

    # --- the model protocol -----------------------------------------------------------------------------
    def loss(self, x: Tensor) -> Tensor:
        """The wrapped model's loss on the standardized batch (the constant log-determinant is left out); with
        ``gaussian_weight`` the mixture's mean negative log-likelihood of ``z``."""
        z = self.to_standard(x)
        if self.gaussian_weight > 0:
            return -self._mixture_log_prob(z).mean()
        return self.model.loss(z)

    def log_prob(self, x: Tensor, **opts: Any) -> Tensor:
        """``log p(x) = log p_Z(z) - Σ log s`` (nats); options go to the wrapped ``log_prob``."""
        if self.gaussian_weight > 0:
            return self._shift(self._mixture_log_prob(self.to_standard(x), **opts), x)
        return self._shift(self.model.log_prob(self.to_standard(x), **opts), x)

    def _mixture_log_prob(self, z: Tensor, **opts: Any) -> Tensor:
        r"""``log((1 - w) q(z) + w N(z; 0, I))`` of standardized ``z: (B, *event_shape)``."""
        import math

        w = self.gaussian_weight
        inner = self.model.log_prob(z, **opts)
        normal = -0.5 * z.flatten(1).pow(2).sum(-1) - 0.5 * z[0].numel() * math.log(2 * math.pi)
        return torch.logaddexp(inner + math.log1p(-w), normal.to(inner.dtype) + math.log(w))

    def elbo(self, x: Tensor, **opts: Any) -> Tensor:
        """The wrapped model's ELBO of ``z`` plus the log-determinant: an ELBO of ``x``."""
        return self._shift(self.model.elbo(self.to_standard(x), **opts), x)

    def log_likelihood(self, x: Tensor, *args: Any, **opts: Any) -> Tensor:
        """The wrapped estimate of ``log p_Z(z)`` plus the log-determinant."""
        return self._shift(self.model.log_likelihood(self.to_standard(x), *args, **opts), x)

    def sample(self, num_samples: int, **opts: Any):
        """Draws of the wrapped model mapped back by ``x = loc + scale * z`` (extra outputs kept); with
        ``gaussian_weight`` each draw comes from the standard normal instead with probability ``w``."""
        out = self.model.sample(num_samples, **opts)
        if self.gaussian_weight > 0:
            z = out[0] if isinstance(out, tuple) else out
            pick = torch.rand(z.shape[0], device=z.device) < self.gaussian_weight
            z = torch.where(pick.view(-1, *([1] * (z.dim() - 1))), torch.randn_like(z), z)
            out = (z, *out[1:]) if isinstance(out, tuple) else z
        if isinstance(out, tuple):
            return (self.from_standard(out[0]), *out[1:])
        return self.from_standard(out)

    def as_distribution(self, **sample_opts: Any):
        """A Pyro distribution over ``x`` (:class:`probgen.protocol.ModelDistribution`)."""
        from probgen.protocol import ModelDistribution

        return ModelDistribution(self, self.event_shape, sample_opts=sample_opts)

    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this wrapper (``loc`` and ``scale`` come back as buffers)."""
        out = {"model": {"family": self.inner_family, "config": self.model.config()},
               "event_shape": list(self.event_shape)}
        if self.gaussian_weight > 0:
            out["gaussian_weight"] = self.gaussian_weight
        return out

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}" + (f", gaussian_weight={self.gaussian_weight:g}"
                                                    if self.gaussian_weight > 0 else "")


def _check_gaussian_weight(value: Any, model: nn.Module) -> float:
    from probgen._checks import check_probability

    w = check_probability("gaussian_weight", value, open_high=True)
    if w > 0 and not callable(getattr(model, "log_prob", None)):
        raise ValueError(f"gaussian_weight={w} mixes the wrapped model's log_prob with a Gaussian, and "
                         f"{type(model).__name__} has none")
    return w


def standardize(model: nn.Module, data: Tensor, *, min_scale: float = 1e-6, gaussian_weight: float = 0.0
                ) -> Standardized:
    r"""Wrap ``model`` in :class:`Standardized` with ``loc`` and ``scale`` the per-dimension mean and standard
    deviation of ``data``, computed once (in float64).

    A dimension whose standard deviation is below ``min_scale`` times the largest one (a constant column)
    gets scale 1: it is shifted, not blown up. ``gaussian_weight`` mixes the diagonal Gaussian fitted to the
    data into the model (see :class:`Standardized`).

    Args:
        model: a model of continuous data with ``loss`` and ``sample``.
        data: training data ``(N, *event_shape)`` with ``N >= 2``, finite.
        min_scale: relative floor below which a dimension is treated as constant.

    Returns:
        The wrapped model.

    Example:
        >>> import torch
        >>> from probgen.flows import Flow
        >>> m = standardize(Flow(2, "realnvp", num_layers=2), torch.tensor([[0.0, 10.0], [2.0, 30.0]]))
        >>> m.loc.tolist(), [round(v, 3) for v in m.scale.tolist()]
        ([1.0, 20.0], [1.414, 14.142])
    """
    if not isinstance(data, Tensor) or data.dim() < 2 or data.shape[0] < 2:
        shape = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
        raise ValueError(f"data must be a tensor (N, *event_shape) with N >= 2, got {shape}")
    values = data.detach().double()
    if not torch.isfinite(values).all():
        raise ValueError("data must be finite to standardize it")
    loc = values.mean(0)
    scale = values.std(0, unbiased=True)
    floor = min_scale * float(scale.max()) if float(scale.max()) > 0 else 1.0
    scale = torch.where(scale > floor, scale, torch.ones_like(scale))
    return Standardized(model, event_shape=tuple(data.shape[1:]), loc=loc.float(), scale=scale.float(),
                        gaussian_weight=gaussian_weight).to(
        data.device
    )


class Whitened(Standardized):
    r"""A model of whitened vectors ``z = L^{-1}(x - loc)`` presented as a model of ``x``: the affine bijection
    of :class:`Standardized` with a full lower-triangular ``scale_tril`` ``L`` (the Cholesky factor of the
    training data's covariance, :func:`whiten`) in place of the per-dimension scale:

    .. math::

        z = L^{-1}(x - \mu), \qquad \log p_X(x) = \log p_Z(z) - \sum_{i=1}^{D} \log L_{ii}.

    A model whose ``log_prob`` starts as ``N(0, I)`` (a flow at initialisation) then starts as the
    full-covariance Gaussian fitted to the data, and only learns what is not Gaussian — what a few hundred
    tabular points can teach before a flow overfits them.

    Args:
        model: as for :class:`Standardized`.
        event_shape: ``(D,)`` (default: ``model.event_shape``); vectors only.
        loc: shift :math:`\mu`, shape ``(D,)`` (default 0).
        scale_tril: ``(D, D)`` lower-triangular with a positive diagonal (default the identity).
        gaussian_weight: as for :class:`Standardized`; here the mixture's Gaussian is the full-covariance
            Gaussian fitted to the data.

    Attributes:
        family: ``"whitened"`` (checkpoint registry key).

    Example:
        >>> import torch
        >>> from probgen.flows import Flow
        >>> flow = Flow(2, "realnvp", num_layers=2)
        >>> m = Whitened(flow, loc=torch.zeros(2), scale_tril=torch.tensor([[2.0, 0.0], [1.0, 4.0]]))
        >>> x = torch.randn(3, 2)
        >>> bool(torch.allclose(m.from_standard(m.to_standard(x)), x, atol=1e-6))
        True
        >>> round(float(m.log_abs_det_jacobian()), 4)  # -log 2 - log 4
        -2.0794
    """

    family = "whitened"

    def __init__(
        self,
        model: nn.Module | dict[str, Any],
        *,
        event_shape: tuple[int, ...] | list[int] | None = None,
        loc: Tensor | None = None,
        scale_tril: Tensor | None = None,
        gaussian_weight: float = 0.0,
    ) -> None:
        super().__init__(model, event_shape=event_shape, loc=loc, gaussian_weight=gaussian_weight)
        if len(self.event_shape) != 1:
            raise ValueError(f"event_shape must be (D,) to whiten (vectors only), got {self.event_shape}")
        dim = self.event_shape[0]
        tril = torch.eye(dim) if scale_tril is None else torch.as_tensor(scale_tril, dtype=torch.float32)
        if tuple(tril.shape) != (dim, dim):
            raise ValueError(f"scale_tril must have shape ({dim}, {dim}), got {tuple(tril.shape)}")
        diag = torch.diagonal(tril)
        if not (torch.isfinite(tril).all() and (diag > 0).all() and torch.equal(tril, torch.tril(tril))):
            raise ValueError("scale_tril must be finite and lower-triangular with a positive diagonal")
        self.register_buffer("scale_tril", tril.clone())

    def to_standard(self, x: Tensor) -> Tensor:
        """``z = L^{-1}(x - loc)`` for ``x: (B, D)``."""
        tril = self.scale_tril.to(x.dtype)
        return torch.linalg.solve_triangular(tril.T, x - self.loc.to(x.dtype), upper=True, left=False)

    def from_standard(self, z: Tensor) -> Tensor:
        """``x = loc + L z``."""
        return self.loc.to(z.dtype) + z @ self.scale_tril.to(z.dtype).T

    def log_abs_det_jacobian(self) -> Tensor:
        r"""``log |det ∂z/∂x| = -Σ_i log L_ii``."""
        return -torch.diagonal(self.scale_tril.double()).log().sum()


def whiten(model: nn.Module, data: Tensor, *, min_scale: float = 1e-6, jitter: float = 1e-6,
           gaussian_weight: float = 0.0) -> Whitened:
    r"""Wrap ``model`` in :class:`Whitened` with ``loc`` the mean of ``data: (N, D)`` and ``scale_tril`` the
    Cholesky factor of its covariance, ``L = diag(s) chol(R + jitter I)`` (``s`` the standard deviations with
    the floor of :func:`standardize`, ``R`` the correlation matrix), computed once in float64.
    ``gaussian_weight`` mixes that Gaussian into the model (see :class:`Standardized`).

    Example:
        >>> import torch
        >>> from probgen.flows import Flow
        >>> x = torch.randn(2000, 2) @ torch.tensor([[3.0, 0.0], [2.0, 1.0]]).T
        >>> m = whiten(Flow(2, "realnvp", num_layers=2), x)
        >>> z = m.to_standard(x).double()
        >>> [round(v, 2) for v in torch.cov(z.T).reshape(-1).tolist()]
        [1.0, 0.0, 0.0, 1.0]
    """
    if not isinstance(data, Tensor) or data.dim() != 2 or data.shape[0] < 2:
        shape = tuple(data.shape) if isinstance(data, Tensor) else type(data).__name__
        raise ValueError(f"data must be a tensor (N, D) with N >= 2, got {shape}")
    values = data.detach().double()
    if not torch.isfinite(values).all():
        raise ValueError("data must be finite to whiten it")
    loc = values.mean(0)
    scale = values.std(0, unbiased=True)
    floor = min_scale * float(scale.max()) if float(scale.max()) > 0 else 1.0
    scale = torch.where(scale > floor, scale, torch.ones_like(scale))
    corr = torch.cov(((values - loc) / scale).T).reshape(data.shape[1], data.shape[1])
    corr = corr + jitter * torch.eye(data.shape[1], dtype=corr.dtype)
    tril = scale[:, None] * torch.linalg.cholesky(corr)
    return Whitened(model, event_shape=(data.shape[1],), loc=loc.float(), scale_tril=tril.float(),
                    gaussian_weight=gaussian_weight).to(data.device)
