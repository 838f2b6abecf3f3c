"""A small DDPM-style U-Net for images ``(B, C, H, W)``, conditioned on a time or noise level.

Residual blocks (GroupNorm, SiLU, 3×3 convolutions, the time embedding added between the two
convolutions), stride-2 downsampling, nearest-neighbour upsampling to the exact size of the matching
skip connection (so odd sizes such as 28 → 14 → 7 → 14 → 28 work), and optional self-attention at
the lowest resolution. There is no batch statistic anywhere, so every output row depends only on its
input row (required by the exact divergence, which vmaps over VJPs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probgen._checks import check_choice, check_int, check_nonnegative, check_positive
from probgen.nn.embeddings import TIME_EMBEDDINGS, make_time_embedding

__all__ = ["UNet"]


class _ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, embed_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(math.gcd(groups, in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(embed_dim, out_ch)
        self.norm2 = nn.GroupNorm(math.gcd(groups, out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb).reshape(*emb.shape[:-1], -1, 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _Attention(nn.Module):
    """Single-head self-attention over the ``H·W`` positions of one image."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(math.gcd(groups, ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (b, hw, hw)
        out = (v @ weights.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj(out)


class UNet(nn.Module):
    """DDPM-style U-Net ``f(x, t)`` for small images (8×8 digits, 28×28 MNIST, 32×32 CIFAR-10).

    .. math::

        f(x, t) = \\mathrm{Dec}\\big(\\mathrm{Enc}(x, e_t), \\text{skips}, e_t\\big),\\qquad
        e_t = W_2\\,\\mathrm{SiLU}(W_1\\,\\gamma(t)),

    where ``γ`` is the sinusoidal (integer steps) or Gaussian Fourier (continuous ``t``, ``log σ``)
    embedding. The encoder has one level per entry of ``channel_mults`` (``num_res_blocks`` residual
    blocks at ``base_channels * mult`` channels, then a stride-2 downsample except at the last level);
    the decoder mirrors it with skip connections.

    Args:
        in_channels: image channels ``C``.
        image_size: side length the net is built for (checked in ``forward``).
        base_channels: channels at the first level; a multiple of ``groups``.
        channel_mults: channel multiplier per resolution level.
        num_res_blocks: residual blocks per level.
        embed_dim: width of the time embedding.
        out_channels: output channels, ``C`` by default.
        attention: add self-attention at the lowest resolution.
        groups: GroupNorm groups.
        dropout: dropout inside residual blocks.
        embedding: ``"sinusoidal"`` (integer DDPM steps) or ``"fourier"`` (continuous time).
        fourier_scale: frequency scale of the Fourier features.

    Shapes:
        ``x: (B, C, H, W)`` with ``H = W = image_size``, ``t: (B,)`` (float or integer, or a scalar)
        ``-> (B, out_channels, H, W)``.

    References:
        Ronneberger et al. (2015), U-Net, arXiv:1505.04597.
        Ho et al. (2020), Denoising Diffusion Probabilistic Models, arXiv:2006.11239.

    Example:
        >>> net = UNet(1, image_size=8, base_channels=8, channel_mults=(1, 2), embed_dim=16)
        >>> net(torch.randn(2, 1, 8, 8), torch.tensor([3, 7])).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        in_channels: int = 1,
        *,
        image_size: int = 8,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        embed_dim: int = 128,
        out_channels: int | None = None,
        attention: bool = False,
        groups: int = 8,
        dropout: float = 0.0,
        embedding: str = "sinusoidal",
        fourier_scale: float = 16.0,
    ) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.image_size = check_int("image_size", image_size, minimum=1)
        self.base_channels = check_int("base_channels", base_channels, minimum=1)
        if isinstance(channel_mults, (str, bytes)) or not isinstance(channel_mults, Sequence) or not channel_mults:
            raise ValueError(f"channel_mults must be a non-empty sequence of integers, got {channel_mults!r}")
        self.channel_mults = tuple(check_int(f"channel_mults[{i}]", m, minimum=1) for i, m in enumerate(channel_mults))
        self.num_res_blocks = check_int("num_res_blocks", num_res_blocks, minimum=1)
        self.embed_dim = check_int("embed_dim", embed_dim, minimum=2)
        self.out_channels = self.in_channels if out_channels is None else check_int("out_channels", out_channels, minimum=1)
        self.attention = bool(attention)
        self.groups = check_int("groups", groups, minimum=1)
        if self.base_channels % self.groups:
            raise ValueError(
                f"base_channels must be a multiple of groups={self.groups}, got {self.base_channels}"
            )
        self.dropout = check_nonnegative("dropout", dropout)
        if self.dropout >= 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.embedding = check_choice("embedding", embedding, TIME_EMBEDDINGS)
        self.fourier_scale = check_positive("fourier_scale", fourier_scale)

        self.time_embed = make_time_embedding(self.embedding, self.embed_dim, fourier_scale=self.fourier_scale)
        self.time_mlp = nn.Sequential(
            nn.Linear(self.embed_dim, self.embed_dim), nn.SiLU(), nn.Linear(self.embed_dim, self.embed_dim)
        )
        g, e, p = self.groups, self.embed_dim, self.dropout

        self.conv_in = nn.Conv2d(self.in_channels, self.base_channels, 3, padding=1)
        skip_channels = [self.base_channels]
        ch = self.base_channels
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for level, mult in enumerate(self.channel_mults):
            blocks = nn.ModuleList()
            for _ in range(self.num_res_blocks):
                blocks.append(_ResBlock(ch, self.base_channels * mult, e, g, p))
                ch = self.base_channels * mult
                skip_channels.append(ch)
            self.down.append(blocks)
            if level < len(self.channel_mults) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)

        self.mid1 = _ResBlock(ch, ch, e, g, p)
        self.mid_attn = _Attention(ch, g) if self.attention else nn.Identity()
        self.mid2 = _ResBlock(ch, ch, e, g, p)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, mult in reversed(list(enumerate(self.channel_mults))):
            blocks = nn.ModuleList()
            for _ in range(self.num_res_blocks + 1):
                blocks.append(_ResBlock(ch + skip_channels.pop(), self.base_channels * mult, e, g, p))
                ch = self.base_channels * mult
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))

        self.norm_out = nn.GroupNorm(math.gcd(g, ch), ch)
        self.conv_out = nn.Conv2d(ch, self.out_channels, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        want = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape (batch, {', '.join(map(str, want))}), got {tuple(x.shape)}")
        emb = self.time_embed(t).to(x.dtype)
        if emb.dim() == 1:
            emb = emb.expand(x.shape[0], self.embed_dim)
        elif emb.shape[0] != x.shape[0]:
            raise ValueError(f"t must have shape ({x.shape[0]},) to match x, got {tuple(emb.shape[:-1])}")
        emb = self.time_mlp(emb)

        h = self.conv_in(x)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)

        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)

        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.upsample):
                # Upsample to the exact size of the next skip (handles odd sizes: 7 -> 14, 4 -> 7).
                h = self.upsample[i](F.interpolate(h, size=skips[-1].shape[-2:], mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))

    def config(self) -> dict[str, Any]:
        """JSON-safe constructor arguments: ``UNet(**net.config())`` rebuilds the architecture."""
        return {
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "base_channels": self.base_channels,
            "channel_mults": list(self.channel_mults),
            "num_res_blocks": self.num_res_blocks,
            "embed_dim": self.embed_dim,
            "out_channels": self.out_channels,
            "attention": self.attention,
            "groups": self.groups,
            "dropout": self.dropout,
            "embedding": self.embedding,
            "fourier_scale": self.fourier_scale,
        }
