"""The :class:`Flow` model: a normalizing flow assembled from Pyro transform modules.

A flow pushes a standard normal base ``z ~ N(0, I_D)`` through an invertible map ``y = T(z)``;
the change of variables gives the exact density

.. math::

    \\log p(y) = \\log \\mathcal N(T^{-1}(y); 0, I) - \\log\\left|\\det \\frac{\\partial T}{\\partial z}\\right|
    _{z = T^{-1}(y)}.

``T = T_K ∘ ... ∘ T_1`` is a stack of layers from :mod:`pyro.distributions.transforms` (plus the few
in :mod:`probgen.flows.transforms` and :mod:`probgen.flows.cnf`), interleaved with fixed
permutations and ActNorm. Which direction of each layer is explicit (one network pass) decides
which of ``log_prob`` and ``sample`` is cheap:

===========  =========================================  ===========================  ========================
kind         layer                                      ``log_prob`` (data → base)   ``sample`` (base → data)
===========  =========================================  ===========================  ========================
planar       Planar, Rezende & Mohamed 2015 (inverted)  1 pass                       1-D bisection per layer
radial       Radial, Rezende & Mohamed 2015 (inverted)  1 pass                       closed form, 1 pass
realnvp      AffineCoupling, Dinh et al. 2017           1 pass                       1 pass
spline       SplineCoupling, Durkan et al. 2019         1 pass                       1 pass
maf          AffineAutoregressive.inv, Papamakarios 17  1 pass                       D sequential passes
iaf          AffineAutoregressive, Kingma et al. 2016   D sequential passes          1 pass
spline-ar    SplineAutoregressive.inv, Durkan 2019      1 pass                       D sequential passes
cnf          CNFTransform, Grathwohl et al. 2019        1 ODE solve                  1 ODE solve
===========  =========================================  ===========================  ========================
"""

from __future__ import annotations

from typing import Any

import pyro.distributions as pdist
import torch
from pyro.distributions.transforms import AffineCoupling
from pyro.nn import AutoRegressiveNN, DenseNN
from torch import Tensor, nn

from probgen._checks import (
    check_bool,
    check_choice,
    check_events,
    check_int,
    check_positive,
)
from probgen.flows.cnf import ODE_METHODS, CNFTransform
from probgen.flows.splines import SplineAutoregressive, SplineCoupling
from probgen.flows.transforms import (
    ActNorm,
    AffineAutoregressive,
    InvertiblePlanar,
    InvertibleRadial,
    Permutation,
)
from probgen.nn import ConditionedMLP
from probgen.ops.trace import DIVERGENCE_METHODS

__all__ = ["Flow", "FLOW_KINDS", "flow_options"]

FLOW_KINDS = ("planar", "radial", "realnvp", "maf", "iaf", "spline", "spline-ar", "cnf")

_PERMUTE_CHOICES = ("reverse", "random")

#: per kind: the keyword options and their defaults (None means "derived from dim", see Flow's docstring)
_KIND_OPTIONS: dict[str, dict[str, Any]] = {
    "planar": {"actnorm": True},
    "radial": {"actnorm": True},
    "realnvp": {"hidden_dims": None, "permute": True, "actnorm": True, "seed": 0},
    "maf": {"hidden_dims": None, "permute": True, "actnorm": True, "seed": 0},
    "iaf": {"hidden_dims": None, "permute": True, "actnorm": True, "seed": 0},
    "spline": {"hidden_dims": None, "count_bins": 16, "bound": 4.0, "order": "quadratic",
               "permute": True, "actnorm": True, "seed": 0},
    "spline-ar": {"hidden_dims": None, "count_bins": 16, "bound": 4.0, "order": "quadratic",
                  "permute": True, "actnorm": True, "seed": 0},
    "cnf": {"hidden_dims": (64, 64, 64), "activation": "softplus", "embedding": "fourier", "fourier_scale": 1.0,
            "trace": "exact", "method": "dopri5", "rtol": 1e-5, "atol": 1e-5, "adjoint": True,
            "num_probes": 1, "t1": 1.0, "actnorm": True},
}

_DEFAULT_LAYERS = {"cnf": 1}


def flow_options(kind: str) -> dict[str, Any]:
    """The keyword options that :class:`Flow` accepts for ``kind``, with their defaults.

    Example:
        >>> sorted(flow_options("planar"))
        ['actnorm']
    """
    check_choice("kind", kind, FLOW_KINDS)
    return dict(_KIND_OPTIONS[kind])


def _check_hidden(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not value:
        raise TypeError(f"{name} must be a non-empty sequence of positive integers, got {value!r}")
    return tuple(check_int(f"{name}[{i}]", v, minimum=1) for i, v in enumerate(value))


def _vector_field(dim: int, o: dict[str, Any]) -> nn.Module:
    """The default CNF field ``f(x, t)``: :class:`probgen.nn.ConditionedMLP` with a smooth activation."""
    return ConditionedMLP(dim, hidden=o["hidden_dims"], embedding=o["embedding"], activation=o["activation"],
                          embed_dim=16, fourier_scale=o["fourier_scale"], time_conditioned=True)


class Flow(nn.Module):
    """A normalizing flow ``y = T(z)``, ``z ~ N(0, I_D)``, over Pyro transforms.

    .. math::

        \\log p(y) = \\log \\mathcal N(z; 0, I) - \\sum_{k=1}^{K} \\log|\\det J_{T_k}(z_{k-1})|,
        \\qquad z = T^{-1}(y).

    The layers are stacked base → data as ``[layer_1, ActNorm_1, perm, layer_2, ActNorm_2, ..., layer_K,
    ActNorm_K]``, so the data first meets ``ActNorm_K``, which standardises it on the first batch
    (data-dependent initialisation) — the spline ``bound`` is therefore in standardised units. The
    permutations between layers are the reversal (``permute=True`` or ``"reverse"``) or a random
    permutation drawn from ``seed`` (``"random"``); both are buffers saved in the ``state_dict``.

    Options per kind (see :func:`flow_options`; unknown options raise ``TypeError``):

    * ``hidden_dims`` — hidden widths of the conditioner networks (Pyro's ``DenseNN`` /
      ``AutoRegressiveNN``); default ``(max(128, 10 D), max(128, 10 D))``; for ``"cnf"`` the vector
      field's widths, default ``(64, 64, 64)``.
    * ``count_bins`` (16), ``bound`` (4.0), ``order`` (``"quadratic"``: rational-quadratic splines of
      Durkan et al.; ``"linear"``: rational-linear splines of Dolatabadi et al. 2020) for the splines.
      Outside ``[-bound, bound]`` the spline is the identity.
    * ``permute`` (True | False | "reverse" | "random"), ``seed`` (for random permutations).
    * ``actnorm`` (True) — ActNorm after every layer.
    * ``"cnf"``: the vector field is :class:`probgen.nn.ConditionedMLP` with ``activation``
      ("softplus" | "tanh" | "silu" | "elu": smooth, as a CNF needs), ``embedding`` ("fourier" |
      "sinusoidal") and ``fourier_scale`` (1.0) of the time; ``trace`` ("exact" | "hutchinson"),
      ``method``, ``rtol``, ``atol``, ``adjoint``, ``num_probes``, ``t1`` (integration over
      ``[0, t1]``). ``num_layers`` counts stacked CNF blocks (default 1 for ``"cnf"``, 4 otherwise).

    Args:
        dim: event size ``D`` (``>= 2`` for the coupling kinds ``"realnvp"`` and ``"spline"``).
        kind: one of :data:`FLOW_KINDS`.
        num_layers: number of flow layers ``K`` (``None``: 1 for ``"cnf"``, else 4).
        **options: the kind's options, listed above.

    Attributes:
        family: ``"flow"`` (checkpoint registry key).
        event_shape: ``(dim,)``.

    References:
        Rezende & Mohamed (2015) arXiv:1505.05770; Dinh, Sohl-Dickstein & Bengio (2017)
        arXiv:1605.08803; Kingma et al. (2016) arXiv:1606.04934; Papamakarios, Pavlakou & Murray
        (2017) arXiv:1705.07057; Durkan, Bekasov, Murray & Papamakarios (2019) arXiv:1906.04032;
        Kingma & Dhariwal (2018) arXiv:1807.03039; Grathwohl et al. (2019) arXiv:1810.01367.

    Example:
        >>> flow = Flow(2, "spline", num_layers=2)
        >>> x = torch.randn(16, 2)
        >>> flow.log_prob(x).shape, flow.sample(5).shape
        (torch.Size([16]), torch.Size([5, 2]))
        >>> again = Flow(**flow.config())          # same architecture; load_state_dict restores weights
        >>> _ = again.load_state_dict(flow.state_dict())
    """

    family = "flow"

    def __init__(self, dim: int, kind: str, num_layers: int | None = None, **options: Any) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=1)
        self.kind = check_choice("kind", kind, FLOW_KINDS)
        if num_layers is None:
            num_layers = _DEFAULT_LAYERS.get(kind, 4)
        self.num_layers = check_int("num_layers", num_layers, minimum=1)
        valid = _KIND_OPTIONS[kind]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise TypeError(
                f"unknown option(s) {', '.join(map(repr, unknown))} for Flow kind {kind!r}; "
                f"valid options: {', '.join(map(repr, sorted(valid))) or 'none'}"
            )
        opts = {**valid, **options}
        if kind in ("realnvp", "spline") and dim < 2:
            raise ValueError(f"dim must be >= 2 for the coupling kind {kind!r}, got {dim}")
        self._options = self._validate(kind, opts)
        self.event_shape = (self.dim,)

        self.register_buffer("base_loc", torch.zeros(self.dim))
        self.register_buffer("base_scale", torch.ones(self.dim))

        layers: list[nn.Module] = []
        inverted: list[bool] = []
        generator = torch.Generator().manual_seed(self._options.get("seed", 0))
        for k in range(self.num_layers):
            if k > 0 and self._options.get("permute", False) is not False:
                if self._options["permute"] == "random":
                    layers.append(Permutation.random(self.dim, generator=generator))
                else:
                    layers.append(Permutation.reverse(self.dim))
                inverted.append(False)
            layer, inv = self._make_layer()
            layers.append(layer)
            inverted.append(inv)
            if self._options["actnorm"]:
                layers.append(ActNorm(self.dim))
                inverted.append(False)
        self.layers = nn.ModuleList(layers)
        self._inverted = tuple(inverted)

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _validate(kind: str, opts: dict[str, Any]) -> dict[str, Any]:
        out = dict(opts)
        out["actnorm"] = check_bool("actnorm", opts["actnorm"])
        if "permute" in opts:
            p = opts["permute"]
            if isinstance(p, bool):
                out["permute"] = "reverse" if p else False
            elif p in _PERMUTE_CHOICES:
                out["permute"] = p
            else:
                raise ValueError(
                    f"unknown permute {p!r}; valid choices: True, False, {', '.join(map(repr, _PERMUTE_CHOICES))}"
                )
            out["seed"] = check_int("seed", opts["seed"], minimum=0)
        if "hidden_dims" in opts and (opts["hidden_dims"] is not None or kind == "cnf"):
            out["hidden_dims"] = _check_hidden("hidden_dims", opts["hidden_dims"])
        if "count_bins" in opts:
            out["count_bins"] = check_int("count_bins", opts["count_bins"], minimum=2)
            out["bound"] = check_positive("bound", opts["bound"])
            out["order"] = check_choice("order", opts["order"], ("quadratic", "linear"))
        if kind == "cnf":
            out["activation"] = check_choice("activation", opts["activation"], ("softplus", "tanh", "silu", "elu"))
            out["embedding"] = check_choice("embedding", opts["embedding"], ("fourier", "sinusoidal"))
            out["fourier_scale"] = check_positive("fourier_scale", opts["fourier_scale"])
            out["trace"] = check_choice("trace", opts["trace"], DIVERGENCE_METHODS)
            out["method"] = check_choice("method", opts["method"], ODE_METHODS)
            out["rtol"] = check_positive("rtol", opts["rtol"])
            out["atol"] = check_positive("atol", opts["atol"])
            out["adjoint"] = check_bool("adjoint", opts["adjoint"])
            out["num_probes"] = check_int("num_probes", opts["num_probes"], minimum=1)
            out["t1"] = check_positive("t1", opts["t1"])
        return out

    def _hidden(self) -> tuple[int, ...]:
        h = self._options.get("hidden_dims")
        if h is None:
            width = max(128, 10 * self.dim)
            return (width, width)
        return h

    def _make_layer(self) -> tuple[nn.Module, bool]:
        """One layer and whether it enters the TransformedDistribution through ``.inv``."""
        dim, kind, o = self.dim, self.kind, self._options
        if kind == "planar":
            return InvertiblePlanar(dim), True
        if kind == "radial":
            return InvertibleRadial(dim), True
        if kind == "realnvp":
            split = dim // 2
            hypernet = DenseNN(split, list(self._hidden()), [dim - split, dim - split])
            return AffineCoupling(split, hypernet), False
        if kind in ("maf", "iaf"):
            arn = AutoRegressiveNN(dim, list(self._hidden()), permutation=torch.arange(dim))
            return AffineAutoregressive(arn), kind == "maf"
        bins = o.get("count_bins", 8)
        spline_params = [bins, bins, bins - 1] + ([bins] if o.get("order") == "linear" else [])
        # SplineCoupling / SplineAutoregressive: Pyro's layers (same parameters and state_dict keys) with
        # probgen.flows.splines' fast rational-quadratic kernel
        if kind == "spline":
            split = dim // 2
            hypernet = DenseNN(split, list(self._hidden()), [(dim - split) * p for p in spline_params])
            return SplineCoupling(dim, split, hypernet, count_bins=bins, bound=o["bound"], order=o["order"]), False
        if kind == "spline-ar":
            arn = AutoRegressiveNN(dim, list(self._hidden()), param_dims=spline_params,
                                   permutation=torch.arange(dim))
            return SplineAutoregressive(dim, arn, count_bins=bins, bound=o["bound"], order=o["order"]), True
        # cnf
        field = _vector_field(dim, o)
        return CNFTransform(field, t1=o["t1"], trace=o["trace"], method=o["method"], rtol=o["rtol"],
                            atol=o["atol"], adjoint=o["adjoint"], num_probes=o["num_probes"]), False

    # ------------------------------------------------------------------ distribution
    @property
    def base_dist(self) -> pdist.Normal:
        """``N(0, I_D)`` on the model's device, as a Pyro distribution with event shape ``(D,)``."""
        return pdist.Normal(self.base_loc, self.base_scale).to_event(1)

    @property
    def transforms(self) -> list:
        """The transforms base → data, as handed to :class:`~pyro.distributions.TransformedDistribution`."""
        return [m.inv if inv else m for m, inv in zip(self.layers, self._inverted)]

    @property
    def dist(self) -> pdist.TransformedDistribution:
        """The flow as a Pyro ``TransformedDistribution(base_dist, transforms)`` (rebuilt on each access).

        Pyro's transforms cache their last ``(x, y)`` pair by identity, so scoring the very tensor
        that was just sampled reuses the forward pass. The cache is not invalidated when the
        parameters change: :meth:`log_prob`, :meth:`sample` and :meth:`rsample` clear it first
        (:meth:`clear_cache`); code that keeps a ``dist`` across optimizer steps should too.
        """
        return pdist.TransformedDistribution(self.base_dist, self.transforms)

    def clear_cache(self) -> None:
        """Forget every layer's cached ``(x, y)`` pair (stale once the parameters have changed)."""
        for m in self.layers:
            if getattr(m, "_cache_size", 0):
                m._cached_x_y = None, None

    def as_distribution(self) -> pdist.TransformedDistribution:
        """The flow itself is a Pyro distribution: returns :attr:`dist`."""
        return self.dist

    @property
    def cnf_transforms(self) -> list[CNFTransform]:
        """The CNF blocks (empty unless ``kind == "cnf"``); read their ``nfe`` after a solve."""
        return [m for m in self.layers if isinstance(m, CNFTransform)]

    # ------------------------------------------------------------------ protocol
    def _check_x(self, x: Any) -> Tensor:
        return check_events("x", x, (self.dim,))

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density in nats, ``x: (B, D) -> (B,)``."""
        self._check_x(x)
        self.clear_cache()
        return self.dist.log_prob(x)

    def loss(self, x: Tensor) -> Tensor:
        """Mean negative log-likelihood of the batch ``x: (B, D)`` (nats)."""
        return -self.log_prob(x).mean()

    def sample(self, num_samples: int, **opts: Any) -> Tensor:
        """Draw ``(num_samples, D)`` points on the model's device (no gradient is recorded).

        Keyword options: none for now (an unknown option raises ``TypeError``).
        """
        if opts:
            raise TypeError(f"unknown sample option(s) {', '.join(map(repr, sorted(opts)))}; valid options: none")
        num_samples = check_int("num_samples", num_samples, minimum=1)
        self.clear_cache()
        with torch.no_grad():
            return self.dist.sample((num_samples,))

    def rsample(self, num_samples: int) -> Tensor:
        """Reparameterised draws ``(num_samples, D)`` (differentiable w.r.t. the parameters)."""
        num_samples = check_int("num_samples", num_samples, minimum=1)
        self.clear_cache()
        return self.dist.rsample((num_samples,))

    def config(self) -> dict[str, Any]:
        """JSON-safe keyword arguments such that ``Flow(**flow.config())`` rebuilds the architecture."""
        opts = {}
        for key, value in self._options.items():
            if key == "permute" and value == "reverse":
                value = True
            if isinstance(value, tuple):
                value = list(value)
            opts[key] = value
        if "hidden_dims" in opts and opts["hidden_dims"] is None:
            # record the resolved widths, so a checkpoint rebuilds the same network even if defaults change
            opts["hidden_dims"] = list(self._hidden())
        return {"dim": self.dim, "kind": self.kind, "num_layers": self.num_layers, **opts}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kind={self.kind!r}, num_layers={self.num_layers}"
