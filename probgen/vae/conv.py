"""Convolutional encoder and decoder for image VAEs (28×28 MNIST, 32×32×3 CIFAR-10).

They plug into :class:`probgen.vae.VAE` as custom networks::

    enc = ConvEncoder((1, 28, 28), latent_dim=16)
    dec = ConvDecoder(16, (1, 28, 28))
    vae = VAE(enc, dec, latent_dim=16, likelihood="bernoulli")

.. math::

    (\\mu, \\log\\sigma') = W\\,\\phi(\\mathrm{ConvDown}(x)),\\quad \\sigma = \\mathrm{softplus}(\\sigma') + \\sigma_{\\min};
    \\qquad \\eta(z) = \\mathrm{ConvUp}(\\phi(W' z)),

``η`` being the Bernoulli logits or the Gaussian mean. Both accept any number of leading batch dims.

Reference:
    Kingma & Welling (2014), arXiv:1312.6114; Burda, Grosse & Salakhutdinov (2016), arXiv:1509.00519.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from probgen._checks import check_int, check_positive
from probgen.nn.conv import ConvDown, ConvUp, check_channels, check_image_shape
from probgen.nn.mlp import make_activation

__all__ = ["ConvEncoder", "ConvDecoder"]


class ConvEncoder(nn.Module):
    """Conv encoder ``x: (..., C, H, W) -> (loc, scale)``, each ``(..., L)``, of a diagonal Gaussian ``q(z | x)``.

    Args:
        event_shape: ``(C, H, W)``.
        latent_dim: ``L``.
        channels: channels per stride-2 level (28 → 14 → 7 for two levels).
        hidden: width of the dense layer after the convolutions.
        activation: activation name or callable.
        min_scale: floor ``σ_min`` added to the softplus scale.

    Example:
        >>> import torch
        >>> enc = ConvEncoder((1, 28, 28), 8, channels=(8, 16), hidden=32)
        >>> loc, scale = enc(torch.zeros(3, 1, 28, 28))
        >>> loc.shape, bool((scale > 0).all())
        (torch.Size([3, 8]), True)
    """

    def __init__(self, event_shape: Sequence[int], latent_dim: int, *, channels: Sequence[int] = (32, 64),
                 hidden: int = 256, activation: str | Callable = "silu", min_scale: float = 1e-4) -> None:
        super().__init__()
        self.event_shape = check_image_shape("event_shape", event_shape)
        self.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        self.channels = check_channels("channels", channels)
        self.hidden = check_int("hidden", hidden, minimum=1)
        self.min_scale = check_positive("min_scale", min_scale)
        self.trunk = ConvDown(self.event_shape, channels=self.channels, activation=activation)
        self.dense = nn.Sequential(nn.Linear(self.trunk.out_features, self.hidden), make_activation(activation))
        self.head = nn.Linear(self.hidden, 2 * self.latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        lead = x.shape[:-3]
        h = self.dense(self.trunk(x.reshape(-1, *self.event_shape)))
        loc, raw = self.head(h).chunk(2, dim=-1)
        scale = F.softplus(raw) + self.min_scale
        return loc.reshape(*lead, -1), scale.reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """Conv decoder ``z: (..., L) -> (..., C, H, W)``: Bernoulli logits or the Gaussian mean.

    Args:
        latent_dim: ``L``.
        event_shape: ``(C, H, W)``.
        channels: the encoder's channels (the decoder mirrors them).
        hidden: width of the dense layer before the convolutions.
        activation: activation name or callable.

    Example:
        >>> import torch
        >>> dec = ConvDecoder(8, (3, 32, 32), channels=(8, 16), hidden=32)
        >>> dec(torch.zeros(2, 5, 8)).shape
        torch.Size([2, 5, 3, 32, 32])
    """

    def __init__(self, latent_dim: int, event_shape: Sequence[int], *, channels: Sequence[int] = (32, 64),
                 hidden: int = 256, activation: str | Callable = "silu") -> None:
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        self.event_shape = check_image_shape("event_shape", event_shape)
        self.channels = check_channels("channels", channels)
        self.hidden = check_int("hidden", hidden, minimum=1)
        self.up = ConvUp(self.event_shape, channels=self.channels, activation=activation)
        self.dense = nn.Sequential(
            nn.Linear(self.latent_dim, self.hidden), make_activation(activation),
            nn.Linear(self.hidden, self.up.in_features), make_activation(activation),
        )

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        out = self.up(self.dense(z.reshape(-1, self.latent_dim)))
        return out.reshape(*lead, *self.event_shape)
