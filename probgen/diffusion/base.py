"""Private pieces shared by :class:`~probgen.diffusion.ScoreSDE` and :class:`~probgen.diffusion.DDPM`.

Both models wrap one network (``ScoreSDE.net``, ``DDPM.eps_net``) with an optional exponential moving
average of its weights, build a default network from ``event_shape`` when none is given, and compute an
exact ``log_prob`` through the probability-flow ODE of their SDE. That machinery lives here once:

* :func:`_check_shape_tuple`, :func:`_check_ema_decay` — constructor argument checks;
* :func:`_default_net`, :func:`_build_net` — the built-in network (ConditionedMLP or UNet) or a user's;
* :class:`_DiffusionBase` — EMA weights (:meth:`~_DiffusionBase.update_ema`, ``use_ema`` selection),
  the probability-flow ``log_prob`` and ``as_distribution``.

Nothing here is public API; the models' own docstrings document the behaviour.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from probgen._checks import check_bool, check_choice, check_int, check_probability, check_shape_arg
from probgen.nn.ema import ema_update
from probgen.protocol import ModelDistribution

__all__ = [
    "clamp_range",
    "_TRACES",
    "_check_shape_tuple",
    "_check_ema_decay",
    "_default_net",
    "_build_net",
    "_DiffusionBase",
]

_TRACES: tuple[str, ...] = ("exact", "hutchinson")
"""Divergence estimators of the probability-flow ``log_prob`` (``trace=...``)."""

# default hyperparameters of the built-in networks (tuned for ScoreSDE on 8gaussians and the 8x8 digits; see
# docs/score_sde.md). DDPM lays its own defaults over these (see probgen.diffusion.ddpm).
_MLP_DEFAULTS: dict[str, Any] = {"hidden": [128, 128, 128], "embed_dim": 64, "embedding": "fourier",
                                 "fourier_scale": 16.0, "zero_init_last": True}
_UNET_DEFAULTS: dict[str, Any] = {"base_channels": 16, "channel_mults": [1, 2], "embed_dim": 64,
                                  "embedding": "fourier", "fourier_scale": 16.0}
_IMAGE_SIZES = (8, 28, 32)


def clamp_range(model: Any) -> tuple[float, float] | None:
    """Where the command line clamps ``x̂_0`` when it samples ``model`` (``clip_x0``): the ``data_range`` of a
    DDPM of quantized data (``data_levels`` set) or of a ScoreSDE that carries one; ``None`` otherwise."""
    data_range = getattr(model, "data_range", None)
    if data_range is None or getattr(model, "data_levels", True) is None:
        return None
    return float(data_range[0]), float(data_range[1])


def _check_shape_tuple(event_shape: Any) -> tuple[int, ...]:
    """``event_shape`` as a tuple of positive ints (an int ``D`` means ``(D,)``)."""
    return check_shape_arg("event_shape", event_shape)


def _check_ema_decay(ema_decay: Any) -> float | None:
    """``ema_decay`` in ``(0, 1)``, or ``None`` (no EMA)."""
    if ema_decay is not None:
        ema_decay = check_probability("ema_decay", ema_decay, open_low=True, open_high=True)
    return ema_decay


def _default_net(event_shape: tuple[int, ...], options: Mapping[str, Any] | None) -> tuple[nn.Module, dict]:
    """The built-in network for ``event_shape`` and the options it was built with (``config()['net_options']``)."""
    from probgen.nn import ConditionedMLP, UNet

    if len(event_shape) == 1:
        cls, fixed, defaults = ConditionedMLP, {"dim": event_shape[0]}, _MLP_DEFAULTS
    elif len(event_shape) == 3 and event_shape[1] == event_shape[2] and event_shape[1] in _IMAGE_SIZES:
        cls, fixed, defaults = UNet, {"in_channels": event_shape[0], "image_size": event_shape[1]}, _UNET_DEFAULTS
    else:
        raise ValueError(
            f"no default network for event_shape {event_shape}: the built-in nets cover vectors (D,) "
            f"(ConditionedMLP) and square images (C, H, W) with H = W in {_IMAGE_SIZES} (UNet); pass net=..."
        )
    options = dict(options or {})
    clash = sorted(set(options) & set(fixed))
    if clash:
        raise ValueError(f"net_options must not set {clash}: they follow from event_shape {event_shape}")
    kwargs = {**defaults, **options}
    try:
        net = cls(**fixed, **kwargs)
    except TypeError as error:
        raise TypeError(f"net_options {sorted(options)} do not fit {cls.__name__}: {error}") from None
    saved = {k: v for k, v in net.config().items() if k not in fixed}
    return net, saved


def _build_net(
    net: Any,
    net_options: Any,
    event_shape: tuple[int, ...],
    *,
    name: str,
    expected: str,
    defaults: Mapping[str, Any] | None = None,
) -> tuple[Any, dict | None]:
    """``(network, net_options_to_save)``: the user's ``net`` (options ``None``) or the built-in one.

    Args:
        net: the user's network or ``None``.
        net_options: options of the built-in network (a dict or ``None``; refused with a user ``net``).
        event_shape: the model's event shape.
        name: the constructor argument's name (``"net"``, ``"eps_net"``), for the error messages.
        expected: how the network is called, for the error message (``"callable as eps_net(x_t, t_index)"``).
        defaults: options laid under ``net_options`` before building (the model family's defaults).
    """
    if net is None:
        if net_options is not None and not isinstance(net_options, Mapping):
            raise TypeError(f"net_options must be a dict or None, got {type(net_options).__name__}")
        if defaults is not None:
            net_options = {**defaults, **(net_options or {})}
        return _default_net(event_shape, net_options)
    if net_options is not None:
        raise ValueError(f"net_options configure the default network; they cannot be combined with {name}=...")
    if not callable(net):
        raise TypeError(f"{name} must be {expected}, got {type(net).__name__}")
    return net, None


class _DiffusionBase(nn.Module):
    """What :class:`ScoreSDE` and :class:`DDPM` share: the EMA of one network's weights and the ODE likelihood.

    A subclass sets ``_net_attr`` (the attribute holding the trained network), ``ema_decay``, and defines
    ``sde``, ``event_shape``, ``_check_x(name, x)`` and ``_score(x, t, net)`` (the score of ``net``).
    """

    _net_attr: str = "net"

    def _init_ema(self) -> None:
        """Create ``ema_net`` (a frozen copy of the network) and the ``ema_updates`` counter, if ``ema_decay`` is set."""
        if self.ema_decay is not None:
            self.ema_net = copy.deepcopy(getattr(self, self._net_attr))
            for p in self.ema_net.parameters():
                p.requires_grad_(False)
            self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        else:
            self.ema_net = None

    def _pick_net(self, use_ema: bool | None) -> Callable[[Tensor, Tensor], Tensor]:
        """The EMA network when ``use_ema`` (``None``: once it has been updated), else the trained one."""
        if use_ema is None:
            use_ema = self.ema_net is not None and int(self.ema_updates) > 0
        elif use_ema and self.ema_net is None:
            raise ValueError("use_ema=True but this model keeps no EMA weights (construct it with ema_decay=...)")
        return self.ema_net if use_ema else getattr(self, self._net_attr)

    @torch.no_grad()
    def update_ema(self) -> None:
        """One EMA step ``θ_ema ← d θ_ema + (1 - d) θ`` with ``d = min(ema_decay, (1 + k)/(10 + k))``."""
        if self.ema_net is None:
            raise ValueError("update_ema() needs EMA weights: construct the model with ema_decay=...")
        ema_update(self.ema_net, getattr(self, self._net_attr), decay=self.ema_decay,
                   num_updates=int(self.ema_updates))
        self.ema_updates += 1

    def on_fit_step(self, step: int) -> None:
        """Hook called by :func:`probgen.fit` after each optimizer step: updates the EMA if there is one."""
        if self.ema_net is not None:
            self.update_ema()

    def score_fn(self, *, use_ema: bool | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """The model's score as an unvalidated function ``(x, t) -> s_θ(x, t)`` for inner loops.

        ``model.score`` checks its arguments on every call; a sampler or ODE solver checks once at its
        entry and then calls this (a contract checked once, not on every step).
        """
        return functools.partial(self._score, net=self._pick_net(use_ema))

    def denoiser(self, *, use_ema: bool | None = None, clip_x0: Sequence[float] | None = None) -> Any:
        """The σ-space denoiser ``D(x, σ) ≈ E[x_0 | x]`` of this model (:class:`probgen.samplers.Denoiser`).

        Every sampler of :mod:`probgen.samplers.karras` (Euler/DDIM, Heun, ancestral, DPM-Solver++,
        reverse SDE, predictor–corrector, annealed Langevin) takes it; arguments are checked here, once.
        ``clip_x0 = (low, high)`` clamps its ``x̂_0`` there (:meth:`~probgen.samplers.Denoiser.clamped`).
        """
        from probgen.samplers.base import check_clip

        clip = check_clip(clip_x0)
        denoiser = self._make_denoiser(self._pick_net(use_ema))
        return denoiser if clip is None else denoiser.clamped(*clip)

    def _sample_sigma(self, num_samples: int, *, method: str, steps: int | None, generator: torch.Generator | None,
                      use_ema: bool | None, device: Any, dtype: Any, clip_x0: Sequence[float] | None = None,
                      **opts: Any) -> tuple[Tensor, int]:
        """``sample(method=<a KARRAS_SAMPLERS name>)``: :func:`probgen.samplers.sample_denoiser` on :meth:`denoiser`."""
        from probgen.samplers.karras import sample_denoiser

        denoiser = self.denoiser(use_ema=use_ema, clip_x0=clip_x0)
        with torch.no_grad():
            x = sample_denoiser(denoiser, (num_samples, *self.event_shape), method=method,
                                steps=18 if steps is None else steps, generator=generator, device=device,
                                dtype=dtype, **opts)
        return x, denoiser.nfe

    def _flow_log_prob(self, x: Any, *, eps: float, trace: str, use_ema: bool | None, differentiable: bool,
                       **opts: Any) -> Tensor:
        """Checked :func:`~probgen.diffusion.ode_log_prob` of the model's score from ``t = eps`` (see ``log_prob``)."""
        from probgen.diffusion.likelihood import ode_log_prob

        x = self._check_x("x", x)
        trace = check_choice("trace", trace, _TRACES)
        check_bool("differentiable", differentiable)
        score_fn = functools.partial(self._score, net=self._pick_net(use_ema))
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            return ode_log_prob(score_fn, self.sde, x, eps=eps, trace=trace, **opts)

    def _distribution(self, *, methods: Sequence[str], method: str, steps: int | None, max_steps: int | None,
                      trace: str, rtol: float, atol: float) -> ModelDistribution:
        """``as_distribution``: ``sample`` runs ``sample(method=..., steps=...)``, ``log_prob`` the ODE ``log_prob``."""
        check_choice("method", method, tuple(methods))
        check_choice("trace", trace, _TRACES)
        sample_opts: dict[str, Any] = {"method": method}
        if steps is not None:
            sample_opts["steps"] = check_int("steps", steps, minimum=1, maximum=max_steps)
        return ModelDistribution(
            self,
            self.event_shape,
            # differentiable=True: log_prob keeps its graph when autograd is on (Pyro NUTS, probgen MALA,
            # posterior_sample(method="mcmc")); under torch.no_grad() it still solves without one
            log_prob_fn=functools.partial(self.log_prob, trace=trace, rtol=rtol, atol=atol, differentiable=True),
            sample_opts=sample_opts,
        )
