"""DCGAN-style convolutional generator and discriminator for 28×28 and 32×32×3 images.

Both plug into :class:`probgen.gan.GAN` and :class:`probgen.gan.WGANGP` as custom networks::

    gan = WGANGP((1, 28, 28), latent_dim=64, generator=ConvGenerator(64, (1, 28, 28)),
                 discriminator=ConvDiscriminator((1, 28, 28)))

.. math::

    G(z) = o\\big(\\mathrm{ConvUp}(\\mathrm{ReLU}(W z))\\big)\\ (o = \\mathrm{id}\\ \\text{or}\\ \\tanh),\\qquad
    D(x) = w^\\top \\mathrm{LeakyReLU}(\\mathrm{ConvDown}(x)) + b.

No batch normalisation (the gradient penalty needs per-sample gradients, and sampling must not depend
on the batch); the generator's output is unbounded by default (``output="linear"``) or squashed to
``(-1, 1)`` (``output="tanh"``) for data scaled to that range.

Reference:
    Radford, Metz & Chintala (2016), arXiv:1511.06434; Gulrajani et al. (2017), arXiv:1704.00028.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from probgen._checks import check_choice, check_int
from probgen.nn.conv import ConvDown, ConvUp, check_channels, check_image_shape

__all__ = ["ConvGenerator", "ConvDiscriminator"]


class ConvGenerator(nn.Module):
    """Generator ``z: (B, L) -> (B, C, H, W)``: dense layer, then upsample + 3×3 conv per level.

    Args:
        latent_dim: ``L``.
        event_shape: ``(C, H, W)``.
        channels: channels per level, from the image side (``(64, 128)``: 7×7×128 → 14×14×128 → 28×28×64 for MNIST).
        output: ``"linear"`` or ``"tanh"``.

    Example:
        >>> g = ConvGenerator(8, (1, 28, 28), channels=(8, 16))
        >>> g(torch.randn(3, 8)).shape
        torch.Size([3, 1, 28, 28])
    """

    def __init__(self, latent_dim: int, event_shape: Sequence[int], *, channels: Sequence[int] = (64, 128),
                 output: str = "linear") -> None:
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        self.event_shape = check_image_shape("event_shape", event_shape)
        self.channels = check_channels("channels", channels)
        self.output = check_choice("output", output, ("linear", "tanh"))
        self.up = ConvUp(self.event_shape, channels=self.channels, activation="relu")
        self.dense = nn.Sequential(nn.Linear(self.latent_dim, self.up.in_features), nn.ReLU())

    def forward(self, z: Tensor) -> Tensor:
        x = self.up(self.dense(z))
        return torch.tanh(x) if self.output == "tanh" else x


class ConvDiscriminator(nn.Module):
    """Discriminator / critic ``x: (B, C, H, W) -> (B,)`` (logits for GAN, scores for WGAN-GP).

    Args:
        event_shape: ``(C, H, W)``.
        channels: channels per stride-2 level.

    Example:
        >>> d = ConvDiscriminator((3, 32, 32), channels=(8, 16))
        >>> d(torch.randn(4, 3, 32, 32)).shape
        torch.Size([4])
    """

    def __init__(self, event_shape: Sequence[int], *, channels: Sequence[int] = (64, 128)) -> None:
        super().__init__()
        self.event_shape = check_image_shape("event_shape", event_shape)
        self.channels = check_channels("channels", channels)
        self.trunk = ConvDown(self.event_shape, channels=self.channels, activation=partial(F.leaky_relu, negative_slope=0.2))
        self.head = nn.Linear(self.trunk.out_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x)).squeeze(-1)
