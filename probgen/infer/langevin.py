r"""Langevin kernels for Pyro's MCMC: :class:`ULA` and :class:`MALA`.

Both are :class:`pyro.infer.mcmc.mcmc_kernel.MCMCKernel` subclasses, so they run under
:class:`pyro.infer.MCMC` unchanged (progress bar, several chains, ``get_samples``, ``summary``) and
take ``model`` xor ``potential_fn`` exactly as Pyro's :class:`~pyro.infer.mcmc.HMC` does. With a
``model`` the sites are moved to the unconstrained space by Pyro's ``initialize_model``; the kernel
works on the flat vector ``z ∈ R^D`` of the sorted site names and targets ``π_T(z) ∝ exp(-U(z) / T)``
(``T = temperature``):

* ULA: ``z' = z - h A ∇U_T(z) + √(2hA) ξ`` (no accept/reject; biased by ``O(h)``);
* MALA: the same proposal accepted with probability ``min(1, α)``,
  ``log α = U_T(z) - U_T(z') + log q(z | z') - log q(z' | z)``,
  ``log q(z' | z) = -‖A^{-1/2}(z' - z + hA∇U_T(z))‖² / (4h)``.

``A`` is a diagonal preconditioner (the inverse mass matrix; the identity unless
``adapt_mass_matrix=True`` estimates the posterior variances during warmup, as Pyro's HMC does). The
transitions are the ``C = 1`` case of the batched ones in :mod:`probgen.infer.transitions`; warmup
adaptation (dual averaging, Stan's windows) is :mod:`probgen.infer.adaptation`.

References:
    Roberts & Tweedie (1996), Bernoulli 2(4); Roberts & Rosenthal (1998), JRSS B 60(1);
    Hoffman & Gelman (2014), arXiv:1111.4246.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from pyro.infer.autoguide.initialization import init_to_uniform
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.integrator import _EXCEPTION_HANDLERS
from torch import Tensor

from probgen._checks import check_positive, check_probability
from probgen.infer.adaptation import WarmupAdapter
from probgen.infer.transitions import (
    ChainState,
    StepResult,
    find_reasonable_step_size,
    init_state,
    mala_step,
    ula_step,
)

__all__ = ["MALA", "ULA"]


class _LangevinKernel(MCMCKernel):
    """Shared machinery of :class:`ULA` and :class:`MALA` (model/potential set-up, caching, warmup)."""

    _step_fn: Callable[..., StepResult]
    _metropolis: bool
    _name: str

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable[[dict[str, Tensor]], Tensor] | None = None,
        step_size: float = 0.1,
        adapt_step_size: bool = True,
        *,
        target_accept_prob: float = 0.574,
        adapt_mass_matrix: bool = False,
        transforms: dict | None = None,
        jit_compile: bool = False,
        temperature: float = 1.0,
        init_strategy: Callable = init_to_uniform,
        max_plate_nesting: int | None = None,
    ) -> None:
        if (model is None) == (potential_fn is None):
            got = "both" if model is not None else "neither"
            raise ValueError(f"{self._name} takes exactly one of model or potential_fn, got {got}")
        if model is not None and not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        if potential_fn is not None and not callable(potential_fn):
            raise TypeError(f"potential_fn must be callable, got {type(potential_fn).__name__}")
        self.model = model
        self.potential_fn = potential_fn
        self.transforms = transforms
        self._init_step_size = check_positive("step_size", step_size)
        self.adapt_step_size = bool(adapt_step_size)
        self.adapt_mass_matrix = bool(adapt_mass_matrix)
        self.target_accept_prob = check_probability("target_accept_prob", target_accept_prob,
                                                    open_low=True, open_high=True)
        self.temperature = check_positive("temperature", temperature)
        self._jit_compile = bool(jit_compile)
        self._init_strategy = init_strategy
        self._max_plate_nesting = max_plate_nesting
        self._reset()
        super().__init__()

    # ----------------------------------------------------------------- state
    def _reset(self) -> None:
        """Forget the run (Pyro's ``HMC._reset``); the adapted step size and preconditioner stay."""
        self._t = 0
        self._warmup_steps = 0
        self._accept_cnt = 0.0
        self._mean_accept_prob = 0.0
        self._divergences: list[int] = []
        self._initial_params: dict[str, Tensor] | None = None
        self._state: ChainState | None = None
        if not hasattr(self, "_adapter"):
            self._adapter: WarmupAdapter | None = None
        self._names: list[str] = []
        self._shapes: list[torch.Size] = []

    @property
    def initial_params(self) -> dict[str, Tensor] | None:
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: dict[str, Tensor] | None) -> None:
        self._initial_params = params

    @property
    def step_size(self) -> float:
        """Current step size ``h``: the initial one before a run, the adapted one during and after it
        (``MCMC(...).run()`` leaves the warmup's final value here, as Pyro's HMC does)."""
        if self._adapter is None:
            return self._init_step_size
        return float(self._adapter.step_size[0])

    @property
    def inverse_mass_matrix(self) -> Tensor | None:
        """Current diagonal preconditioner ``A`` ``(D,)`` over the flat vector of sorted site names
        (the identity unless ``adapt_mass_matrix=True``; ``None`` before the first run; the adapted
        value stays after ``MCMC(...).run()``, as in Pyro's HMC)."""
        return None if self._adapter is None else self._adapter.inverse_mass_matrix

    # ------------------------------------------------------ flat <-> dict
    def _pack(self, params: dict[str, Tensor]) -> Tensor:
        return torch.cat([params[n].detach().reshape(-1) for n in self._names])[None]

    def _unpack(self, flat: Tensor) -> dict[str, Tensor]:
        out, pos = {}, 0
        for n, shape in zip(self._names, self._shapes):
            size = shape.numel()
            out[n] = flat[0, pos:pos + size].reshape(shape)
            pos += size
        return out

    def _flat_potential(self, flat: Tensor) -> Tensor:
        """``(1, D) -> (1,)``: the tempered potential of the packed parameters."""
        try:
            u = self.potential_fn(self._unpack(flat))
        except Exception as e:  # numerical failures (e.g. Cholesky) count as an infinite potential
            if any(h(e) for h in _EXCEPTION_HANDLERS.values()):
                return flat.sum(-1) * 0.0 + float("inf")
            raise
        return (u / self.temperature).reshape(1)

    # -------------------------------------------------------------- setup
    def _initialize_model_properties(self, model_args: tuple, model_kwargs: dict) -> None:
        init_params, potential_fn, transforms, _ = initialize_model(
            self.model,
            model_args,
            model_kwargs,
            transforms=self.transforms,
            max_plate_nesting=self._max_plate_nesting,
            jit_compile=self._jit_compile,
            init_strategy=self._init_strategy,
            initial_params=self._initial_params,
        )
        self.potential_fn = potential_fn
        self.transforms = transforms
        self._initial_params = init_params

    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        self._warmup_steps = int(warmup_steps)
        if self.model is not None:
            self._initialize_model_properties(args, kwargs)
        if self._initial_params is None:
            raise ValueError(
                f"{self._name} with potential_fn needs initial_params: pass "
                "MCMC(kernel, ..., initial_params={name: tensor}) with one entry per chain"
            )
        params = self._initial_params
        if not params:  # no latent sites: every draw is {} (Pyro's HMC on a null model)
            return
        self._names = sorted(params)
        self._shapes = [params[n].shape for n in self._names]
        flat = self._pack(params)
        opts = {"dtype": flat.dtype, "device": flat.device}
        self._state = init_state(self._flat_potential, flat)
        if not bool(torch.isfinite(self._state.potential).all()):
            raise ValueError(f"{self._name}: the potential at the initial parameters is not finite")
        adapt_step = self.adapt_step_size and self._metropolis and self._warmup_steps > 0
        self._adapter = WarmupAdapter(
            self._warmup_steps,
            torch.full((1,), self._init_step_size, **opts),
            torch.ones(flat.shape[1:], **opts),
            adapt_step_size=adapt_step,
            adapt_mass_matrix=self.adapt_mass_matrix and self._warmup_steps > 0,
            target_accept_prob=self.target_accept_prob,
            find_step_size=self._find_step_size if adapt_step else None,
        )
        if adapt_step:
            self._adapter.restart_step_size()

    def _find_step_size(self, step_size: Tensor, inverse_mass_matrix: Tensor) -> Tensor:
        return find_reasonable_step_size(
            type(self)._step_fn, self._flat_potential, self._state, step_size, inverse_mass_matrix,
            target_accept_prob=self.target_accept_prob,
        )

    def cleanup(self) -> None:
        self._reset()

    # ------------------------------------------------------------- sample
    def sample(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        if not params and not self._names:  # no latent sites (Pyro's HMC returns them unchanged)
            self._t += 1
            self._mean_accept_prob = 1.0
            if self._t > self._warmup_steps:
                self._accept_cnt += 1
            return params
        if self._state is None:  # cache cleared: rebuild from params
            self._state = init_state(self._flat_potential, self._pack(params))
        adapter = self._adapter
        previous = self._state.x
        res = type(self)._step_fn(self._flat_potential, self._state, adapter.step_size,
                                  adapter.inverse_mass_matrix)
        self._state = res.state
        accept_prob = float(res.accept_prob[0])
        if self._t < self._warmup_steps:
            adapter.step(self._t, res.state.x, res.accept_prob)
            n = self._t + 1
        else:
            n = self._t - self._warmup_steps + 1
            self._accept_cnt += float(not torch.equal(res.state.x, previous))
            if bool(res.diverging[0]):
                self._divergences.append(self._t - self._warmup_steps)
        self._t += 1
        self._mean_accept_prob += (accept_prob - self._mean_accept_prob) / n
        return self._unpack(self._state.x)

    # ---------------------------------------------------------- reporting
    def logging(self) -> OrderedDict:
        return OrderedDict(
            [("step size", f"{self.step_size:.2e}"), ("acc. prob", f"{self._mean_accept_prob:.3f}")]
        )

    def diagnostics(self) -> dict[str, Any]:
        num = max(self._t - self._warmup_steps, 1)
        return {
            "divergences": list(self._divergences),
            "acceptance rate": self._accept_cnt / num,
            "step size": self.step_size,
        }


class MALA(_LangevinKernel):
    r"""Metropolis-adjusted Langevin algorithm as a Pyro ``MCMCKernel``.

    Proposal and acceptance, with step size ``h``, diagonal preconditioner ``A`` and tempered potential
    ``U_T = U / T``:

    .. math::
        z' = z - hA\nabla U_T(z) + \sqrt{2hA}\,\xi, \qquad
        \alpha = \min\Big(1,\ \frac{\pi_T(z')\, q(z \mid z')}{\pi_T(z)\, q(z' \mid z)}\Big), \qquad
        q(z' \mid z) = N(z';\ z - hA\nabla U_T(z),\ 2hA).

    During warmup ``h`` is tuned by dual averaging to ``target_accept_prob`` (0.574 is optimal as
    ``D → ∞``, Roberts & Rosenthal 1998). ``z`` is the flat vector of the sorted unconstrained sites.

    Args:
        model: a Pyro model (its sites are sampled in the unconstrained space); exclusive with
            ``potential_fn``.
        potential_fn: ``U(params: dict[str, Tensor]) -> Tensor[]``, the negative unnormalised
            log-density; needs ``MCMC(..., initial_params=...)``.
        step_size: initial ``h > 0`` (the Langevin time step; equals HMC with one leapfrog step of
            size ``√(2h)``).
        adapt_step_size: tune ``h`` during warmup by dual averaging.
        target_accept_prob: acceptance probability the adaptation aims for.
        adapt_mass_matrix: estimate a diagonal preconditioner (posterior variances) during warmup, in
            Stan's windows, as Pyro's HMC does.
        transforms: site name -> transform to the unconstrained space (``model`` only; as in HMC).
        jit_compile: trace the potential with the PyTorch JIT (``model`` only; as in HMC).
        temperature: ``T > 0``; the kernel targets ``π^{1/T}`` (tempering, annealing schedules).
        init_strategy: Pyro init strategy for ``model`` (default ``init_to_uniform``, as HMC).
        max_plate_nesting: as in Pyro's HMC.

    ``diagnostics()`` returns ``{"divergences": [...], "acceptance rate": float, "step size": float}``
    (a divergence is a transition with ``-log α > 1000`` or a non-finite proposal), which
    ``pyro.infer.MCMC.diagnostics``/``summary`` and ArviZ's ``from_pyro`` read.

    Reference: Roberts & Tweedie (1996), "Exponential convergence of Langevin distributions and their
    discrete approximations", Bernoulli 2(4); Roberts & Rosenthal (1998), JRSS B 60(1).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> def model():
        ...     pyro.sample("mu", dist.Normal(0.0, 1.0))
        >>> mcmc = MCMC(MALA(model, step_size=0.5), num_samples=200, warmup_steps=100,
        ...             disable_progbar=True)
        >>> mcmc.run()
        >>> mcmc.get_samples()["mu"].shape
        torch.Size([200])
    """

    _step_fn = staticmethod(mala_step)
    _metropolis = True
    _name = "MALA"


class ULA(_LangevinKernel):
    r"""Unadjusted Langevin algorithm as a Pyro ``MCMCKernel``.

    The Euler–Maruyama discretisation of the preconditioned Langevin diffusion
    ``dz = -A∇U_T(z) dt + √(2A) dW`` with time step ``h``, without accept/reject:

    .. math:: z' = z - hA\nabla U_T(z) + \sqrt{2hA}\,\xi, \qquad \xi \sim N(0, I).

    Its stationary law ``π_h`` differs from ``π_T`` by ``O(h)`` (for a Gaussian target of variance
    ``σ²`` and ``A = 1`` it is Gaussian with the same mean and variance ``σ² / (1 - h / (2σ²))``), so
    pick a small ``h``; use :class:`MALA` for an exact sampler.

    The signature is :class:`MALA`'s, with one difference: ``adapt_step_size`` defaults to ``False``
    and ``True`` is refused (``ValueError``), because without an accept/reject step there is no
    acceptance probability to tune ``h`` to; ``target_accept_prob`` is accepted for signature
    compatibility and unused. ``adapt_mass_matrix=True`` estimates the diagonal preconditioner during
    warmup. ``diagnostics()["acceptance rate"]`` is 1 except for steps whose proposal was not finite
    (the chain stays put there and the step is reported as divergent).

    Reference: Roberts & Tweedie (1996), Bernoulli 2(4); Durmus & Moulines (2017), "Nonasymptotic
    convergence analysis for the unadjusted Langevin algorithm", arXiv:1507.05021.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from pyro.infer import MCMC
        >>> def model():
        ...     pyro.sample("mu", dist.Normal(0.0, 1.0))
        >>> mcmc = MCMC(ULA(model, step_size=0.05), num_samples=100, warmup_steps=10, disable_progbar=True)
        >>> mcmc.run()
        >>> mcmc.get_samples()["mu"].shape
        torch.Size([100])
    """

    _step_fn = staticmethod(ula_step)
    _metropolis = False
    _name = "ULA"

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable[[dict[str, Tensor]], Tensor] | None = None,
        step_size: float = 0.1,
        adapt_step_size: bool = False,
        *,
        target_accept_prob: float = 0.574,
        adapt_mass_matrix: bool = False,
        transforms: dict | None = None,
        jit_compile: bool = False,
        temperature: float = 1.0,
        init_strategy: Callable = init_to_uniform,
        max_plate_nesting: int | None = None,
    ) -> None:
        if adapt_step_size:
            raise ValueError(
                "adapt_step_size=True is not supported by ULA: without an accept/reject step there is no "
                "acceptance probability to tune step_size to; pass adapt_step_size=False and a small "
                "step_size (the bias is O(step_size)), or use MALA"
            )
        super().__init__(
            model, potential_fn, step_size, False,
            target_accept_prob=target_accept_prob, adapt_mass_matrix=adapt_mass_matrix,
            transforms=transforms, jit_compile=jit_compile, temperature=temperature,
            init_strategy=init_strategy, max_plate_nesting=max_plate_nesting,
        )
