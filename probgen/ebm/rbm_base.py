r"""The machinery both RBMs share (:class:`RBMBase`): parameters, energies and conditionals, block Gibbs,
the CD/PCD surrogate, sampling, the saved data statistics and the log-density; the normalizer comes from
:class:`probgen.ebm.rbm_ais.RBMPartition`. The visible layer is the subclasses' (:mod:`probgen.ebm.rbm`,
:mod:`probgen.ebm.gaussian_rbm`). The model and its equations: :mod:`probgen.ebm.rbm`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import constraints

from probgen._checks import check_choice, check_int, check_positive, check_tensor
from probgen.ebm.rbm_ais import RBMPartition
from probgen.protocol import ModelDistribution

__all__ = ["RBMBase", "RBM_OBJECTIVES", "BinaryIndependent", "RealIndependent", "binary_states", "enumerate_logsumexp"]

RBM_OBJECTIVES = ("cd", "pcd")
_CHUNK = 1 << 14


def binary_states(m: int, start: int, stop: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Rows ``start..stop-1`` of the ``2**m`` binary vectors of length ``m``, ``(stop - start, m)``."""
    idx = torch.arange(start, stop, device=device)
    bits = torch.arange(m, device=device)
    return ((idx[:, None] >> bits) & 1).to(dtype)


def enumerate_logsumexp(fn, m: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``logsumexp`` of ``fn(states)`` over all ``2**m`` binary states, in chunks (differentiable)."""
    parts = []
    total = 1 << m
    for start in range(0, total, _CHUNK):
        states = binary_states(m, start, min(start + _CHUNK, total), dtype=dtype, device=device)
        parts.append(torch.logsumexp(fn(states), 0))
    return torch.logsumexp(torch.stack(parts), 0)



class BinaryIndependent(ModelDistribution):
    """:class:`ModelDistribution` over ``{0, 1}^V`` events."""

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(constraints.boolean, len(self.event_shape))


class RealIndependent(ModelDistribution):
    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(constraints.real, len(self.event_shape))

class RBMBase(RBMPartition, nn.Module):
    """Shared machinery of the two RBMs (the subclasses supply the visible layer)."""

    family = "rbm"
    _dist_class: type[ModelDistribution] = BinaryIndependent

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
