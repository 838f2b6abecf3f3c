r"""The DDPM as a latent chain: forward marginals, the reverse Gaussians, the closed-form ELBO and its Pyro programs.

:class:`DDPMChain` holds what :class:`~probgen.diffusion.DDPM` is as a hierarchical VAE (Ho et al. 2020):
the forward process ``q(x_t | x_0)`` (:meth:`~DDPMChain.q_sample`), the reverse mean ``μ_θ`` and variances
``σ_t²`` (``β_t``, ``β̃_t`` or Analytic-DPM's, :meth:`~DDPMChain.fit_analytic_variance`), the closed-form KL
terms of the ELBO (:meth:`~DDPMChain.elbo`) and the same chain as Pyro programs
(:meth:`~DDPMChain.model`, :meth:`~DDPMChain.guide`), whose ``Trace_ELBO`` estimates ``-elbo``. It is a
mixin: :class:`~probgen.diffusion.DDPM` provides ``schedule``, ``num_steps``, ``event_shape``,
``variance``, ``analytic_gamma``, ``data_levels``/``data_range``, ``eps_net``, ``_check_x`` and
``_pick_net``.

References: Ho, Jain & Abbeel (2020), arXiv:2006.11239; Bao, Li, Zhu & Zhang (2022), Analytic-DPM,
arXiv:2201.06503; Bao et al. (2022b), arXiv:2206.07309.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch import Tensor, nn

from probgen._checks import check_choice, check_int, check_output_shape
from probgen.diffusion.discretized import DiscretizedGaussian
from probgen.ops.shapes import append_dims, batch_sum

__all__ = ["DDPMChain"]

_GAMMA_ESTIMATORS: tuple[str, ...] = ("moment", "residual")


class DDPMChain:
    """The latent-chain half of :class:`~probgen.diffusion.DDPM` (a mixin; see the module docstring)."""

    @staticmethod
    def _checked(net: Callable, x: Tensor, index: Tensor) -> Tensor:
        return check_output_shape("eps_net", net(x, index), x.shape)

    def _coef(self, table: Tensor, index: Tensor, x: Tensor) -> Tensor:
        return append_dims(self.schedule.gather(table, index, x), x.dim())

    def _full_index(self, x: Tensor, i: int) -> Tensor:
        return torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)

    # ------------------------------------------------------------------------------------------ pieces
    def eps(self, x_t: Tensor, t_index: Tensor, *, use_ema: bool | None = None) -> Tensor:
        """The noise prediction ``ε̂_θ(x_t, t)``; ``t_index: LongTensor[B]`` in ``{0..N-1}`` (step ``t_index+1``)."""
        x_t = self._check_x("x_t", x_t)
        if not isinstance(t_index, Tensor) or t_index.is_floating_point() or t_index.shape != (x_t.shape[0],):
            raise TypeError(f"t_index must be a LongTensor of shape ({x_t.shape[0]},), got {t_index!r:.60}")
        if bool((t_index < 0).any()) or bool((t_index >= self.num_steps).any()):
            raise ValueError(f"t_index must lie in [0, {self.num_steps - 1}]")
        return self._checked(self._pick_net(use_ema), x_t, t_index)

    def q_sample(self, x0: Tensor, t_index: Tensor, noise: Tensor) -> Tensor:
        """``x_t = sqrt(ᾱ_t) x_0 + sqrt(1-ᾱ_t) ε`` (Ho et al. eq. 4); ``t_index: (B,)``."""
        a = self._coef(self.schedule.alphas_cumprod, t_index, x0)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise

    def reverse_mean(self, x_t: Tensor, t_index: Tensor, eps: Tensor) -> Tensor:
        """``μ_θ(x_t, t) = (x_t - β_t ε̂ / sqrt(1-ᾱ_t)) / sqrt(1-β_t)`` (Ho et al. eq. 11)."""
        beta = self._coef(self.schedule.betas, t_index, x_t)
        one_minus = self._coef(self.schedule.one_minus_alphas_cumprod, t_index, x_t)
        return (x_t - beta / one_minus.sqrt() * eps) / (1.0 - beta).sqrt()

    def reverse_variances(self) -> Tensor:
        """``σ_t²`` for ``t = 1..N`` as a float64 ``(N,)`` tensor (see the class docstring)."""
        s = self.schedule
        if self.variance == "beta":
            return s.betas.clone()
        if self.variance == "beta_tilde":
            return torch.cat([s.betas[:1], s.posterior_variance[1:]])
        gamma = self.analytic_gamma.detach().to(device="cpu", dtype=torch.float64)
        if not bool(torch.isfinite(gamma).all()):
            raise ValueError("variance='analytic' needs Γ_t: call model.fit_analytic_variance(x_data) first")
        excess = s.alphas_cumprod_prev * s.betas**2 / (s.one_minus_alphas_cumprod * s.alphas_cumprod)
        return (s.posterior_variance + excess * (1.0 - gamma.clamp(0.0, 1.0))).clamp_min(1e-20)

    def _decoder(self, mean: Tensor, std: Tensor) -> TorchDistribution:
        event_dim = len(self.event_shape)
        if self.data_levels is None:
            return dist.Normal(mean, std.expand_as(mean)).to_event(event_dim)
        return DiscretizedGaussian(mean, std, num_levels=self.data_levels, data_range=self.data_range,
                                   event_dim=event_dim)

    def _terms(self, x0: Tensor, index: Tensor, noise: Tensor, net: Callable, sigma2: Tensor) -> Tensor:
        """Per-sample ``L_{t-1}`` (``t >= 2``) or ``L_0`` (``t = 1``) at ``t = index + 1``, in nats, ``(B,)``."""
        x_t = self.q_sample(x0, index, noise)
        eps = self._checked(net, x_t, index)
        beta = self._coef(self.schedule.betas, index, x0)
        one_minus = self._coef(self.schedule.one_minus_alphas_cumprod, index, x0)
        var = self._coef(sigma2, index, x0)
        # KL(N(μ̃, β̃) || N(μ_θ, σ²)) with μ̃ - μ_θ = β_t / (sqrt(1-β_t) sqrt(1-ᾱ_t)) (ε̂ - ε)  (exact identity)
        post = self._coef(self.schedule.posterior_variance, index, x0)
        diff2 = (beta**2 / ((1.0 - beta) * one_minus)) * (eps - noise) ** 2
        safe_post = torch.where(post > 0, post, torch.ones_like(post))
        kl = 0.5 * batch_sum(torch.log(var / safe_post) + (post + diff2) / var - 1.0)
        first = index == 0
        if not bool(first.any()):
            return kl
        mean = (x_t - beta / one_minus.sqrt() * eps) / (1.0 - beta).sqrt()
        nll = -self._decoder(mean, var.sqrt()).log_prob(x0)
        return torch.where(first, nll, kl)

    def prior_kl(self, x0: Tensor) -> Tensor:
        """``L_N = KL(q(x_N | x_0) || N(0, I))`` in nats, ``(B,)``."""
        x0 = self._check_x("x", x0)
        a = self.schedule.alphas_cumprod[-1].to(x0)
        return 0.5 * batch_sum(a * x0**2 + (1.0 - a) - 1.0 - torch.log1p(-a))

    def elbo_terms(self, x: Tensor, *, generator: torch.Generator | None = None, use_ema: bool | None = None,
                   differentiable: bool = False) -> tuple[Tensor, Tensor]:
        """``(L_N: (B,), L: (B, N))`` with ``L[:, 0] = L_0`` and ``L[:, t-1] = L_{t-1}`` for ``t >= 2`` (nats).

        Each ``L_{t-1}`` is the closed-form Gaussian KL at one draw ``x_t ~ q(x_t | x_0)`` (one network
        evaluation per step and point), as in Ho et al.'s evaluation.
        """
        x = self._check_x("x", x)
        net = self._pick_net(use_ema)
        sigma2 = self.reverse_variances()
        terms = []
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            for i in range(self.num_steps):
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                terms.append(self._terms(x, self._full_index(x, i), noise, net, sigma2))
            return self.prior_kl(x), torch.stack(terms, dim=1)

    def elbo(self, x: Tensor, *, generator: torch.Generator | None = None, use_ema: bool | None = None,
             differentiable: bool = False) -> Tensor:
        r"""The DDPM evidence lower bound ``ELBO(x) ≤ log p_θ(x)`` in nats, ``(B,)``.

        .. math::

            \mathrm{ELBO} = -L_N - \sum_{t=2}^N L_{t-1} - L_0,\quad
            L_{t-1} = \tfrac12 \sum_d\Big[\log\frac{σ_t^2}{β̃_t} + \frac{β̃_t + (μ̃_t - μ_θ)^2}{σ_t^2} - 1\Big],
            \quad μ̃_t - μ_θ = \frac{β_t}{\sqrt{1-β_t}\sqrt{1-ᾱ_t}}(ε̂ - ε),

        each KL at a single draw ``x_t = \sqrt{ᾱ_t}x_0 + \sqrt{1-ᾱ_t}ε`` (unbiased, much lower variance
        than the Pyro ``Trace_ELBO`` estimate of the same quantity). ``L_0 = -\log p_θ(x_0|x_1)``
        (Gaussian, or discretized with ``data_levels``: then a bound on ``log P(x)``, the mass).

        Args:
            x: ``(B, *event_shape)``.
            generator: for the draws of ``x_t``.
            use_ema: as in :class:`~probgen.diffusion.ScoreSDE`.
            differentiable: keep the autograd graph (``N`` network calls: memory grows with ``N``).
        """
        prior, terms = self.elbo_terms(x, generator=generator, use_ema=use_ema, differentiable=differentiable)
        return -(prior + terms.sum(1))

    @torch.no_grad()
    def fit_analytic_variance(self, x_data: Tensor, *, num_batches: int = 1, batch_size: int | None = 256,
                              estimator: str = "moment", generator: torch.Generator | None = None,
                              use_ema: bool | None = None) -> Tensor:
        r"""Estimate Analytic-DPM's ``Γ_t = E_{q(x_t)}\|ε̂_θ(x_t, t)\|^2/d`` for every ``t`` and store it.

        For each step, ``num_batches`` batches of ``batch_size`` rows of ``x_data`` (drawn with
        replacement; all rows when ``batch_size`` is ``None``) are noised, ``x_t = \sqrt{ᾱ_t}x_0 +
        \sqrt{1-ᾱ_t}ε``, and averaged (``N × num_batches`` network calls). Estimators:

        * ``"moment"`` (Bao et al. 2022a): ``Γ̂_t = 1 - \overline{(\|ε\|^2 - \|ε̂\|^2)}/d`` — unbiased
          for ``Γ_t`` since ``E\|ε\|^2 = d``; the paired ``ε`` is a control variate that removes most
          of the Monte Carlo noise of ``\overline{\|ε̂\|^2}`` (that noise is multiplied by
          ``β_t^2/((1-β_t)(1-ᾱ_t))``, about 1000 at the last step of the cosine schedule);
        * ``"residual"`` (NPR-DPM, Bao et al. 2022b): ``Γ̂_t = 1 - \overline{\|ε - ε̂\|^2}/d``; then
          ``σ_t^2 = β̃_t + \frac{β_t^2}{(1-β_t)(1-ᾱ_t)} E\|ε - ε̂\|^2/d`` is the optimal isotropic
          variance for the network's own (imperfect) mean. Both agree for the optimal ``ε̂``.

        The estimate is stored in the buffer ``analytic_gamma`` (saved and loaded with the weights) and
        used by ``variance="analytic"``.

        References: Bao, Li, Zhu & Zhang (2022a), Analytic-DPM, arXiv:2201.06503, Thm. 1 and eq. 8;
        Bao et al. (2022b), arXiv:2206.07309 (noise-prediction residual).

        Returns:
            ``Γ̂: (N,)`` float64.
        """
        x_data = self._check_x("x_data", x_data)
        num_batches = check_int("num_batches", num_batches, minimum=1)
        if batch_size is not None:
            batch_size = check_int("batch_size", batch_size, minimum=1)
        estimator = check_choice("estimator", estimator, _GAMMA_ESTIMATORS)
        net = self._pick_net(use_ema)
        gamma = torch.zeros(self.num_steps, dtype=torch.float64)
        n = x_data.shape[0]
        for i in range(self.num_steps):
            total = 0.0
            for _ in range(num_batches):
                if batch_size is None:
                    x0 = x_data
                else:
                    rows = torch.randint(0, n, (batch_size,), generator=generator,
                                         device=generator.device if generator is not None else "cpu")
                    x0 = x_data[rows.to(x_data.device)]
                noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
                index = self._full_index(x0, i)
                eps = self._checked(net, self.q_sample(x0, index, noise), index)
                if estimator == "moment":
                    total += float((noise.pow(2) - eps.pow(2)).mean())
                else:
                    total += float((noise - eps).pow(2).mean())
            gamma[i] = 1.0 - total / num_batches
        self.analytic_gamma.copy_(gamma.to(self.analytic_gamma))
        return gamma

    # ------------------------------------------------------------------------------------------ Pyro programs
    @staticmethod
    def _site(t: int, num_steps: int) -> str:
        return "x_T" if t == num_steps else f"x_{t}"

    def model(self, x: Tensor) -> None:
        r"""The generative chain as a Pyro program: ``x_T ~ N(0, I)``, ``x_{t-1} ~ N(μ_θ(x_t, t), σ_t² I)``
        for ``t = N..2`` (sites ``"x_T"``, ``"x_{N-1}"``, …, ``"x_1"``), and ``"x_0"`` observed at ``x``
        through the decoder; all inside ``pyro.plate("data", B)``.

        Example:
            >>> import pyro
            >>> from probgen.diffusion import DDPM
            >>> m = DDPM((2,), num_steps=5, net_options={"hidden": [8]})
            >>> x = torch.randn(4, 2)
            >>> loss = pyro.infer.Trace_ELBO().loss(m.model, m.guide, x)  # ≈ -m.elbo(x).sum()
        """
        x = self._check_x("x", x)
        if isinstance(self.eps_net, nn.Module) and any(p.requires_grad for p in self.eps_net.parameters()):
            pyro.module(self.pyro_name, self.eps_net)
        n, event_dim = self.num_steps, len(self.event_shape)
        std = self.reverse_variances().sqrt()
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("x_T", dist.Normal(torch.zeros_like(x), torch.ones_like(x)).to_event(event_dim))
            for t in range(n, 0, -1):
                index = self._full_index(x, t - 1)
                mean = self.reverse_mean(z, index, self._checked(self.eps_net, z, index))
                scale = self._coef(std, index, x).expand_as(x)
                if t > 1:
                    z = pyro.sample(self._site(t - 1, n), dist.Normal(mean, scale).to_event(event_dim))
                else:
                    pyro.sample("x_0", self._decoder(mean, scale), obs=x)

    def guide(self, x: Tensor) -> None:
        r"""The forward process as a Pyro program: ``x_1 ~ q(x_1|x_0)``, ``x_t ~ N(\sqrt{1-β_t} x_{t-1}, β_t I)``
        for ``t = 2..N``, sites named as in :meth:`model` (``"x_1"``, …, ``"x_T"``)."""
        x = self._check_x("x", x)
        n, event_dim = self.num_steps, len(self.event_shape)
        betas = self.schedule.betas
        z = x
        with pyro.plate("data", x.shape[0]):
            for t in range(1, n + 1):
                beta = float(betas[t - 1])
                z = pyro.sample(self._site(t, n), dist.Normal(math.sqrt(1.0 - beta) * z,
                                                              torch.full_like(x, math.sqrt(beta))).to_event(event_dim))
