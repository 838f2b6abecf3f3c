"""Convolutional generators and discriminators for 28×28 and 32×32×3 images.

Two pairs. :class:`DCGANGenerator` / :class:`DCGANDiscriminator` follow DCGAN practice (Radford et al. 2016):
``4×4`` stride-2 transposed convolutions with batch normalisation and ReLU in the generator, ``4×4`` stride-2
convolutions with LeakyReLU(0.2) and no pooling in the discriminator, optionally spectrally normalised
(Miyato et al. 2018) or layer-normalised; they are what ``GAN/WGANGP(conv_channels=...)`` build
(``conv_arch="dcgan"``, the default). :class:`ConvGenerator` / :class:`ConvDiscriminator` are the earlier
nets without any normalisation (nearest upsampling + ``3×3`` convolutions; ``conv_arch="upsample"``), which
collapsed on MNIST (``docs/gan.md``, "GANs on MNIST").

The earlier pair plugs into :class:`probgen.gan.GAN` and :class:`probgen.gan.WGANGP` as custom networks::

    gan = WGANGP((1, 28, 28), latent_dim=64, generator=ConvGenerator(64, (1, 28, 28)),
                 discriminator=ConvDiscriminator((1, 28, 28)))

.. math::

    G(z) = o\\big(\\mathrm{ConvUp}(\\mathrm{ReLU}(W z))\\big)\\ (o = \\mathrm{id}\\ \\text{or}\\ \\tanh),\\qquad
    D(x) = w^\\top \\mathrm{LeakyReLU}(\\mathrm{ConvDown}(x)) + b.

No batch normalisation (the gradient penalty needs per-sample gradients, and sampling must not depend
on the batch); the generator's output is unbounded by default (``output="linear"``) or squashed to
``(-1, 1)`` (``output="tanh"``) for data scaled to that range.

Reference:
    Radford, Metz & Chintala (2016), arXiv:1511.06434; Gulrajani et al. (2017), arXiv:1704.00028;
    Miyato et al. (2018), "Spectral normalization for generative adversarial networks", arXiv:1802.05957.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from probgen._checks import check_choice, check_int
from probgen.nn.conv import ConvDown, ConvUp, check_channels, check_image_shape

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "DISCRIMINATOR_NORMS", "ConvGenerator", "ConvDiscriminator"]

#: normalisations of :class:`DCGANDiscriminator`: none, spectral normalisation of every weight (Miyato et al.
#: 2018), or layer normalisation of the hidden feature maps (``GroupNorm(1, ·)``: per sample, so the gradient
#: penalty of WGAN-GP stays exact, as Gulrajani et al. 2017 recommend instead of batch normalisation)
DISCRIMINATOR_NORMS: tuple[str, ...] = ("none", "spectral", "layer")


def _halvings(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """Spatial sizes ``[(H, W), (H//2, W//2), ...]`` of ``levels`` stride-2 levels (``4×4`` kernels, padding 1)."""
    sizes = [(height, width)]
    for _ in range(levels):
        h, w = sizes[-1]
        if h < 2 or w < 2:
            raise ValueError(f"an image of {height}×{width} is too small for {levels} stride-2 levels "
                             f"(channels has {levels} entries)")
        sizes.append((h // 2, w // 2))
    return sizes


class DCGANGenerator(nn.Module):
    r"""DCGAN generator ``z: (B, L) -> (B, C, H, W)`` (Radford et al. 2016).

    .. math::

        G(z) = \tanh\Big(T_1 \circ \mathrm{ReLU}\circ\mathrm{BN}\circ T_2 \circ \cdots \circ
               \mathrm{ReLU}\circ\mathrm{BN}(W z)\Big),

    ``W z`` reshaped to ``channels[-1] × H/2^n × W/2^n`` and each ``T_i`` a ``4×4`` stride-2 transposed
    convolution doubling the size (``output_padding`` restores odd sizes: 3 → 7 → 14 → 28). With
    ``channels=(64, 128)`` on MNIST: ``7×7×128 → 14×14×64 → 28×28×1``. Batch normalisation uses the
    batch's statistics in training mode and its running averages in ``eval()`` mode (the GANs sample in
    eval mode, so a sample does not depend on the other draws of its batch).

    Args:
        latent_dim: ``L``.
        event_shape: ``(C, H, W)``.
        channels: channels per level, from the image side (``channels[0]`` feeds the last layer).
        batch_norm: batch normalisation after the dense layer and every hidden transposed convolution.

    Shapes:
        ``z: (B, L) -> (B, C, H, W)`` in ``(-1, 1)``.

    Example:
        >>> g = DCGANGenerator(8, (1, 28, 28), channels=(8, 16)).eval()
        >>> g(torch.randn(3, 8)).shape
        torch.Size([3, 1, 28, 28])
    """

    def __init__(self, latent_dim: int, event_shape: Sequence[int], *, channels: Sequence[int] = (64, 128),
                 batch_norm: bool = True) -> None:
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        self.event_shape = check_image_shape("event_shape", event_shape)
        self.channels = check_channels("channels", channels)
        if not isinstance(batch_norm, bool):
            raise TypeError(f"batch_norm must be True or False, got {batch_norm!r}")
        c, h, w = self.event_shape
        sizes = _halvings(h, w, len(self.channels))
        self.in_shape = (self.channels[-1], *sizes[-1])
        width = math.prod(self.in_shape)
        self.dense = nn.Sequential(nn.Linear(self.latent_dim, width, bias=not batch_norm),
                                   nn.BatchNorm1d(width) if batch_norm else nn.Identity(), nn.ReLU())
        chans = (*reversed(self.channels), c)
        layers: list[nn.Module] = []
        for i in range(len(self.channels)):
            (h_in, w_in), (h_out, w_out) = sizes[-1 - i], sizes[-2 - i]
            last = i == len(self.channels) - 1
            layers.append(nn.ConvTranspose2d(chans[i], chans[i + 1], 4, stride=2, padding=1,
                                             output_padding=(h_out - 2 * h_in, w_out - 2 * w_in),
                                             bias=last or not batch_norm))
            if not last:
                layers += [nn.BatchNorm2d(chans[i + 1]) if batch_norm else nn.Identity(), nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return torch.tanh(self.net(self.dense(z).reshape(z.shape[0], *self.in_shape)))


class DCGANDiscriminator(nn.Module):
    r"""DCGAN discriminator / critic ``x: (B, C, H, W) -> (B,)`` (logits for GAN, scores for WGAN-GP).

    .. math::

        D(x) = w^\top \mathrm{flat}\big(\phi_n \circ \cdots \circ \phi_1(x)\big) + b,\qquad
        \phi_i = \mathrm{LeakyReLU}_{0.2} \circ N_i \circ \mathrm{Conv}^{4×4}_{\text{stride } 2},

    no pooling, no batch statistics (each output row depends on its input row only, as the gradient penalty
    needs). ``norm`` (:data:`DISCRIMINATOR_NORMS`): ``"none"``; ``"spectral"`` divides every weight by its
    largest singular value (one power iteration per training forward pass; Miyato et al. 2018), which bounds
    the discriminator's Lipschitz constant and keeps it from overpowering the generator early on;
    ``"layer"`` puts ``N_i = `` layer normalisation (``GroupNorm(1, ·)``) after every convolution but the first.

    Args:
        event_shape: ``(C, H, W)``.
        channels: channels per stride-2 level (``(64, 128)``: 28 → 14 → 7 for MNIST).
        norm: ``"none"``, ``"spectral"`` or ``"layer"``.

    Shapes:
        ``x: (B, C, H, W) -> (B,)``.

    Example:
        >>> d = DCGANDiscriminator((3, 32, 32), channels=(8, 16), norm="spectral")
        >>> d(torch.randn(4, 3, 32, 32)).shape
        torch.Size([4])
    """

    def __init__(self, event_shape: Sequence[int], *, channels: Sequence[int] = (64, 128), norm: str = "none") -> None:
        super().__init__()
        self.event_shape = check_image_shape("event_shape", event_shape)
        self.channels = check_channels("channels", channels)
        self.norm = check_choice("norm", norm, DISCRIMINATOR_NORMS)
        c, h, w = self.event_shape
        sizes = _halvings(h, w, len(self.channels))
        wrap = nn.utils.parametrizations.spectral_norm if self.norm == "spectral" else (lambda m: m)
        layers: list[nn.Module] = []
        prev = c
        for i, ch in enumerate(self.channels):
            layers.append(wrap(nn.Conv2d(prev, ch, 4, stride=2, padding=1)))
            if self.norm == "layer" and i > 0:
                layers.append(nn.GroupNorm(1, ch))
            layers.append(nn.LeakyReLU(0.2))
            prev = ch
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.head = wrap(nn.Linear(prev * math.prod(sizes[-1]), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x)).squeeze(-1)


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
