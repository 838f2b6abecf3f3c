"""Built-in networks of the VAE family: a Gaussian encoder, a decoder and a label classifier.

All three flatten the event (``(..., *event_shape) -> (..., D)``), so one multilayer perceptron
serves vectors ``(D,)`` and the 8×8 digits ``(1, 8, 8)`` alike (for 64 pixels a plain MLP on the
flattened image trains as well as a small conv net and keeps the nets ``vmap``/``jvp``-friendly);
the decoder reshapes its output back to ``event_shape``. Every net accepts any number of leading
batch dimensions, which the semi-supervised VAE uses to evaluate all classes at once, and an
optional conditioning vector ``cond`` (a one-hot label) concatenated to its input.

Constructor arguments are plain Python values, so the VAEs that build these nets can return them
from ``config()`` for :mod:`probgen.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from probgen._checks import check_int, check_positive, check_shape_arg, check_widths
from probgen.nn import MLP, make_activation
from probgen.ops.shapes import event_numel

__all__ = ["GaussianEncoder", "Decoder", "Classifier", "check_event_shape_tuple", "DEFAULT_HIDDEN"]

DEFAULT_HIDDEN: tuple[int, ...] = (256, 256)
"""Hidden widths of the built-in nets (tuned on the 8×8 digits; see docs/vae.md)."""


def check_event_shape_tuple(event_shape: Any) -> tuple[int, ...]:
    """Return ``event_shape`` as a tuple of positive ints, or raise naming what came in
    (:func:`probgen._checks.check_shape_arg` under the name ``event_shape``).

    Example:
        >>> check_event_shape_tuple(64), check_event_shape_tuple([1, 8, 8])
        ((64,), (1, 8, 8))
    """
    return check_shape_arg("event_shape", event_shape)


def _flat_input(x: Tensor, event_shape: tuple[int, ...], cond: Tensor | None, cond_features: int) -> Tensor:
    """``(..., *event_shape)`` [+ ``cond (..., C)``] -> ``(..., D [+ C])``."""
    n = len(event_shape)
    if x.dim() < n + 1 or tuple(x.shape[x.dim() - n :]) != event_shape:
        raise ValueError(f"x must have shape (batch, {', '.join(map(str, event_shape))}), got {tuple(x.shape)}")
    h = x.reshape(*x.shape[: x.dim() - n], -1)
    if cond_features:
        if cond is None or cond.shape[-1] != cond_features:
            got = None if cond is None else tuple(cond.shape)
            raise ValueError(f"cond of shape (batch, {cond_features}) is required, got {got}")
        lead = torch.broadcast_shapes(h.shape[:-1], cond.shape[:-1])  # broadcast the leading dims only
        h = torch.cat([h.expand(*lead, h.shape[-1]), cond.to(h.dtype).expand(*lead, cond_features)], dim=-1)
    elif cond is not None:
        raise ValueError("cond must be None: this network was built with cond_features=0")
    return h


class GaussianEncoder(nn.Module):
    """Amortised diagonal-Gaussian posterior ``q(z | x[, c]) = N(μ(x, c), diag σ(x, c)²)``.

    .. math::

        h = \\phi(\\mathrm{MLP}([\\mathrm{vec}(x), c])),\\qquad
        \\mu = W_\\mu h + b_\\mu,\\qquad \\sigma = \\mathrm{softplus}(W_\\sigma h + b_\\sigma) + \\sigma_{\\min}.

    Args:
        event_shape: shape of one observation, e.g. ``(64,)`` or ``(1, 8, 8)``.
        latent_dim: ``L``, the latent dimension.
        hidden: widths of the hidden layers; the last one is the width of ``h``.
        activation: activation name (see :data:`probgen.nn.ACTIVATIONS`).
        cond_features: width of an optional conditioning vector ``c`` (a one-hot label); 0 for none.
        context_features: if > 0, ``forward`` also returns ``h`` (width ``hidden[-1]``), the context of a
            conditional flow posterior; the value must then equal ``hidden[-1]``.
        min_scale: ``σ_min``, a floor that keeps ``log q`` finite.

    Shapes:
        ``x: (..., *event_shape)``, ``cond: (..., C)`` -> ``loc, scale: (..., L)`` [, ``h: (..., H)``].

    Reference:
        Kingma & Welling (2014), "Auto-Encoding Variational Bayes", arXiv:1312.6114.

    Example:
        >>> enc = GaussianEncoder((1, 8, 8), 4, hidden=(32,))
        >>> loc, scale = enc(torch.zeros(5, 1, 8, 8))
        >>> loc.shape, bool((scale > 0).all())
        (torch.Size([5, 4]), True)
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        latent_dim: int,
        *,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        activation: str | Callable = "silu",
        cond_features: int = 0,
        context_features: int = 0,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        self.event_shape = check_event_shape_tuple(event_shape)
        self.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        self.hidden = check_widths("hidden", hidden, min_len=1)
        self.cond_features = check_int("cond_features", cond_features, minimum=0)
        self.context_features = check_int("context_features", context_features, minimum=0)
        if self.context_features and self.context_features != self.hidden[-1]:
            raise ValueError(
                f"context_features must be 0 or hidden[-1] = {self.hidden[-1]}, got {self.context_features}"
            )
        self.min_scale = check_positive("min_scale", min_scale)
        in_features = event_numel(self.event_shape) + self.cond_features
        self.trunk = nn.Sequential(
            MLP(in_features, self.hidden[-1], hidden=self.hidden[:-1], activation=activation),
            make_activation(activation),
        )
        self.head = nn.Linear(self.hidden[-1], 2 * self.latent_dim)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, ...]:
        h = self.trunk(_flat_input(x, self.event_shape, cond, self.cond_features))
        loc, raw = self.head(h).chunk(2, dim=-1)
        scale = F.softplus(raw) + self.min_scale
        if self.context_features:
            return loc, scale, h
        return loc, scale


class Decoder(nn.Module):
    """Decoder ``z[, c] -> `` the parameter of ``p(x | z[, c])``: a mean (Gaussian) or logits (Bernoulli).

    .. math::

        \\eta(z, c) = \\mathrm{reshape}\\big(\\mathrm{MLP}([z, c]),\\ \\text{event\\_shape}\\big).

    Args:
        latent_dim: ``L``.
        event_shape: shape of one observation.
        hidden: widths of the hidden layers.
        activation: activation name.
        cond_features: width of an optional conditioning vector (one-hot label); 0 for none.

    Shapes:
        ``z: (..., L)``, ``cond: (..., C)`` -> ``(..., *event_shape)``.

    Example:
        >>> dec = Decoder(4, (1, 8, 8), hidden=(32,))
        >>> dec(torch.zeros(5, 4)).shape
        torch.Size([5, 1, 8, 8])
    """

    def __init__(
        self,
        latent_dim: int,
        event_shape: Sequence[int],
        *,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        activation: str | Callable = "silu",
        cond_features: int = 0,
    ) -> None:
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        self.event_shape = check_event_shape_tuple(event_shape)
        self.hidden = check_widths("hidden", hidden, min_len=1)
        self.cond_features = check_int("cond_features", cond_features, minimum=0)
        self.net = MLP(
            self.latent_dim + self.cond_features, event_numel(self.event_shape), hidden=self.hidden,
            activation=activation,
        )

    def forward(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        h = _flat_input(z, (self.latent_dim,), cond, self.cond_features)
        out = self.net(h)
        return out.reshape(*out.shape[:-1], *self.event_shape)


class Classifier(nn.Module):
    """Label posterior ``q(y | x) = Cat(softmax(MLP(vec(x))))`` of the semi-supervised VAE (M2).

    Args:
        event_shape: shape of one observation.
        num_classes: number of labels ``C``.
        hidden: widths of the hidden layers.
        activation: activation name.

    Shapes:
        ``x: (..., *event_shape) -> logits (..., C)``.

    Reference:
        Kingma, Rezende, Mohamed & Welling (2014), arXiv:1406.5298.

    Example:
        >>> Classifier((64,), 10, hidden=(16,))(torch.zeros(3, 64)).shape
        torch.Size([3, 10])
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        num_classes: int,
        *,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        activation: str | Callable = "silu",
    ) -> None:
        super().__init__()
        self.event_shape = check_event_shape_tuple(event_shape)
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        self.hidden = check_widths("hidden", hidden, min_len=1)
        self.net = MLP(event_numel(self.event_shape), self.num_classes, hidden=self.hidden, activation=activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(_flat_input(x, self.event_shape, None, 0))
