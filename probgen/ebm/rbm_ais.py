r"""The normalizer of an RBM: exact enumeration, AIS (Salakhutdinov & Murray 2008) and the bracket on
``log Z`` — forward AIS below, reverse AIS from its particles above (Grosse, Ghahramani & Adams 2015), or
RAISE (Burda, Grosse & Salakhutdinov 2015) on request — as a mixin of :class:`probgen.ebm.rbm_base.RBMBase`.

The annealing is in closed form for the RBM: the intermediate RBMs ``E_β(v, h) = (1-β) E_A(v) + β E(v, h)``
from the base ``p_A`` (zero weights, visible biases ``b_A``) have exact block-Gibbs sweeps and closed-form
unnormalised marginals, so no gradient-based transition is needed (:mod:`probgen.infer.ais` is the generic
version; the schedules and the weight summary are shared with it).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from probgen._checks import check_choice, check_int, check_positive, check_tensor

__all__ = [
    "RBMPartition",
    "LogLikelihoodBracket",
    "LogPartitionBracket",
    "LOG_PARTITION_METHODS",
    "MAX_ENUMERATION_UNITS",
]

LOG_PARTITION_METHODS = ("exact", "ais")
#: default largest layer that ``log_partition(method="exact")`` enumerates (2**20 states)
MAX_ENUMERATION_UNITS = 20


class LogLikelihoodBracket(NamedTuple):
    """What :meth:`BernoulliRBM.log_likelihood_bracket` returns (nats; 0-dim tensors unless noted).

    Attributes:
        log_z_lower: forward-AIS ``log Ẑ``, a stochastic lower bound on ``log Z``.
        log_z_upper: the reverse end: bidirectional Monte Carlo from the forward particles (default)
            or RAISE from the points; an upper estimate of ``log Z``.
        lower_stderr: standard error of ``log_z_lower`` (delta method over the AIS weights).
        upper_stderr: standard error of ``log_z_upper`` (delta method for the ratio, or over the
            RAISE points).
        log_likelihood_lower: ``(B,)`` ``-F(v) - log_z_upper`` (reverse side).
        log_likelihood_upper: ``(B,)`` ``-F(v) - log_z_lower`` (AIS side).
        warning: ``None``, or why the bracket cannot be trusted (degenerate AIS weights, a bracket
            wider than the tolerance, or an inverted one); also issued as a ``RuntimeWarning``.
        num_steps: the number of temperatures of the last round.
        history: ``(K, log_z_lower, log_z_upper)`` of every round, shortest schedule first.
    """

    log_z_lower: Tensor
    log_z_upper: Tensor
    lower_stderr: Tensor
    upper_stderr: Tensor
    log_likelihood_lower: Tensor
    log_likelihood_upper: Tensor
    warning: str | None = None
    num_steps: int | None = None
    history: tuple = ()



class LogPartitionBracket(NamedTuple):
    """What :meth:`BernoulliRBM.log_partition_bracket` returns (nats, 0-dim tensors unless noted): the
    fields of :class:`LogLikelihoodBracket` that do not depend on test points."""

    log_z_lower: Tensor
    log_z_upper: Tensor
    lower_stderr: Tensor
    upper_stderr: Tensor
    warning: str | None = None
    num_steps: int | None = None
    history: tuple = ()


class RBMPartition:
    """``log Z`` of an RBM and the log-likelihood bracket (mixed into :class:`probgen.ebm.rbm_base.RBMBase`,
    whose subclasses supply ``_exact_log_z``, ``_ais_base`` and ``_bias_from_moments``)."""

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
            >>> from probgen.ebm import BernoulliRBM
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
        check use :meth:`log_likelihood_bracket` (forward and reverse AIS).

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
        tolerance: float = 1.0,
        max_steps: int | None = None,
        upper: str = "reverse",
        num_raise_points: int | None = 500,
        num_raise_samples: int = 1,
        raise_base: str = "model",
        data: Tensor | None = None,
        base_visible_bias: Tensor | None = None,
        generator: torch.Generator | None = None,
        warn: bool = True,
    ) -> LogLikelihoodBracket:
        r"""A bracket ``[lower, upper]`` on ``log Z``, hence on the log-likelihood of ``v``, whose schedule
        grows until the two ends agree.

        * **Lower end**: forward AIS (:meth:`log_partition`): a stochastic lower bound on ``log Z``,
          ``E[log Ẑ] ≤ log Z`` and ``P(log Ẑ > log Z + t) ≤ e^{-t}``; hence ``-F(v) - log Ẑ`` is a
          stochastic **upper** bound on ``log p(v)``. When the RBM saved data statistics and neither
          ``data`` nor ``base_visible_bias`` is given, each round runs from two bases — fitted to the
          data statistics, and to the model's own Gibbs marginals — and keeps the run with the higher
          forward estimate (the one that found more mass; the larger of two stochastic lower bounds
          exceeds ``log Z + t`` with probability at most ``2e^{-t}``): a CD-trained RBM may hold most of
          its mass where the data-fitted base never leads (measured: 77 nats, docs/ebm.md).
        * **Upper end** (``upper="reverse"``, the default): reverse AIS from the forward run's final
          particles down the same schedule to the same base — bidirectional Monte Carlo (Grosse,
          Ghahramani & Adams 2015; :func:`probgen.infer.ais_weights.bidirectional_upper`): the
          forward-weighted mean of the reverse log weights ``log r``. A reverse chain from ``x`` has
          ``E[log r(x)] ≥ -F(x) - log p_ann(x)``; averaged over the RBM's own samples, which the weighted
          forward particles stand for, that is ``log Z + KL(p ‖ p_ann) ≥ log Z`` for any schedule.
        * ``upper="raise"``: RAISE (Burda, Grosse & Salakhutdinov 2015) from the first
          ``num_raise_points`` points of ``v``, ``log Z_up = mean_i[-F(v_i) - log p̂(v_i)]``. Its
          ``log p̂(v)`` is a stochastic lower bound on the *annealed model* ``p_ann`` (the law of the
          forward chain's last state), not on the RBM: ``E[log p̂(v)] ≤ log p_ann(v)``, and
          ``log p_ann(v) - log p(v)`` on test points — where a CD-trained RBM puts little mass — is far
          from 0 unless the schedule is very long. Measured on an RBM 784-20 (exact ``log Z`` known), 2016
          temperatures: from the data-fitted base the RAISE end is 7.9 nats *below* ``log Z`` (an inverted
          bracket), from the model's own marginals (``raise_base="model"``) 6.3 nats above; the reverse end
          from the forward particles is 0.35 above (benchmarks/RESULTS_images.md).

        **Schedule**: ``K`` starts at ``num_steps`` (default :meth:`ais_defaults`) and doubles, each
        round a fresh forward and reverse run, until the ends are within ``tolerance`` nats and the
        forward weights pass :func:`probgen.infer.ais_reliability`, or the next round would exceed
        ``max_steps`` (default ``8 K₀``; with ``num_steps`` given and ``max_steps`` not, one round).
        **Warnings** (``RuntimeWarning``, text also in ``.warning``): degenerate forward weights, a bracket
        still wider than ``tolerance`` (with its width), an inverted bracket. Read the result as
        ``log Z ∈ [log_z_lower - 2·lower_stderr, log_z_upper + 2·upper_stderr]``; both ends rest on the
        forward particles covering the RBM's modes — a mode that no forward chain reaches moves both
        ends down together, which no two-sided check built on the same chains can see.

        Args:
            v: test points ``(B, V)`` or ``(B, *event)``.
            num_chains, num_steps, data, base_visible_bias, generator: as :meth:`log_partition`.
            tolerance: the width (nats) at which the schedule stops growing.
            max_steps: the longest schedule tried.
            upper: ``"reverse"`` (from the forward particles) or ``"raise"`` (from ``v``).
            num_raise_points, num_raise_samples, raise_base: ``upper="raise"`` only — RAISE runs
                ``num_raise_samples`` reverse chains on each of the first ``min(B, num_raise_points)``
                points (``None``: all) towards the model's own marginals (``"model"``) or the forward
                base (``"same"``).
            warn: issue the warnings (the message is in ``.warning`` either way).

        Returns:
            :class:`LogLikelihoodBracket`.

        Example:
            >>> from probgen.ebm import BernoulliRBM
            >>> _ = torch.manual_seed(0)
            >>> rbm = BernoulliRBM(6, 4, init_std=1.0).double()
            >>> v = rbm.sample(50, gibbs_steps=50)
            >>> br = rbm.log_likelihood_bracket(v, generator=torch.Generator().manual_seed(0))
            >>> exact = rbm.log_partition("exact")
            >>> bool(br.log_z_lower - 2 * br.lower_stderr <= exact <= br.log_z_upper + 2 * br.upper_stderr)
            True
        """
        v = self._flat(v)
        upper = check_choice("upper", upper, ("reverse", "raise"))
        if num_raise_points is not None:
            num_raise_points = check_int("num_raise_points", num_raise_points, minimum=1)
        r = check_int("num_raise_samples", num_raise_samples, minimum=1)
        raise_base = check_choice("raise_base", raise_base, ("model", "same"))
        with torch.no_grad():
            neg_f = -self._free_energy(v)
        opts = {"num_chains": num_chains, "num_steps": num_steps, "tolerance": tolerance, "max_steps": max_steps,
                "data": data, "base_visible_bias": base_visible_bias, "generator": generator}
        if upper == "reverse":
            br = self._bracket(None, **opts)
        else:
            br = self._bracket(lambda setup: self._raise_upper(v, neg_f, setup, num_raise_points, r, raise_base,
                                                               generator), **opts)
        if br.warning is not None and warn:
            warnings.warn(br.warning, RuntimeWarning, stacklevel=2)
        return LogLikelihoodBracket(
            log_z_lower=br.log_z_lower, log_z_upper=br.log_z_upper, lower_stderr=br.lower_stderr,
            upper_stderr=br.upper_stderr, log_likelihood_lower=neg_f - br.log_z_upper,
            log_likelihood_upper=neg_f - br.log_z_lower, warning=br.warning, num_steps=br.num_steps,
            history=br.history,
        )

    def log_partition_bracket(
        self,
        *,
        num_chains: int | None = None,
        num_steps: int | None = None,
        tolerance: float = 1.0,
        max_steps: int | None = None,
        data: Tensor | None = None,
        base_visible_bias: Tensor | None = None,
        generator: torch.Generator | None = None,
        warn: bool = True,
    ) -> LogPartitionBracket:
        r"""The bracket on ``log Z`` of :meth:`log_likelihood_bracket` (``upper="reverse"``) alone: forward
        AIS below, reverse AIS from its particles above, the schedule doubled until they agree within
        ``tolerance`` nats or ``max_steps`` is reached. Arguments as :meth:`log_likelihood_bracket`.

        Example:
            >>> from probgen.ebm import BernoulliRBM
            >>> _ = torch.manual_seed(0)
            >>> rbm = BernoulliRBM(6, 4, init_std=1.0).double()
            >>> br = rbm.log_partition_bracket(generator=torch.Generator().manual_seed(0))
            >>> exact = rbm.log_partition("exact")
            >>> bool(br.log_z_lower - 2 * br.lower_stderr <= exact <= br.log_z_upper + 2 * br.upper_stderr)
            True
        """
        br = self._bracket(None, num_chains=num_chains, num_steps=num_steps, tolerance=tolerance,
                           max_steps=max_steps, data=data, base_visible_bias=base_visible_bias, generator=generator,
                           caller="log_partition_bracket")
        if br.warning is not None and warn:
            warnings.warn(br.warning, RuntimeWarning, stacklevel=2)
        return br

    @torch.no_grad()
    def _bracket(self, upper_fn, *, num_chains, num_steps, tolerance, max_steps, data, base_visible_bias,
                 generator, caller: str = "log_likelihood_bracket") -> LogPartitionBracket:
        """The doubling loop; ``upper_fn(setup) -> (log Z_up, se)`` or ``None`` for reverse AIS from the
        forward particles."""
        from probgen.infer.ais_weights import bidirectional_upper

        tolerance = check_positive("tolerance", tolerance)
        default_k = self.ais_defaults()[1]
        k = default_k if num_steps is None else check_int("num_steps", num_steps, minimum=1)
        if max_steps is None:
            max_steps = 8 * k if num_steps is None else k
        else:
            max_steps = check_int("max_steps", max_steps, minimum=k)
        history = []
        # two bases when the RBM saved data statistics and none was given: the data-fitted one (right for a
        # model whose mass sits near the data) and the model's own Gibbs marginals (right for one whose mass
        # sits elsewhere, e.g. a CD-trained RBM's noise-like region); the round keeps the run that found
        # more mass (the higher forward estimate: each is a stochastic lower bound on log Z)
        model_bias = None
        if upper_fn is None and data is None and base_visible_bias is None and float(self.data_count) > 0:
            model_bias = self._bias_from_moments(*self._gibbs_marginals(
                num_chains or self.ais_defaults()[0], generator))
        while True:
            runs = []
            for bias in (base_visible_bias, model_bias)[: 1 if model_bias is None else 2]:
                setup = self._ais_setup(num_chains, k, "linear", data, bias, generator)
                res = self._run_ais(None, None, None, None, None, generator, False, setup=setup)
                if upper_fn is None:
                    _, betas, base_bias, log_z0, _ = setup
                    log_w_rev, _ = self._anneal(res.samples, betas, base_bias, reverse=True, generator=generator)
                    runs.append((res, *bidirectional_upper(res.log_weights, log_z0 + log_w_rev)))
                else:
                    runs.append((res, *upper_fn(setup)))
            res, log_z_upper, upper_se = max(runs, key=lambda run: float(run[0].log_z))
            history.append((k, float(res.log_z), float(log_z_upper)))
            width = float(log_z_upper - res.log_z)
            if (abs(width) <= tolerance and res.warning is None) or 2 * k > max_steps:
                break
            k *= 2
        messages = [] if res.warning is None else [res.warning]
        if float(res.log_z - 3 * res.stderr - (log_z_upper + 3 * upper_se)) > 0:
            messages.append(
                f"the bracket is inverted — the upper end {float(log_z_upper):.3f} ± {float(upper_se):.3f} is "
                f"below the lower end {float(res.log_z):.3f} ± {float(res.stderr):.3f} after {k} temperatures, "
                f"so it is not an upper bound"
                + ("; increase max_steps or num_chains" if upper_fn is None else
                   " (RAISE bounds the annealed model, not the RBM; use upper='reverse' or increase max_steps)")
            )
        elif width > tolerance:
            messages.append(
                f"the bracket on log Z is {width:.2f} nats wide ([{float(res.log_z):.3f}, {float(log_z_upper):.3f}]) "
                f"after {k} temperatures (tolerance {tolerance:g}, max_steps {max_steps}): the log-likelihood "
                f"is only known to within {width:.2f} nats; increase max_steps or num_chains"
            )
        message = None if not messages else f"{type(self).__name__}.{caller}: " + "; ".join(messages)
        return LogPartitionBracket(log_z_lower=res.log_z, log_z_upper=log_z_upper, lower_stderr=res.stderr,
                                   upper_stderr=upper_se, warning=message, num_steps=k, history=tuple(history))

    def _raise_upper(self, v: Tensor, neg_f: Tensor, setup: tuple, num_points: int | None, r: int, raise_base: str,
                     generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """RAISE's upper end of ``log Z``, ``mean_i[-F(v_i) - log p̂(v_i)]``, and its standard error."""
        num_chains, betas, base_bias, log_z0, _ = setup
        if raise_base == "model":
            model_bias = self._bias_from_moments(*self._gibbs_marginals(num_chains, generator))
            _, betas, base_bias, log_z0, _ = self._ais_setup(num_chains, betas.shape[0] - 1, betas, None, model_bias,
                                                             generator)
        m = v.shape[0] if num_points is None else min(v.shape[0], num_points)
        log_w_rev, _ = self._anneal(v[:m].repeat_interleave(r, 0), betas, base_bias, reverse=True, generator=generator)
        # log p̂(v) = -F(v) - log Z_0 - log w_rev, log-mean-exp over the r chains of each point
        log_p = (neg_f[:m].repeat_interleave(r) - log_z0 - log_w_rev).reshape(m, r)
        log_p = torch.logsumexp(log_p, 1) - math.log(r)
        terms = neg_f[:m] - log_p
        se = terms.std() / math.sqrt(m) if m > 1 else torch.full_like(terms[0], math.inf)
        return terms.mean(), se

    def _log_z_for_density(self) -> Tensor:
        try:
            return self._exact_log_z(MAX_ENUMERATION_UNITS)
        except ValueError:
            key = self._param_key()
            if self._ais_cache is None or self._ais_cache[0] != key:
                log_z, se = self.log_partition("ais", return_stderr=True)
                self._ais_cache = (key, log_z.detach(), se.detach())
            return self._ais_cache[1]
