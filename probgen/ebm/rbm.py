r"""Restricted Boltzmann machines: Bernoulli–Bernoulli and Gaussian–Bernoulli.

An RBM is an energy-based model on visible units ``v ∈ R^V`` and binary hidden units
``h ∈ {0, 1}^H`` with no intra-layer connections, ``p(v, h) = exp(-E(v, h)) / Z``:

.. math::

    \text{Bernoulli:}\quad E(v, h) &= -v^\top W h - b^\top v - c^\top h,\qquad v\in\{0,1\}^V,\\
    \text{Gaussian:}\quad E(v, h) &= \sum_i \frac{(v_i - b_i)^2}{2\sigma_i^2}
        - \sum_{i,j}\frac{v_i}{\sigma_i^2} W_{ij} h_j - c^\top h,\qquad v\in\mathbb{R}^V,

(``W = weight``, ``b = visible_bias``, ``c = hidden_bias``; the Gaussian form is Cho, Ilin & Raiko,
2011, whose conditional mean of ``v`` is ``b + Wh``). Summing out ``h`` gives the free energy
``p(v) = exp(-F(v)) / Z``:

.. math::

    F(v) = E_{\text{vis}}(v) - \sum_j \operatorname{softplus}\big(c_j + \tilde v^\top W_{:j}\big),
    \qquad \tilde v = v \text{ (Bernoulli)},\ v/\sigma^2 \text{ (Gaussian)},

and the conditionals factorise, which is what block Gibbs sampling uses:
``p(h_j = 1 | v) = sigmoid(c_j + ṽᵀW_{:j})``; ``p(v_i = 1 | h) = sigmoid(b_i + W_{i:}h)`` (Bernoulli) or
``v_i | h ~ N(b_i + W_{i:}h, σ_i²)`` (Gaussian).

Training minimises the CD-k / PCD surrogate ``mean F(v_data) - mean F(v⁻)`` (Hinton 2002; Tieleman
2008). ``log Z`` is computed exactly by enumerating the smaller binary layer when it is small, or
estimated by annealed importance sampling (Salakhutdinov & Murray 2008; Neal 2001) through
:func:`probgen.infer.ais`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import constraints

from probgen._checks import check_bool, check_choice, check_int, check_positive, check_tensor
from probgen.protocol import ModelDistribution

__all__ = [
    "BernoulliRBM",
    "GaussianBernoulliRBM",
    "LogLikelihoodBracket",
    "RBM_OBJECTIVES",
    "LOG_PARTITION_METHODS",
    "MAX_ENUMERATION_UNITS",
]

RBM_OBJECTIVES = ("cd", "pcd")
LOG_PARTITION_METHODS = ("exact", "ais")
#: default largest layer that ``log_partition(method="exact")`` enumerates (2**20 states)
MAX_ENUMERATION_UNITS = 20
_CHUNK = 1 << 14


def _binary_states(m: int, start: int, stop: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Rows ``start..stop-1`` of the ``2**m`` binary vectors of length ``m``, ``(stop - start, m)``."""
    idx = torch.arange(start, stop, device=device)
    bits = torch.arange(m, device=device)
    return ((idx[:, None] >> bits) & 1).to(dtype)


def _enumerate_logsumexp(fn, m: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``logsumexp`` of ``fn(states)`` over all ``2**m`` binary states, in chunks (differentiable)."""
    parts = []
    total = 1 << m
    for start in range(0, total, _CHUNK):
        states = _binary_states(m, start, min(start + _CHUNK, total), dtype=dtype, device=device)
        parts.append(torch.logsumexp(fn(states), 0))
    return torch.logsumexp(torch.stack(parts), 0)


class LogLikelihoodBracket(NamedTuple):
    """What :meth:`BernoulliRBM.log_likelihood_bracket` returns (nats; 0-dim tensors unless noted).

    Attributes:
        log_z_lower: forward-AIS ``log Ẑ``, a stochastic lower bound on ``log Z``.
        log_z_upper: RAISE-based ``mean_i[-F(v_i) - log p̂(v_i)]``, an upper estimate of ``log Z``.
        lower_stderr: standard error of ``log_z_lower`` (delta method over the AIS weights).
        upper_stderr: standard error of ``log_z_upper`` (over the RAISE points).
        log_likelihood_lower: ``(B,)`` ``-F(v) - log_z_upper`` (RAISE side).
        log_likelihood_upper: ``(B,)`` ``-F(v) - log_z_lower`` (AIS side).
        warning: ``None``, or why the bracket cannot be trusted (degenerate AIS weights, or an
            inverted bracket: the annealing is too short for this model); also issued as a
            ``RuntimeWarning``.
    """

    log_z_lower: Tensor
    log_z_upper: Tensor
    lower_stderr: Tensor
    upper_stderr: Tensor
    log_likelihood_lower: Tensor
    log_likelihood_upper: Tensor
    warning: str | None = None


class _BinaryIndependent(ModelDistribution):
    """:class:`ModelDistribution` over ``{0, 1}^V`` events."""

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(constraints.boolean, len(self.event_shape))


class _RealIndependent(ModelDistribution):
    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(constraints.real, len(self.event_shape))


class _RBM(nn.Module):
    """Shared machinery of the two RBMs (the subclasses supply the visible layer)."""

    family = "rbm"
    _dist_class: type[ModelDistribution] = _BinaryIndependent

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        objective: str = "cd",
        k: int = 1,
        num_chains: int = 100,
        event_shape: Sequence[int] | None = None,
        init_std: float = 0.01,
    ) -> None:
        super().__init__()
        self.n_visible = check_int("n_visible", n_visible, minimum=1)
        self.n_hidden = check_int("n_hidden", n_hidden, minimum=1)
        self.objective = check_choice("objective", objective, RBM_OBJECTIVES)
        self.k = check_int("k", k, minimum=1)
        self.num_chains = check_int("num_chains", num_chains, minimum=1)
        self.init_std = check_positive("init_std", init_std)
        if event_shape is None:
            self.event_shape: tuple[int, ...] = (self.n_visible,)
            self._event_given = False
        else:
            self.event_shape = tuple(check_int(f"event_shape[{i}]", s, minimum=1) for i, s in enumerate(event_shape))
            if math.prod(self.event_shape) != self.n_visible:
                raise ValueError(
                    f"event_shape {self.event_shape} has {math.prod(self.event_shape)} entries; "
                    f"expected n_visible={self.n_visible}"
                )
            self._event_given = True
        self.weight = nn.Parameter(self.init_std * torch.randn(self.n_visible, self.n_hidden))
        self.visible_bias = nn.Parameter(torch.zeros(self.n_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(self.n_hidden))
        self.register_buffer("chains", self._initial_chains(self.num_chains))
        # running mean of every batch passed to loss(): the AIS base is fitted to it (log_partition)
        self.register_buffer("data_mean", torch.zeros(self.n_visible))
        self.register_buffer("data_count", torch.zeros((), dtype=torch.float64))
        self._ais_cache: tuple[Any, Tensor, Tensor] | None = None

    # ---- subclass hooks -----------------------------------------------------------------------

    def _initial_chains(self, n: int) -> Tensor:
        raise NotImplementedError

    def _check_values(self, v: Tensor, name: str) -> None:
        pass

    def _scaled(self, v: Tensor) -> Tensor:
        raise NotImplementedError

    def _visible_energy(self, v: Tensor, bias: Tensor) -> Tensor:
        raise NotImplementedError

    def _sample_visible_given(self, mean_input: Tensor, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def _exact_log_z(self, max_units: int) -> Tensor:
        raise NotImplementedError

    def _ais_base(self, base_bias: Tensor) -> torch.distributions.Distribution:
        raise NotImplementedError

    def _bias_from_moments(self, mean: Tensor, count: float) -> Tensor:
        """AIS base visible biases ``b_A`` from the mean of ``count`` visible vectors."""
        raise NotImplementedError

    # ---- data statistics (saved with the model, used by AIS) --------------------------------------

    @torch.no_grad()
    def update_data_statistics(self, v: Tensor) -> None:
        """Fold a batch ``v: (B, V)`` or ``(B, *event)`` into the running data mean (buffers
        ``data_mean``, ``data_count``; :meth:`loss` calls this on every batch)."""
        self._fold_data_statistics(self._flat(v))

    @torch.no_grad()
    def _fold_data_statistics(self, v: Tensor) -> None:
        v = v.detach()
        n_old = self.data_count.item()
        n_new = n_old + v.shape[0]
        self.data_mean.add_((v.mean(0).to(self.data_mean) - self.data_mean) * (v.shape[0] / n_new))
        self.data_count.fill_(n_new)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        # checkpoints written before the data statistics existed load with "no statistics"
        for name in ("data_mean", "data_count"):
            if prefix + name not in state_dict:
                state_dict[prefix + name] = torch.zeros_like(getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # ---- shapes ---------------------------------------------------------------------------------

    def _flat(self, v: Tensor, name: str = "v") -> Tensor:
        check_tensor(name, v, min_ndim=2)
        if math.prod(v.shape[1:]) != self.n_visible:
            raise ValueError(
                f"{name} must have shape (batch, {self.n_visible}) or (batch, *event) with {self.n_visible} "
                f"entries per row, got {tuple(v.shape)}"
            )
        v = v.reshape(v.shape[0], self.n_visible).to(self.weight)
        self._check_values(v, name)
        return v

    def _unflat(self, v: Tensor) -> Tensor:
        return v.reshape(v.shape[0], *self.event_shape)

    # ---- energies and conditionals ------------------------------------------------------------

    def hidden_logits(self, v: Tensor) -> Tensor:
        """``c + ṽᵀW: (B, H)``, the logits of ``p(h = 1 | v)`` (``v: (B, V)``)."""
        return self.hidden_bias + self._scaled(v) @ self.weight

    def hidden_prob(self, v: Tensor) -> Tensor:
        """``p(h_j = 1 | v): (B, H)`` for ``v: (B, V)`` or ``(B, *event)``."""
        return torch.sigmoid(self.hidden_logits(self._flat(v)))

    def visible_mean(self, h: Tensor) -> Tensor:
        """``E[v | h]: (B, V)`` — ``sigmoid(b + Wh)`` (Bernoulli) or ``b + Wh`` (Gaussian)."""
        raise NotImplementedError

    def energy(self, v: Tensor, h: Tensor) -> Tensor:
        """The joint energy ``E(v, h): (B,)``, ``v: (B, V)`` or ``(B, *event)``, ``h: (B, H)``."""
        v = self._flat(v)
        check_tensor("h", h, ndim=2)
        if h.shape != (v.shape[0], self.n_hidden):
            raise ValueError(f"h must have shape ({v.shape[0]}, {self.n_hidden}), got {tuple(h.shape)}")
        h = h.to(self.weight)
        return (self._visible_energy(v, self.visible_bias) - ((self._scaled(v) @ self.weight) * h).sum(-1)
                - h @ self.hidden_bias)

    def free_energy(self, v: Tensor) -> Tensor:
        """``F(v) = -log Σ_h exp(-E(v, h)): (B,)`` for ``v: (B, V)`` or ``(B, *event)``."""
        v = self._flat(v)
        return self._free_energy(v)

    def _free_energy(self, v: Tensor) -> Tensor:
        return self._visible_energy(v, self.visible_bias) - F.softplus(self.hidden_logits(v)).sum(-1)

    def sample_hidden(self, v: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``h ~ p(h | v)``: ``(B, H)`` in ``{0, 1}``."""
        p = torch.sigmoid(self.hidden_logits(self._flat(v)))
        return torch.bernoulli(p, generator=generator)

    def sample_visible(self, h: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``v ~ p(v | h)``: ``(B, V)``."""
        check_tensor("h", h, ndim=2)
        if h.shape[1] != self.n_hidden:
            raise ValueError(f"h must have shape (batch, {self.n_hidden}), got {tuple(h.shape)}")
        h = h.to(self.weight)
        return self._sample_visible_given(self.visible_bias + h @ self.weight.T, generator)

    @torch.no_grad()
    def _gibbs(self, v: Tensor, steps: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        h = v.new_zeros(v.shape[0], self.n_hidden)
        for _ in range(steps):
            h = torch.bernoulli(torch.sigmoid(self.hidden_logits(v)), generator=generator)
            v = self._sample_visible_given(self.visible_bias + h @ self.weight.T, generator)
        return v, h

    def gibbs(self, v: Tensor, *, steps: int = 1, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Run ``steps`` block-Gibbs sweeps ``h ~ p(h|v)``, ``v ~ p(v|h)`` on every chain (row) at once.

        Args:
            v: starting visible states ``(C, V)`` or ``(C, *event)`` (``C`` chains).
            steps: number of sweeps (``>= 1``).
            generator: optional ``torch.Generator``.

        Returns:
            ``(v, h)``: the final visible ``(C, V)`` and the hidden states ``(C, H)`` that produced it.
        """
        steps = check_int("steps", steps, minimum=1)
        return self._gibbs(self._flat(v).detach(), steps, generator)

    # ---- training ---------------------------------------------------------------------------------

    def loss(self, v: Tensor) -> Tensor:
        r"""The CD-k or PCD-k surrogate, a scalar whose gradient estimates ``-∇ mean log p(v)``.

        .. math:: \mathcal L = \frac1B\sum_b F(v_b) - \frac1{C}\sum_c F(v^-_c),

        with ``v⁻`` held fixed: for ``objective="cd"`` the data after ``k`` Gibbs sweeps (``C = B``;
        biased for small ``k``: the chains have not mixed, Carreira-Perpiñán & Hinton 2005); for
        ``"pcd"`` the ``num_chains`` persistent chains advanced by ``k`` sweeps. The persistent chains
        are a buffer (``chains``, saved in checkpoints) and are advanced **inside this call**.

        Args:
            v: data ``(B, V)`` or ``(B, *event)``.
        """
        v = self._flat(v)
        if self.training:
            self._fold_data_statistics(v)
        if self.objective == "cd":
            v_neg, _ = self._gibbs(v.detach(), self.k, None)
        else:
            v_neg, _ = self._gibbs(self.chains.to(self.weight), self.k, None)
            self.chains.copy_(v_neg)
        return self._free_energy(v).mean() - self._free_energy(v_neg).mean()

    # ---- sampling -------------------------------------------------------------------------------

    def sample(
        self,
        num_samples: int,
        *,
        gibbs_steps: int = 1000,
        init: Tensor | None = None,
        mean: bool = False,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``num_samples`` visible vectors by ``gibbs_steps`` block-Gibbs sweeps of parallel chains.

        Args:
            num_samples: number of chains (one draw each).
            gibbs_steps: sweeps per chain.
            init: starting states ``(num_samples, *event)`` (default: draws from ``p(v | h)`` with
                ``h ~ Bernoulli(½)``).
            mean: return ``E[v | h]`` of the last sweep instead of a draw (smoother images).
            generator: optional ``torch.Generator``.

        Returns:
            ``(num_samples, *event)``.
        """
        num_samples = check_int("num_samples", num_samples, minimum=1)
        gibbs_steps = check_int("gibbs_steps", gibbs_steps, minimum=1)
        if init is None:
            h0 = torch.bernoulli(torch.full((num_samples, self.n_hidden), 0.5, dtype=self.weight.dtype,
                                            device=self.weight.device), generator=generator)
            v = self._sample_visible_given(self.visible_bias.detach() + h0 @ self.weight.detach().T, generator)
        else:
            v = self._flat(init, "init").detach()
            if v.shape[0] != num_samples:
                raise ValueError(f"init must have {num_samples} rows (num_samples), got {v.shape[0]}")
        v, h = self._gibbs(v, gibbs_steps, generator)
        if mean:
            with torch.no_grad():
                v = self.visible_mean(h)
        return self._unflat(v)

    # ---- normalizer -----------------------------------------------------------------------------

    def _param_key(self) -> tuple:
        tensors = [*self.parameters(), self.data_mean, self.data_count]
        return tuple((p.data_ptr(), p._version, p.dtype, str(p.device)) for p in tensors)

    def ais_defaults(self) -> tuple[int, int]:
        r"""``(num_chains, num_steps)`` that :meth:`log_partition` uses when they are not given.

        The rule (docs/ebm.md), with ``V`` visible and ``H`` hidden units:

        .. math:: K = \operatorname{clip}\big(16\,\lceil\sqrt{VH}\,\rceil,\ 500,\ 20000\big),\qquad
                  N = \operatorname{clip}\big(\lceil K / 5\rceil,\ 100,\ 400\big).

        The variance of the log weights falls roughly like ``1/K`` times the path's divergence, which
        grows with the number of couplings ``VH`` (Neal 2001), and ``se(log Ẑ)² ≈ var(log w)/N``; so
        the work ``N·K`` grows like ``VH``. Chains are cheaper than levels (they are one batched
        tensor), hence ``N ∝ K``. Measured on an RBM trained by CD-1 on binarized MNIST
        (``V = 784, H = 20``: ``K = 2016, N = 400``) the standard error is about 0.03 nats with a
        data-fitted base (benchmarks/RESULTS_images.md).

        Example:
            >>> BernoulliRBM(784, 20).ais_defaults()
            (400, 2016)
            >>> BernoulliRBM(12, 10).ais_defaults()
            (100, 500)
        """
        k = int(min(max(16 * math.ceil(math.sqrt(self.n_visible * self.n_hidden)), 500), 20000))
        n = int(min(max(math.ceil(k / 5), 100), 400))
        return n, k

    def _base_visible_bias(
        self,
        data: Tensor | None,
        base_visible_bias: Tensor | None,
        num_chains: int,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, str]:
        """The AIS base biases ``b_A`` and where they came from (see :meth:`log_partition`)."""
        if base_visible_bias is not None:
            check_tensor("base_visible_bias", base_visible_bias, ndim=1)
            if base_visible_bias.shape[0] != self.n_visible:
                raise ValueError(
                    f"base_visible_bias must have shape ({self.n_visible},), got {tuple(base_visible_bias.shape)}"
                )
            return base_visible_bias.detach().to(self.weight), "given"
        if data is not None:
            d = self._flat(data, "data").detach()
            return self._bias_from_moments(d.mean(0), float(d.shape[0])), "data"
        if float(self.data_count) > 0:
            return self._bias_from_moments(self.data_mean.to(self.weight), float(self.data_count)), "saved"
        return self._bias_from_moments(*self._gibbs_marginals(num_chains, generator)), "gibbs"

    @torch.no_grad()
    def _gibbs_marginals(self, num_chains: int, generator: torch.Generator | None,
                         burn_in: int = 200, sweeps: int = 200) -> tuple[Tensor, float]:
        """``E[v]`` under the model from ``num_chains`` Gibbs chains of its own (``burn_in`` sweeps,
        then the Rao–Blackwellised ``E[v | h]`` averaged over ``sweeps``), and the number averaged."""
        if self.objective == "pcd":
            v = self.chains.to(self.weight)[:num_chains]
        else:
            v = self._sample_visible_given(self.visible_bias.detach().expand(num_chains, -1), generator)
        v, _ = self._gibbs(v, burn_in, generator)
        total = torch.zeros(self.n_visible, dtype=self.weight.dtype, device=self.weight.device)
        for _ in range(sweeps):
            v, h = self._gibbs(v, 1, generator)
            total += self.visible_mean(h).mean(0)
        return total / sweeps, float(v.shape[0] * sweeps)

    def _anneal(self, v: Tensor, betas: Tensor, base_bias: Tensor, *, reverse: bool,
                generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        r"""Salakhutdinov & Murray's annealing: ``log w`` of each row of ``v``, forward (``v ~ p_A``) or
        reverse (``v`` = data, RAISE). ``log f_β(v) = -(1-β)E_vis(v; b_A) - βE_vis(v; b) +
        Σ_j softplus(β a_j(v))`` and ``T_β`` = one block-Gibbs sweep of the intermediate RBM.
        Returns ``(log w, final states)``."""
        w, b_vis = self.weight.detach(), self.visible_bias.detach()
        log_w = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
        e_a = self._visible_energy(v, base_bias)
        e_b = self._visible_energy(v, b_vis)
        a = self.hidden_logits(v).detach()
        num_levels = betas.shape[0] - 1
        levels = range(num_levels, 0, -1) if reverse else range(1, num_levels + 1)
        for k in levels:
            beta, prev = betas[k], betas[k - 1]
            if reverse:  # x_{k-1} ~ T_k(. | x_k), then the weight at x_{k-1}
                v, e_a, e_b, a = self._gibbs_level(v, a, beta, base_bias, b_vis, w, generator)
            log_w = log_w + ((prev - beta) * (e_b - e_a) + (F.softplus(beta * a) - F.softplus(prev * a)).sum(-1))
            if not reverse:  # the weight at x_{k-1}, then x_k ~ T_k(. | x_{k-1})
                v, e_a, e_b, a = self._gibbs_level(v, a, beta, base_bias, b_vis, w, generator)
        return log_w, v

    def _gibbs_level(self, v: Tensor, a: Tensor, beta: Tensor, base_bias: Tensor, b_vis: Tensor, w: Tensor,
                     generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One sweep ``h ~ p_β(h | v)``, ``v ~ p_β(v | h)``; returns ``v`` and its ``E_vis(v; b_A)``,
        ``E_vis(v; b)`` and hidden logits (``a`` are those of the input ``v``)."""
        h = torch.bernoulli(torch.sigmoid(beta * a), generator=generator)
        v = self._sample_visible_given((1.0 - beta) * base_bias + beta * (b_vis + h @ w.T), generator)
        return v, self._visible_energy(v, base_bias), self._visible_energy(v, b_vis), self.hidden_logits(v).detach()

    def _ais_setup(self, num_chains, num_steps, betas, data, base_visible_bias, generator):
        from probgen.infer.ais import ais_schedule, check_betas

        default_n, default_k = self.ais_defaults()
        num_chains = default_n if num_chains is None else check_int("num_chains", num_chains, minimum=1)
        num_steps = default_k if num_steps is None else check_int("num_steps", num_steps, minimum=1)
        opts = {"dtype": self.weight.dtype, "device": self.weight.device}
        betas = ais_schedule(betas, num_steps, **opts) if isinstance(betas, str) else check_betas(betas).to(**opts)
        base_bias, source = self._base_visible_bias(data, base_visible_bias, num_chains, generator)
        base = self._ais_base(base_bias)
        # log Z_0 of the β = 0 RBM (zero weights): log Z_A + H log 2, log Z_A = -E_vis(v; b_A) - log p_A(v)
        v0 = torch.zeros(1, self.n_visible, **opts)
        log_z0 = (-self._visible_energy(v0, base_bias) - base.log_prob(v0))[0] + self.n_hidden * math.log(2.0)
        return num_chains, betas, base_bias, log_z0.detach(), source

    def log_partition(
        self,
        method: str = "exact",
        *,
        return_stderr: bool = False,
        max_units: int = MAX_ENUMERATION_UNITS,
        num_chains: int | None = None,
        num_steps: int | None = None,
        betas: str | Tensor = "linear",
        data: Tensor | None = None,
        base_visible_bias: Tensor | None = None,
        generator: torch.Generator | None = None,
        warn: bool = True,
    ) -> Tensor | tuple[Tensor, Tensor]:
        r"""``log Z``, exactly by enumeration or estimated by annealed importance sampling.

        * ``"exact"`` enumerates the ``2^m`` states of the smaller binary layer (the hidden layer for
          the Gaussian RBM) in chunks and sums the other out in closed form; refused when
          ``m > max_units``. Differentiable in the parameters.
        * ``"ais"`` is Salakhutdinov & Murray's (2008) AIS: the intermediate RBMs have energies
          ``E_β(v, h) = (1-β) E_A(v) + β E(v, h)`` (weights ``βW``, hidden bias ``βc``, visible bias
          ``(1-β)b_A + βb``) from the base ``p_A`` — zero weights, visible biases ``b_A``, whose
          ``log Z_0 = log Z_A + H log 2`` is known — to the RBM. Each level is one exact block-Gibbs
          sweep (no rejections), and the weight increments use the closed-form marginals
          ``log f_β(v) = -(1-β)E_vis(v; b_A) - βE_vis(v; b) + Σ_j softplus(β a_j(v))``. The estimate
          ``log Ẑ = log Z_0 + log mean w`` is a stochastic lower bound on ``log Z``
          (``E[log Ẑ] ≤ log Z``, ``P(log Ẑ > log Z + t) ≤ e^{-t}``).

        **The base** matters most at scale (with the model's own biases an RBM trained on binarized
        28×28 digits was 20.8 nats off). ``b_A`` is, in this order: ``base_visible_bias``; fitted to
        ``data`` (the Laplace-smoothed log-odds of the pixel means ``(Σv + 1)/(n + 2)``, or the mean
        for the Gaussian RBM); fitted to the data statistics the RBM saved while training (buffers
        ``data_mean``, ``data_count``, updated by every :meth:`loss` call and saved in checkpoints);
        else to the model's own marginals, estimated by Gibbs chains of its own (200 sweeps of
        burn-in, then 200 sweeps of ``E[v | h]``).

        **Defaults**: ``num_chains`` and ``num_steps`` from :meth:`ais_defaults` (``K = 16√(VH)``
        clipped to [500, 20000], ``N = K/5`` clipped to [100, 400]). **Honesty**: when the weights are degenerate
        (:func:`probgen.infer.ais_reliability`: ESS below 10 % of the chains) the call issues a
        ``RuntimeWarning`` saying the standard error does not cover the real error. For a two-sided
        check use :meth:`log_likelihood_bracket` (AIS and RAISE).

        Args:
            method: ``"exact"`` or ``"ais"``.
            return_stderr: also return a standard error (0 for ``"exact"``; the delta-method
                standard error of ``log Ẑ`` for AIS).
            max_units: largest layer ``"exact"`` enumerates.
            num_chains: AIS particles (default: :meth:`ais_defaults`).
            num_steps: AIS intermediate distributions (default: :meth:`ais_defaults`).
            betas: AIS schedule (``"linear"``, ``"geometric"``, ``"sigmoidal"`` or a tensor).
            data: training data to fit the AIS base biases.
            base_visible_bias: explicit AIS base biases ``(V,)``.
            generator: optional ``torch.Generator``.
            warn: warn when the AIS weights are degenerate.

        Returns:
            ``log Z`` (0-dim), or ``(log Z, stderr)``.

        References:
            Salakhutdinov & Murray (2008), "On the quantitative analysis of deep belief networks",
            ICML. Neal (2001), arXiv:physics/9803008.
        """
        check_choice("method", method, LOG_PARTITION_METHODS)
        max_units = check_int("max_units", max_units, minimum=1)
        if method == "exact":
            log_z = self._exact_log_z(max_units)
            return (log_z, torch.zeros_like(log_z)) if return_stderr else log_z
        res = self._run_ais(num_chains, num_steps, betas, data, base_visible_bias, generator, warn)
        return (res.log_z, res.stderr) if return_stderr else res.log_z

    @torch.no_grad()
    def _run_ais(self, num_chains, num_steps, betas, data, base_visible_bias, generator, warn, setup=None):
        from probgen.infer.ais import AISResult, ais_reliability, log_weight_summary

        num_chains, betas, base_bias, log_z0, _ = setup or self._ais_setup(
            num_chains, num_steps, betas, data, base_visible_bias, generator)
        v = self._sample_visible_given(base_bias.expand(num_chains, -1), generator)
        log_w, v = self._anneal(v, betas, base_bias, reverse=False, generator=generator)
        log_z, stderr, ess = log_weight_summary(log_w)
        message = ais_reliability(log_w)
        if message is not None and warn:
            warnings.warn(f"{type(self).__name__}.log_partition: {message}", RuntimeWarning, stacklevel=3)
        return AISResult(log_z=log_z + log_z0, stderr=stderr, log_weights=log_w + log_z0, ess=ess,
                         samples=v, betas=betas, accept_rate=torch.ones_like(betas[1:]), warning=message)

    def log_likelihood_bracket(
        self,
        v: Tensor,
        *,
        num_chains: int | None = None,
        num_steps: int | None = None,
        num_raise_points: int | None = 500,
        num_raise_samples: int = 1,
        raise_base: str = "model",
        data: Tensor | None = None,
        base_visible_bias: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> LogLikelihoodBracket:
        r"""A bracket on ``log Z`` and on the log-likelihood of ``v`` from forward AIS and RAISE.

        * Forward AIS (:meth:`log_partition`) gives ``log Ẑ_AIS``, a stochastic **lower** bound on
          ``log Z``: ``E[log Ẑ] ≤ log Z`` and ``P(log Ẑ > log Z + t) ≤ e^{-t}``; hence
          ``-F(v) - log Ẑ_AIS`` is a stochastic **upper** bound on ``log p(v)``.
        * RAISE (Burda, Grosse & Salakhutdinov 2015, arXiv:1412.8566) starts at each of (up to
          ``num_raise_points`` of) the points ``v`` and anneals *down* the same schedule with the
          same kind of (reversible) transitions, towards its own base (``raise_base``); its ``log p̂(v)`` is a stochastic **lower** bound on
          ``log p_ann(v)``, the log-likelihood of the *annealed model* (the law of AIS's final
          particle): exactly, ``E[log p̂(v)] ≤ log p_ann(v)`` and ``P(log p̂ > log p_ann + t) ≤ e^{-t}``.
          ``p_ann → p`` as the schedule gets longer, and in practice RAISE errs low (Burda et al.),
          so ``log Z_upper = mean_i [-F(v_i) - log p̂(v_i)]`` is an upper estimate of ``log Z``
          (each term estimates ``log Z`` itself, so its spread is only the RAISE noise).

        **Check the ends agree**: RAISE bounds ``p_ann``, not ``p``; when the annealing is too short
        for the model (seen on an RBM trained hard on few images: RAISE's end 12 nats *below* an AIS
        estimate that was right to 0.06), ``log_z_upper`` falls below ``log_z_lower`` and the call
        warns that the bracket is inverted. Otherwise ``log_z_lower ≲ log Z ≲ log_z_upper`` and, for each point,
        ``-F(v) - log_z_upper ≲ log p(v) ≲ -F(v) - log_z_lower``, up to the Monte Carlo noise in the
        reported standard errors. RAISE costs ``num_raise_points × num_raise_samples`` chains.

        Args:
            v: test points ``(B, V)`` or ``(B, *event)``.
            num_chains, num_steps, data, base_visible_bias, generator: as :meth:`log_partition`.
            num_raise_points: RAISE runs on the first ``min(B, num_raise_points)`` points
                (``None``: all of them).
            num_raise_samples: reverse chains per point.
            raise_base: the base of RAISE's annealing: ``"model"`` (default) — product-Bernoulli
                (or Gaussian) fitted to the model's own marginals from Gibbs chains of its own — or
                ``"same"`` as the forward AIS (fitted to the data). Any base gives a valid estimator,
                but the annealed model RAISE bounds starts from it: from a *data*-fitted base the short
                annealed model can fit test data better than the RBM itself, and RAISE's end then lands
                *below* ``log Z`` (measured: 4.7–7.9 nats on MNIST RBMs with 2016 temperatures); from the
                model's own marginals it stayed above (conservative, 10 nats wide on the same RBM).

        Returns:
            :class:`LogLikelihoodBracket`.

        Example:
            >>> _ = torch.manual_seed(0)
            >>> rbm = BernoulliRBM(6, 4, init_std=1.0).double()
            >>> v = rbm.sample(50, gibbs_steps=50)
            >>> br = rbm.log_likelihood_bracket(v, generator=torch.Generator().manual_seed(0))
            >>> exact = rbm.log_partition("exact")
            >>> bool(br.log_z_lower - 3 * br.lower_stderr <= exact <= br.log_z_upper + 3 * br.upper_stderr)
            True
        """
        v = self._flat(v)
        if num_raise_points is not None:
            num_raise_points = check_int("num_raise_points", num_raise_points, minimum=1)
        r = check_int("num_raise_samples", num_raise_samples, minimum=1)
        raise_base = check_choice("raise_base", raise_base, ("model", "same"))
        with torch.no_grad():
            setup = self._ais_setup(num_chains, num_steps, "linear", data, base_visible_bias, generator)
            res = self._run_ais(None, None, None, None, None, generator, True, setup=setup)
            if raise_base == "model":
                model_bias = self._bias_from_moments(*self._gibbs_marginals(setup[0], generator))
                setup = self._ais_setup(num_chains, num_steps, "linear", None, model_bias, generator)
            _, betas, base_bias, log_z0, _ = setup
            m = v.shape[0] if num_raise_points is None else min(v.shape[0], num_raise_points)
            log_w_rev, _ = self._anneal(v[:m].repeat_interleave(r, 0), betas, base_bias, reverse=True,
                                        generator=generator)
            # log p̂(v) = -F(v) - log Z_0 - log w_rev, log-mean-exp over the r chains of each point
            neg_f = -self._free_energy(v)
            log_p = (neg_f[:m].repeat_interleave(r) - log_z0 - log_w_rev).reshape(m, r)
            log_p = torch.logsumexp(log_p, 1) - math.log(r)
            terms = neg_f[:m] - log_p
            log_z_upper = terms.mean()
            upper_se = terms.std() / math.sqrt(m) if m > 1 else torch.full_like(log_z_upper, math.inf)
        message = res.warning
        gap = float(res.log_z - 3 * res.stderr - (log_z_upper + 3 * upper_se))
        if gap > 0:
            message = (
                f"{type(self).__name__}.log_likelihood_bracket: the bracket is inverted — RAISE's upper end "
                f"{float(log_z_upper):.3f} ± {float(upper_se):.3f} is below AIS's lower end {float(res.log_z):.3f} ± "
                f"{float(res.stderr):.3f}: the annealing ({betas.shape[0] - 1} temperatures) is too short for "
                f"this model (the annealed model RAISE bounds is not the RBM), so the upper end is not an upper "
                f"bound; increase num_steps"
            )
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        return LogLikelihoodBracket(
            log_z_lower=res.log_z, log_z_upper=log_z_upper, lower_stderr=res.stderr, upper_stderr=upper_se,
            log_likelihood_lower=neg_f - log_z_upper, log_likelihood_upper=neg_f - res.log_z,
            warning=message,
        )

    def _log_z_for_density(self) -> Tensor:
        try:
            return self._exact_log_z(MAX_ENUMERATION_UNITS)
        except ValueError:
            key = self._param_key()
            if self._ais_cache is None or self._ais_cache[0] != key:
                log_z, se = self.log_partition("ais", return_stderr=True)
                self._ais_cache = (key, log_z.detach(), se.detach())
            return self._ais_cache[1]

    def log_prob(self, v: Tensor, *, log_z: Tensor | float | None = None) -> Tensor:
        """``log p(v) = -F(v) - log Z: (B,)``.

        ``log Z`` is ``log_z`` when given; else exact (differentiable) when the enumerated layer has at
        most :data:`MAX_ENUMERATION_UNITS` units, else an AIS estimate with the defaults of
        :meth:`log_partition` (cached until the parameters change). For control over AIS use
        :meth:`log_likelihood`.
        """
        v = self._flat(v)
        lz = self._log_z_for_density() if log_z is None else log_z
        return -self._free_energy(v) - lz

    def log_likelihood(self, v: Tensor, num_particles: int | None = None, *, method: str = "ais",
                       return_stderr: bool = False, **opts: Any) -> Tensor | tuple[Tensor, Tensor]:
        """``log p(v): (B,)`` with ``log Z`` from :meth:`log_partition` (``num_particles`` AIS chains;
        default :meth:`ais_defaults`). For a two-sided bracket use :meth:`log_likelihood_bracket`.

        With AIS, ``Ẑ`` is unbiased so ``log Ẑ`` is biased low in expectation (Jensen) and the
        log-likelihood estimate biased high by about ``½ se²``.
        """
        v = self._flat(v)
        log_z, se = self.log_partition(method, return_stderr=True, num_chains=num_particles, **opts)
        with torch.no_grad():
            ll = -self._free_energy(v) - log_z
        return (ll, se) if return_stderr else ll

    def as_distribution(self) -> ModelDistribution:
        """A Pyro distribution with ``log_prob = -F(v) - log Z`` (see :meth:`log_prob`) and ``sample``."""
        return self._dist_class(self, self.event_shape, log_prob_fn=self.log_prob)

    def config(self) -> dict[str, Any]:
        """JSON-safe constructor arguments: ``type(rbm)(**rbm.config())`` rebuilds it."""
        cfg = {
            "n_visible": self.n_visible,
            "n_hidden": self.n_hidden,
            "objective": self.objective,
            "k": self.k,
            "num_chains": self.num_chains,
            "event_shape": list(self.event_shape) if self._event_given else None,
            "init_std": self.init_std,
        }
        return cfg

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, objective={self.objective!r}, k={self.k}"


class BernoulliRBM(_RBM):
    r"""A Bernoulli–Bernoulli RBM: ``E(v, h) = -vᵀWh - bᵀv - cᵀh`` on ``v ∈ {0,1}^V``, ``h ∈ {0,1}^H``.

    .. math::

        F(v) = -b^\top v - \sum_j \operatorname{softplus}(c_j + v^\top W_{:j}),\qquad
        p(v) = e^{-F(v)}/Z.

    Args:
        n_visible: ``V``.
        n_hidden: ``H``.
        objective: ``"cd"`` (CD-k from the data) or ``"pcd"`` (persistent chains).
        k: Gibbs sweeps per training step (``>= 1``).
        num_chains: number of persistent chains (PCD).
        event_shape: shape of one data point if not ``(V,)`` (e.g. ``(1, 8, 8)``); samples take it.
        init_std: standard deviation of the initial weights (biases start at 0).

    Parameters: ``weight (V, H)``, ``visible_bias (V,)``, ``hidden_bias (H,)``.

    References:
        Smolensky (1986); Hinton (2002), Neural Computation 14(8); Tieleman (2008), ICML;
        Salakhutdinov & Murray (2008), ICML.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> rbm = BernoulliRBM(4, 3)
        >>> v = torch.bernoulli(torch.full((5, 4), 0.5))
        >>> rbm.free_energy(v).shape, rbm.log_prob(v).shape, rbm.sample(2, gibbs_steps=3).shape
        (torch.Size([5]), torch.Size([5]), torch.Size([2, 4]))
        >>> # near-zero weights: log Z is close to (4 + 3) log 2, the value for zero weights
        >>> bool(torch.isclose(rbm.log_partition(), torch.tensor(7 * math.log(2.0)), atol=0.05))
        True
    """

    family = "rbm"
    _dist_class = _BinaryIndependent

    def _initial_chains(self, n: int) -> Tensor:
        return torch.bernoulli(torch.full((n, self.n_visible), 0.5))

    def _check_values(self, v: Tensor, name: str) -> None:
        bad = (v != 0) & (v != 1)
        if bool(bad.any()):
            vals = torch.unique(v[bad])[:3].tolist()
            raise ValueError(
                f"{name} must be binary (0/1) for a BernoulliRBM; got {int(bad.sum())} entries not in "
                f"{{0, 1}}, e.g. {', '.join(f'{x:g}' for x in vals)}"
            )

    def _scaled(self, v: Tensor) -> Tensor:
        return v

    def _visible_energy(self, v: Tensor, bias: Tensor) -> Tensor:
        return -(v @ bias)

    def _sample_visible_given(self, mean_input: Tensor, generator: torch.Generator | None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(mean_input), generator=generator)

    def visible_mean(self, h: Tensor) -> Tensor:
        return torch.sigmoid(self.visible_bias + h.to(self.weight) @ self.weight.T)

    def _exact_log_z(self, max_units: int) -> Tensor:
        m = min(self.n_visible, self.n_hidden)
        if m > max_units:
            raise ValueError(
                f"exact log_partition enumerates the smaller layer (2^m states): n_visible={self.n_visible}, "
                f"n_hidden={self.n_hidden}, so m={m} > max_units={max_units}; use method='ais'"
            )
        opts = {"dtype": self.weight.dtype, "device": self.weight.device}
        if self.n_hidden <= self.n_visible:
            # log Z = logsumexp_h [cᵀh + Σ_i softplus(b_i + (Wh)_i)]
            return _enumerate_logsumexp(
                lambda h: h @ self.hidden_bias + F.softplus(self.visible_bias + h @ self.weight.T).sum(-1),
                self.n_hidden, **opts)
        return _enumerate_logsumexp(lambda v: -self._free_energy(v), self.n_visible, **opts)

    def _ais_base(self, base_bias: Tensor) -> torch.distributions.Distribution:
        return torch.distributions.Independent(torch.distributions.Bernoulli(logits=base_bias), 1)

    def _bias_from_moments(self, mean: Tensor, count: float) -> Tensor:
        # Laplace-smoothed pixel means, as log-odds (Salakhutdinov & Murray 2008)
        p = (mean.to(self.weight) * count + 1.0) / (count + 2.0)
        return (torch.log(p) - torch.log1p(-p)).detach()


class GaussianBernoulliRBM(_RBM):
    r"""A Gaussian–Bernoulli RBM (Cho, Ilin & Raiko, 2011) on real ``v ∈ R^V``, binary ``h``.

    .. math::

        E(v, h) = \sum_i\frac{(v_i - b_i)^2}{2\sigma_i^2} - \sum_{i,j}\frac{v_i}{\sigma_i^2}W_{ij}h_j
        - c^\top h,\qquad v \mid h \sim N(b + Wh, \operatorname{diag}\sigma^2),

    .. math::

        F(v) = \sum_i\frac{(v_i - b_i)^2}{2\sigma_i^2} - \sum_j\operatorname{softplus}\Big(c_j +
        \sum_i \frac{v_i W_{ij}}{\sigma_i^2}\Big),\quad
        \log Z = \log\sum_h e^{c^\top h + \sum_i \frac{(b_i + (Wh)_i)^2 - b_i^2}{2\sigma_i^2}}
        + \sum_i \tfrac12\log(2\pi\sigma_i^2).

    ``p(v)`` is a mixture of ``2^H`` Gaussians with shared covariance ``diag σ²``; ``log Z`` is exact
    by enumerating the hidden layer.

    Args:
        n_visible, n_hidden, objective, k, num_chains, event_shape, init_std: as :class:`BernoulliRBM`.
        sigma: visible standard deviation ``σ`` (all units; standardize the data first).
        learn_sigma: learn one ``log σ_i`` per visible unit (parameter ``log_sigma``), else fixed.

    Example:
        >>> rbm = GaussianBernoulliRBM(2, 3, sigma=0.5)
        >>> rbm.free_energy(torch.randn(4, 2)).shape, rbm.log_partition().dim()
        (torch.Size([4]), 0)
    """

    family = "gaussian-rbm"
    _dist_class = _RealIndependent

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        *,
        sigma: float = 1.0,
        learn_sigma: bool = False,
        objective: str = "cd",
        k: int = 1,
        num_chains: int = 100,
        event_shape: Sequence[int] | None = None,
        init_std: float = 0.01,
    ) -> None:
        super().__init__(n_visible, n_hidden, objective=objective, k=k, num_chains=num_chains,
                         event_shape=event_shape, init_std=init_std)
        self.sigma_init = check_positive("sigma", sigma)
        check_bool("learn_sigma", learn_sigma)
        self.learn_sigma = learn_sigma
        log_sigma = torch.full((self.n_visible,), math.log(self.sigma_init))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @property
    def sigma(self) -> Tensor:
        """``σ: (V,)``."""
        return self.log_sigma.exp()

    def _initial_chains(self, n: int) -> Tensor:
        return torch.randn(n, self.n_visible)

    def _scaled(self, v: Tensor) -> Tensor:
        return v * torch.exp(-2.0 * self.log_sigma)

    def _visible_energy(self, v: Tensor, bias: Tensor) -> Tensor:
        return (0.5 * (v - bias) ** 2 * torch.exp(-2.0 * self.log_sigma)).sum(-1)

    def _sample_visible_given(self, mean_input: Tensor, generator: torch.Generator | None) -> Tensor:
        z = torch.randn(mean_input.shape, generator=generator, dtype=mean_input.dtype, device=mean_input.device)
        return mean_input + self.sigma.detach() * z

    def visible_mean(self, h: Tensor) -> Tensor:
        return self.visible_bias + h.to(self.weight) @ self.weight.T

    def _exact_log_z(self, max_units: int) -> Tensor:
        if self.n_hidden > max_units:
            raise ValueError(
                f"exact log_partition of a GaussianBernoulliRBM enumerates the hidden layer (2^n_hidden states): "
                f"n_hidden={self.n_hidden} > max_units={max_units}; use method='ais'"
            )
        inv_var = torch.exp(-2.0 * self.log_sigma)
        b = self.visible_bias

        def fn(h: Tensor) -> Tensor:
            m = b + h @ self.weight.T
            return h @ self.hidden_bias + 0.5 * ((m**2 - b**2) * inv_var).sum(-1)

        log_z = _enumerate_logsumexp(fn, self.n_hidden, dtype=self.weight.dtype, device=self.weight.device)
        return log_z + (0.5 * math.log(2 * math.pi) + self.log_sigma).sum()

    def _ais_base(self, base_bias: Tensor) -> torch.distributions.Distribution:
        return torch.distributions.Independent(torch.distributions.Normal(base_bias, self.sigma.detach()), 1)

    def _bias_from_moments(self, mean: Tensor, count: float) -> Tensor:
        return mean.to(self.weight).detach()

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(sigma=self.sigma_init, learn_sigma=self.learn_sigma)
        return cfg
