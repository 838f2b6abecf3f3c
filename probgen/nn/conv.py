"""Convolutional trunks for images ``(C, H, W)``: a downsampling encoder and an upsampling decoder.

:class:`ConvDown` maps an image to a feature vector with one stride-2 ``4×4`` convolution per entry of
``channels`` (28 → 14 → 7, 32 → 16 → 8); :class:`ConvUp` mirrors it, from a feature vector back to an
image, with nearest-neighbour upsampling *to the exact sizes of the encoder path* followed by a ``3×3``
convolution (odd sizes such as 7 → 14 → 28 or 3 → 7 work; no checkerboard artefacts of transposed
convolutions). No batch statistics anywhere (each output row depends on its input row only, as the
gradient penalty of WGAN-GP and ``vmap`` need). The VAE's :mod:`probgen.vae.conv` and the GAN's
:mod:`probgen.gan.conv_nets` are built from these two.

Reference:
    Radford, Metz & Chintala (2016), "Unsupervised representation learning with deep convolutional
    generative adversarial networks" (DCGAN), arXiv:1511.06434.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from probgen._checks import check_int
from probgen.nn.mlp import make_activation

__all__ = ["ConvDown", "ConvUp", "check_image_shape", "check_channels"]


def check_image_shape(name: str, shape: object) -> tuple[int, int, int]:
    """Validate an image event shape ``(C, H, W)`` of positive integers.

    Example:
        >>> import torch
        >>> check_image_shape("event_shape", [1, 28, 28])
        (1, 28, 28)
    """
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) != 3:
        raise ValueError(f"{name} must be an image shape (C, H, W), got {shape!r}")
    return tuple(check_int(f"{name}[{i}]", v, minimum=1) for i, v in enumerate(shape))  # type: ignore[return-value]


def check_channels(name: str, channels: object) -> tuple[int, ...]:
    """Validate a non-empty sequence of positive channel counts."""
    if isinstance(channels, int) and not isinstance(channels, bool):
        channels = (channels,)
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence) or not channels:
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {channels!r}")
    return tuple(check_int(f"{name}[{i}]", c, minimum=1) for i, c in enumerate(channels))


def _path_sizes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    sizes = [(height, width)]
    for _ in range(levels):
        h, w = sizes[-1]
        if h < 2 or w < 2:
            raise ValueError(f"an image of {height}×{width} is too small for {levels} stride-2 levels")
        sizes.append((h // 2, w // 2))
    return sizes


class ConvDown(nn.Module):
    """Image → features: ``conv3×3 → [conv4×4 stride 2, act] per level → flatten``.

    Args:
        event_shape: ``(C, H, W)``.
        channels: output channels per stride-2 level (the first ``3×3`` convolution has ``channels[0]``).
        activation: activation name or callable (see :func:`probgen.nn.make_activation`).

    Shapes:
        ``x: (B, C, H, W) -> (B, out_features)``, ``out_features = channels[-1] · h_n · w_n``.

    Example:
        >>> import torch
        >>> net = ConvDown((1, 28, 28), channels=(8, 16))
        >>> net(torch.zeros(2, 1, 28, 28)).shape, net.out_shape
        (torch.Size([2, 784]), (16, 7, 7))
    """

    def __init__(self, event_shape: Sequence[int], *, channels: Sequence[int] = (32, 64),
                 activation: str | Callable = "silu") -> None:
        super().__init__()
        c, h, w = check_image_shape("event_shape", event_shape)
        chans = check_channels("channels", channels)
        self.sizes = _path_sizes(h, w, len(chans))
        layers: list[nn.Module] = [nn.Conv2d(c, chans[0], 3, padding=1), make_activation(activation)]
        prev = chans[0]
        for ch in chans:
            layers += [nn.Conv2d(prev, ch, 4, stride=2, padding=1), make_activation(activation)]
            prev = ch
        self.net = nn.Sequential(*layers)
        self.out_shape = (prev, *self.sizes[-1])
        self.out_features = math.prod(self.out_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)


class ConvUp(nn.Module):
    """Features → image, mirroring :class:`ConvDown`: ``reshape → [upsample, conv3×3, act] per level → conv3×3``.

    Args:
        event_shape: ``(C, H, W)`` of the output image.
        channels: the encoder's channels (used reversed).
        activation: activation name or callable.

    Shapes:
        ``h: (B, in_features) -> (B, C, H, W)`` with ``in_features = channels[-1] · h_n · w_n``.

    Example:
        >>> import torch
        >>> up = ConvUp((3, 32, 32), channels=(8, 16))
        >>> up(torch.zeros(2, up.in_features)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, event_shape: Sequence[int], *, channels: Sequence[int] = (32, 64),
                 activation: str | Callable = "silu") -> None:
        super().__init__()
        c, h, w = check_image_shape("event_shape", event_shape)
        chans = check_channels("channels", channels)
        self.sizes = _path_sizes(h, w, len(chans))
        self.in_shape = (chans[-1], *self.sizes[-1])
        self.in_features = math.prod(self.in_shape)
        self.convs = nn.ModuleList()
        self.acts = nn.ModuleList()
        prev = chans[-1]
        for ch in reversed(chans):
            self.convs.append(nn.Conv2d(prev, ch, 3, padding=1))
            self.acts.append(make_activation(activation))
            prev = ch
        self.conv_out = nn.Conv2d(prev, c, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        x = h.reshape(h.shape[0], *self.in_shape)
        for size, conv, act in zip(reversed(self.sizes[:-1]), self.convs, self.acts):
            x = act(conv(F.interpolate(x, size=size, mode="nearest")))
        return self.conv_out(x)
