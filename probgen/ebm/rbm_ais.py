r"""The normalizer of an RBM: exact enumeration, AIS (Salakhutdinov & Murray 2008) and the AIS/RAISE
bracket (Burda, Grosse & Salakhutdinov 2015), as a mixin of :class:`probgen.ebm.rbm_base.RBMBase`.

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

from probgen._checks import check_choice, check_int, check_tensor

__all__ = ["RBMPartition", "LogLikelihoodBracket", "LOG_PARTITION_METHODS", "MAX_ENUMERATION_UNITS"]

LOG_PARTITION_METHODS = ("exact", "ais")
#: default largest layer that ``log_partition(method="exact")`` enumerates (2**20 states)
MAX_ENUMERATION_UNITS = 20


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
            >>> from probgen.ebm import BernoulliRBM
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
