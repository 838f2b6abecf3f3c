"""MADE: masked autoencoder for distribution estimation on binary vectors.

MADE (Germain, Gregor, Murray & Larochelle, 2015, arXiv:1502.03509) is an autoregressive model

.. math::

    \\log p(x) = \\sum_{i=1}^{D} \\log \\operatorname{Bernoulli}\\big(x_i \\mid \\sigma(\\ell_i(x_{<i}))\\big),

whose logits ``ℓ(x)`` come from one pass of a feed-forward network whose weight masks cut every
path from ``x_j`` to ``ℓ_i`` with ``j >= i``. Each hidden unit gets a degree ``m(k) ∈ {1, ..., D-1}``;
a hidden unit may see units of degree ``<= m(k)`` below it, and output ``i`` may see hidden units of
degree ``< i``. Several masks (``num_masks > 1``, Germain et al.'s connectivity-agnostic
training) define an equally weighted mixture ``p(x) = (1/K) Σ_k p_k(x)``, still exactly normalised.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import constraints

from probgen._checks import check_binary, check_bool, check_event_shape, check_int, check_tensor
from probgen.protocol import ModelDistribution

__all__ = ["MADE", "MaskedLinear"]


class MaskedLinear(nn.Linear):
    """``y = x (M ⊙ W)ᵀ + b`` for a fixed 0/1 mask ``M`` (a buffer), with one mask per connectivity.

    Args:
        in_features: input width.
        out_features: output width.
        masks: ``(K, out_features, in_features)`` 0/1 tensor, one mask per connectivity.
    """

    def __init__(self, in_features: int, out_features: int, masks: Tensor) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("masks", masks.to(self.weight.dtype))

    def forward(self, x: Tensor, mask_index: int = 0) -> Tensor:  # type: ignore[override]
        return F.linear(x, self.weight * self.masks[mask_index], self.bias)


def _degrees(dim: int, hidden: tuple[int, ...], num_masks: int, seed: int) -> list[list[Tensor]]:
    """Degrees of the input, hidden and output units for each connectivity (natural input order)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(num_masks):
        degrees = [torch.arange(1, dim + 1)]
        for width in hidden:
            if dim == 1:
                d = torch.zeros(width, dtype=torch.long)  # no hidden unit may see anything
            elif k == 0:
                # deterministic spread over 1..D-1 (every degree used when width >= D-1)
                d = torch.arange(width) % (dim - 1) + 1
            else:
                prev_min = int(degrees[-1].min())
                d = torch.randint(min(prev_min, dim - 1), dim, (width,), generator=gen)
            degrees.append(d)
        out.append(degrees)
    return out


class MADE(nn.Module):
    """Autoregressive Bernoulli model for binary vectors ``x ∈ {0, 1}^D``, with exact likelihood.

    .. math::

        \\log p(x) = \\sum_i x_i \\ell_i - \\operatorname{softplus}(\\ell_i), \\qquad \\ell = \\text{MADE}(x),
        \\quad \\partial \\ell_i / \\partial x_j = 0 \\text{ for } j \\ge i.

    Shapes: ``x: (B, D)`` with entries in {0, 1} (any float or integer/bool dtype); ``log_prob -> (B,)``.
    Sampling is sequential (``D`` network passes). With ``num_masks = K > 1`` the model is the
    mixture of the ``K`` connectivities, ``log p = logsumexp_k log p_k - log K`` (exact; ``loss`` is its
    NLL, which costs ``K`` passes — Germain et al. instead train one random mask per step).

    Args:
        dim: number of binary variables ``D``.
        hidden: hidden widths.
        num_masks: number of connectivities ``K`` (the first is deterministic, the rest drawn from ``seed``).
        direct: add a masked direct input→output connection (Germain et al., section 4).
        seed: seed of the random connectivities.

    Attributes:
        family: ``"made"``.

    Reference:
        Germain, Gregor, Murray & Larochelle, "MADE: Masked Autoencoder for Distribution
        Estimation", ICML 2015, arXiv:1502.03509.

    Example:
        >>> made = MADE(4, hidden=(16,))
        >>> x = torch.randint(0, 2, (3, 4)).float()
        >>> made.log_prob(x).shape, made.sample(5).shape
        (torch.Size([3]), torch.Size([5, 4]))
    """

    family = "made"

    def __init__(
        self,
        dim: int,
        hidden: tuple[int, ...] | list[int] = (512, 512),
        num_masks: int = 1,
        *,
        direct: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=1)
        if isinstance(hidden, int) and not isinstance(hidden, bool):
            hidden = (hidden,)
        if not isinstance(hidden, (tuple, list)) or not hidden:
            raise TypeError(f"hidden must be a non-empty sequence of positive integers, got {hidden!r}")
        self.hidden = tuple(check_int(f"hidden[{i}]", h, minimum=1) for i, h in enumerate(hidden))
        self.num_masks = check_int("num_masks", num_masks, minimum=1)
        check_bool("direct", direct)
        self.direct = direct
        self.seed = check_int("seed", seed, minimum=0)
        self.event_shape = (self.dim,)

        degrees = _degrees(self.dim, self.hidden, self.num_masks, self.seed)
        widths = (self.dim, *self.hidden)
        layers = []
        for layer in range(len(self.hidden)):
            masks = torch.stack([(d[layer + 1][:, None] >= d[layer][None, :]) for d in degrees])
            layers.append(MaskedLinear(widths[layer], widths[layer + 1], masks))
        self.hidden_layers = nn.ModuleList(layers)
        out_idx = torch.arange(1, self.dim + 1)
        out_masks = torch.stack([(out_idx[:, None] > d[-1][None, :]) for d in degrees])
        self.output = MaskedLinear(widths[-1], self.dim, out_masks)
        if direct:
            tri = (out_idx[:, None] > out_idx[None, :]).expand(self.num_masks, self.dim, self.dim)
            self.skip = MaskedLinear(self.dim, self.dim, tri.clone())
            nn.init.zeros_(self.skip.weight)

    # ------------------------------------------------------------------ network
    def logits(self, x: Tensor, *, mask_index: int = 0) -> Tensor:
        """Logits ``ℓ(x): (B, D)`` of the ``mask_index``-th connectivity; ``ℓ_i`` depends on ``x_{<i}`` only."""
        h = x
        for layer in self.hidden_layers:
            h = torch.relu(layer(h, mask_index))
        out = self.output(h, mask_index)
        if self.direct:
            out = out + self.skip(x, mask_index)
        return out

    def _check_binary(self, x: Any) -> Tensor:
        check_tensor("x", x, ndim=2, floating=False)
        check_event_shape("x", x, (self.dim,))
        if x.is_complex():
            raise TypeError(f"x must be real with entries in {{0, 1}}, got {x.dtype}")
        check_binary("x", x, model="a MADE")
        dtype = self.output.weight.dtype
        return x.to(dtype)

    # ------------------------------------------------------------------ protocol
    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log p(x)`` in nats, ``x: (B, D) ∈ {0,1} -> (B,)``."""
        x = self._check_binary(x)
        per_mask = []
        for k in range(self.num_masks):
            logits = self.logits(x, mask_index=k)
            per_mask.append(-F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1))
        if self.num_masks == 1:
            return per_mask[0]
        return torch.logsumexp(torch.stack(per_mask), 0) - math.log(self.num_masks)

    def loss(self, x: Tensor) -> Tensor:
        """Mean negative log-likelihood (nats) of the binary batch ``x: (B, D)``."""
        return -self.log_prob(x).mean()

    def sample(self, num_samples: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``(num_samples, D)`` binary vectors (float, model dtype) by ``D`` sequential passes.

        With ``num_masks > 1`` each draw first picks a connectivity uniformly (mixture sampling).
        """
        num_samples = check_int("num_samples", num_samples, minimum=1)
        weight = self.output.weight
        x = torch.zeros(num_samples, self.dim, dtype=weight.dtype, device=weight.device)
        comp = torch.randint(self.num_masks, (num_samples,), generator=generator, device="cpu").to(weight.device)
        with torch.no_grad():
            for i in range(self.dim):
                if self.num_masks == 1:
                    logit_i = self.logits(x)[:, i]
                else:
                    all_logits = torch.stack([self.logits(x, mask_index=k)[:, i] for k in range(self.num_masks)])
                    logit_i = all_logits.gather(0, comp[None]).squeeze(0)
                u = torch.rand(num_samples, generator=generator, dtype=weight.dtype, device="cpu").to(weight.device)
                x[:, i] = (u < torch.sigmoid(logit_i)).to(x.dtype)
        return x

    def as_distribution(self) -> ModelDistribution:
        """A Pyro distribution over ``{0,1}^D`` backed by this model (``log_prob`` and ``sample``).

        Its support is ``independent(boolean, 1)``, so Pyro's HMC/NUTS refuse it as a discrete site.
        """
        return ModelDistribution(self, self.event_shape, support=constraints.boolean)

    def config(self) -> dict[str, Any]:
        """JSON-safe kwargs such that ``MADE(**made.config())`` rebuilds the architecture."""
        return {"dim": self.dim, "hidden": list(self.hidden), "num_masks": self.num_masks,
                "direct": self.direct, "seed": self.seed}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}, num_masks={self.num_masks}"
