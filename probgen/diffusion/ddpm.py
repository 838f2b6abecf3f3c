r"""``DDPM``: denoising diffusion probabilistic models as a Pyro latent chain (Ho et al. 2020).

A DDPM is a hierarchical VAE whose encoder (guide) is the fixed forward process
``q(x_{1:N} | x_0) = ∏_t N(x_t; \sqrt{1-β_t}\, x_{t-1}, β_t I)`` and whose decoder (model) is the
learned reverse chain ``p_θ(x_{0:N}) = p(x_N) ∏_t p_θ(x_{t-1} | x_t)``, ``p(x_N) = N(0, I)``,
``p_θ(x_{t-1} | x_t) = N(μ_θ(x_t, t), σ_t^2 I)``, with the mean written through a noise predictor,
``μ_θ = (x_t - β_t ε̂_θ(x_t, t)/\sqrt{1-ᾱ_t}) / \sqrt{1-β_t}``. Its ELBO decomposes into closed-form
Gaussian KLs (Ho et al. eq. 5):

.. math::

    -\mathrm{ELBO}(x_0) = \underbrace{KL(q(x_N|x_0)\,\|\,p(x_N))}_{L_N}
      + \sum_{t=2}^N \underbrace{E_q\, KL(q(x_{t-1}|x_t,x_0)\,\|\,p_θ(x_{t-1}|x_t))}_{L_{t-1}}
      \underbrace{- E_q \log p_θ(x_0|x_1)}_{L_0}.

:meth:`DDPM.model` and :meth:`DDPM.guide` (in :mod:`probgen.diffusion.ddpm_chain`, with the ELBO terms and
Analytic-DPM's variances; the discretized decoder is :mod:`probgen.diffusion.discretized`) write exactly this
chain as Pyro programs (one sample site
per step), so ``pyro.infer.Trace_ELBO().loss(model.model, model.guide, x)`` is an unbiased estimate of
``-elbo(x).sum()``. Sampling runs Algorithm 2 (ancestral), DDIM, DPM-Solver or any σ-space sampler on the
model's denoiser (:mod:`probgen.samplers`); :meth:`DDPM.log_prob` is the exact
likelihood of the probability-flow ODE of the VP SDE matched to the schedule
(:class:`probgen.sde.discrete.DiscreteVPSDE`).

References:
    Ho, Jain & Abbeel (2020), arXiv:2006.11239; Nichol & Dhariwal (2021), arXiv:2102.09672;
    Song, Meng & Ermon (2021), DDIM, arXiv:2010.02502; Bao, Li, Zhu & Zhang (2022), Analytic-DPM,
    arXiv:2201.06503; Lu et al. (2022), DPM-Solver, arXiv:2206.00927; Song et al. (2021), arXiv:2011.13456.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from probgen._checks import (
    check_choice,
    check_events,
    check_int,
    check_nonnegative,
)
from probgen.diffusion.ddpm_chain import DDPMChain
from probgen.diffusion.discretized import DiscretizedGaussian
from probgen.diffusion.base import (
    _build_net,
    _check_ema_decay,
    _check_shape_tuple,
    _DiffusionBase,
)
from probgen.ops.shapes import append_dims, event_numel
from probgen.protocol import ModelDistribution
from probgen.samplers.base import schedule_denoiser
from probgen.samplers.ddim import sample_ancestral, sample_ddim
from probgen.samplers.dpm_solver import sample_dpm_solver
from probgen.samplers.karras import KARRAS_SAMPLERS
from probgen.sde.discrete import DiscreteSchedule, DiscreteVPSDE, make_betas

__all__ = ["DDPM", "DiscretizedGaussian", "VARIANCES", "LOSS_TYPES", "SAMPLE_METHODS"]

VARIANCES: tuple[str, ...] = ("beta", "beta_tilde", "analytic")
"""Reverse-process variances ``σ_t²``: ``β_t``, ``β̃_t`` (Ho et al.), or Analytic-DPM's (Bao et al.)."""

LOSS_TYPES: tuple[str, ...] = ("simple", "vlb", "hybrid")
"""Training objectives of :meth:`DDPM.loss`."""

SAMPLE_METHODS: tuple[str, ...] = ("ancestral", "ddim", "dpm-solver", *KARRAS_SAMPLERS)
"""Methods of :meth:`DDPM.sample`."""

_BPD_METHODS: tuple[str, ...] = ("elbo", "ode")
_DEQUANTIZATIONS: tuple[str, ...] = ("centered", "uniform")

# default networks: the sinusoidal embedding suits the integer (or continuous) step index
_MLP_DEFAULTS: dict[str, Any] = {"hidden": [256, 256, 256], "embed_dim": 64, "embedding": "sinusoidal",
                                 "zero_init_last": True}
_UNET_DEFAULTS: dict[str, Any] = {"base_channels": 32, "channel_mults": [1, 2], "embed_dim": 64,
                                  "embedding": "sinusoidal"}


# ---------------------------------------------------------------------------------------------- model
class DDPM(DDPMChain, _DiffusionBase):
    r"""Denoising diffusion probabilistic model with an ε-predicting network (Ho et al. 2020).

    **Schedule.** ``β_t`` linear (``linspace(1e-4, 0.02, N)``), cosine (Nichol & Dhariwal, clipped at
    0.999) or user-given; ``ᾱ_t = ∏_{s≤t}(1-β_s)``; ``q(x_t|x_0) = N(\sqrt{ᾱ_t}x_0, (1-ᾱ_t)I)``;
    posterior ``q(x_{t-1}|x_t,x_0) = N(μ̃_t, β̃_t I)`` (:class:`~probgen.sde.discrete.DiscreteSchedule`).

    **Network.** ``eps_net(x_t, t_index)`` with ``t_index: LongTensor[B]`` in ``{0, …, N-1}`` (step
    ``t = t_index + 1``). :meth:`log_prob` and the DPM-Solver sampler call it at the *continuous* index
    ``t_c N - 1`` (a float tensor) for continuous time ``t_c ∈ (0, 1]``; the built-in networks
    (:class:`probgen.nn.ConditionedMLP` for ``(D,)``, :class:`probgen.nn.UNet` for ``(C, 8, 8)`` and
    ``(C, 28, 28)``, both with a sinusoidal embedding) take floats; a custom net used with those must
    too. A plain function works as ``eps_net`` (e.g. an analytic predictor in tests).

    **Reverse variance** ``σ_t²`` (``variance=``), used by :meth:`elbo`, :meth:`model` and the
    ancestral sampler alike:

    * ``"beta"``: ``σ_t² = β_t``; ``"beta_tilde"``: ``σ_t² = β̃_t = β_t (1-ᾱ_{t-1})/(1-ᾱ_t)``, with
      ``σ_1² = β_1`` for the decoder (``β̃_1 = 0``);
    * ``"analytic"``: Analytic-DPM's optimal variance for the mean ``μ_θ`` (Bao et al. 2022, Thm. 1
      with ``λ_t² = β̃_t``),

      .. math::

          σ_t^{*2} = β̃_t + \frac{ᾱ_{t-1} β_t^2}{(1-ᾱ_t)\,ᾱ_t}\,(1 - Γ_t),\qquad
          Γ_t = E_{q(x_t)} \frac{\|ε̂_θ(x_t, t)\|^2}{d},

      with ``Γ_t`` estimated on data by :meth:`fit_analytic_variance` (stored in the buffer
      ``analytic_gamma``, saved with the state dict) and clipped to ``[0, 1]``, which keeps
      ``σ_t^{*2}`` between Bao et al.'s bounds ``β̃_t`` and ``β̃_t + ᾱ_{t-1}β_t²/((1-ᾱ_t)ᾱ_t)``;
      the decoder ``t = 1`` uses the same formula.

    **Decoder** ``p_θ(x_0|x_1)``: ``N(μ_θ(x_1, 1), σ_1² I)`` for continuous data, or, with
    ``data_levels=L``, the discretized Gaussian of Ho et al. eq. 13 on ``L`` levels spanning
    ``data_range`` (bins of width ``(high-low)/(L-1)``, edge bins to ``±∞``): then :meth:`elbo` bounds
    the log-probability mass of the discrete data and :meth:`bits_per_dim` reports it.

    **Training** (:meth:`loss`, ``loss_type=``): ``"simple"`` — ``E_{t,ε}‖ε - ε̂_θ(x_t, t)‖²`` (Ho et
    al. Algorithm 1, mean over coordinates); ``"vlb"`` — an unbiased one-``t`` estimate of
    ``-elbo(x)/D`` in nats per dimension, ``(N L_{t-1} + L_N)/D``, ``t ~ U\{1..N\}``; ``"hybrid"`` —
    ``simple + vlb_weight · vlb`` (Nichol & Dhariwal's ``λ = 0.001``; with fixed variances the vlb term
    re-weights the ε-MSE towards small ``t``).

    **EMA** of the weights as in :class:`probgen.diffusion.ScoreSDE` (``ema_decay``; updated by
    :func:`probgen.fit` through :meth:`on_fit_step`; used for sampling and evaluation once updated).

    Args:
        event_shape: shape of one data point, ``(D,)`` or ``(C, H, W)``.
        num_steps: ``N >= 1``.
        schedule: ``"linear"``, ``"cosine"``, or ``N`` betas in ``(0, 1)`` (tensor or list).
        eps_net: the noise predictor, or ``None`` for the built-in network.
        variance: ``"beta"``, ``"beta_tilde"`` or ``"analytic"``.
        loss_type: ``"simple"``, ``"vlb"`` or ``"hybrid"``.
        vlb_weight: weight of the vlb term in ``"hybrid"``.
        data_levels: ``L >= 2`` for discrete data (17 for the 8×8 digits), or ``None``.
        data_range: ``(low, high)`` of the levels (``(-1, 1)``).
        ema_decay: EMA decay in ``(0, 1)``, or ``None``.
        net_options: keyword arguments of the built-in network (not with ``eps_net``).

    Shapes: ``x: (B, *event_shape)``.

    Example:
        >>> model = DDPM((2,), num_steps=50, net_options={"hidden": [32]})
        >>> x = torch.randn(8, 2)
        >>> model.loss(x).shape, model.elbo(x).shape, model.sample(3, method="ddim", steps=10).shape
        (torch.Size([]), torch.Size([8]), torch.Size([3, 2]))
    """

    family = "ddpm"
    pyro_name = "ddpm"
    """Name under which :meth:`model` registers ``eps_net`` with :func:`pyro.module`."""
    _net_attr = "eps_net"  # the network whose weights the EMA of _DiffusionBase averages

    def __init__(
        self,
        event_shape: Sequence[int],
        num_steps: int = 1000,
        schedule: str | Tensor | Sequence[float] = "linear",
        eps_net: nn.Module | Callable[[Tensor, Tensor], Tensor] | None = None,
        *,
        variance: str = "beta_tilde",
        loss_type: str = "simple",
        vlb_weight: float = 1e-3,
        data_levels: int | None = None,
        data_range: Sequence[float] = (-1.0, 1.0),
        ema_decay: float | None = None,
        net_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.event_shape = _check_shape_tuple(event_shape)
        self.num_steps = check_int("num_steps", num_steps, minimum=1)
        self._schedule_arg = schedule if isinstance(schedule, str) else None
        self.schedule = DiscreteSchedule(make_betas(schedule, self.num_steps))
        self.variance = check_choice("variance", variance, VARIANCES)
        self.loss_type = check_choice("loss_type", loss_type, LOSS_TYPES)
        self.vlb_weight = check_nonnegative("vlb_weight", vlb_weight)
        if data_levels is not None:
            data_levels = check_int("data_levels", data_levels, minimum=2)
        self.data_levels = data_levels
        if (not isinstance(data_range, (tuple, list)) or len(data_range) != 2
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in data_range)
                or not data_range[0] < data_range[1]):
            raise ValueError(f"data_range must be (low, high) with finite low < high, got {data_range!r}")
        self.data_range = (float(data_range[0]), float(data_range[1]))
        self.ema_decay = _check_ema_decay(ema_decay)

        self.eps_net, self._net_options = _build_net(
            eps_net, net_options, self.event_shape, name="eps_net", expected="callable as eps_net(x_t, t_index)",
            defaults=_MLP_DEFAULTS if len(self.event_shape) == 1 else _UNET_DEFAULTS,
        )
        if self.ema_decay is not None and not isinstance(self.eps_net, nn.Module):
            raise ValueError("ema_decay needs eps_net to be an nn.Module (its parameters are averaged)")
        self._init_ema()
        self.register_buffer("analytic_gamma", torch.full((self.num_steps,), math.nan, dtype=torch.float64))

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def num_dims(self) -> int:
        """``D = prod(event_shape)``."""
        return event_numel(self.event_shape)

    @property
    def sde(self) -> DiscreteVPSDE:
        """The VP SDE matched to the schedule (``α(i/N)² = ᾱ_i``), used by :meth:`log_prob`.

        For the linear schedule with ``N = 1000`` it is ``VPSDE(beta_min=0.1, beta_max=20)`` up to ``O(β²)``
        (``|α(t) - α_VP(t)| < 1.1e-3`` on ``[0, 1]``).
        """
        sde = self.__dict__.get("_matched_sde")
        if sde is None or sde.schedule is not self.schedule:
            sde = DiscreteVPSDE(self.schedule)
            self.__dict__["_matched_sde"] = sde
        return sde

    @property
    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.eps_net.parameters(), None) if isinstance(self.eps_net, nn.Module) else None
        if p is None:
            return self.analytic_gamma.device, torch.get_default_dtype()
        return p.device, p.dtype

    def _check_x(self, name: str, x: Any) -> Tensor:
        return check_events(name, x, self.event_shape)

    # ------------------------------------------------------------------------------------------ protocol
    def loss(self, x: Tensor) -> Tensor:
        """The training objective on ``x: (B, *event_shape)`` per ``loss_type`` (a scalar)."""
        x = self._check_x("x", x)
        index = torch.randint(0, self.num_steps, (x.shape[0],), device=x.device)
        noise = torch.randn_like(x)
        if self.loss_type == "simple":
            x_t = self.q_sample(x, index, noise)
            return ((self._checked(self.eps_net, x_t, index) - noise) ** 2).mean()
        sigma2 = self.reverse_variances()
        vlb = (self.num_steps * self._terms(x, index, noise, self.eps_net, sigma2) + self.prior_kl(x)).mean()
        vlb = vlb / self.num_dims
        if self.loss_type == "vlb":
            return vlb
        x_t = self.q_sample(x, index, noise)
        simple = ((self._checked(self.eps_net, x_t, index) - noise) ** 2).mean()
        return simple + self.vlb_weight * vlb


    # ------------------------------------------------------------------------------------------ sampling
    def sample(
        self,
        num_samples: int,
        *,
        method: str = "ancestral",
        steps: int | None = None,
        eta: float = 0.0,
        clip_x0: tuple[float, float] | None = None,
        generator: torch.Generator | None = None,
        use_ema: bool | None = None,
        return_nfe: bool = False,
        x_init: Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **opts: Any,
    ) -> Tensor | tuple[Tensor, int]:
        """Draw ``num_samples`` samples.

        * ``"ancestral"``: Algorithm 2 over all ``N`` steps with the model's ``σ_t²``
          (:func:`probgen.samplers.ddim.sample_ancestral`); ``steps`` must be ``None`` or ``N`` (use
          ``"ddim"`` with ``eta=1`` for a shorter stochastic chain);
        * ``"ddim"``: :func:`probgen.samplers.ddim.sample_ddim`, ``steps`` (default ``min(50, N)``) and
          ``eta`` (0: deterministic);
        * ``"dpm-solver"``: :func:`probgen.samplers.dpm_solver.sample_dpm_solver` with ``steps``
          evaluations (default 20); ``**opts``: ``order``, ``method`` (``"multistep"``/``"singlestep"``),
          ``algorithm``, ``time_grid_type``, ...
        * ``"euler"``, ``"heun"``, ``"euler-ancestral"``, ``"dpm++2m"``, ``"dpm-solver-sigma"``, ``"ode-sigma"``,
          ``"reverse-sde"``, ``"pc-sigma"``, ``"annealed-langevin-sigma"``: the σ-space samplers of
          :data:`probgen.samplers.KARRAS_SAMPLERS` (Karras ρ = 7 grid with ``steps`` levels, default 18;
          ``**opts`` go to the sampler).

        Every method runs on :meth:`denoiser` through the one implementation of its algorithm (the first three
        through their front ends, which turn the steps into a σ grid: ``"ancestral"`` is
        :func:`~probgen.samplers.sample_euler_ancestral`, exact for the posterior ``q(x_{t-1} | x_t, x̂_0)``;
        ``"ddim"`` the same with ``η``; ``"dpm-solver"`` :func:`~probgen.samplers.sample_dpm_solver_sigma`).

        Args:
            num_samples: ``B >= 1``.
            method: one of the above.
            steps: number of network evaluations, ``1 <= steps <= N``.
            eta: DDIM's ``η >= 0`` (``"ddim"`` only).
            clip_x0: clamp the predicted ``x̂_0`` to ``(low, high)`` at every step (e.g. ``data_range``).
            generator: random generator for the draws.
            use_ema: EMA weights (default: when they exist).
            return_nfe: also return the number of network evaluations.
            x_init: starting noise ``(num_samples, *event_shape)`` instead of a fresh draw.
            device, dtype: default: the network's.

        Returns:
            ``(B, *event_shape)`` samples, or ``(samples, nfe)``.
        """
        num_samples = check_int("num_samples", num_samples, minimum=1)
        method = check_choice("method", method, SAMPLE_METHODS)
        if steps is not None:
            steps = check_int("steps", steps, minimum=1, maximum=self.num_steps)
        if method != "ddim" and eta != 0.0:
            raise ValueError(f"eta applies to method='ddim', got method={method!r}")
        if method in KARRAS_SAMPLERS:
            if x_init is not None or clip_x0 is not None:
                raise ValueError(f"x_init and clip_x0 apply to 'ancestral', 'ddim' and 'dpm-solver', got method={method!r}")
            net_device, net_dtype = self._device_dtype
            samples, nfe = self._sample_sigma(num_samples, method=method, steps=steps, generator=generator,
                                              use_ema=use_ema, device=device if device is not None else net_device,
                                              dtype=dtype if dtype is not None else net_dtype, **opts)
            return (samples, nfe) if return_nfe else samples
        if method != "dpm-solver" and opts:
            raise TypeError(f"unexpected options {sorted(opts)} for method={method!r} (they apply to 'dpm-solver')")
        net_device, net_dtype = self._device_dtype
        device = device if device is not None else net_device
        dtype = dtype if dtype is not None else net_dtype
        shape = (num_samples, *self.event_shape)
        if x_init is not None:
            x_init = self._check_x("x_init", x_init)
            if x_init.shape[0] != num_samples:
                raise ValueError(f"x_init must have shape {shape}, got {tuple(x_init.shape)}")
            start: Any = x_init.to(device=device, dtype=dtype)
        else:
            start = shape
        denoiser = self.denoiser(use_ema=use_ema)
        common = {"clip_x0": clip_x0, "generator": generator, "device": device, "dtype": dtype}
        with torch.no_grad():
            if method == "ancestral":
                if steps not in (None, self.num_steps):
                    raise ValueError(f"method='ancestral' runs all num_steps = {self.num_steps} steps, got steps={steps}; "
                                     "use method='ddim' (eta=1 for a stochastic chain) or 'dpm-solver' for fewer")
                result = sample_ancestral(denoiser, self.schedule, start,
                                          variance=self.reverse_variances().to(device), **common)
            elif method == "ddim":
                result = sample_ddim(denoiser, self.schedule, start, steps=steps or min(50, self.num_steps),
                                     eta=eta, **common)
            else:
                result = sample_dpm_solver(denoiser, self.schedule, start, steps=steps or min(20, self.num_steps),
                                           **common, **opts)
        if return_nfe:
            return result.samples, int(result.nfe)
        return result.samples

    # ------------------------------------------------------------------------------------------ likelihood
    def score(self, x: Tensor, t: Tensor, *, use_ema: bool | None = None) -> Tensor:
        r"""Score of the matched VP SDE's marginal, ``s(x, t) = -ε̂_θ(x, tN - 1)/σ(t)``, ``t: (B,)`` in ``(0, 1]``.

        The network sees the continuous index ``tN - 1`` (``t = i/N`` is step ``i``, index ``i - 1``;
        for ``t < 1/N`` the index lies in ``(-1, 0)``, one step of extrapolation).
        """
        x = self._check_x("x", x)
        if not isinstance(t, Tensor) or t.shape != (x.shape[0],) or not t.is_floating_point():
            raise TypeError(f"t must be a float tensor of shape ({x.shape[0]},)")
        if bool((t <= 0).any()) or bool((t > 1).any()):
            raise ValueError("t must lie in (0, 1] (σ(0) = 0)")
        return self._score(x, t.to(x), self._pick_net(use_ema))

    def _make_denoiser(self, net: Callable) -> Any:
        # the net sees its integer step index at the steps (ancestral, DDIM) and t N - 1 between them
        return schedule_denoiser(net, self.schedule, path=self.sde, name="eps_net", detach=False)[1]

    def _score(self, x: Tensor, t: Tensor, net: Callable) -> Tensor:
        eps = net(x, self.schedule.time_to_index(t))
        return -eps / append_dims(self.sde.std(t), x.dim())

    def log_prob(
        self,
        x: Tensor,
        *,
        trace: str = "exact",
        num_probes: int = 1,
        eps: float = 1e-5,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        batch_size: int | None = None,
        use_ema: bool | None = None,
        differentiable: bool = False,
        **opts: Any,
    ) -> Tensor:
        r"""Exact log-density (nats) through the probability-flow ODE of the matched VP SDE.

        .. math::

            \log p_\epsilon(x) = \log N(x_1; 0, I) + \int_\epsilon^1 \nabla\cdot\Big(-\tfrac12β(t)\big[x_t
            - ε̂_θ(x_t, tN-1)/σ(t)\big]\Big)\,dt,

        with ``β(t)``, ``σ(t)`` of :attr:`sde` (exact at the steps ``t = i/N``), through
        :func:`probgen.diffusion.ode_log_prob`. This is a density of continuous data; for discrete data
        use :meth:`bits_per_dim` (``method="ode"`` dequantizes).

        Args:
            x: ``(B, *event_shape)``.
            trace: ``"exact"`` or ``"hutchinson"``; num_probes: Hutchinson probes.
            eps: start time in ``(0, 1)`` (``p_eps``; ``σ(1e-5) ≈ 1e-3`` for the linear schedule).
            rtol, atol: tolerances of the adaptive solver.
            batch_size: solve in chunks of this many points.
            use_ema: EMA weights (default: when they exist).
            differentiable: keep the graph (else solved under ``torch.no_grad()``).
            **opts: further options of :func:`~probgen.diffusion.ode_log_prob`.

        Returns:
            ``(B,)`` log-densities.
        """
        return self._flow_log_prob(x, eps=eps, trace=trace, use_ema=use_ema, differentiable=differentiable,
                                   rtol=rtol, atol=atol, num_probes=num_probes, batch_size=batch_size, **opts)

    def bits_per_dim(
        self,
        x: Tensor,
        *,
        method: str = "elbo",
        num_levels: int | None = None,
        num_dequant: int = 1,
        dequantization: str = "uniform",
        generator: torch.Generator | None = None,
        **opts: Any,
    ) -> Tensor:
        r"""Bits per dimension of discrete data, ``(B,)``.

        * ``"elbo"``: ``-ELBO(x)/(D \log 2)`` with the discretized decoder — an upper bound on
          ``-\log_2 P(x)/D`` (needs ``data_levels``); ``**opts`` go to :meth:`elbo`;
        * ``"ode"``: the probability-flow likelihood of uniformly dequantized data, averaged over
          ``num_dequant`` draws — an upper bound in expectation; ``**opts`` go to :meth:`log_prob`.
          For disjoint bins ``B_k`` of volume ``|B|`` per point, Jensen's inequality gives
          ``\log P(k) \ge \log|B| + E_{z \sim U(B_k)} \log p(z)``, so
          ``bpd = -(\log p(z) + \log|B|)/(D \log 2)`` with ``z`` uniform in the bin of ``x``
          (:func:`probgen.data.bits_per_dim`, the convention of every family):

          - ``dequantization="uniform"`` (default): ``L`` bins of width ``(high - low)/L`` tiling
            ``[low, high]`` (:func:`probgen.data.dequantize_scaled`), as for ScoreSDE and flows; a
            network trained on the levels themselves puts its peaks at ``low`` and ``high`` on the
            edges of the outer bins there, which loosens the bound;
          - ``"centered"``: ``z = x + Δ(u - ½)``, ``u ~ U[0,1)^D``, ``Δ = (high - low)/(L - 1)`` — bins
            centred on the levels, the discretized decoder's bins (the same formula on the range
            ``[low - Δ/2, high + Δ/2]``); tighter for such a network, not comparable across families.

        Args:
            x: ``(B, *event_shape)`` scaled levels (as :func:`probgen.data.load_dataset` returns them).
            method: ``"elbo"`` or ``"ode"``.
            num_levels: ``L``, default ``data_levels``.
            num_dequant: dequantization draws (``"ode"``).
            dequantization: ``"centered"`` or ``"uniform"`` (``"ode"``; see above).
            generator: for the noise draws.
        """
        from probgen.data import bits_per_dim as _bits_per_dim
        from probgen.data import dequantize_scaled

        x = self._check_x("x", x)
        method = check_choice("method", method, _BPD_METHODS)
        levels = num_levels if num_levels is not None else self.data_levels
        if levels is None:
            raise ValueError("bits_per_dim needs num_levels=... (or a model built with data_levels=...)")
        levels = check_int("num_levels", levels, minimum=2)
        if method == "elbo":
            if self.data_levels is None or levels != self.data_levels:
                raise ValueError("method='elbo' needs the discretized decoder: build the model with "
                                 f"data_levels={levels} (got data_levels={self.data_levels})")
            return _bits_per_dim(self.elbo(x, generator=generator, **opts), self.num_dims, num_levels=None)
        num_dequant = check_int("num_dequant", num_dequant, minimum=1)
        dequantization = check_choice("dequantization", dequantization, _DEQUANTIZATIONS)
        low, high = self.data_range
        half = (high - low) / (levels - 1) / 2 if dequantization == "centered" else 0.0
        bins = (low - half, high + half)  # "centered": L bins of width (high - low)/(L - 1) around the levels
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for _ in range(num_dequant):
            z = dequantize_scaled(x, num_levels=levels, data_range=self.data_range, generator=generator)
            z = bins[0] + (z - low) * ((bins[1] - bins[0]) / (high - low))
            total = total + self.log_prob(z, **opts)
        return _bits_per_dim(total / num_dequant, self.num_dims, num_levels=levels, data_range=bins)

    # ------------------------------------------------------------------------------------------ IO
    def as_distribution(self, *, method: str = "ancestral", steps: int | None = None, trace: str = "exact",
                        rtol: float = 1e-5, atol: float = 1e-5) -> ModelDistribution:
        """A Pyro distribution: ``sample`` runs :meth:`sample` (``method``, ``steps``), ``log_prob`` the ODE
        :meth:`log_prob` (``trace``, ``rtol``, ``atol``)."""
        return self._distribution(methods=SAMPLE_METHODS, method=method, steps=steps, max_steps=self.num_steps,
                                  trace=trace, rtol=rtol, atol=atol)

    def config(self) -> dict[str, Any]:
        """JSON-safe keyword arguments: ``DDPM(**model.config())`` rebuilds the architecture.

        Raises:
            ValueError: the model has a custom ``eps_net`` (read such checkpoints back with
                ``probgen.load(path, model=DDPM(..., eps_net=YourNet(...)))``).
        """
        if self._net_options is None:
            raise ValueError(
                f"config() cannot describe a custom eps_net ({type(self.eps_net).__name__}); checkpoints of custom "
                "nets are read back with probgen.load(path, model=DDPM(event_shape, ..., eps_net=YourNet(...)))"
            )
        return {
            "event_shape": list(self.event_shape),
            "num_steps": self.num_steps,
            "schedule": self._schedule_arg if self._schedule_arg is not None else self.schedule.betas.tolist(),
            "variance": self.variance,
            "loss_type": self.loss_type,
            "vlb_weight": self.vlb_weight,
            "data_levels": self.data_levels,
            "data_range": list(self.data_range),
            "ema_decay": self.ema_decay,
            "net_options": copy.deepcopy(self._net_options),
        }

    def extra_repr(self) -> str:
        sched = self._schedule_arg if self._schedule_arg is not None else "custom"
        return (f"event_shape={self.event_shape}, num_steps={self.num_steps}, schedule={sched!r}, "
                f"variance={self.variance!r}, loss_type={self.loss_type!r}, data_levels={self.data_levels}")

