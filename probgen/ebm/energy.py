r"""Energy-based models: an unnormalized density ``p(x) ∝ exp(-E(x) / T)`` with a neural energy.

.. math::

    p_\theta(x) = \frac{\exp(-E_\theta(x)/T)}{Z_\theta(T)},\qquad
    s_\theta(x) = \nabla_x \log p_\theta(x) = -\nabla_x E_\theta(x) / T,

with the temperature ``T`` (1 by default) fixed by the user, so that annealing schedules only change
one attribute. The normalizer ``Z`` is never needed for training (contrastive divergence, persistent
chains, score matching, NCE), for sampling (Langevin, MALA, Pyro's HMC/NUTS through
:meth:`EBM.as_distribution`), and is estimated by annealed importance sampling when a likelihood is
wanted (:meth:`EBM.log_partition`).

References:
    LeCun, Chopra, Hadsell, Ranzato & Huang (2006), "A tutorial on energy-based learning".
    Du & Mordatch (2019), arXiv:1903.08689. Nijkamp, Hill, Zhu & Wu (2019), arXiv:1904.09770.
    Song & Kingma (2021), "How to train your energy-based models", arXiv:2101.03288.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import constraints

from probgen._checks import (
    check_choice,
    check_choice_or_callable,
    check_events,
    check_int,
    check_nonnegative,
    check_positive,
    check_shape_arg,
    check_probability,
)
from probgen.ebm.objectives import ReplayBuffer, contrastive_divergence_loss, fit_gaussian, nce_loss
from probgen.nn.mlp import MLP
from probgen.ops.score_matching import (
    denoising_score_matching_loss,
    exact_score_matching_loss,
    sliced_score_matching_loss,
)
from probgen.ops.shapes import batch_sum, event_numel, flatten_event
from probgen.protocol import ModelDistribution

__all__ = ["EBM", "OBJECTIVES", "READOUTS", "SAMPLE_METHODS", "INIT_NOISES"]

OBJECTIVES = ("cd", "pcd", "esm", "ssm", "dsm", "nce")
"""Training objectives: contrastive divergence (short-run Langevin from noise), persistent CD with a
replay buffer, exact / sliced / denoising score matching, noise-contrastive estimation."""

READOUTS = ("scalar", "inner", "quadratic")
"""How the network output becomes an energy: ``f(x)`` itself, ``xᵀf(x)``, or ``½‖x - f(x)‖²``."""

SAMPLE_METHODS = ("langevin", "mala", "persistent")
INIT_NOISES = ("uniform", "gaussian")


class _EnergyDistribution(ModelDistribution):
    """:class:`ModelDistribution` with ``support`` real over the whole event (images included)."""

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.independent(constraints.real, len(self.event_shape))


def _as_event_shape(dim: Any, event_shape: Any) -> tuple[int, ...]:
    if (dim is None) == (event_shape is None):
        got = "both" if dim is not None else "neither"
        raise ValueError(f"EBM takes exactly one of dim (vector data) or event_shape (e.g. (1, 8, 8)), got {got}")
    if dim is not None:
        return (check_int("dim", dim, minimum=1),)
    return check_shape_arg("event_shape", event_shape)


class EBM(nn.Module):
    r"""An energy-based model ``p(x) ∝ exp(-E(x)/T)`` with a choice of training objective and sampler.

    .. math::

        \log p_\theta(x) = -E_\theta(x)/T - \log Z_\theta,\qquad
        E_\theta(x) = \begin{cases} f_\theta(x) & \texttt{readout="scalar"}\\
        x^\top f_\theta(x) & \texttt{readout="inner"}\\
        \tfrac12\lVert x - f_\theta(x)\rVert^2 & \texttt{readout="quadratic"}\end{cases}

    The ``"inner"`` and ``"quadratic"`` readouts turn any ``x``-shaped network (a U-Net) into an
    energy. Objectives (``objective=``):

    * ``"cd"`` — contrastive divergence with short-run Langevin negatives from noise (``sample_steps``
      moves of size ``step_size``) and Du & Mordatch's penalty ``α(E⁺² + E⁻²)``;
    * ``"pcd"`` — the same with negatives continued from a replay buffer of ``buffer_size`` states
      (``reinit_prob = 5%`` restarted from noise); the buffer is updated inside :meth:`loss`;
    * ``"esm"`` / ``"ssm"`` / ``"dsm"`` — exact (small ``D``), sliced (``num_projections``) and
      denoising (noise ``sigma``) score matching of :mod:`probgen.ops.score_matching`;
    * ``"nce"`` — noise-contrastive estimation against ``noise`` (default: the Gaussian fitted to each
      data batch), learning ``log Z`` as the parameter :attr:`log_z`;
    * or a callable ``objective(model, x) -> Tensor[]``.

    Args:
        energy_net: the network ``f``; ``(B, *event) -> (B,)`` or ``(B, 1)`` for ``"scalar"``, ``->
            (B, *event)`` for the other readouts. Default: :class:`probgen.nn.MLP` on the flattened
            event with a smooth activation (Langevin and score matching differentiate ``E`` in ``x``).
        dim: data dimension (vector data); give ``dim`` or ``event_shape``.
        event_shape: shape of one draw, e.g. ``(1, 8, 8)``.
        objective: see above.
        readout: ``"scalar"``, ``"inner"`` or ``"quadratic"``.
        hidden: hidden widths of the default MLP.
        activation: activation of the default MLP (``"silu"``, ``"softplus"``, ``"tanh"``, ``"elu"``).
        time_input: if not ``None`` the net is called ``energy_net(x, t)`` with this constant ``t``
            (a time-conditioned U-Net used as an energy).
        temperature: ``T > 0``; every method uses ``exp(-E/T)`` unless given its own ``temperature``.
        sample_steps: Langevin moves per negative batch (CD/PCD) and default of :meth:`sample`.
        step_size: Langevin step ``h`` (``x ← x - h∇E/T + √(2h) z``).
        init_noise: ``"uniform"`` on ``[-init_scale, init_scale]^D`` or ``"gaussian"`` ``N(0, init_scale²)``,
            the starting law of short-run chains.
        init_scale: scale of the starting law.
        alpha: weight of the energy-magnitude penalty of CD/PCD.
        buffer_size: replay-buffer slots ``M`` (PCD and ``sample(method="persistent")``); 0: none.
        reinit_prob: probability that a buffer state restarts from noise.
        num_projections: projections of sliced score matching.
        sigma: noise level of denoising score matching.
        noise: NCE noise: ``"gaussian"`` (fitted to each batch) or a distribution with ``sample`` and
            ``log_prob`` over one event.
        noise_ratio: NCE noise draws per data point.

    Attributes:
        log_z: learnt ``log Z`` (NCE only; 0 and unused otherwise), at temperature ``T``.

    References:
        Du & Mordatch (2019), arXiv:1903.08689; Nijkamp et al. (2019), arXiv:1904.09770;
        Hyvärinen (2005), JMLR 6; Song et al. (2019), arXiv:1905.07088; Vincent (2011);
        Gutmann & Hyvärinen (2010), AISTATS.

    Example:
        >>> ebm = EBM(dim=2, hidden=(16,), objective="ssm")
        >>> x = torch.randn(8, 2)
        >>> ebm.energy(x).shape, ebm.score(x).shape, ebm.loss(x).dim()
        (torch.Size([8]), torch.Size([8, 2]), 0)
        >>> ebm.sample(4, steps=5).shape
        torch.Size([4, 2])
    """

    family = "ebm"

    def __init__(
        self,
        energy_net: nn.Module | None = None,
        *,
        dim: int | None = None,
        event_shape: Sequence[int] | None = None,
        objective: str | Callable[..., Tensor] = "cd",
        readout: str = "scalar",
        hidden: Sequence[int] = (128, 128),
        activation: str = "silu",
        time_input: float | None = None,
        temperature: float = 1.0,
        sample_steps: int = 60,
        step_size: float = 0.01,
        init_noise: str = "uniform",
        init_scale: float = 1.0,
        alpha: float = 0.1,
        buffer_size: int = 10000,
        reinit_prob: float = 0.05,
        num_projections: int = 1,
        sigma: float = 0.1,
        noise: str | Any = "gaussian",
        noise_ratio: int = 1,
    ) -> None:
        super().__init__()
        self.event_shape = _as_event_shape(dim, event_shape)
        self._dim_given = dim is not None
        self.objective = check_choice_or_callable("objective", objective, OBJECTIVES)
        self.readout = check_choice("readout", readout, READOUTS)
        self.time_input = None if time_input is None else float(time_input)
        self.temperature = check_positive("temperature", temperature)
        self.sample_steps = check_int("sample_steps", sample_steps, minimum=1)
        self.step_size = check_positive("step_size", step_size)
        self.init_noise = check_choice("init_noise", init_noise, INIT_NOISES)
        self.init_scale = check_positive("init_scale", init_scale)
        self.alpha = check_nonnegative("alpha", alpha)
        self.buffer_size = check_int("buffer_size", buffer_size, minimum=0)
        self.reinit_prob = check_probability("reinit_prob", reinit_prob)
        self.num_projections = check_int("num_projections", num_projections, minimum=1)
        self.sigma = check_positive("sigma", sigma)
        self.noise_ratio = check_int("noise_ratio", noise_ratio, minimum=1)
        if isinstance(noise, str):
            check_choice("noise", noise, ("gaussian",))
        elif not (callable(getattr(noise, "sample", None)) and callable(getattr(noise, "log_prob", None))):
            raise TypeError(
                f"noise must be 'gaussian' or a distribution with sample and log_prob, got {type(noise).__name__}"
            )
        self.noise = noise
        if self.objective == "pcd" and self.buffer_size == 0:
            raise ValueError("objective 'pcd' needs a replay buffer: buffer_size must be >= 1, got 0")
        dim_flat = event_numel(self.event_shape)
        self.hidden = tuple(hidden)
        self.activation = activation
        self._default_net = energy_net is None
        if energy_net is None:
            out = 1 if self.readout == "scalar" else dim_flat
            energy_net = MLP(dim_flat, out, hidden=self.hidden, activation=activation)
        elif not isinstance(energy_net, nn.Module):
            raise TypeError(f"energy_net must be an nn.Module (or None for the default MLP), got {type(energy_net).__name__}")
        self.energy_net = energy_net
        # log Z is learnt by NCE only; other objectives leave it frozen so optimizers skip it
        self.log_z = nn.Parameter(torch.zeros(()), requires_grad=self.objective == "nce" or callable(self.objective))
        self.replay = (
            ReplayBuffer(self.buffer_size, self.event_shape, reinit_prob=self.reinit_prob) if self.buffer_size else None
        )

    # ------------------------------------------------------------------------------------------
    # density

    def _check_x(self, x: Tensor, name: str = "x") -> Tensor:
        return check_events(name, x, self.event_shape, finite=False)

    def _temperature(self, temperature: float | None) -> float:
        return self.temperature if temperature is None else check_positive("temperature", temperature)

    def _net(self, x: Tensor) -> Tensor:
        inp = flatten_event(x) if self._default_net else x
        out = self.energy_net(inp) if self.time_input is None else self.energy_net(inp, self.time_input)
        if not isinstance(out, Tensor):
            raise TypeError(f"energy_net must return a torch.Tensor, got {type(out).__name__}")
        return out

    def energy(self, x: Tensor) -> Tensor:
        """The energy ``E(x): (B,)`` of ``x: (B, *event)`` (untempered).

        Example:
            >>> EBM(dim=3, hidden=(8,)).energy(torch.zeros(5, 3)).shape
            torch.Size([5])
        """
        self._check_x(x)
        out = self._net(x)
        b = x.shape[0]
        if self.readout == "scalar":
            if out.numel() != b:
                raise ValueError(
                    f"energy_net must return shape ({b},) or ({b}, 1) with readout='scalar', got {tuple(out.shape)}"
                )
            return out.reshape(b)
        if out.numel() != x.numel():
            raise ValueError(
                f"energy_net must return a tensor shaped like x {tuple(x.shape)} with readout="
                f"{self.readout!r}, got {tuple(out.shape)}"
            )
        out = out.reshape(x.shape)
        if self.readout == "inner":
            return batch_sum(x * out)
        return 0.5 * batch_sum((x - out) ** 2)

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`energy`."""
        return self.energy(x)

    def log_prob(self, x: Tensor, *, temperature: float | None = None) -> Tensor:
        """The **unnormalized** log-density ``-E(x)/T: (B,)`` (subtract :meth:`log_partition` to normalize).

        Example:
            >>> ebm = EBM(dim=2, hidden=(8,), temperature=2.0)
            >>> x = torch.randn(3, 2)
            >>> torch.allclose(ebm.log_prob(x), -ebm.energy(x) / 2)
            True
        """
        return -self.energy(x) / self._temperature(temperature)

    def score(self, x: Tensor, *, temperature: float | None = None, create_graph: bool = False) -> Tensor:
        """The score ``s(x) = -∇ₓE(x)/T``, shaped like ``x``.

        Args:
            x: points ``(B, *event)``.
            temperature: overrides the model's ``T``.
            create_graph: keep the graph (to differentiate the score, as score matching does); when
                ``x`` already requires grad the graph is always kept.
        """
        t = self._temperature(temperature)
        keep = create_graph or x.requires_grad
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            e = self.energy(xg)
            (g,) = torch.autograd.grad(e.sum(), xg, create_graph=keep)
        return -g / t if keep else (-g / t).detach()

    # ------------------------------------------------------------------------------------------
    # sampling

    def init_samples(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``(n, *event)`` of the starting law of short-run chains (``init_noise``)."""
        n = check_int("n", n, minimum=1)
        p = self.log_z
        shape = (n, *self.event_shape)
        if self.init_noise == "uniform":
            u = torch.rand(shape, generator=generator, dtype=p.dtype, device=p.device)
            return (2.0 * u - 1.0) * self.init_scale
        return self.init_scale * torch.randn(shape, generator=generator, dtype=p.dtype, device=p.device)

    def _langevin(self, x0: Tensor, steps: int, step_size: float, temperature: float,
                  generator: torch.Generator | None) -> Tensor:
        from probgen.samplers import langevin

        # langevin targets exp(T' log p) with score ∇ log p: use E (T = 1) at the chain temperature T
        return langevin(lambda z: self.score(z, temperature=1.0), x0, steps=steps, step_size=step_size,
                        temperature=temperature, generator=generator).samples

    def sample(
        self,
        num_samples: int,
        *,
        method: str = "langevin",
        steps: int | None = None,
        step_size: float | None = None,
        init: Tensor | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``(num_samples, *event)`` approximately from ``exp(-E/T)``.

        Methods:

        * ``"langevin"`` — short-run unadjusted Langevin (:func:`probgen.samplers.langevin`) from the
          starting law (or ``init``): ``x ← x - h∇E + √(2hT) z``, ``steps`` moves. Biased by ``O(h)``
          and by the finite run — exactly the sampler CD trains the model for (Nijkamp et al. 2019).
        * ``"mala"`` — Metropolis-adjusted Langevin chains (:func:`probgen.infer.run_chains`): the
          first half of ``steps`` tunes each chain's step size (dual averaging), the last state is kept.
          Asymptotically exact.
        * ``"persistent"`` — Langevin continued from states of the replay buffer (the PCD negatives).

        Args:
            num_samples: number of draws (chains run in parallel).
            method: ``"langevin"``, ``"mala"`` or ``"persistent"``.
            steps: number of transitions (default ``sample_steps``).
            step_size: Langevin/MALA step ``h`` (default ``step_size``; MALA's initial value).
            init: starting states ``(num_samples, *event)`` (not with ``"persistent"``).
            temperature: overrides ``T``.
            generator: optional ``torch.Generator`` (on the model's device).
        """
        num_samples = check_int("num_samples", num_samples, minimum=1)
        check_choice("method", method, SAMPLE_METHODS)
        steps = self.sample_steps if steps is None else check_int("steps", steps, minimum=1)
        h = self.step_size if step_size is None else check_positive("step_size", step_size)
        t = self._temperature(temperature)
        if init is not None:
            if method == "persistent":
                raise ValueError("init cannot be given with method='persistent' (chains start from the buffer)")
            self._check_x(init, "init")
            if init.shape[0] != num_samples:
                raise ValueError(f"init must have {num_samples} rows (num_samples), got {init.shape[0]}")
            x0 = init.detach().to(self.log_z)
        elif method == "persistent":
            if self.replay is None:
                raise ValueError("method='persistent' needs a replay buffer; build the EBM with buffer_size >= 1")
            x0, _ = self.replay.draw(num_samples, lambda n: self.init_samples(n, generator=generator),
                                     generator=generator)
        else:
            x0 = self.init_samples(num_samples, generator=generator)
        if method in ("langevin", "persistent"):
            return self._langevin(x0, steps, h, t, generator)
        from probgen.infer import run_chains

        warmup = steps // 2
        res = run_chains(lambda z: self.energy(z) / t, x0, kernel="mala", num_samples=1,
                         warmup_steps=warmup, thin=max(steps - warmup, 1), step_size=h,
                         adapt_mass_matrix=warmup >= 20, generator=generator)
        return res.samples[:, -1]

    def as_distribution(self, *, temperature: float | None = None, **sample_opts: Any) -> ModelDistribution:
        """A Pyro distribution with ``log_prob = -E(x)/T`` (unnormalized) and real support over the event.

        Usable as a potential in Pyro's HMC/NUTS (``pyro.sample("x", ebm.as_distribution())``) and with
        :class:`probgen.infer.MALA`; ``sample`` calls :meth:`sample` with ``sample_opts``.

        Example:
            >>> d = EBM(dim=2, hidden=(8,)).as_distribution()
            >>> d.event_shape, d.log_prob(torch.zeros(4, 2)).shape
            (torch.Size([2]), torch.Size([4]))
        """
        t = self._temperature(temperature)
        opts = dict(sample_opts)
        opts.setdefault("temperature", t)
        return _EnergyDistribution(self, self.event_shape, log_prob_fn=lambda x: self.log_prob(x, temperature=t),
                                   sample_opts=opts)

    # ------------------------------------------------------------------------------------------
    # training

    def _negatives(self, n: int) -> Tensor:
        init_fn = self.init_samples
        if self.objective == "pcd":
            x0, idx = self.replay.draw(n, init_fn)
            x_neg = self._langevin(x0, self.sample_steps, self.step_size, self.temperature, None)
            self.replay.push(x_neg, idx)
            return x_neg
        return self._langevin(init_fn(n), self.sample_steps, self.step_size, self.temperature, None)

    def loss(self, x: Tensor) -> Tensor:
        """The chosen objective on a data batch ``x: (B, *event)``, a scalar to minimize.

        For ``"pcd"`` this also advances the persistent chains and writes them to the replay buffer
        (a side effect of each call; no ``on_fit_step`` is needed).
        """
        self._check_x(x)
        x = x.to(self.log_z)
        t = self.temperature
        if callable(self.objective):
            return self.objective(self, x)
        if self.objective in ("cd", "pcd"):
            x_neg = self._negatives(x.shape[0])
            e_pos = self.energy(x) / t
            e_neg = self.energy(x_neg) / t
            return contrastive_divergence_loss(e_pos, e_neg, alpha=self.alpha)

        def score_fn(z: Tensor) -> Tensor:
            return self.score(z, create_graph=True)

        if self.objective == "esm":
            return exact_score_matching_loss(score_fn, x)
        if self.objective == "ssm":
            return sliced_score_matching_loss(score_fn, x, num_projections=self.num_projections)
        if self.objective == "dsm":
            return denoising_score_matching_loss(score_fn, x, self.sigma)
        noise = fit_gaussian(x) if isinstance(self.noise, str) else self.noise
        return nce_loss(lambda z: self.log_prob(z) - self.log_z, x, noise, noise_ratio=self.noise_ratio)

    # ------------------------------------------------------------------------------------------
    # normalizer

    def log_partition(
        self,
        *,
        num_chains: int = 200,
        num_steps: int = 500,
        base: Any = None,
        kernel: str = "mala",
        temperature: float | None = None,
        return_stderr: bool = False,
        generator: torch.Generator | None = None,
        **ais_opts: Any,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Estimate ``log Z = log ∫ exp(-E(x)/T) dx`` by annealed importance sampling (:func:`probgen.infer.ais`).

        Args:
            num_chains: AIS particles.
            num_steps: intermediate temperatures.
            base: normalised starting distribution (default ``N(0, s²I)`` with ``s = 2·init_scale``).
            kernel: AIS transition (``"mala"``, ``"hmc"``, ``"ula"``).
            temperature: overrides ``T``.
            return_stderr: also return the delta-method standard error of the estimate.
            generator: optional ``torch.Generator``.
            **ais_opts: passed to :func:`probgen.infer.ais` (``betas``, ``num_mcmc_steps``, ...).

        Returns:
            ``log Ẑ`` (0-dim), or ``(log Ẑ, stderr)``.
        """
        from probgen.infer.ais import annealed_importance_sampling as ais

        t = self._temperature(temperature)
        if base is None:
            p = self.log_z
            loc = torch.zeros(self.event_shape, dtype=p.dtype, device=p.device)
            base = torch.distributions.Independent(
                torch.distributions.Normal(loc, 2.0 * self.init_scale), len(self.event_shape)
            )
        res = ais(lambda z: self.log_prob(z, temperature=t), base, num_chains=num_chains, num_steps=num_steps,
                  kernel=kernel, generator=generator, **ais_opts)
        log_z, se = res.log_z.detach(), res.stderr.detach()
        return (log_z, se) if return_stderr else log_z

    def log_likelihood(self, x: Tensor, num_particles: int = 200, **ais_opts: Any) -> Tensor:
        """``log p(x) ≈ -E(x)/T - log Ẑ: (B,)`` with ``log Ẑ`` from :meth:`log_partition` (AIS, ``num_particles`` chains).

        ``Ẑ`` is unbiased, so ``log Ẑ`` is biased low on average and this estimate biased high.
        """
        log_z = self.log_partition(num_chains=num_particles, **ais_opts)
        with torch.no_grad():
            return self.log_prob(x, temperature=ais_opts.get("temperature")) - log_z

    # ------------------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """JSON-safe constructor arguments (default MLP energy and named objective/noise only)."""
        if not self._default_net:
            raise TypeError(
                "config() can only describe an EBM with the default MLP energy (energy_net=None); "
                "save a custom energy_net yourself"
            )
        if callable(self.objective) or not isinstance(self.noise, str):
            raise TypeError("config() needs objective and noise given by name, got a callable or a distribution")
        shape = {"dim": self.event_shape[0]} if self._dim_given else {"event_shape": list(self.event_shape)}
        return {
            **shape,
            "objective": self.objective,
            "readout": self.readout,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "time_input": self.time_input,
            "temperature": self.temperature,
            "sample_steps": self.sample_steps,
            "step_size": self.step_size,
            "init_noise": self.init_noise,
            "init_scale": self.init_scale,
            "alpha": self.alpha,
            "buffer_size": self.buffer_size,
            "reinit_prob": self.reinit_prob,
            "num_projections": self.num_projections,
            "sigma": self.sigma,
            "noise": self.noise,
            "noise_ratio": self.noise_ratio,
        }

    def extra_repr(self) -> str:
        return f"event_shape={self.event_shape}, objective={self.objective!r}, readout={self.readout!r}"


# keep math referenced for doctest namespaces
_ = math
