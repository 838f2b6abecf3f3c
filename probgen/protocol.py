"""The one model protocol (DESIGN.md, "One protocol for every model"), written down as typing Protocols.

Every probgen model is a ``torch.nn.Module`` with

* ``loss(x) -> Tensor[]`` — the training objective on a batch, a scalar to minimize;
* ``sample(num_samples, **opts) -> Tensor`` — draws on the model's device;
* ``as_distribution()`` — a Pyro ``TorchDistribution``, so that a user can write
  ``pyro.sample("x", model.as_distribution(), obs=x)``;

and, depending on the family, ``log_prob(x)`` (exact, nats) or ``elbo(x)`` / ``log_likelihood(x,
num_particles)`` (bounds and estimates). Models that can be saved by :mod:`probgen.checkpoint` also
carry a class attribute ``family`` and a ``config()`` method returning the JSON-safe keyword
arguments that rebuild them.

:class:`ModelDistribution` is the shared ``as_distribution`` implementation: it forwards ``sample``
and ``log_prob`` to the model.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints

__all__ = [
    "GenerativeModel",
    "ExactLikelihood",
    "BoundedLikelihood",
    "Checkpointable",
    "ModelDistribution",
    "follows_protocol",
]


@runtime_checkable
class GenerativeModel(Protocol):
    """What every probgen model provides."""

    def loss(self, x: Tensor) -> Tensor: ...

    def sample(self, num_samples: int, **opts: Any) -> Tensor: ...

    def as_distribution(self) -> TorchDistribution: ...


@runtime_checkable
class ExactLikelihood(GenerativeModel, Protocol):
    """Models with an exact log-density in nats (flows, CNF, ScoreSDE/DDPM through the ODE)."""

    def log_prob(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class BoundedLikelihood(GenerativeModel, Protocol):
    """Models with a bound or an estimate of log p(x) (VAE, DDPM, EBM via AIS)."""

    def log_likelihood(self, x: Tensor, num_particles: int = ...) -> Tensor: ...


@runtime_checkable
class Checkpointable(Protocol):
    """Models that :func:`probgen.checkpoint.save` can write and :func:`probgen.load` rebuild."""

    family: str

    def config(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Tensor]: ...


def follows_protocol(model: Any) -> list[str]:
    """Return the protocol members ``model`` lacks (empty when it follows the protocol).

    Example:
        >>> follows_protocol(object())
        ['loss', 'sample', 'as_distribution']
    """
    return [m for m in ("loss", "sample", "as_distribution") if not callable(getattr(model, m, None))]


class ModelDistribution(TorchDistribution):
    """A Pyro distribution backed by a probgen model.

    ``sample(sample_shape)`` draws ``prod(sample_shape)`` samples with ``model.sample`` and
    ``log_prob(x)`` calls ``model.log_prob`` (exact families) — so a trained model can stand as a
    prior or likelihood inside a user's Pyro program::

        pyro.sample("x", model.as_distribution(), obs=x)

    Args:
        model: a probgen model with ``sample`` and, for scoring, ``log_prob``.
        event_shape: the shape of one draw.
        log_prob_fn: overrides ``model.log_prob`` (e.g. an unnormalized ``-E(x)`` for an EBM).
        sample_opts: keyword options forwarded to ``model.sample``.
        support: the constraint one coordinate satisfies (default ``constraints.real``; MADE passes
            ``constraints.boolean``); the distribution's support is it made independent over the
            event dims, so Pyro's HMC/NUTS refuse a binary model with their "discrete sample site" error
            instead of moving it in ``R^D``.

    Shapes follow ``torch.distributions``: ``expand(batch_shape)`` (what ``pyro.plate`` asks for) gives
    independent copies, and ``log_prob(value)`` broadcasts ``value``'s batch dims against
    ``batch_shape``, as ``Normal(...).to_event(1).expand([3]).log_prob(one_event)`` has shape ``(3,)``.

    Example:
        >>> import math
        >>> class Std:  # a stand-in model: N(0, I) in R^2
        ...     def sample(self, n): return torch.randn(n, 2)
        ...     def log_prob(self, x): return -0.5 * (x**2).sum(-1) - math.log(2 * math.pi)
        >>> d = ModelDistribution(Std(), (2,)).expand([3])
        >>> d.log_prob(torch.zeros(2)).shape, d.sample((5,)).shape
        (torch.Size([3]), torch.Size([5, 3, 2]))
    """

    arg_constraints: dict = {}
    has_rsample = False

    @property
    def support(self):
        return constraints.independent(self._base_support, len(self.event_shape))

    def __init__(self, model: Any, event_shape: tuple[int, ...], *, log_prob_fn=None, sample_opts=None,
                 support=None, validate_args=None):
        self.model = model
        self._log_prob_fn = log_prob_fn
        self._sample_opts = dict(sample_opts or {})
        self._base_support = constraints.real if support is None else support
        super().__init__(batch_shape=torch.Size(), event_shape=torch.Size(event_shape), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        """Independent copies over ``batch_shape`` (what ``pyro.plate`` asks for): draws of the same model."""
        new = self._get_checked_instance(ModelDistribution, _instance)
        new.model = self.model
        new._log_prob_fn = self._log_prob_fn
        new._sample_opts = self._sample_opts
        new._base_support = self._base_support
        super(ModelDistribution, new).__init__(torch.Size(batch_shape), self.event_shape, validate_args=False)
        return new

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        n = 1
        for s in shape:
            n *= s
        with torch.no_grad():
            x = self.model.sample(max(n, 1), **self._sample_opts)
        if len(shape) == 0:
            return x[0]
        return x.reshape(*shape, *self.event_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        fn = self._log_prob_fn if self._log_prob_fn is not None else getattr(self.model, "log_prob", None)
        if fn is None:
            raise NotImplementedError(f"{type(self.model).__name__} has no exact log_prob")
        event_dim = len(self.event_shape)
        batch_shape = value.shape[: value.dim() - event_dim]
        flat = value.reshape(-1, *self.event_shape)
        out = fn(flat).reshape(batch_shape)
        shape = torch.broadcast_shapes(batch_shape, self.batch_shape)
        return out if out.shape == shape else out.expand(shape)
