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

:meth:`DDPM.model` and :meth:`DDPM.guide` write exactly this chain as Pyro programs (one sample site
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

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch import Tensor, nn
from torch.distributions import constraints

from probgen._checks import (
    check_choice,
    check_events,
    check_int,
    check_nonnegative,
    check_output_shape,
)
from probgen.diffusion.base import (
    _build_net,
    _check_ema_decay,
    _check_shape_tuple,
    _DiffusionBase,
)
from probgen.ops.shapes import append_dims, batch_sum, event_numel
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
_GAMMA_ESTIMATORS: tuple[str, ...] = ("moment", "residual")

# default networks: the sinusoidal embedding suits the integer (or continuous) step index
_MLP_DEFAULTS: dict[str, Any] = {"hidden": [256, 256, 256], "embed_dim": 64, "embedding": "sinusoidal",
                                 "zero_init_last": True}
_UNET_DEFAULTS: dict[str, Any] = {"base_channels": 32, "channel_mults": [1, 2], "embed_dim": 64,
                                  "embedding": "sinusoidal"}


# ---------------------------------------------------------------------------------------------- decoder
def _log_normal_mass(lower: Tensor, upper: Tensor) -> Tensor:
    """``log(Φ(upper) - Φ(lower))`` stably (tails by symmetry, ``±inf`` ends allowed)."""
    flip = lower > 0  # both in the upper tail: Φ(u) - Φ(l) = Φ(-l) - Φ(-u)
    lo = torch.where(flip, -upper, lower)
    hi = torch.where(flip, -lower, upper)
    log_hi = torch.special.log_ndtr(hi)
    log_lo = torch.special.log_ndtr(lo)
    return log_hi + torch.log((-torch.expm1((log_lo - log_hi).clamp(max=0.0))).clamp_min(1e-300))


class DiscretizedGaussian(TorchDistribution):
    r"""Gaussian discretized onto ``L`` equally spaced levels (Ho et al. 2020, eq. 13).

    For a level ``x`` of ``low + k Δ``, ``Δ = (high - low)/(L - 1)``, each coordinate has mass

    .. math::

        P(x) = \Phi\Big(\frac{x + Δ/2 - μ}{σ}\Big) - \Phi\Big(\frac{x - Δ/2 - μ}{σ}\Big),

    with the lower edge at ``-∞`` for ``k = 0`` and the upper at ``+∞`` for ``k = L - 1``; coordinates
    are independent. Values are snapped to their nearest level before scoring.

    Args:
        loc: ``(B, *event)`` means.
        scale: standard deviation, broadcastable to ``loc``.
        num_levels: ``L >= 2``.
        data_range: ``(low, high)``.
        event_dim: trailing dimensions of ``loc`` forming one event.

    Example:
        >>> d = DiscretizedGaussian(torch.zeros(1, 3), 1e-3, num_levels=3, data_range=(-1.0, 1.0), event_dim=1)
        >>> d.log_prob(torch.zeros(1, 3)).abs().item() < 1e-6
        True
    """

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, loc: Tensor, scale: Tensor | float, *, num_levels: int, data_range: Sequence[float],
                 event_dim: int, validate_args: bool | None = None):
        self.loc = loc
        self.scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device).expand_as(loc)
        self.num_levels = int(num_levels)
        self.low, self.high = float(data_range[0]), float(data_range[1])
        self.event_dim_ = int(event_dim)
        shape = loc.shape
        split = len(shape) - self.event_dim_
        super().__init__(batch_shape=shape[:split], event_shape=shape[split:], validate_args=False)

    @property
    def bin_width(self) -> float:
        return (self.high - self.low) / (self.num_levels - 1)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        loc = self.loc.expand(batch_shape + self.event_shape)
        return DiscretizedGaussian(loc, self.scale.expand(batch_shape + self.event_shape),
                                   num_levels=self.num_levels, data_range=(self.low, self.high),
                                   event_dim=self.event_dim_)

    def _levels(self, value: Tensor) -> Tensor:
        k = torch.round((value - self.low) / self.bin_width)
        return k.clamp(0, self.num_levels - 1)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            z = self.loc.expand(shape) + self.scale.expand(shape) * torch.randn(shape, dtype=self.loc.dtype,
                                                                                  device=self.loc.device)
            return self.low + self._levels(z) * self.bin_width

    def log_prob(self, value: Tensor) -> Tensor:
        k = self._levels(value)
        center = self.low + k * self.bin_width
        half = 0.5 * self.bin_width
        upper = torch.where(k >= self.num_levels - 1, torch.full_like(center, math.inf),
                            (center + half - self.loc) / self.scale)
        lower = torch.where(k <= 0, torch.full_like(center, -math.inf), (center - half - self.loc) / self.scale)
        lp = _log_normal_mass(lower, upper)
        if self.event_dim_:
            lp = lp.reshape(*lp.shape[: lp.dim() - self.event_dim_], -1).sum(-1)
        return lp


# ---------------------------------------------------------------------------------------------- model
class DDPM(_DiffusionBase):
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

