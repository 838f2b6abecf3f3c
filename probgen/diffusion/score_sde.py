"""``ScoreSDE``: a continuous-time score-based generative model (Song et al. 2021).

The forward SDE ``dx = f(x, t) dt + g(t) dw`` (VP by default) turns data into the prior; a network
learns the score ``s_θ(x, t) ≈ ∇ₓ log p_t(x)`` by denoising score matching; samples come from the
reverse-time SDE, a predictor–corrector scheme or the probability-flow ODE, and the ODE, a continuous
normalizing flow, gives an exact ``log_prob``.

Reference: Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021), "Score-Based Generative Modeling
through Stochastic Differential Equations", arXiv:2011.13456; Song, Durkan, Murray & Ermon (2021),
"Maximum Likelihood Training of Score-Based Diffusion Models", arXiv:2101.09258.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from probgen._checks import (
    check_bool,
    check_choice,
    check_choice_or_callable,
    check_event_shape,
    check_int,
    check_positive,
    check_tensor,
    check_time,
)
from probgen.diffusion.base import (
    _build_net,
    _check_ema_decay,
    _check_shape_tuple,
    _DiffusionBase,
)
from probgen.diffusion.losses import dsm_loss
from probgen.ops.shapes import append_dims, chunk_sizes, event_numel
from probgen.protocol import ModelDistribution
from probgen.samplers.karras import KARRAS_SAMPLERS
from probgen.sde import SDE, VESDE, SubVPSDE, VPSDE

__all__ = ["ScoreSDE", "SDE_NAMES", "SAMPLE_METHODS", "PARAMETERIZATIONS", "LOSS_WEIGHTINGS"]

SDE_NAMES: dict[str, type[SDE]] = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}
"""Names accepted in ``ScoreSDE(sde={"name": ..., **kwargs})`` and written by ``config()``."""

SAMPLE_METHODS: dict[str, str] = {
    "sde": "sample_sde",
    "pc": "sample_pc",
    "ode": "sample_ode",
    "annealed-langevin": "annealed_langevin",
    **{name: fn.__name__ for name, fn in KARRAS_SAMPLERS.items()},
}
"""``ScoreSDE.sample(method=...)`` -> the function of :mod:`probgen.samplers` it runs (the σ-space samplers
``"euler"``, ``"heun"``, ``"dpm++2m"``, ... run on :meth:`ScoreSDE.denoiser`, ``steps`` default 18)."""

PARAMETERIZATIONS: tuple[str, ...] = ("noise", "score")
LOSS_WEIGHTINGS: tuple[str, ...] = ("sigma2", "likelihood")


def _build_sde(sde: Any) -> SDE:
    if sde is None:
        return VPSDE()
    if isinstance(sde, SDE):
        return sde
    if isinstance(sde, Mapping):
        options = dict(sde)
        name = check_choice("sde name", options.pop("name", None), tuple(SDE_NAMES))
        return SDE_NAMES[name](**options)
    raise TypeError(
        f"sde must be a probgen.sde.SDE, a dict like {{'name': 'vp', 'beta_min': 0.1, 'beta_max': 20.0}} or None, "
        f"got {type(sde).__name__}"
    )


def _sde_config(sde: SDE) -> dict[str, Any]:
    for name, cls in SDE_NAMES.items():
        if type(sde) is cls:
            return {"name": name, **sde.config()}
    raise ValueError(
        f"config() knows the SDEs {', '.join(repr(n) for n in SDE_NAMES)}; {type(sde).__name__} is not one of them, "
        "so save this model with probgen.checkpoint and read it back with load(path, model=ScoreSDE(...))"
    )


class ScoreSDE(_DiffusionBase):
    r"""Score-based generative model with a forward SDE (Song et al. 2021).

    Forward SDE and its reverse, and the probability-flow ODE that share the marginals ``p_t``:

    .. math::

        dx = f(x, t)\,dt + g(t)\,dw, \qquad
        dx = [f - g^2 \nabla_x \log p_t]\,dt + g\,d\bar w, \qquad
        \frac{dx}{dt} = f - \tfrac12 g^2 \nabla_x \log p_t .

    The network is trained by denoising score matching (:func:`probgen.diffusion.dsm_loss`):

    .. math::

        \mathcal{L}(\theta) = \tfrac12 \int_\epsilon^T \lambda(t)\,
            \mathbb{E}\|s_\theta(x_t, t) + z/\sigma(t)\|^2 dt, \quad x_t = \alpha(t) x_0 + \sigma(t) z .

    **Parameterisation.** With ``"noise"`` (default) the network predicts the noise ``ε̂(x_t, t)`` and
    ``s_θ = -ε̂/σ(t)``; its regression target ``z ~ N(0, I)`` has unit scale at every ``t``, so the
    network is well conditioned, and the ``σ²``-weighted loss is the plain MSE ``½‖ε̂ - z‖²`` (this is
    score_sde_pytorch's ``scale_by_sigma`` up to sign, and DDPM's ε-prediction). With ``"score"`` the
    network outputs the score itself, whose size grows like ``1/σ(t)`` (≈300 at ``t = 1e-5`` for VP):
    available for comparison, badly conditioned near ``t = 0``.

    **Weighting.** ``loss_weighting="sigma2"`` (``λ = σ²``) favours sample quality;
    ``"likelihood"`` (``λ = g²``) makes the loss the NLL bound of Song et al. (2021b) up to a constant,
    and with ``importance_sampling=True`` its variance drops enough to train well; use both when the
    test NLL matters.

    **EMA.** With ``ema_decay`` set, an exponential moving average of the network's weights is kept
    (``ema_net``, saved in the state dict) and updated by :meth:`update_ema`, which
    :func:`probgen.fit` calls after every optimizer step through :meth:`on_fit_step` (with the usual
    warm-up ``decay_k = min(ema_decay, (1 + k) / (10 + k))``). Once updated at least once, the EMA
    weights are used by :meth:`score` (unless ``use_ema=False``), hence by :meth:`sample`,
    :meth:`log_prob` and :meth:`bits_per_dim`; :meth:`loss` always trains the raw network.

    Args:
        event_shape: shape of one data point: ``(D,)`` or ``(C, H, W)``.
        sde: a :class:`probgen.sde.SDE`, a dict ``{"name": "vp" | "subvp" | "ve", **kwargs}``, or
            ``None`` for ``VPSDE()``.
        net: ``net(x_t, t) -> (B, *event)`` (noise or score, per ``parameterization``); ``None``
            builds :class:`probgen.nn.ConditionedMLP` for vectors or :class:`probgen.nn.UNet` for
            ``(C, 8, 8)`` / ``(C, 28, 28)`` images.
        parameterization: ``"noise"`` or ``"score"``.
        loss_weighting: ``"sigma2"``, ``"likelihood"`` or a callable ``λ(t: (B,)) -> (B,)``.
        importance_sampling: sample ``t ∝ g²/σ²`` (for the likelihood weighting).
        eps: smallest diffusion time used in training and in :meth:`log_prob`.
        ema_decay: decay of the weight EMA in ``(0, 1)``, or ``None`` (no EMA).
        net_options: keyword arguments of the default network (overriding the built-in defaults);
            not allowed together with ``net``.
        data_range: ``(low, high)`` of bounded data (images in ``[-1, 1]``), or ``None``. Saved with the
            model; the command line's samplers clamp ``x̂_0`` there at every step (``sample(clip_x0=...)``),
            as DDPM's do for its ``data_range``.

    Shapes: ``x: (B, *event_shape)``, ``t: (B,)``.

    Recipe (measured, docs/score_sde.md): on ``8gaussians``,
    ``ScoreSDE((2,), loss_weighting="likelihood", importance_sampling=True, ema_decay=0.999)`` and
    ``fit(..., steps=8000, batch_size=512, lr=1e-3, lr_schedule="cosine")`` reach a test NLL within
    about 0.05 nats of the entropy in about a minute of CPU time.

    References:
        Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021), arXiv:2011.13456.
        Song, Durkan, Murray & Ermon (2021), arXiv:2101.09258.

    Example:
        >>> model = ScoreSDE((2,), net_options={"hidden": [32, 32]})
        >>> x = torch.randn(16, 2)
        >>> model.loss(x).shape
        torch.Size([])
        >>> model.score(x, torch.full((16,), 0.5)).shape
        torch.Size([16, 2])
    """

    family = "score-sde"

    def __init__(
        self,
        event_shape: Sequence[int],
        sde: SDE | Mapping[str, Any] | None = None,
        net: nn.Module | None = None,
        *,
        parameterization: str = "noise",
        loss_weighting: str | Callable[[Tensor], Tensor] = "sigma2",
        importance_sampling: bool = False,
        eps: float = 1e-5,
        ema_decay: float | None = None,
        net_options: Mapping[str, Any] | None = None,
        data_range: Sequence[float] | None = None,
    ) -> None:
        from probgen.samplers.base import check_clip

        super().__init__()
        self.event_shape = _check_shape_tuple(event_shape)
        self.sde = _build_sde(sde)
        try:
            self.data_range = check_clip(data_range)
        except ValueError:
            raise ValueError(f"data_range must be None or (low, high) with low < high, got {data_range!r}") from None
        self.parameterization = check_choice("parameterization", parameterization, PARAMETERIZATIONS)
        self.loss_weighting = check_choice_or_callable("loss_weighting", loss_weighting, LOSS_WEIGHTINGS)
        check_bool("importance_sampling", importance_sampling)
        if importance_sampling and self.loss_weighting == "sigma2":
            raise ValueError(
                "importance_sampling=True is for loss_weighting='likelihood' (or a callable); "
                "with loss_weighting='sigma2' leave importance_sampling=False"
            )
        self.importance_sampling = importance_sampling
        self.eps = check_positive("eps", eps)
        if self.eps >= self.sde.T:
            raise ValueError(f"eps must be < sde.T = {self.sde.T:g}, got {eps}")
        self.ema_decay = _check_ema_decay(ema_decay)
        self.net, self._net_options = _build_net(net, net_options, self.event_shape, name="net",
                                                 expected="an nn.Module called as net(x, t)")
        self._init_ema()

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.net.parameters(), None)
        if p is None:
            return torch.device("cpu"), torch.get_default_dtype()
        return p.device, p.dtype

    @property
    def num_dims(self) -> int:
        """Number of scalars per data point, ``D = prod(event_shape)``."""
        return event_numel(self.event_shape)

    def _check_x(self, name: str, x: Any) -> Tensor:
        x = check_tensor(name, x)
        x = check_event_shape(name, x, self.event_shape)
        if next(self.net.parameters(), None) is not None:
            device, dtype = self._device_dtype
            if x.dtype != dtype or x.device != device:
                raise TypeError(
                    f"{name} is {x.dtype} on {x.device} but the model's weights are {dtype} on {device}; "
                    f"move one of them (e.g. model.to(x) or {name}.to(model_dtype))"
                )
        return x

    def _score(self, x: Tensor, t: Tensor, net: nn.Module) -> Tensor:
        """Unchecked score: ``net`` output, divided by ``-σ(t)`` for the noise parameterisation."""
        out = net(x, t)
        if self.parameterization == "noise":
            std = self.sde.std(t)
            return -out / append_dims(std, x.dim())
        return out

    def _make_denoiser(self, net: Any) -> Any:
        from probgen.samplers.denoiser import PathDenoiser

        t_min = 0.0 if isinstance(self.sde, VESDE) else 1e-3
        return PathDenoiser(self.sde, functools.partial(self._score, net=net), prediction="score",
                            t_min=t_min, t_max=self.sde.T)

    # ------------------------------------------------------------------------------------------ protocol
    def score(self, x: Tensor, t: Tensor | float, *, use_ema: bool | None = None) -> Tensor:
        """The model score ``s_θ(x, t) ≈ ∇ₓ log p_t(x)``.

        Args:
            x: ``(B, *event_shape)``.
            t: ``(B,)`` in ``[0, T]`` (``(0, T]`` for the noise parameterisation, as ``σ(0) = 0``), or a
                number broadcast to the batch.
            use_ema: ``None`` (EMA weights once they exist), ``True`` or ``False``.

        Returns:
            ``(B, *event_shape)``.
        """
        x = self._check_x("x", x)
        if isinstance(t, (int, float)) and not isinstance(t, bool) or isinstance(t, Tensor) and t.dim() == 0:
            t = torch.as_tensor(float(t), dtype=x.dtype, device=x.device).expand(x.shape[0])
        t = check_time("t", t, 0.0, self.sde.T, batch_size=x.shape[0])
        if not t.is_floating_point():
            raise TypeError(f"t must be a floating tensor, got {t.dtype}")
        if self.parameterization == "noise" and bool((t <= 0).any()):
            raise ValueError("t must be > 0 with parameterization='noise' (the score -ε̂/σ(t) is undefined at σ(0) = 0)")
        out = self._score(x, t.to(dtype=x.dtype, device=x.device), self._pick_net(use_ema))
        if tuple(out.shape) != tuple(x.shape):
            raise ValueError(f"net returned shape {tuple(out.shape)}; expected {tuple(x.shape)}")
        return out

    def loss(self, x: Tensor) -> Tensor:
        """Denoising score-matching loss on a batch ``x: (B, *event_shape)`` (a scalar, in nats for the
        likelihood weighting); see :func:`probgen.diffusion.dsm_loss`."""
        x = self._check_x("x", x)
        return dsm_loss(
            functools.partial(self._score, net=self.net),
            self.sde,
            x,
            weighting=self.loss_weighting,
            importance_sampling=self.importance_sampling,
            eps=self.eps,
        )

    def sample(
        self,
        num_samples: int,
        *,
        method: str = "sde",
        steps: int | None = None,
        solver: str | None = None,
        return_nfe: bool = False,
        generator: torch.Generator | None = None,
        use_ema: bool | None = None,
        batch_size: int | None = None,
        clip_x0: Sequence[float] | None = None,
        **opts: Any,
    ) -> Tensor | tuple[Tensor, int]:
        """Draw ``num_samples`` samples by solving the reverse process from the prior.

        Methods (functions of :mod:`probgen.samplers`, each run on :meth:`denoiser` through the one
        σ-space implementation of its algorithm):

        * ``"sde"``: the reverse-time SDE with a torchsde solver (:func:`~probgen.samplers.sample_sde`);
        * ``"pc"``: predictor–corrector, reverse diffusion + Langevin (:func:`~probgen.samplers.sample_pc`);
        * ``"ode"``: the probability-flow ODE with an adaptive solver (:func:`~probgen.samplers.sample_ode`);
        * ``"annealed-langevin"``: NCSN's annealed Langevin dynamics over the noise levels of a
          :class:`~probgen.sde.VESDE` (refused for other SDEs, whose ``x_t`` is scaled by ``α(t)``);
        * the σ-space samplers of :data:`probgen.samplers.KARRAS_SAMPLERS` (``"euler"``, ``"heun"``,
          ``"euler-ancestral"``, ``"dpm++2m"``, ``"dpm-solver-sigma"``, ``"ode-sigma"``, ``"reverse-sde"``,
          ``"pc-sigma"``, ``"annealed-langevin-sigma"``) on the Karras grid, ``steps`` levels (default 18).

        Args:
            num_samples: ``B >= 1``.
            method: one of the above.
            steps: number of steps; for ``"annealed-langevin"`` the number of noise levels ``L``
                (default 10, geometric between the SDE's ``sigma_max`` and ``sigma_min``, each run for
                the sampler's ``steps_per_level``); for ``"ode"`` only with a fixed-step ``method``.
                ``None`` keeps the sampler's default.
            solver: the integrator, passed as the sampler's own ``method`` option: a torchsde
                solver for ``"sde"`` (``"euler"``, ``"srk"``, ...), a torchdiffeq one for ``"ode"``
                (``"dopri5"``, ``"rk4"``, ...); ``None`` keeps the sampler's default.
            return_nfe: also return the number of score evaluations.
            generator: random generator for the prior draw and the noise.
            use_ema: as in :meth:`score`.
            batch_size: draw at most this many samples at a time (bounded memory for large ``B``);
                ``None``: all at once. The NFE returned is summed over the chunks.
            clip_x0: ``(low, high)``: clamp the denoiser's ``x̂_0`` there at every network evaluation (every
                method; e.g. ``model.data_range`` for images), or ``None`` (no clamping). With an under-trained
                network this keeps the samples in the data's range (the error of ``ε̂`` is multiplied by
                ``σ(t)/α(t)``, about 150 at ``t = 1`` of the default VP SDE).
            **opts: further keyword options of the sampler (``eps``, ``snr``, ``rtol``, ...).

        Returns:
            ``(B, *event_shape)`` samples on the model's device, or ``(samples, nfe)``.
        """
        import probgen.samplers as samplers

        num_samples = check_int("num_samples", num_samples, minimum=1)
        if batch_size is not None and num_samples > check_int("batch_size", batch_size, minimum=1):
            parts = [self.sample(n, method=method, steps=steps, solver=solver, return_nfe=True, generator=generator,
                                 use_ema=use_ema, clip_x0=clip_x0, **opts) for n in chunk_sizes(num_samples, batch_size)]
            samples, nfe = torch.cat([p[0] for p in parts]), sum(p[1] for p in parts)
            return (samples, nfe) if return_nfe else samples
        method = check_choice("method", method, tuple(SAMPLE_METHODS))
        if steps is not None:
            opts["steps"] = check_int("steps", steps, minimum=1)
        if solver is not None:
            if method not in ("sde", "ode"):
                raise ValueError(f"solver applies to method='sde' or 'ode', got method={method!r}")
            opts["method"] = solver
        device, dtype = self._device_dtype
        if method in KARRAS_SAMPLERS:
            samples, nfe = self._sample_sigma(num_samples, method=method, steps=opts.pop("steps", None),
                                              generator=generator, use_ema=use_ema, device=device, dtype=dtype,
                                              clip_x0=clip_x0, **opts)
            return (samples, nfe) if return_nfe else samples
        denoiser = self.denoiser(use_ema=use_ema, clip_x0=clip_x0)
        shape = (num_samples, *self.event_shape)
        with torch.no_grad():
            if method == "annealed-langevin":
                result = self._annealed_langevin(denoiser, shape=shape, generator=generator, device=device,
                                                 dtype=dtype, **opts)
            else:
                sampler = getattr(samplers, SAMPLE_METHODS[method])
                result = sampler(denoiser, self.sde, shape, generator=generator, device=device, dtype=dtype, **opts)
        if return_nfe:
            return result.samples, int(result.nfe)
        return result.samples

    def _annealed_langevin(self, denoiser: Any, *, shape: tuple[int, ...], generator: torch.Generator | None,
                           device: torch.device, dtype: torch.dtype, steps: int = 10, **opts: Any) -> Any:
        import probgen.samplers as samplers

        if not isinstance(self.sde, VESDE):
            raise ValueError(
                f"method='annealed-langevin' needs noise levels x + σ z, i.e. a VESDE; this model's SDE is "
                f"{type(self.sde).__name__}; use method='sde', 'pc' or 'ode' (or 'annealed-langevin-sigma')"
            )
        sigmas = samplers.geometric_sigmas(self.sde.sigma_max, self.sde.sigma_min, steps, device=device, dtype=dtype)
        return samplers.annealed_langevin(denoiser, sigmas, shape, generator=generator, device=device, dtype=dtype,
                                          **opts)

    def log_prob(
        self,
        x: Tensor,
        *,
        trace: str = "exact",
        num_probes: int = 1,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        batch_size: int | None = None,
        use_ema: bool | None = None,
        differentiable: bool = False,
        **opts: Any,
    ) -> Tensor:
        r"""Exact log-density (nats) through the probability-flow ODE (instantaneous change of variables).

        .. math::

            \log p_\epsilon(x) = \log p_T(x_T) + \int_\epsilon^T \nabla\cdot \tilde f(x_t, t)\,dt,
            \qquad \tilde f = f - \tfrac12 g^2 s_\theta,

        solved from ``t = eps`` to ``T`` by :func:`probgen.diffusion.ode_log_prob` (the model's
        ``eps``); ``"hutchinson"`` replaces the divergence by an unbiased estimate (then the result is
        unbiased for the integral, not for ``log p``'s exponential).

        Args:
            x: ``(B, *event_shape)``.
            trace: ``"exact"`` or ``"hutchinson"``.
            num_probes: probes per Hutchinson estimate.
            rtol, atol: tolerances of the adaptive solver.
            batch_size: solve in chunks of this many points (memory); ``None``: all at once.
            use_ema: as in :meth:`score`.
            differentiable: ``False`` (default) solves under ``torch.no_grad()`` — memory does not grow
                with the solver steps; ``True`` lets gradients flow to ``x`` and the weights (pass
                ``adjoint=True`` for long solves).
            **opts: further options of :func:`~probgen.diffusion.ode_log_prob` (``method``, ``steps``,
                ``adjoint``, ``generator`` for the Hutchinson probes, ...).

        Returns:
            ``(B,)`` log-densities in nats.
        """
        return self._flow_log_prob(x, eps=self.eps, trace=trace, use_ema=use_ema, differentiable=differentiable,
                                   rtol=rtol, atol=atol, num_probes=num_probes, batch_size=batch_size, **opts)

    def bits_per_dim(
        self,
        x: Tensor,
        *,
        num_levels: int,
        data_range: Sequence[float] = (-1.0, 1.0),
        num_dequant: int = 1,
        generator: torch.Generator | None = None,
        **log_prob_opts: Any,
    ) -> Tensor:
        r"""Bits per dimension of discrete data under uniform dequantization.

        ``x`` holds the data as :func:`probgen.data.load_dataset` returns it: integer levels ``k`` scaled as
        ``x = low + (high - low) k / (L - 1)`` (``L = num_levels``, ``(low, high) = data_range``).
        The levels are recovered (:func:`probgen.data.to_levels`), dequantized to
        ``z = low + (high - low) (k + u) / L``, ``u ~ U[0, 1)^D`` (bins of width ``Δ = (high - low)/L``),
        and ``log p(z)`` is averaged over ``num_dequant`` draws of ``u``. Since
        ``log P(k) ≥ E_u[log p(z)] + D log Δ`` (Jensen),

        .. math::

            \mathrm{bpd} = -\frac{\bar\ell(z) + D \log\Delta}{D \log 2}

        is an upper bound (in expectation) on the discrete model's bits per dim. Train on dequantized
        data (``z``, not ``x``) so that the model's density is spread over the bins.

        Args:
            x: ``(B, *event_shape)`` scaled levels.
            num_levels: ``L``.
            data_range: ``(low, high)``.
            num_dequant: dequantization draws averaged per point.
            generator: for the dequantization noise.
            **log_prob_opts: options of :meth:`log_prob` (``trace``, ``rtol``, ``batch_size``, ...).

        Returns:
            ``(B,)`` bits per dim.

        Reference: Theis, van den Oord & Bethge (2016), arXiv:1511.01844; Song et al. (2021b),
        arXiv:2101.09258.
        """
        from probgen.data import bits_per_dim as _bits_per_dim
        from probgen.data import dequantize, to_levels

        x = self._check_x("x", x)
        num_levels = check_int("num_levels", num_levels, minimum=2)
        num_dequant = check_int("num_dequant", num_dequant, minimum=1)
        levels = to_levels(x, num_levels=num_levels, data_range=data_range)
        low, high = (float(v) for v in data_range)
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for _ in range(num_dequant):
            y = dequantize(levels.to(x.dtype), num_levels, generator=generator)
            total = total + self.log_prob(low + (high - low) * y, **log_prob_opts)
        return _bits_per_dim(total / num_dequant, self.num_dims, num_levels=num_levels, data_range=(low, high))

    def as_distribution(
        self,
        *,
        method: str = "sde",
        steps: int | None = None,
        trace: str = "exact",
        rtol: float = 1e-5,
        atol: float = 1e-5,
    ) -> ModelDistribution:
        """A Pyro distribution: ``sample`` runs :meth:`sample` (``method``, ``steps``), ``log_prob`` runs
        :meth:`log_prob` (``trace``, ``rtol``, ``atol``).

        Example:
            >>> import pyro
            >>> model = ScoreSDE((2,), net_options={"hidden": [16]})
            >>> x = torch.randn(3, 2)
            >>> tr = pyro.poutine.trace(lambda: pyro.sample("x", model.as_distribution(), obs=x)).get_trace()
            >>> tr.nodes["x"]["fn"].log_prob(x).shape
            torch.Size([3])
        """
        return self._distribution(methods=tuple(SAMPLE_METHODS), method=method, steps=steps, max_steps=None,
                                  trace=trace, rtol=rtol, atol=atol)

    def config(self) -> dict[str, Any]:
        """JSON-safe keyword arguments: ``ScoreSDE(**model.config())`` rebuilds the architecture.

        Raises:
            ValueError: the model has a custom ``net`` or a callable ``loss_weighting``; save it
                anyway with :func:`probgen.checkpoint.save` and read it back with
                ``probgen.load(path, model=ScoreSDE(..., net=...))``.
        """
        if self._net_options is None:
            raise ValueError(
                f"config() cannot describe a custom net ({type(self.net).__name__}); checkpoints of custom nets are "
                "read back with probgen.load(path, model=ScoreSDE(event_shape, sde, net=YourNet(...)))"
            )
        if callable(self.loss_weighting):
            raise ValueError(
                "config() cannot describe a callable loss_weighting; read the checkpoint back with "
                "probgen.load(path, model=ScoreSDE(..., loss_weighting=your_function))"
            )
        return {
            "event_shape": list(self.event_shape),
            "sde": _sde_config(self.sde),
            "parameterization": self.parameterization,
            "loss_weighting": self.loss_weighting,
            "importance_sampling": self.importance_sampling,
            "eps": self.eps,
            "ema_decay": self.ema_decay,
            "net_options": copy.deepcopy(self._net_options),
            "data_range": None if self.data_range is None else list(self.data_range),
        }

    def extra_repr(self) -> str:
        return (f"event_shape={self.event_shape}, sde={self.sde!r}, parameterization={self.parameterization!r}, "
                f"loss_weighting={self.loss_weighting!r}, importance_sampling={self.importance_sampling}, "
                f"eps={self.eps:g}, ema_decay={self.ema_decay}"
                + ("" if self.data_range is None else f", data_range={self.data_range}"))
