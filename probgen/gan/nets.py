"""The built-in networks of :mod:`probgen.gan`: an MLP generator and an MLP discriminator (critic)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from probgen.nn import MLP
from probgen.ops.shapes import event_numel, flatten_event, unflatten_event

__all__: list[str] = []  # internal: the models build them from ``hidden`` and ``activation``


class _Generator(nn.Module):
    """Built-in generator: an :class:`~probgen.nn.MLP` ``R^L -> R^D`` reshaped to ``event_shape``."""

    def __init__(self, latent_dim: int, event_shape: tuple[int, ...], hidden: tuple[int, ...], activation: Any):
        super().__init__()
        self.event_shape = event_shape
        self.net = MLP(latent_dim, event_numel(event_shape), hidden=hidden, activation=activation)

    def forward(self, z: Tensor) -> Tensor:
        return unflatten_event(self.net(z), self.event_shape)


class _Discriminator(nn.Module):
    """Built-in discriminator / critic: an :class:`~probgen.nn.MLP` on the flattened event, one output.

    No batch normalisation, so the gradient penalty's per-sample gradients are exact.
    """

    def __init__(self, event_shape: tuple[int, ...], hidden: tuple[int, ...], activation: Any):
        super().__init__()
        self.net = MLP(event_numel(event_shape), 1, hidden=hidden, activation=activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(flatten_event(x)).squeeze(-1)


