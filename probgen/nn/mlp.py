"""Fully connected networks: a plain :class:`MLP` and a time/label :class:`ConditionedMLP`.

Both act per sample (no batch statistics), so they can be differentiated with ``torch.func.vjp`` and
batched with ``torch.func.vmap`` (the exact divergence of :mod:`probgen.ops.trace`), and their
constructor arguments are plain Python values, returned by ``config()`` for checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from probgen._checks import check_choice, check_int, check_positive, check_widths
from probgen.nn.embeddings import TIME_EMBEDDINGS, make_time_embedding

__all__ = ["MLP", "ConditionedMLP", "ACTIVATIONS", "make_activation"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
}


class _Lambda(nn.Module):
    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


def make_activation(activation: str | Callable | type[nn.Module]) -> nn.Module:
    """Return a fresh activation module from a name, an ``nn.Module`` class or a plain function.

    Example:
        >>> make_activation("tanh")
        Tanh()
    """
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; valid choices: "
                + ", ".join(repr(k) for k in ACTIVATIONS)
                + ", an nn.Module class, or a callable"
            )
        return ACTIVATIONS[activation]()
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation()
    if isinstance(activation, nn.Module):
        return activation
    if callable(activation):
        return _Lambda(activation)
    raise TypeError(
        f"activation must be a name ({', '.join(repr(k) for k in ACTIVATIONS)}), an nn.Module class "
        f"or a callable, got {type(activation).__name__}"
    )


def _config_activation(activation: Any) -> str:
    if not isinstance(activation, str):
        raise TypeError(
            "config() needs the activation given by name (one of "
            + ", ".join(repr(k) for k in ACTIVATIONS)
            + f"), got {activation!r}"
        )
    return activation


def _check_batch(name: str, x: Tensor, ndim: int, features: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim or x.shape[-1] != features:
        raise ValueError(f"{name} must have shape (batch, {features}), got {tuple(x.shape)}")


class MLP(nn.Module):
    """A plain multilayer perceptron ``R^in -> R^out``.

    .. math::

        h_0 = x,\\quad h_{l} = \\phi(W_l h_{l-1} + b_l),\\quad y = W_{L+1} h_L + b_{L+1}.

    Args:
        in_features: input width.
        out_features: output width.
        hidden: widths of the hidden layers (``()`` gives an affine map).
        activation: ``"silu"``, ``"relu"``, ``"tanh"``, ``"softplus"``, ``"elu"``, an ``nn.Module``
            class, or a callable; ``config()`` requires a name.

    Shapes:
        ``x: (B, in_features) -> (B, out_features)`` (any leading dims are accepted).

    Example:
        >>> net = MLP(2, 3, hidden=(8,))
        >>> net(torch.randn(5, 2)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: Sequence[int] = (256, 256),
        activation: str | Callable | type[nn.Module] = "silu",
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.out_features = check_int("out_features", out_features, minimum=1)
        self.hidden = check_widths("hidden", hidden)
        self.activation = activation
        widths = (self.in_features, *self.hidden)
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), make_activation(activation)]
        layers.append(nn.Linear(widths[-1], self.out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[-1] != self.in_features:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (batch, {self.in_features}), got {got}")
        return self.net(x)

    def config(self) -> dict[str, Any]:
        """JSON-safe constructor arguments: ``MLP(**net.config())`` rebuilds the architecture."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "hidden": list(self.hidden),
            "activation": _config_activation(self.activation),
        }


class ConditionedMLP(nn.Module):
    """An MLP field ``f(x, t, c)`` with the time embedding (and an optional label) added to every layer.

    .. math::

        e = \\phi\\big(W_t\\,\\gamma(t) + W_c\\,c\\big),\\qquad
        h_l = \\phi\\big(W_l h_{l-1} + b_l + U_l e\\big),\\qquad f = W_{L+1} h_L + b_{L+1},

    with ``γ`` the Fourier or sinusoidal embedding of ``t``. Used as a score network
    ``s(x, t)``, a noise predictor ``ε̂(x, t)``, a conditional field ``f(x, t, c)`` (``c`` a one-hot
    label), or — with ``time_conditioned=False`` and ``out_features=1`` — an energy ``E(x)``.

    Args:
        dim: data dimension ``D``.
        out_features: output width, ``D`` by default (a vector field); 1 for an energy.
        hidden: hidden widths.
        embed_dim: width of the time/condition embedding.
        embedding: ``"fourier"`` (continuous ``t``, ``log sigma``) or ``"sinusoidal"`` (integer steps).
        activation: as in :class:`MLP`.
        fourier_scale: frequency scale of the Fourier features.
        cond_features: width of the optional conditioning vector ``c`` (0: none).
        time_conditioned: if ``False`` the net ignores time and is called ``f(x)`` / ``f(x, cond=c)``.
        zero_init_last: zero the last layer (output 0 at initialisation, common for score/noise nets;
            keep ``False`` for energies, whose gradient would vanish).

    Shapes:
        ``x: (B, D)``, ``t: (B,)`` (or a scalar, broadcast), ``cond: (B, cond_features)``
        ``-> (B, out_features)``.

    References:
        Song et al. (2021), arXiv:2011.13456; Ho et al. (2020), arXiv:2006.11239.

    Example:
        >>> net = ConditionedMLP(2, hidden=(16, 16), embed_dim=8)
        >>> net(torch.randn(4, 2), torch.rand(4)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        dim: int,
        *,
        out_features: int | None = None,
        hidden: Sequence[int] = (256, 256, 256),
        embed_dim: int = 64,
        embedding: str = "fourier",
        activation: str | Callable | type[nn.Module] = "silu",
        fourier_scale: float = 16.0,
        cond_features: int = 0,
        time_conditioned: bool = True,
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=1)
        self.out_features = self.dim if out_features is None else check_int("out_features", out_features, minimum=1)
        self.hidden = check_widths("hidden", hidden)
        if not self.hidden:
            raise ValueError("hidden must list at least one layer width for ConditionedMLP, got ()")
        self.embed_dim = check_int("embed_dim", embed_dim, minimum=2)
        self.embedding = check_choice("embedding", embedding, TIME_EMBEDDINGS)
        self.activation = activation
        self.fourier_scale = check_positive("fourier_scale", fourier_scale)
        self.cond_features = check_int("cond_features", cond_features, minimum=0)
        self.time_conditioned = bool(time_conditioned)
        self.zero_init_last = bool(zero_init_last)
        self.act = make_activation(activation)

        self.has_context = self.time_conditioned or self.cond_features > 0
        if self.time_conditioned:
            self.time_embed = make_time_embedding(self.embedding, self.embed_dim, fourier_scale=self.fourier_scale)
            self.time_proj = nn.Linear(self.embed_dim, self.embed_dim)
        if self.cond_features:
            self.cond_proj = nn.Linear(self.cond_features, self.embed_dim)
        widths = (self.dim, *self.hidden)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        if self.has_context:
            self.context_layers = nn.ModuleList(nn.Linear(self.embed_dim, b) for b in self.hidden)
        self.out = nn.Linear(self.hidden[-1], self.out_features)
        if self.zero_init_last:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def _context(self, x: Tensor, t: Tensor | float | None, cond: Tensor | None) -> Tensor | None:
        if self.time_conditioned:
            if t is None:
                raise ValueError("t is required: this ConditionedMLP was built with time_conditioned=True")
        elif t is not None:
            raise ValueError("t must be None: this ConditionedMLP was built with time_conditioned=False")
        if self.cond_features:
            if cond is None:
                raise ValueError(f"cond of shape (batch, {self.cond_features}) is required (cond_features > 0)")
            _check_batch("cond", cond, 2, self.cond_features)
        elif cond is not None:
            raise ValueError("cond must be None: this ConditionedMLP was built with cond_features=0")
        if not self.has_context:
            return None
        ctx = 0.0
        if self.time_conditioned:
            emb = self.time_embed(t).to(x.dtype)
            if emb.dim() == 1:
                emb = emb.expand(x.shape[0], self.embed_dim)
            ctx = ctx + self.time_proj(emb)
        if self.cond_features:
            ctx = ctx + self.cond_proj(cond.to(x.dtype))
        return self.act(ctx)

    def forward(self, x: Tensor, t: Tensor | float | None = None, cond: Tensor | None = None) -> Tensor:
        _check_batch("x", x, 2, self.dim)
        ctx = self._context(x, t, cond)
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if ctx is not None:
                h = h + self.context_layers[i](ctx)
            h = self.act(h)
        return self.out(h)

    def config(self) -> dict[str, Any]:
        """JSON-safe constructor arguments: ``ConditionedMLP(**net.config())`` rebuilds it."""
        return {
            "dim": self.dim,
            "out_features": self.out_features,
            "hidden": list(self.hidden),
            "embed_dim": self.embed_dim,
            "embedding": self.embedding,
            "activation": _config_activation(self.activation),
            "fourier_scale": self.fourier_scale,
            "cond_features": self.cond_features,
            "time_conditioned": self.time_conditioned,
            "zero_init_last": self.zero_init_last,
        }


# keep torch referenced for doctest namespaces
_ = torch
