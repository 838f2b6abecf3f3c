"""Time / noise-level embeddings ``t: (B,) -> (B, embed_dim)`` for score, noise and energy networks.

Both embeddings take any real ``t`` (a diffusion time in ``[0, 1]``, an integer DDPM step, or
``log sigma`` for noise-level conditioning) and are parameter-free apart from a fixed buffer, so they
behave identically under ``torch.func.vmap`` / ``vjp``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from probgen._checks import check_int, check_positive

__all__ = ["GaussianFourierFeatures", "SinusoidalEmbedding", "TIME_EMBEDDINGS", "make_time_embedding"]


def _as_time(t: Tensor | float, dtype: torch.dtype, device: torch.device) -> Tensor:
    if not isinstance(t, Tensor):
        t = torch.tensor(float(t))
    if t.dim() > 1:
        raise ValueError(f"t must have shape (batch,) or be a scalar, got shape {tuple(t.shape)}")
    return t.to(dtype=dtype, device=device)


class GaussianFourierFeatures(nn.Module):
    """Random Fourier features of a scalar: ``γ(t) = [sin(2π W t), cos(2π W t)]``, ``W ~ N(0, scale²)``.

    The ``embed_dim // 2`` frequencies are drawn once at construction and stored as a (persistent)
    buffer, so a checkpoint restores them. A large ``scale`` resolves fine changes of ``t``; 16 is the
    value used for noise-conditional score networks.

    Args:
        embed_dim: output width, even.
        scale: standard deviation of the frequencies.

    Shapes:
        ``t: (B,)`` (or a scalar, broadcast by the caller) ``-> (B, embed_dim)``.

    References:
        Tancik et al. (2020), Fourier Features Let Networks Learn High Frequency Functions in Low
        Dimensional Domains, arXiv:2006.10739. Song et al. (2021), Score-Based Generative Modeling
        through Stochastic Differential Equations, arXiv:2011.13456.

    Example:
        >>> emb = GaussianFourierFeatures(8, scale=1.0)
        >>> emb(torch.tensor([0.0, 0.5])).shape
        torch.Size([2, 8])
    """

    def __init__(self, embed_dim: int, *, scale: float = 16.0) -> None:
        super().__init__()
        self.embed_dim = check_int("embed_dim", embed_dim, minimum=2)
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even, got {embed_dim}")
        self.scale = check_positive("scale", scale)
        self.register_buffer("frequencies", torch.randn(embed_dim // 2) * self.scale)

    def forward(self, t: Tensor) -> Tensor:
        t = _as_time(t, self.frequencies.dtype, self.frequencies.device)
        angles = 2 * math.pi * t.unsqueeze(-1) * self.frequencies
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, scale={self.scale:g}"


class SinusoidalEmbedding(nn.Module):
    """Transformer / DDPM timestep embedding with geometric frequencies.

    .. math::

        \\gamma(t)_k = \\sin(t\\,\\omega_k),\\quad \\gamma(t)_{k+d/2} = \\cos(t\\,\\omega_k),\\quad
        \\omega_k = \\text{max\\_period}^{-k/(d/2)},\\ k = 0, \\dots, d/2 - 1.

    The frequencies run from 1 down to ``1/max_period``: suited to integer steps ``t ∈ {0, ..., 999}``.
    For a continuous ``t ∈ [0, 1]`` scale it first (e.g. by 1000) or use
    :class:`GaussianFourierFeatures`.

    Args:
        embed_dim: output width, even.
        max_period: the longest period.

    Shapes:
        ``t: (B,) -> (B, embed_dim)``.

    References:
        Vaswani et al. (2017), Attention Is All You Need, arXiv:1706.03762.
        Ho et al. (2020), Denoising Diffusion Probabilistic Models, arXiv:2006.11239.

    Example:
        >>> emb = SinusoidalEmbedding(4)
        >>> emb(torch.tensor([0])).tolist()
        [[0.0, 0.0, 1.0, 1.0]]
    """

    def __init__(self, embed_dim: int, *, max_period: float = 10000.0) -> None:
        super().__init__()
        self.embed_dim = check_int("embed_dim", embed_dim, minimum=2)
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even, got {embed_dim}")
        self.max_period = check_positive("max_period", max_period)
        half = embed_dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, dtype=torch.float32) / half)
        # Deterministic from the arguments: not saved in state_dicts.
        self.register_buffer("frequencies", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        t = _as_time(t, self.frequencies.dtype, self.frequencies.device)
        angles = t.unsqueeze(-1) * self.frequencies
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, max_period={self.max_period:g}"


TIME_EMBEDDINGS = ("fourier", "sinusoidal")


def make_time_embedding(kind: str, embed_dim: int, *, fourier_scale: float = 16.0) -> nn.Module:
    """Build the embedding named ``kind`` (``"fourier"`` or ``"sinusoidal"``).

    Example:
        >>> type(make_time_embedding("sinusoidal", 8)).__name__
        'SinusoidalEmbedding'
    """
    if kind == "fourier":
        return GaussianFourierFeatures(embed_dim, scale=fourier_scale)
    if kind == "sinusoidal":
        return SinusoidalEmbedding(embed_dim)
    raise ValueError(f"unknown embedding {kind!r}; valid choices: 'fourier', 'sinusoidal'")
