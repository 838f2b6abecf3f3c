r"""Flow matching: simulation-free training of a continuous normalizing flow, exact likelihood by the ODE core.

A Gaussian path joins data ``x_0`` (``t = 0``) to noise ``z ~ N(0, I)`` (``t = 1``),
``x_t = α(t) x_0 + σ(t) z``, whose conditional velocity is ``u_t = α'(t) x_0 + σ'(t) z``. Conditional
flow matching (Lipman et al. 2023) regresses a network on it,

.. math::

    \mathcal L(θ) = \mathbb E_{t \sim U(0,1),\, (x_0, z) \sim π}\, \big\| v_θ(x_t, t) - (α'(t) x_0 + σ'(t) z)\big\|^2,

whose minimizer is the marginal velocity ``v*(x, t) = E[u_t | x_t = x]``; the ODE ``dx/dt = v*`` carries
``N(0, I)`` at ``t = 1`` to the data at ``t = 0``. Paths: ``"linear"`` (rectified flow / OT path,
``α = 1 - t``, ``σ = t``; Liu et al. 2023) and ``"cosine"`` (a VP path, ``α = cos(πt/2)``,
``σ = sin(πt/2)``). The coupling ``π`` is independent, or ``"ot"``: the exact optimal assignment of
each minibatch (``scipy.optimize.linear_sum_assignment`` on squared distances; Tong et al. 2024,
Pooladian et al. 2023), which straightens the paths. *Reflow* (Liu et al. 2023) retrains on
``(x̂_0, z)`` pairs of the model's own ODE (:func:`reflow`: :meth:`FlowMatching.reflow_pairs`, then
``loss(x̂_0, z)``; ``probgen fit fm --reflow N``); :func:`straightness` measures the result.

The log-density is exact through the same ODE core as the CNF and the diffusion models
(:func:`probgen.ops.odeint_logdet`): ``log p(x) = log N(x_1; 0, I) + ∫_0^1 ∇·v(x_t, t) dt``.

References: Lipman, Chen, Ben-Hamu, Nickel & Le (2023), arXiv:2210.02747; Liu, Gong & Liu (2023),
arXiv:2209.03003; Tong et al. (2024), arXiv:2302.00482; Albergo & Vanden-Eijnden (2023), arXiv:2209.15571.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from probgen._checks import check_bool, check_choice, check_event_shape, check_events, check_int, check_output_shape, check_shape_arg, check_tensor
from probgen.ops.ode import ODE_METHODS, ODESolver, odeint_logdet, odeint_velocity
from probgen.ops.shapes import append_dims, batch_sum, event_numel
from probgen.protocol import ModelDistribution
from probgen.samplers.denoiser import PathDenoiser
from probgen.samplers.karras import KARRAS_SAMPLERS, sample_denoiser

__all__ = ["FlowMatching", "LinearPath", "CosinePath", "PATHS", "COUPLINGS", "ot_coupling", "reflow", "straightness"]


class LinearPath:
    """``x_t = (1 - t) x_0 + t z`` (rectified flow, the OT path of Lipman et al. 2023 with ``σ_min = 0``)."""

    name = "linear"

    def mean_scale(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def std(self, t: Tensor) -> Tensor:
        return t

    def d_mean_scale(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def d_std(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def time_of_sigma(self, sigma: Tensor) -> Tensor:
        """``t / (1 - t) = σ̃``."""
        return sigma / (1.0 + sigma)


class CosinePath:
    """``x_t = cos(πt/2) x_0 + sin(πt/2) z`` (variance preserving)."""

    name = "cosine"

    def mean_scale(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)

    def std(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def d_mean_scale(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def d_std(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def time_of_sigma(self, sigma: Tensor) -> Tensor:
        """``tan(πt/2) = σ̃``."""
        return torch.atan(sigma) * (2.0 / math.pi)


PATHS = {"linear": LinearPath, "cosine": CosinePath}
COUPLINGS = ("independent", "ot")


def ot_coupling(x: Tensor, z: Tensor) -> Tensor:
    """The permutation ``p`` minimizing ``Σ_i ‖x_i - z_{p_i}‖²`` (exact, Hungarian algorithm; scipy).

    Args:
        x, z: ``(B, *event)`` each.

    Returns:
        ``p: LongTensor[B]`` on ``z``'s device, so that ``(x_i, z[p][i])`` is an optimal pairing.

    Example:
        >>> x = torch.tensor([[0.0], [10.0]]); z = torch.tensor([[9.0], [1.0]])
        >>> ot_coupling(x, z).tolist()
        [1, 0]
    """
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(x.reshape(x.shape[0], -1).detach().double(), z.reshape(z.shape[0], -1).detach().double()) ** 2
    _, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(cols, dtype=torch.long, device=z.device)


class FlowMatching(nn.Module):
    """A continuous normalizing flow trained by (minibatch-OT) conditional flow matching.

    Args:
        event_shape: ``(D,)`` (an int ``D`` is accepted).
        net: ``net(x_t, t) -> velocity like x_t``, ``t: (B,)``; default a
            :class:`probgen.nn.ConditionedMLP` built from ``net_options``.
        path: ``"linear"`` or ``"cosine"``.
        coupling: ``"independent"`` or ``"ot"`` (exact assignment per minibatch).
        net_options: options of the default network.

    Shapes: ``x: (B, *event_shape)``.

    Reference: Lipman et al. (2023), arXiv:2210.02747; Tong et al. (2024), arXiv:2302.00482.

    Example:
        >>> model = FlowMatching(2, net_options={"hidden": [16]})
        >>> model.loss(torch.randn(8, 2)).shape
        torch.Size([])
        >>> model.sample(3, method="rk4", steps=4).shape
        torch.Size([3, 2])
    """

    family = "fm"

    def __init__(self, event_shape: int | Sequence[int], net: nn.Module | None = None, *, path: str = "linear",
                 coupling: str = "independent", net_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.event_shape = check_shape_arg("event_shape", event_shape)
        self.path_name = check_choice("path", path, tuple(PATHS))
        self.path = PATHS[path]()
        self.coupling = check_choice("coupling", coupling, COUPLINGS)
        if net is None:
            if len(self.event_shape) != 1:
                raise ValueError(f"the default network takes vectors (D,), got event_shape {self.event_shape}; pass net=...")
            from probgen.nn import ConditionedMLP

            options = {"hidden": [256, 256, 256], "embed_dim": 64, "embedding": "fourier", "fourier_scale": 4.0,
                       "activation": "silu", **dict(net_options or {})}
            net = ConditionedMLP(self.event_shape[0], **options)
            self.net_options: dict | None = options
        else:
            if net_options is not None:
                raise ValueError("net_options configure the default network; they cannot be combined with net=...")
            if not callable(net):
                raise TypeError(f"net must be callable as net(x_t, t), got {type(net).__name__}")
            self.net_options = None
        self.net = net

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

    def _velocity(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(x, t)

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """The learned velocity ``v_θ(x, t)``: ``x: (B, *event)``, ``t: (B,)`` in ``[0, 1]``."""
        x = self._check_x("x", x)
        check_tensor("t", t, ndim=1)
        return check_output_shape("net", self._velocity(x, t.to(x)), x.shape)

    # ------------------------------------------------------------------ training
    def conditional(self, x0: Tensor, z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_t, u_t)`` of the path: ``x_t = α x_0 + σ z``, ``u_t = α' x_0 + σ' z``."""
        n = x0.dim()
        a, s = append_dims(self.path.mean_scale(t), n), append_dims(self.path.std(t), n)
        da, ds = append_dims(self.path.d_mean_scale(t), n), append_dims(self.path.d_std(t), n)
        return a * x0 + s * z, da * x0 + ds * z

    def loss(self, x: Tensor, noise: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """Conditional flow-matching loss ``E ‖v_θ(x_t, t) - u_t‖²`` (summed over the event, batch mean).

        Args:
            x: data ``(B, *event)``.
            noise: paired noise ``z`` (reflow); default fresh ``N(0, I)``, optimally permuted when
                ``coupling="ot"``. Positional too, so that ``probgen.fit(model, (x0, z))`` trains on
                fixed pairs (each batch is passed as ``loss(x0, z)``).
            generator: for ``t`` and ``z``.
        """
        x = self._check_x("x", x)
        if noise is None:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            if self.coupling == "ot":
                z = z[ot_coupling(x, z)]
        else:
            z = check_event_shape("noise", check_tensor("noise", noise), self.event_shape)
            if z.shape[0] != x.shape[0]:
                raise ValueError(f"noise must pair with x: {x.shape[0]} rows, got {z.shape[0]}")
        t = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        x_t, u = self.conditional(x, z, t)
        return batch_sum((self._velocity(x_t, t) - u) ** 2).mean()

    # ------------------------------------------------------------------ sampling
    def denoiser(self) -> PathDenoiser:
        """The σ-space denoiser (:class:`probgen.samplers.Denoiser`) of the learned velocity, for the
        samplers of :mod:`probgen.samplers.karras` (``x̂_0 = (σ' x_t - σ v) / (σ' α - σ α')``)."""
        # σ̃ = σ/α in [0.002, 80], EDM's range: t_max = t(80) (the σ̃ of t -> 1 is infinite)
        t_min, t_max = (float(self.path.time_of_sigma(torch.tensor(s, dtype=torch.float64))) for s in (0.002, 80.0))
        return PathDenoiser(self.path, self._velocity, prediction="velocity", t_min=t_min, t_max=t_max)

    def sample(self, num_samples: int, *, method: str = "dopri5", steps: int | None = None, rtol: float = 1e-5,
               atol: float = 1e-5, generator: torch.Generator | None = None, return_nfe: bool = False,
               **opts: Any) -> Tensor | tuple[Tensor, int]:
        """Draw samples: ``z ~ N(0, I)`` integrated from ``t = 1`` to 0.

        ``method``: a torchdiffeq solver (:data:`probgen.ops.ODE_METHODS`; fixed-step ones need
        ``steps``) or a σ-space sampler of :data:`probgen.samplers.KARRAS_SAMPLERS` (``"heun"``,
        ``"dpm++2m"``, ...; ``steps`` levels, default 18) on :meth:`denoiser`.
        """
        num_samples = check_int("num_samples", num_samples, minimum=1)
        method = check_choice("method", method, ODE_METHODS + tuple(KARRAS_SAMPLERS))
        device, dtype = self._device_dtype
        shape = (num_samples, *self.event_shape)
        with torch.no_grad():
            if method in KARRAS_SAMPLERS:
                denoiser = self.denoiser()
                x = sample_denoiser(denoiser, shape, method=method, steps=18 if steps is None else steps,
                                    generator=generator, device=device, dtype=dtype, **opts)
                nfe = denoiser.nfe
            else:
                if opts:
                    raise TypeError(f"unexpected options {sorted(opts)} for the ODE method {method!r}")
                solver = ODESolver(method, rtol=rtol, atol=atol, steps=steps)
                z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
                xs, nfe = odeint_velocity(self._velocity, z, 1.0, 0.0, solver=solver)
                x = xs[-1]
        return (x, nfe) if return_nfe else x

    @torch.no_grad()
    def reflow_pairs(self, num_pairs: int, *, generator: torch.Generator | None = None, **opts: Any
                     ) -> tuple[Tensor, Tensor]:
        """``(x̂_0, z)`` pairs of the current ODE (Liu et al. 2023's reflow): train a new model with
        ``loss(x̂_0, noise=z)`` to straighten the flow. ``opts`` go to the ODE solve (default dopri5)."""
        num_pairs = check_int("num_pairs", num_pairs, minimum=1)
        device, dtype = self._device_dtype
        z = torch.randn((num_pairs, *self.event_shape), generator=generator, device=device, dtype=dtype)
        xs, _ = odeint_velocity(self._velocity, z, 1.0, 0.0, solver=ODESolver(**opts))
        return xs[-1], z

    # ------------------------------------------------------------------ likelihood
    def log_prob(self, x: Tensor, *, trace: str = "exact", rtol: float = 1e-5, atol: float = 1e-5,
                 method: str = "dopri5", steps: int | None = None, batch_size: int | None = None,
                 differentiable: bool = False, return_nfe: bool = False, **opts: Any) -> Tensor | tuple[Tensor, int]:
        r"""Exact ``log p(x)`` (nats): ``log N(x_1; 0, I) + ∫_0^1 ∇·v_θ(x_t, t) dt`` through
        :func:`probgen.ops.odeint_logdet` (``opts``: ``num_probes``, ``noise``, ``generator``, ``adjoint``).
        """
        x = self._check_x("x", x)
        solver = ODESolver(method, rtol=rtol, atol=atol, steps=steps)
        check_bool("differentiable", differentiable)
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            x1, logdet, nfe = odeint_logdet(self._velocity, x, 0.0, 1.0, solver=solver, trace=trace,
                                            batch_size=batch_size, **opts)
            prior = -0.5 * self.num_dims * math.log(2 * math.pi) - 0.5 * batch_sum(x1**2)
            lp = prior + logdet
        return (lp, nfe) if return_nfe else lp

    def as_distribution(self, *, method: str = "dopri5", steps: int | None = None, trace: str = "exact",
                        rtol: float = 1e-5, atol: float = 1e-5) -> ModelDistribution:
        """A Pyro ``TorchDistribution``: ``sample`` runs :meth:`sample`, ``log_prob`` the exact ODE :meth:`log_prob`.

        Example:
            >>> d = FlowMatching(2, net_options={"hidden": [8]}).as_distribution(method="rk4", steps=2)
            >>> d.sample((3,)).shape, d.log_prob(torch.zeros(2)).shape
            (torch.Size([3, 2]), torch.Size([]))
        """
        check_choice("method", method, ODE_METHODS + tuple(KARRAS_SAMPLERS))
        sample_opts: dict[str, Any] = {"method": method}
        if steps is not None:
            sample_opts["steps"] = check_int("steps", steps, minimum=1)
        log_prob_opts: dict[str, Any] = {"trace": trace, "rtol": rtol, "atol": atol}
        if method in ODE_METHODS and steps is not None:
            log_prob_opts.update(method=method, steps=steps)
        return ModelDistribution(self, self.event_shape, log_prob_fn=functools.partial(self.log_prob, **log_prob_opts),
                                 sample_opts=sample_opts)

    def config(self) -> dict[str, Any]:
        """JSON-safe constructor arguments (the default network only)."""
        if self.net_options is None:
            raise ValueError("config() needs the default network (a custom net cannot be rebuilt from JSON)")
        return {"event_shape": list(self.event_shape), "path": self.path_name, "coupling": self.coupling,
                "net_options": dict(self.net_options)}

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, path={self.path_name!r}, coupling={self.coupling!r}"


def straightness(model: FlowMatching, num_points: int, *, steps: int = 2, generator: torch.Generator | None = None,
                 rtol: float = 1e-5, atol: float = 1e-5) -> float:
    r"""Mean distance between a ``steps``-step Euler sample and the adaptive ODE solution from the same noise,

    .. math::

        e_K = \mathbb E_z \big\| \Phi^{\text{Euler}}_K(z) - \Phi(z) \big\|_2 ,

    zero for perfectly straight paths (one Euler step is then exact); reflow lowers it (Liu et al. 2023).

    Example:
        >>> m = FlowMatching(2, net_options={"hidden": [8]})
        >>> straightness(m, 16, generator=torch.Generator().manual_seed(0)) >= 0.0
        True
    """
    if not isinstance(model, FlowMatching):
        raise TypeError(f"model must be a FlowMatching, got {type(model).__name__}")
    num_points = check_int("num_points", num_points, minimum=1)
    steps = check_int("steps", steps, minimum=1)
    device, dtype = model._device_dtype
    z = torch.randn((num_points, *model.event_shape), generator=generator, device=device, dtype=dtype)
    with torch.no_grad():
        exact, _ = odeint_velocity(model._velocity, z, 1.0, 0.0, solver=ODESolver("dopri5", rtol=rtol, atol=atol))
        euler, _ = odeint_velocity(model._velocity, z, 1.0, 0.0, solver=ODESolver("euler", steps=steps))
    return float(batch_sum((euler[-1] - exact[-1]) ** 2).sqrt().mean())


def reflow(model: FlowMatching, *, num_pairs: int, steps: int, batch_size: int = 256, lr: float = 1e-3,
           lr_schedule: str | None = "cosine", seed: int | None = None, progress: bool = False,
           device: str | torch.device | None = None, rtol: float = 1e-5, atol: float = 1e-5) -> FlowMatching:
    r"""One round of reflow (rectified flow, Liu, Gong & Liu 2023): straighten the model's paths.

    Draws ``num_pairs`` pairs ``(x̂_0, z)`` of the model's own ODE (``z ~ N(0, I)`` integrated from
    ``t = 1`` to ``0`` by dopri5, :meth:`FlowMatching.reflow_pairs`), then trains a copy of the model
    (warm-started from its weights, as in the paper) on the fixed coupling,

    .. math::

        \min_θ\ \mathbb E_{t,\,(x̂_0, z)} \big\| v_θ\big((1-t) x̂_0 + t z, t\big) - (z - x̂_0) \big\|^2
        \quad(\text{linear path}),

    whose ODE keeps the marginals of the pairs but with paths that do not cross, hence straighter:
    fewer Euler steps reach the same accuracy (:func:`straightness`). The input model is left unchanged.

    Args:
        model: a trained :class:`FlowMatching`.
        num_pairs: pairs drawn (the training set of the round).
        steps, batch_size, lr, lr_schedule, seed, progress, device: of :func:`probgen.fit`.
        rtol, atol: tolerances of the dopri5 solve drawing the pairs.

    Returns:
        the reflowed model (a new :class:`FlowMatching`, same configuration).

    Reference: Liu, Gong & Liu (2023), "Flow Straight and Fast", arXiv:2209.03003, Algorithm 1.

    Example:
        >>> m = FlowMatching(2, net_options={"hidden": [8]})
        >>> r = reflow(m, num_pairs=32, steps=2, batch_size=16, seed=0)
        >>> type(r).__name__, r is m
        ('FlowMatching', False)
    """
    import copy

    from probgen.training import fit

    if not isinstance(model, FlowMatching):
        raise TypeError(f"model must be a FlowMatching, got {type(model).__name__}")
    num_pairs = check_int("num_pairs", num_pairs, minimum=1)
    generator = None
    if seed is not None:
        device_type = model._device_dtype[0]
        generator = torch.Generator(device=device_type).manual_seed(check_int("seed", seed, minimum=0))
    was_training = model.training
    model.eval()
    x0, z = model.reflow_pairs(num_pairs, generator=generator, method="dopri5", rtol=rtol, atol=atol)
    model.train(was_training)
    new = copy.deepcopy(model)
    fit(new, (x0, z), steps=steps, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, seed=seed,
        progress=progress, device=device)
    return new
