r"""EDM: the σ-parameterised diffusion model of Karras, Aittala, Aila & Laine (2022).

Data are noised as ``x = y + σ n`` (the VE-type SDE ``dx = \sqrt{2σ}\,dw`` with time ``σ``), and the
network ``F_θ`` is wrapped in the preconditioning of Table 1,

.. math::

    D_θ(x, σ) = c_{skip}(σ)\, x + c_{out}(σ)\, F_θ\big(c_{in}(σ)\, x,\ c_{noise}(σ)\big),\qquad
    c_{skip} = \frac{σ_d^2}{σ^2 + σ_d^2},\ c_{out} = \frac{σ σ_d}{\sqrt{σ^2 + σ_d^2}},\
    c_{in} = \frac{1}{\sqrt{σ^2 + σ_d^2}},\ c_{noise} = \tfrac14 \ln σ,

trained with ``ln σ ~ N(P_mean, P_std²)`` and the weight ``λ(σ) = (σ² + σ_d²)/(σ σ_d)²``:
``L = E λ(σ) ‖D_θ(y + σ n, σ) - y‖²``. Sampling: Heun on ``dx/dσ = (x - D)/σ`` over the ρ = 7 grid
(Algorithm 1), with ``s_churn > 0`` the stochastic sampler (Algorithm 2), or any σ-space sampler of
:mod:`probgen.samplers.karras`. The log-density is exact through the same probability-flow ODE,
integrated in ``log σ`` by the ODE core (:func:`probgen.samplers.denoiser_log_prob`).

Reference: Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based Generative Models",
arXiv:2206.00364, Table 1, eq. 5, Algorithms 1–2.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from probgen._checks import check_bool, check_choice, check_events, check_int, check_positive, check_tensor
from probgen.diffusion.base import _build_net, _check_ema_decay, _check_shape_tuple, _DiffusionBase
from probgen.ops.ode import ODESolver
from probgen.ops.shapes import append_dims, batch_sum, event_numel
from probgen.protocol import ModelDistribution
from probgen.samplers.denoiser import Denoiser, denoiser_log_prob
from probgen.samplers.karras import KARRAS_SAMPLERS

__all__ = ["EDM", "edm_preconditioning"]

_NET_DEFAULTS = {"fourier_scale": 4.0, "zero_init_last": False}


def edm_preconditioning(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in, c_noise)`` of Karras et al. (2022), Table 1; ``sigma: (B,)`` -> four ``(B,)``.

    Example:
        >>> [round(float(c), 4) for c in edm_preconditioning(torch.tensor([0.5]), 0.5)]
        [0.5, 0.3536, 1.4142, -0.1733]
    """
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1.0 / total.sqrt(), 0.25 * sigma.log()


class EDM(_DiffusionBase):
    """EDM diffusion model: preconditioned denoiser, log-normal σ training, Heun/churn sampling, exact NLL.

    Args:
        event_shape: ``(D,)`` or ``(C, H, W)`` (an int ``D`` means ``(D,)``).
        net: ``F_θ(c_in x, c_noise) -> like x`` with ``c_noise: (B,)``; default the built-in network.
        sigma_data: ``σ_d``, the data's standard deviation (0.5 in the paper, for data in [-1, 1]).
        sigma_min, sigma_max: the σ range of sampling and of the likelihood (0.002, 80).
        p_mean, p_std: ``ln σ ~ N(p_mean, p_std²)`` in training (-1.2, 1.2).
        ema_decay: EMA of the weights (``None``: none).
        net_options: options of the built-in network.

    Shapes: ``x: (B, *event_shape)``, ``sigma: (B,)``.

    Reference: Karras et al. (2022), arXiv:2206.00364.

    Example:
        >>> model = EDM(2, net_options={"hidden": [16]})
        >>> model.loss(torch.randn(8, 2)).shape
        torch.Size([])
        >>> model.sample(4, steps=5).shape
        torch.Size([4, 2])
    """

    family = "edm"
    _net_attr = "net"

    def __init__(self, event_shape: int | Sequence[int], net: nn.Module | None = None, *, sigma_data: float = 0.5,
                 sigma_min: float = 0.002, sigma_max: float = 80.0, p_mean: float = -1.2, p_std: float = 1.2,
                 ema_decay: float | None = None, net_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.event_shape = _check_shape_tuple(event_shape)
        self.sigma_data = check_positive("sigma_data", sigma_data)
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min, got sigma_min={sigma_min:g}, sigma_max={sigma_max:g}")
        if not isinstance(p_mean, (int, float)) or isinstance(p_mean, bool) or not math.isfinite(p_mean):
            raise TypeError(f"p_mean must be a finite number, got {p_mean!r}")
        self.p_mean = float(p_mean)
        self.p_std = check_positive("p_std", p_std)
        self.ema_decay = _check_ema_decay(ema_decay)
        self.net, self.net_options = _build_net(net, net_options, self.event_shape, name="net",
                                                expected="callable as net(c_in * x, c_noise)", defaults=_NET_DEFAULTS)
        self._init_ema()

    # ------------------------------------------------------------------ helpers
    @property
    def num_dims(self) -> int:
        return event_numel(self.event_shape)

    @property
    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.net.parameters(), None) if isinstance(self.net, nn.Module) else None
        return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.get_default_dtype())

    def _check_x(self, name: str, x: Any) -> Tensor:
        return check_events(name, x, self.event_shape)

    def _denoise(self, x: Tensor, sigma: Tensor, net: Callable) -> Tensor:
        c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, self.sigma_data)
        n = x.dim()
        return append_dims(c_skip, n) * x + append_dims(c_out, n) * net(append_dims(c_in, n) * x, c_noise)

    def denoise(self, x: Tensor, sigma: Tensor, *, use_ema: bool | None = None) -> Tensor:
        """``D_θ(x, σ)``: ``x: (B, *event)``, ``sigma: (B,)`` positive."""
        x = self._check_x("x", x)
        check_tensor("sigma", sigma, ndim=1)
        if sigma.shape[0] != x.shape[0] or bool((sigma <= 0).any()):
            raise ValueError(f"sigma must be a positive ({x.shape[0]},) tensor, got shape {tuple(sigma.shape)}")
        return self._denoise(x, sigma.to(x), self._pick_net(use_ema))

    def _make_denoiser(self, net: Callable) -> Denoiser:
        return Denoiser(functools.partial(self._denoise, net=net), sigma_min=self.sigma_min, sigma_max=self.sigma_max)

    def _score(self, x: Tensor, sigma: Tensor, net: Callable) -> Tensor:
        return (self._denoise(x, sigma, net) - x) / append_dims(sigma**2, x.dim())

    # ------------------------------------------------------------------ training
    def loss(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``E λ(σ) ‖D_θ(x + σ n, σ) - x‖²`` with ``ln σ ~ N(p_mean, p_std²)`` (summed over the event, batch mean)."""
        x = self._check_x("x", x)
        log_sigma = self.p_mean + self.p_std * torch.randn(x.shape[0], generator=generator, device=x.device,
                                                           dtype=x.dtype)
        sigma = log_sigma.exp()
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        denoised = self._denoise(x + append_dims(sigma, x.dim()) * noise, sigma, self.net)
        return (weight * batch_sum((denoised - x) ** 2)).mean()

    # ------------------------------------------------------------------ sampling
    def sample(self, num_samples: int, *, method: str = "heun", steps: int | None = None,
               generator: torch.Generator | None = None, use_ema: bool | None = None, return_nfe: bool = False,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None,
               **opts: Any) -> Tensor | tuple[Tensor, int]:
        """Draw samples with a σ-space sampler on the ρ = 7 grid (``steps`` levels, default 18).

        ``method``: ``"heun"`` (EDM Algorithm 1; ``s_churn=..., s_tmin, s_tmax, s_noise`` for Algorithm 2),
        ``"euler"``, ``"euler-ancestral"``, ``"dpm++2m"``, ``"reverse-sde"``, ``"pc-sigma"``,
        ``"annealed-langevin-sigma"``; ``opts`` go to the sampler (``rho`` to the grid); ``clip_x0=(low, high)``
        clamps the denoiser's ``x̂_0`` there (:meth:`~probgen.samplers.Denoiser.clamped`).
        """
        num_samples = check_int("num_samples", num_samples, minimum=1)
        method = check_choice("method", method, tuple(KARRAS_SAMPLERS))
        if steps is not None:
            steps = check_int("steps", steps, minimum=1)
        net_device, net_dtype = self._device_dtype
        samples, nfe = self._sample_sigma(num_samples, method=method, steps=steps, generator=generator,
                                          use_ema=use_ema, device=device if device is not None else net_device,
                                          dtype=dtype if dtype is not None else net_dtype, **opts)
        return (samples, nfe) if return_nfe else samples

    # ------------------------------------------------------------------ likelihood
    def log_prob(self, x: Tensor, *, trace: str = "exact", rtol: float = 1e-5, atol: float = 1e-5,
                 method: str = "dopri5", steps: int | None = None, prior_log_prob: Callable | None = None,
                 use_ema: bool | None = None, differentiable: bool = False, **opts: Any) -> Tensor:
        r"""Exact ``log p_{σ_min}(x)`` (nats) through the probability-flow ODE of the VE-type SDE.

        ``dx/d\ln σ = x - D_θ(x, σ)`` from ``σ_min`` to ``σ_max``, prior ``N(0, σ_max² I)`` (or
        ``prior_log_prob``), through :func:`probgen.samplers.denoiser_log_prob` and the ODE core
        (``opts``: ``num_probes``, ``noise``, ``generator``, ``batch_size``, ``adjoint``).
        """
        x = self._check_x("x", x)
        solver = ODESolver(method, rtol=rtol, atol=atol, steps=steps)
        check_bool("differentiable", differentiable)
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            return denoiser_log_prob(self.denoiser(use_ema=use_ema), x, prior_log_prob=prior_log_prob,
                                     solver=solver, trace=trace, **opts)

    def as_distribution(self, *, method: str = "heun", steps: int | None = None, trace: str = "exact",
                        rtol: float = 1e-5, atol: float = 1e-5) -> ModelDistribution:
        """A Pyro ``TorchDistribution``: ``sample`` runs :meth:`sample`, ``log_prob`` the exact ODE :meth:`log_prob`."""
        return self._distribution(methods=tuple(KARRAS_SAMPLERS), method=method, steps=steps, max_steps=None,
                                  trace=trace, rtol=rtol, atol=atol)

    def config(self) -> dict[str, Any]:
        """JSON-safe constructor arguments (the built-in network only)."""
        if self.net_options is None:
            raise ValueError("config() needs the built-in network (a custom net cannot be rebuilt from JSON)")
        return {"event_shape": list(self.event_shape), "sigma_data": self.sigma_data, "sigma_min": self.sigma_min,
                "sigma_max": self.sigma_max, "p_mean": self.p_mean, "p_std": self.p_std,
                "ema_decay": self.ema_decay, "net_options": self.net_options}

    def extra_repr(self) -> str:
        return (f"event_shape={self.event_shape}, sigma_data={self.sigma_data:g}, "
                f"sigma=[{self.sigma_min:g}, {self.sigma_max:g}]")
