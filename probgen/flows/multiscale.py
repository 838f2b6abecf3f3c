"""A multi-scale coupling flow for images (RealNVP / Glow): :class:`ImageFlow`.

The flow maps an image ``x: (C, H, W)`` to a standard normal ``z`` of the same size ``D = C H W``
through a stack of Pyro ``TransformModule`` s. Every layer acts on the flat vector ``(B, D)``: the
first ``n_s = c_s h_s w_s`` entries hold the *active* tensor of scale ``s`` (channel-major, so that
they reshape to ``(c_s, h_s, w_s)``), the rest are the halves already factored out, which later
layers pass through unchanged. Factoring out half the channels is then a free re-reading: with a
channel-major layout the second half of the channels is the tail of the active block.

Data → base, per scale ``s < S`` (``S = num_scales``)::

    [actnorm, checkerboard coupling] × K  →  squeeze (c, h, w) → (4c, h/2, w/2)
    →  [actnorm, channel coupling] × K  →  factor out channels c_s/2 .. c_s

and at the last scale ``[actnorm, checkerboard coupling] × (K + 1)``. Each affine coupling is

.. math::

    y_b = z_b \\odot e^{s(z_a)} + t(z_a),\\qquad \\log|\\det J| = \\textstyle\\sum s(z_a),

with ``(z_a, z_b)`` a checkerboard or channel split (alternating which half conditions) and
``(s, t)`` a small residual conv net whose last convolution starts at zero (so the fresh flow is
ActNorm only). An optional fixed logit layer maps data in ``[low, high]`` to ``R`` first
(Dinh et al. 2017, §4.1), with its exact log-determinant, so ``log_prob`` is the density of the
data as given.

References:
    Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP", arXiv:1605.08803;
    Kingma & Dhariwal (2018), "Glow", arXiv:1807.03039.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro.distributions as pdist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions.transforms import ReshapeTransform

from probgen._checks import check_choice, check_events, check_int, check_interval, check_positive

__all__ = [
    "ImageFlow",
    "ImageActNorm",
    "ImageAffineCoupling",
    "Squeeze",
    "LogitTransform",
    "CouplingNet",
    "checkerboard_mask",
    "squeeze",
    "unsqueeze",
]


def squeeze(x: Tensor) -> Tensor:
    """Space-to-depth: ``(..., C, H, W) -> (..., 4C, H/2, W/2)`` (each 2×2 patch becomes 4 channels).

    Example:
        >>> squeeze(torch.arange(16.).reshape(1, 4, 4)).shape
        torch.Size([4, 2, 2])
    """
    *lead, c, h, w = x.shape
    x = x.reshape(*lead, c, h // 2, 2, w // 2, 2)
    n = len(lead)
    x = x.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
    return x.reshape(*lead, 4 * c, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    """Depth-to-space, the inverse of :func:`squeeze`: ``(..., 4C, H, W) -> (..., C, 2H, 2W)``.

    Example:
        >>> x = torch.randn(2, 3, 4, 6)
        >>> torch.equal(unsqueeze(squeeze(x)), x)
        True
    """
    *lead, c4, h, w = x.shape
    c = c4 // 4
    n = len(lead)
    x = x.reshape(*lead, c, 2, 2, h, w)
    x = x.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    return x.reshape(*lead, c, 2 * h, 2 * w)


def checkerboard_mask(height: int, width: int, *, parity: int = 0) -> Tensor:
    """The ``(1, H, W)`` 0/1 mask with ones where ``(i + j) % 2 == parity``.

    Example:
        >>> checkerboard_mask(2, 3).tolist()
        [[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]]
    """
    i = torch.arange(height).reshape(-1, 1)
    j = torch.arange(width).reshape(1, -1)
    return ((i + j) % 2 == parity).float().unsqueeze(0)


class _ActiveBlock(TransformModule):
    """Base of the layers: act on the leading ``c·h·w`` entries of ``(B, D)``, pass the rest through."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__(cache_size=0)
        self.shape = tuple(int(s) for s in shape)
        self.size = math.prod(self.shape)

    def _split(self, v: Tensor) -> tuple[Tensor, Tensor]:
        return v[..., : self.size].reshape(*v.shape[:-1], *self.shape), v[..., self.size:]

    def _join(self, active: Tensor, rest: Tensor) -> Tensor:
        return torch.cat([active.reshape(*active.shape[:-3], self.size), rest], dim=-1)


class Squeeze(_ActiveBlock):
    """Space-to-depth of the active block as a transform (base → data: :func:`unsqueeze`), ``log|det| = 0``.

    Args:
        shape: ``(C, H, W)`` on the data side (``H``, ``W`` even); the base side is ``(4C, H/2, W/2)``.

    Example:
        >>> t = Squeeze((1, 2, 2))
        >>> t.inv(torch.arange(4.).reshape(1, 4)).tolist()
        [[0.0, 1.0, 2.0, 3.0]]
    """

    volume_preserving = True

    def __init__(self, shape: Sequence[int]) -> None:
        c, h, w = shape
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze needs an even height and width, got shape {tuple(shape)}")
        super().__init__((4 * c, h // 2, w // 2))
        self.data_shape = (c, h, w)

    def _call(self, z: Tensor) -> Tensor:
        a, rest = self._split(z)
        return torch.cat([unsqueeze(a).reshape(*z.shape[:-1], self.size), rest], dim=-1)

    def _inverse(self, y: Tensor) -> Tensor:
        a = y[..., : self.size].reshape(*y.shape[:-1], *self.data_shape)
        return torch.cat([squeeze(a).reshape(*y.shape[:-1], self.size), y[..., self.size:]], dim=-1)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return x.new_zeros(x.shape[:-1])


class ImageActNorm(_ActiveBlock):
    """Per-channel ActNorm of the active block, initialised from the first batch (Glow).

    .. math::

        y = z \\odot e^{s_c} + b_c,\\qquad \\log|\\det J| = h w \\textstyle\\sum_c s_c.

    The first inverse (data → base) call on a batch of ``B >= 2`` sets ``b`` and ``s`` to the per-channel
    mean and log standard deviation of the batch; the flag ``initialized`` is a buffer (checkpoints are not
    re-initialised).

    Args:
        shape: ``(C, H, W)`` of the active block.

    Example:
        >>> t = ImageActNorm((1, 2, 2))
        >>> z = t.inv(torch.tensor([[0.0, 2.0, 0.0, 2.0], [0.0, 2.0, 0.0, 2.0]]))
        >>> z.round(decimals=4).tolist()
        [[-1.0, 1.0, -1.0, 1.0], [-1.0, 1.0, -1.0, 1.0]]
    """

    def __init__(self, shape: Sequence[int], *, eps: float = 1e-6) -> None:
        super().__init__(shape)
        c = self.shape[0]
        self.eps = float(eps)
        self.loc = nn.Parameter(torch.zeros(c, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(c, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, a: Tensor) -> None:
        """Set ``loc``/``log_scale`` from the active blocks ``a: (B, C, H, W)`` of a batch."""
        flat = a.transpose(0, 1).reshape(self.shape[0], -1)
        self.loc.copy_(flat.mean(1).reshape(-1, 1, 1))
        self.log_scale.copy_(torch.log(flat.std(1, correction=0) + self.eps).reshape(-1, 1, 1))
        self.initialized.fill_(True)

    def _call(self, z: Tensor) -> Tensor:
        a, rest = self._split(z)
        return self._join(a * torch.exp(self.log_scale) + self.loc, rest)

    def _inverse(self, y: Tensor) -> Tensor:
        a, rest = self._split(y)
        if not bool(self.initialized) and a.reshape(-1, *self.shape).shape[0] >= 2:
            self.initialize(a.reshape(-1, *self.shape))
        return self._join((a - self.loc) * torch.exp(-self.log_scale), rest)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        h, w = self.shape[1:]
        return (h * w * self.log_scale.sum()).expand(x.shape[:-1])


class CouplingNet(nn.Module):
    """The coupling's conditioner: a small residual conv net ``(B, C_in, H, W) -> (B, C_out, H, W)``.

    ``conv3×3 → [ReLU, conv3×3, ReLU, conv3×3 (+ skip)] × num_blocks → ReLU → conv3×3`` with the last
    convolution initialised to zero (the coupling starts as the identity). No batch statistics, so each
    output row depends on its own input only.

    Example:
        >>> CouplingNet(2, 4, hidden=8)(torch.randn(3, 2, 5, 5)).abs().max().item()
        0.0
    """

    def __init__(self, in_channels: int, out_channels: int, *, hidden: int = 64, num_blocks: int = 2) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(hidden, hidden, 3, padding=1))
            for _ in range(num_blocks)
        )
        self.conv_out = nn.Conv2d(hidden, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for block in self.blocks:
            h = h + block(h)
        return self.conv_out(F.relu(h))


class ImageAffineCoupling(_ActiveBlock):
    """Affine coupling of the active block with a checkerboard or channel mask (RealNVP).

    .. math::

        y = m \\odot z + (1 - m) \\odot \\big(z \\odot e^{s(m \\odot z)} + t(m \\odot z)\\big),\\qquad
        \\log|\\det J| = \\textstyle\\sum (1 - m) \\odot s,

    with ``s = scale · tanh(raw)`` (a learned per-channel ``scale``, so ``|s|`` stays bounded) and
    ``(raw, t) = net(m ⊙ z)``. ``mask="checkerboard"`` uses :func:`checkerboard_mask` (``parity``
    alternates), and the net also sees the mask as an extra channel; ``mask="channel"`` conditions on the
    first (``parity=0``) or second half of the channels.

    Args:
        shape: ``(C, H, W)`` of the active block (``C >= 2`` for the channel mask).
        mask: ``"checkerboard"`` or ``"channel"``.
        parity: 0 or 1, which half is kept.
        hidden: conv channels of the conditioner; num_blocks: its residual blocks.

    Example:
        >>> t = ImageAffineCoupling((2, 4, 4), mask="channel", hidden=8)
        >>> z = torch.randn(3, 32)
        >>> torch.allclose(t.inv(t(z)), z)
        True
    """

    def __init__(self, shape: Sequence[int], *, mask: str = "checkerboard", parity: int = 0, hidden: int = 64,
                 num_blocks: int = 2) -> None:
        super().__init__(shape)
        self.mask_kind = check_choice("mask", mask, ("checkerboard", "channel"))
        c, h, w = self.shape
        self.parity = check_int("parity", parity, minimum=0, maximum=1)
        if self.mask_kind == "checkerboard":
            self.register_buffer("mask", checkerboard_mask(h, w, parity=self.parity))
            self.net = CouplingNet(c + 1, 2 * c, hidden=hidden, num_blocks=num_blocks)
            self.scale = nn.Parameter(torch.ones(c, 1, 1))
        else:
            if c < 2:
                raise ValueError(f"a channel mask needs at least 2 channels, got shape {self.shape}")
            half = c // 2
            self.cond = (0, half) if self.parity == 0 else (half, c)
            self.free = (half, c) if self.parity == 0 else (0, half)
            n_free = self.free[1] - self.free[0]
            self.net = CouplingNet(self.cond[1] - self.cond[0], 2 * n_free, hidden=hidden, num_blocks=num_blocks)
            self.scale = nn.Parameter(torch.ones(n_free, 1, 1))
        self._last: tuple[Tensor, Tensor, Tensor] | None = None

    def _params(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """``(s, t)`` from the kept part of ``a: (N, C, H, W)``; zero where the mask keeps."""
        if self.mask_kind == "checkerboard":
            m = self.mask.to(a.dtype)
            inp = torch.cat([a * m, m.expand(a.shape[0], 1, *a.shape[2:])], dim=1)
            raw, shift = self.net(inp).chunk(2, dim=1)
            log_s = self.scale * torch.tanh(raw) * (1 - m)
            return log_s, shift * (1 - m)
        raw, shift = self.net(a[:, self.cond[0]:self.cond[1]]).chunk(2, dim=1)
        return self.scale * torch.tanh(raw), shift

    def _couple(self, v: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        a, rest = self._split(v)
        lead = a.shape[:-3]
        a = a.reshape(-1, *self.shape)
        log_s, shift = self._params(a)
        if self.mask_kind == "checkerboard":
            out = (a - shift) * torch.exp(-log_s) if inverse else a * torch.exp(log_s) + shift
        else:
            lo, hi = self.free
            part = a[:, lo:hi]
            part = (part - shift) * torch.exp(-log_s) if inverse else part * torch.exp(log_s) + shift
            out = torch.cat([a[:, :lo], part, a[:, hi:]], dim=1)
        ladj = log_s.reshape(log_s.shape[0], -1).sum(-1).reshape(lead)
        return self._join(out.reshape(*lead, *self.shape), rest), ladj

    def _call(self, z: Tensor) -> Tensor:
        y, ladj = self._couple(z, inverse=False)
        self._last = (z, y, ladj)
        return y

    def _inverse(self, y: Tensor) -> Tensor:
        z, ladj = self._couple(y, inverse=True)
        self._last = (z, y, ladj)
        return z

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        if self._last is not None and self._last[0] is x and self._last[1] is y:
            return self._last[2]
        return self._couple(x, inverse=False)[1]


class LogitTransform(TransformModule):
    """Fixed map from ``R^D`` (base side) onto data in ``(low, high)^D`` (RealNVP's logit preprocessing).

    .. math::

        x = \\mathrm{low} + (\\mathrm{high} - \\mathrm{low})\\,\\frac{\\sigma(y) - \\alpha}{1 - 2\\alpha},
        \\qquad \\log\\left|\\frac{dx}{dy}\\right| = \\log\\frac{\\mathrm{high} - \\mathrm{low}}{1 - 2\\alpha}
        + \\log\\sigma(y) + \\log(1 - \\sigma(y)).

    Data must lie in ``(low, high)`` (uniformly dequantized values do; exact endpoints map to ``±logit α``
    bounds only approximately, so keep ``alpha > 0``).

    Example:
        >>> t = LogitTransform(low=0.0, high=1.0, alpha=0.05)
        >>> x = torch.tensor([[0.25, 0.5]])
        >>> torch.allclose(t(t.inv(x)), x)
        True
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, *, low: float = 0.0, high: float = 1.0, alpha: float = 0.05) -> None:
        super().__init__(cache_size=0)
        self.low, self.high, self.alpha = float(low), float(high), float(alpha)

    def _call(self, y: Tensor) -> Tensor:
        p = (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)
        return self.low + (self.high - self.low) * p

    def _inverse(self, x: Tensor) -> Tensor:
        u = (x - self.low) / (self.high - self.low)
        p = self.alpha + (1 - 2 * self.alpha) * u
        return torch.log(p) - torch.log1p(-p)

    def log_abs_det_jacobian(self, y: Tensor, x: Tensor) -> Tensor:
        const = math.log(self.high - self.low) - math.log(1 - 2 * self.alpha)
        return (const + F.logsigmoid(y) + F.logsigmoid(-y)).sum(-1)


class ImageFlow(nn.Module):
    """Multi-scale coupling flow for images ``(C, H, W)`` (RealNVP / Glow), a Pyro ``TransformedDistribution``.

    .. math::

        \\log p(x) = \\log \\mathcal N(z; 0, I_D) - \\sum_k \\log|\\det J_{T_k}|,\\qquad z = T^{-1}(x),

    with the layers listed in the module docstring: per scale ``K`` checkerboard couplings, a squeeze,
    ``K`` channel couplings and a factor-out of half the channels; ``K + 1`` checkerboard couplings at the
    last scale; ActNorm before every coupling. ``H`` and ``W`` must be divisible by ``2^num_scales``
    (28 = 4·7 allows 2 scales: 1×28×28 → 4×14×14 → 2×14×14 → 8×7×7 → 4×7×7).

    Args:
        event_shape: ``(C, H, W)``.
        num_scales: number of squeeze + factor-out stages ``S`` (``>= 0``).
        num_couplings: ``K``, couplings per mask type per scale.
        hidden: channels of each coupling's conv net; num_blocks: its residual blocks.
        logit: ``None`` (data on ``R``) or ``(low, high)``: data lie in ``(low, high)`` and a fixed logit
            layer (``alpha``) maps them to ``R``; ``log_prob`` stays the density of the data as given.
        alpha: the logit layer's margin.

    Attributes:
        family: ``"image-flow"`` (checkpoint registry key); ``event_shape``: ``(C, H, W)``.

    Shapes:
        ``log_prob(x: (B, C, H, W)) -> (B,)`` nats; ``sample(n) -> (n, C, H, W)``.

    References:
        Dinh, Sohl-Dickstein & Bengio (2017) arXiv:1605.08803; Kingma & Dhariwal (2018) arXiv:1807.03039.

    Example:
        >>> flow = ImageFlow((1, 4, 4), num_scales=1, num_couplings=1, hidden=8, num_blocks=1)
        >>> flow.log_prob(torch.randn(5, 1, 4, 4)).shape, flow.sample(2).shape
        (torch.Size([5]), torch.Size([2, 1, 4, 4]))
        >>> again = ImageFlow(**flow.config())
    """

    family = "image-flow"

    def __init__(
        self,
        event_shape: Sequence[int],
        *,
        num_scales: int = 2,
        num_couplings: int = 2,
        hidden: int = 64,
        num_blocks: int = 2,
        logit: Sequence[float] | None = None,
        alpha: float = 0.05,
    ) -> None:
        super().__init__()
        if isinstance(event_shape, (str, bytes)) or not isinstance(event_shape, Sequence) or len(event_shape) != 3:
            raise ValueError(f"event_shape must be (C, H, W), got {event_shape!r}")
        c, h, w = (check_int(f"event_shape[{i}]", v, minimum=1) for i, v in enumerate(event_shape))
        self.event_shape = (c, h, w)
        self.num_scales = check_int("num_scales", num_scales, minimum=0)
        factor = 2 ** self.num_scales
        if h % factor or w % factor:
            top = 0
            while h % (2 ** (top + 1)) == 0 and w % (2 ** (top + 1)) == 0:
                top += 1
            raise ValueError(
                f"num_scales={num_scales} needs H and W divisible by 2^{num_scales} = {factor}, got {h}×{w}; "
                f"valid num_scales for this size: 0..{top}"
            )
        self.num_couplings = check_int("num_couplings", num_couplings, minimum=1)
        self.hidden = check_int("hidden", hidden, minimum=1)
        self.num_blocks = check_int("num_blocks", num_blocks, minimum=0)
        if logit is not None:
            if isinstance(logit, (str, bytes)) or not isinstance(logit, Sequence) or len(logit) != 2 \
                    or not float(logit[0]) < float(logit[1]):
                raise ValueError(f"logit must be None or (low, high) with low < high, got {logit!r}")
            logit = (float(logit[0]), float(logit[1]))
        self.logit = logit
        self.alpha = check_interval("alpha", alpha, 0.0, 0.5)
        if logit is not None and not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha must lie in (0, 0.5) with a logit layer, got {alpha}")
        self.dim = c * h * w

        # layers in the data -> base order
        steps: list[nn.Module] = []
        shape = (c, h, w)
        parity = 0

        def couplings(n: int, mask: str) -> None:
            nonlocal parity
            for _ in range(n):
                steps.append(ImageActNorm(shape))
                steps.append(ImageAffineCoupling(shape, mask=mask, parity=parity, hidden=self.hidden,
                                                 num_blocks=self.num_blocks))
                parity = 1 - parity

        for _ in range(self.num_scales):
            couplings(self.num_couplings, "checkerboard")
            steps.append(Squeeze(shape))
            shape = (4 * shape[0], shape[1] // 2, shape[2] // 2)
            parity = 0
            couplings(self.num_couplings, "channel")
            shape = (shape[0] // 2, shape[1], shape[2])  # factor out: the tail half of the channels leaves
            parity = 0
        couplings(self.num_couplings + 1, "checkerboard")
        self.layers = nn.ModuleList(steps)
        self.logit_layer = LogitTransform(low=logit[0], high=logit[1], alpha=self.alpha) if logit else None
        self.register_buffer("base_loc", torch.zeros(self.dim))
        self.register_buffer("base_scale", torch.ones(self.dim))

    # ------------------------------------------------------------------ distribution
    @property
    def base_dist(self) -> pdist.Normal:
        """``N(0, I_D)`` over the flat vector, on the model's device."""
        return pdist.Normal(self.base_loc, self.base_scale).to_event(1)

    @property
    def transforms(self) -> list:
        """Transforms base → data as handed to :class:`~pyro.distributions.TransformedDistribution`."""
        out: list = list(reversed(self.layers))
        if self.logit_layer is not None:
            out.append(self.logit_layer)
        out.append(ReshapeTransform((self.dim,), self.event_shape))
        return out

    @property
    def dist(self) -> pdist.TransformedDistribution:
        """The flow as ``TransformedDistribution(N(0, I_D), transforms)`` with event shape ``(C, H, W)``."""
        return pdist.TransformedDistribution(self.base_dist, self.transforms)

    def as_distribution(self) -> pdist.TransformedDistribution:
        """The flow itself is a Pyro distribution: returns :attr:`dist`."""
        return self.dist

    # ------------------------------------------------------------------ protocol
    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density in nats, ``x: (B, C, H, W) -> (B,)``."""
        check_events("x", x, self.event_shape)
        return self.dist.log_prob(x)

    def loss(self, x: Tensor) -> Tensor:
        """Mean negative log-likelihood of the batch (nats)."""
        return -self.log_prob(x).mean()

    def sample(self, num_samples: int, *, temperature: float = 1.0) -> Tensor:
        """Draw ``(num_samples, C, H, W)`` images (no gradient); ``temperature`` scales the base noise."""
        num_samples = check_int("num_samples", num_samples, minimum=1)
        temperature = check_positive("temperature", temperature)
        with torch.no_grad():
            z = self.base_dist.sample((num_samples,)) * temperature
            for t in self.transforms:
                z = t(z)
            return z

    def rsample(self, num_samples: int) -> Tensor:
        """Reparameterised draws ``(num_samples, C, H, W)``."""
        num_samples = check_int("num_samples", num_samples, minimum=1)
        return self.dist.rsample((num_samples,))

    def config(self) -> dict[str, Any]:
        """JSON-safe keyword arguments: ``ImageFlow(**flow.config())`` rebuilds the architecture."""
        return {
            "event_shape": list(self.event_shape),
            "num_scales": self.num_scales,
            "num_couplings": self.num_couplings,
            "hidden": self.hidden,
            "num_blocks": self.num_blocks,
            "logit": list(self.logit) if self.logit is not None else None,
            "alpha": self.alpha,
        }

    def extra_repr(self) -> str:
        return (f"event_shape={self.event_shape}, num_scales={self.num_scales}, "
                f"num_couplings={self.num_couplings}, hidden={self.hidden}")
