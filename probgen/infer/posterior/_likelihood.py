"""Reading the prior and the likelihood of a site from a user's Pyro model (private).

The model is run once with the site fixed to a placeholder (so the prior is never sampled): that finds
the site's distribution (a probgen :class:`~probgen.protocol.ModelDistribution`, whose ``model`` is the
prior), the observed sites and, when the only observation is a
:class:`~probgen.infer.posterior.operators.LinearGaussianDistribution` of the site itself, its operator.
Then ``log p(y | x) = Σ_{observed sites} log p(y_site | x)`` is evaluated for a batch of particles by
``torch.func.vmap`` over the traced model (a loop over particles when the model cannot be vmapped);
its gradient comes from autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch import Tensor

from probgen.infer.posterior.operators import DenseOperator, LinearGaussianDistribution
from probgen.protocol import ModelDistribution

__all__ = ["ModelLikelihood", "AffineLikelihood"]


class _Placeholder(Messenger):
    """Fix site ``name`` to zeros of its distribution's shape and remember the distribution."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.fn = None
        self.value = None

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] == self.name:
            if msg["is_observed"]:
                raise ValueError(f"site {self.name!r} is observed in the model (obs=...); the site to infer must be latent")
            self.fn = msg["fn"]
            shape = self.fn.batch_shape + self.fn.event_shape
            self.value = torch.zeros(shape)
            msg["value"] = self.value


def _unwrap(fn: Any) -> Any:
    """The probgen prior behind a site's distribution, or ``None``.

    A :class:`~probgen.protocol.ModelDistribution` (diffusion models, EBMs, ...; possibly wrapped) or a
    flow's own ``TransformedDistribution`` (whose transforms are probgen's).
    """
    while fn is not None:
        if isinstance(fn, ModelDistribution):
            return fn
        transforms = getattr(fn, "transforms", None)
        if transforms and any(type(t).__module__.startswith("probgen.") for t in transforms):
            return fn
        fn = getattr(fn, "base_dist", None)
    return None


class ModelLikelihood:
    """``log p(y | x)`` of site ``site`` in ``model(*args)``, batched over particles.

    Attributes:
        prior: the site's distribution: a :class:`~probgen.protocol.ModelDistribution` (``prior.model`` is
            the probgen model) or a probgen flow's ``TransformedDistribution``.
        event_shape: the shape of one ``x``.
        observed: ``{name: value}`` of the observed sites.
        linear: ``(operator, noise_std, y)`` when the only observation is ``LinearGaussian(op, σ)(x)``, else ``None``.
        dtype, device: of the observations.
    """

    def __init__(self, model: Callable, args: tuple, kwargs: dict, site: str):
        if not callable(model):
            raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
        if not isinstance(site, str):
            raise TypeError(f"site must be the name of a sample site (a str), got {type(site).__name__}")
        self.model, self.args, self.kwargs, self.site = model, args, kwargs, site
        holder = _Placeholder(site)
        with pyro.validation_enabled(False), holder:
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        if holder.fn is None:
            names = [n for n, node in trace.nodes.items() if node["type"] == "sample"]
            raise ValueError(f"site {site!r} is not a sample site of the model; its sample sites are {names}")
        prior = _unwrap(holder.fn)
        if prior is None:
            raise TypeError(
                f"site {site!r} must be drawn from a probgen model's as_distribution() (a probgen prior), got "
                f"{type(holder.fn).__name__}; write pyro.sample({site!r}, model.as_distribution())")
        if len(holder.fn.batch_shape) != 0:
            raise ValueError(f"site {site!r} has batch shape {tuple(holder.fn.batch_shape)}; posterior_sample infers "
                             "one draw of the prior (no plate around the site)")
        self.prior = prior
        self.event_shape = tuple(prior.event_shape)
        self.observed: dict[str, Tensor] = {}
        linear = []
        for name, node in trace.nodes.items():
            if node["type"] != "sample" or not node["is_observed"] or name == site:
                continue
            value, fn = node["value"], node["fn"]
            if not isinstance(value, Tensor):
                raise TypeError(f"observation of site {name!r} must be a tensor, got {type(value).__name__}")
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                raise ValueError(
                    f"observation of site {name!r} (obs=...) contains {bad} NaN or infinite values; observe the finite "
                    "entries only (e.g. pg.infer.MaskOperator(~torch.isnan(y)) with y[mask])")
            expected = tuple(fn.batch_shape + fn.event_shape)
            if tuple(value.shape) != expected:
                raise ValueError(f"observation of site {name!r} (obs=...) has shape {tuple(value.shape)}; its "
                                 f"distribution {type(fn).__name__} has shape {expected}")
            self.observed[name] = value
            if isinstance(fn, LinearGaussianDistribution) and fn.x is holder.value:
                linear.append((fn.operator, fn.noise_std, value))
        if not self.observed:
            raise ValueError("the model observes nothing (no pyro.sample(..., obs=...) besides the site)")
        self.linear = linear[0] if len(linear) == 1 and len(self.observed) == 1 else None
        first = next(iter(self.observed.values()))
        self.dtype = first.dtype if first.is_floating_point() else torch.get_default_dtype()
        self.device = first.device
        self._vmap = True

    def _one(self, x: Tensor) -> Tensor:
        with pyro.validation_enabled(False):
            trace = poutine.trace(poutine.condition(self.model, data={self.site: x})).get_trace(*self.args, **self.kwargs)
        total = x.new_zeros(())
        for name in self.observed:
            node = trace.nodes[name]
            total = total + node["fn"].log_prob(node["value"]).sum()
        return total

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(y | x)`` for ``x: (B, *event)`` -> ``(B,)`` (differentiable in ``x``).

        A lone ``LinearGaussian`` observation is evaluated directly, ``-‖y - A x‖²/(2σ²) - m/2 log(2πσ²)``
        (the same number as its distribution's ``log_prob``, without tracing the model per call).
        """
        if self.linear is not None:
            operator, noise_std, y = self.linear
            res = y.to(x).reshape(1, -1) - operator(x)
            m = operator.out_dim
            return -0.5 * (res * res).sum(-1) / noise_std**2 - 0.5 * m * math.log(2 * math.pi * noise_std**2)
        if self._vmap:
            try:
                return torch.func.vmap(self._one)(x)
            except Exception:  # noqa: BLE001 - models with data-dependent control flow: loop instead
                self._vmap = False
        return torch.stack([self._one(xi) for xi in x])

    def log_prob_and_grad(self, x: Tensor, transform: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``(log p(y | f(x)), ∇ₓ log p(y | f(x)))`` with ``f = transform`` (identity by default)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            lp = self.log_prob(transform(x) if transform is not None else x)
            (grad,) = torch.autograd.grad(lp.sum(), x)
        return lp.detach(), grad


class AffineLikelihood:
    """``log p(y | loc + scale ⊙ z)`` of a :class:`ModelLikelihood` on ``x``, for a prior on ``z``.

    A standardized model (``probgen.ops.standardize``) is a diffusion prior on ``z = (x - loc)/scale``;
    the samplers run on ``z`` with this likelihood. A linear-Gaussian observation stays one:
    ``y - A loc = (A diag(scale)) z + σ_y ε`` (a :class:`DenseOperator`, its SVD by ``torch.linalg.svd``).
    """

    def __init__(self, base: ModelLikelihood, loc: Tensor, scale: Tensor):
        self.base = base
        self.dtype, self.device, self.observed = base.dtype, base.device, base.observed
        self.loc = loc.to(dtype=base.dtype, device=base.device)
        self.scale = scale.to(dtype=base.dtype, device=base.device)
        self.linear = None
        if base.linear is not None:
            operator, noise_std, y = base.linear
            matrix = operator.dense(dtype=base.dtype, device=base.device) * self.scale.reshape(1, -1)
            shifted = y.to(self.loc).reshape(-1) - operator._forward(self.loc[None])[0]
            self.linear = (DenseOperator(matrix, operator.event_shape), noise_std, shifted)

    def to_x(self, z: Tensor) -> Tensor:
        """``x = loc + scale ⊙ z``."""
        return self.loc + self.scale * z

    def log_prob(self, z: Tensor) -> Tensor:
        """``log p(y | loc + scale ⊙ z)``: ``(B, *event) -> (B,)``."""
        return self.base.log_prob(self.to_x(z))
