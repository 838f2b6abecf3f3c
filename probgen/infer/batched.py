r"""Many MCMC chains held in one tensor: ULA, MALA and HMC transitions, vectorised over chains.

``C`` chains of a target ``π(x) ∝ exp(-U(x))`` on ``x ∈ R^{*event}`` move together as one tensor
``x: (C, *event)``. The potential is evaluated once per step for all chains, ``U: (C, *event) -> (C,)``,
and its gradient comes from one autograd call on ``U(x).sum()`` (chains must not interact inside
``potential_fn``). The transitions, each with a diagonal preconditioner ``A`` (the inverse mass matrix)
and per-chain step sizes ``h: (C,)``:

* **ULA** (unadjusted Langevin; Roberts & Tweedie, 1996): the Euler–Maruyama step of the Langevin
  diffusion ``dx = -A ∇U dt + √(2A) dW``::

      x' = x - h A ∇U(x) + √(2h A) ξ,      ξ ~ N(0, I)

  It has no accept/reject step, so it samples a distribution ``π_h`` that is ``O(h)`` away from ``π``.
* **MALA** (Metropolis-adjusted Langevin; Roberts & Tweedie, 1996; Roberts & Rosenthal, 1998): the
  ULA proposal accepted with probability ``min(1, α)``::

      log α = U(x) - U(x') + log q(x | x') - log q(x' | x),
      log q(x' | x) = -‖A^{-1/2}(x' - x + h A ∇U(x))‖² / (4h)

  It equals HMC with one leapfrog step of size ``ε = √(2h)``.
* **HMC** (Duane et al., 1987; Neal, 2011, arXiv:1206.1901): momentum ``p ~ N(0, A⁻¹)``, ``L`` leapfrog
  steps of size ``h`` on ``H(x, p) = U(x) + ½ pᵀ A p``, accepted with probability ``min(1, e^{H - H'})``.

A transition is *divergent* when its energy error (``H' - H`` for HMC, ``-log α`` for MALA) exceeds 1000
or is not finite; a non-finite proposal is always rejected (ULA keeps the current state there).

Step sizes: each chain has its own, tuned during warmup by dual averaging on its own acceptance
probabilities (:mod:`probgen.infer.adaptation`); the diagonal preconditioner is shared, estimated from
the draws of all chains pooled, in Stan's warmup windows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import Tensor

from probgen._checks import (
    check_choice_or_callable,
    check_int,
    check_positive,
    check_probability,
    check_tensor,
)
from probgen.infer.adaptation import WarmupAdapter
from probgen.ops.shapes import append_dims, batch_sum

__all__ = [
    "ChainState",
    "StepResult",
    "ChainResult",
    "potential_and_grad",
    "ula_step",
    "mala_step",
    "hmc_step",
    "find_reasonable_step_size",
    "run_chains",
    "model_potential",
    "BatchedModelPotential",
    "KERNELS",
    "DIVERGENCE_THRESHOLD",
]

#: energy error above which a transition is reported as divergent (Pyro's and Stan's value)
DIVERGENCE_THRESHOLD = 1000.0

PotentialFn = Callable[[Tensor], Tensor]


class ChainState(NamedTuple):
    """The state of ``C`` chains: positions ``x: (C, *event)``, potential ``U(x): (C,)``, ``∇U(x)``."""

    x: Tensor
    potential: Tensor
    grad: Tensor


class StepResult(NamedTuple):
    """What a transition returns: the new :class:`ChainState`, acceptance probabilities ``(C,)``,
    divergence flags ``(C,)`` (bool) and the energy error ``(C,)`` (``-log α``; 0 for ULA)."""

    state: ChainState
    accept_prob: Tensor
    diverging: Tensor
    energy_error: Tensor


def potential_and_grad(potential_fn: PotentialFn, x: Tensor) -> tuple[Tensor, Tensor]:
    """Evaluate ``U(x): (C,)`` and ``∇U(x): (C, *event)`` with one autograd call on ``U(x).sum()``.

    Args:
        potential_fn: batched potential ``(C, *event) -> (C,)``; chains must not interact.
        x: positions ``(C, *event)``.

    Returns:
        ``(U, grad)``, both detached.

    Example:
        >>> u, g = potential_and_grad(lambda x: 0.5 * (x**2).sum(-1), torch.ones(4, 3))
        >>> u.tolist(), g.shape
        ([1.5, 1.5, 1.5, 1.5], torch.Size([4, 3]))
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        u = potential_fn(x)
        if not isinstance(u, Tensor) or tuple(u.shape) != (x.shape[0],):
            got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            raise ValueError(
                f"potential_fn must map x of shape {tuple(x.shape)} to a tensor of shape ({x.shape[0]},), "
                f"got {got}"
            )
        if u.requires_grad:
            (grad,) = torch.autograd.grad(u.sum(), x, allow_unused=True)
            if grad is None:
                grad = torch.zeros_like(x)
        else:
            grad = torch.zeros_like(x)
    return u.detach(), grad.detach()


def init_state(potential_fn: PotentialFn, x: Tensor) -> ChainState:
    """The :class:`ChainState` at positions ``x: (C, *event)``."""
    u, g = potential_and_grad(potential_fn, x)
    return ChainState(x.detach(), u, g)


def _randn(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _rand(n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand((n,), generator=generator, dtype=like.dtype, device=like.device)


def _finite_rows(u: Tensor, g: Tensor) -> Tensor:
    return torch.isfinite(u) & torch.isfinite(g.reshape(g.shape[0], -1)).all(-1)


def _select(mask: Tensor, new: ChainState, old: ChainState) -> ChainState:
    m = append_dims(mask, new.x.dim())
    return ChainState(
        torch.where(m, new.x, old.x),
        torch.where(mask, new.potential, old.potential),
        torch.where(m, new.grad, old.grad),
    )


def _metropolis(
    log_alpha: Tensor, proposal: ChainState, state: ChainState, generator: torch.Generator | None
) -> StepResult:
    """Accept ``proposal`` per chain with probability ``min(1, exp(log_alpha))``."""
    log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf)
    energy_error = -log_alpha
    diverging = ~torch.isfinite(energy_error) | (energy_error > DIVERGENCE_THRESHOLD)
    accept_prob = torch.exp(torch.clamp(log_alpha, max=0.0))
    uniform = _rand(log_alpha.shape[0], log_alpha, generator)
    accept = torch.log(uniform) < log_alpha
    return StepResult(_select(accept, proposal, state), accept_prob, diverging, energy_error)


def _langevin_proposal(state: ChainState, step_size: Tensor, inverse_mass_matrix: Tensor,
                       noise: Tensor) -> Tensor:
    h = append_dims(step_size, state.x.dim())
    return state.x - h * inverse_mass_matrix * state.grad + torch.sqrt(2.0 * h * inverse_mass_matrix) * noise


def ula_step(
    potential_fn: PotentialFn,
    state: ChainState,
    step_size: Tensor,
    inverse_mass_matrix: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> StepResult:
    """One unadjusted Langevin step for every chain.

    .. math:: x' = x - h A \\nabla U(x) + \\sqrt{2 h A}\\, \\xi, \\qquad \\xi \\sim N(0, I)

    Args:
        potential_fn: ``U: (C, *event) -> (C,)``.
        state: current :class:`ChainState`.
        step_size: ``h: (C,)``.
        inverse_mass_matrix: diagonal preconditioner ``A``, broadcastable to ``(C, *event)``.
        generator: optional ``torch.Generator`` for the noise.

    Returns:
        :class:`StepResult` with ``accept_prob = 1`` (0 where the proposal was not finite and the chain
        stayed put; those steps are flagged as divergent).

    Reference: Roberts & Tweedie (1996), "Exponential convergence of Langevin distributions and their
    discrete approximations", Bernoulli 2(4).

    Example:
        >>> U = lambda x: 0.5 * (x**2).sum(-1)
        >>> s = init_state(U, torch.zeros(5, 2))
        >>> ula_step(U, s, torch.full((5,), 0.1), torch.ones(2)).state.x.shape
        torch.Size([5, 2])
    """
    x_new = _langevin_proposal(state, step_size, inverse_mass_matrix, _randn(state.x, generator))
    u, g = potential_and_grad(potential_fn, x_new)
    ok = _finite_rows(u, g)
    new = _select(ok, ChainState(x_new, u, g), state)
    return StepResult(new, ok.to(state.x.dtype), ~ok, torch.zeros_like(u))


def mala_step(
    potential_fn: PotentialFn,
    state: ChainState,
    step_size: Tensor,
    inverse_mass_matrix: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> StepResult:
    """One Metropolis-adjusted Langevin step for every chain.

    Proposal ``x' = x - h A ∇U(x) + √(2hA) ξ``, accepted with probability ``min(1, α)``:

    .. math::
        \\log\\alpha = U(x) - U(x') + \\log q(x\\mid x') - \\log q(x'\\mid x), \\qquad
        \\log q(x'\\mid x) = -\\frac{\\lVert A^{-1/2}(x' - x + hA\\nabla U(x))\\rVert^2}{4h}

    Args:
        potential_fn: ``U: (C, *event) -> (C,)``.
        state: current :class:`ChainState`.
        step_size: ``h: (C,)``.
        inverse_mass_matrix: diagonal preconditioner ``A``, broadcastable to ``(C, *event)``.
        generator: optional ``torch.Generator`` for the noise and the uniforms.

    Returns:
        :class:`StepResult`.

    Reference: Roberts & Rosenthal (1998), "Optimal scaling of discrete approximations to Langevin
    diffusions", JRSS B 60(1) (optimal acceptance 0.574).

    Example:
        >>> U = lambda x: 0.5 * (x**2).sum(-1)
        >>> s = init_state(U, torch.zeros(5, 2))
        >>> r = mala_step(U, s, torch.full((5,), 0.5), torch.ones(2))
        >>> bool(((r.accept_prob >= 0) & (r.accept_prob <= 1)).all())
        True
    """
    x_new = _langevin_proposal(state, step_size, inverse_mass_matrix, _randn(state.x, generator))
    u, g = potential_and_grad(potential_fn, x_new)
    h = append_dims(step_size, state.x.dim())
    fwd = x_new - state.x + h * inverse_mass_matrix * state.grad
    bwd = state.x - x_new + h * inverse_mass_matrix * g
    log_q_fwd = -batch_sum(fwd**2 / inverse_mass_matrix) / (4.0 * step_size)
    log_q_bwd = -batch_sum(bwd**2 / inverse_mass_matrix) / (4.0 * step_size)
    log_alpha = state.potential - u + log_q_bwd - log_q_fwd
    return _metropolis(log_alpha, ChainState(x_new, u, g), state, generator)


def hmc_step(
    potential_fn: PotentialFn,
    state: ChainState,
    step_size: Tensor,
    inverse_mass_matrix: Tensor,
    *,
    num_leapfrog: int = 10,
    generator: torch.Generator | None = None,
) -> StepResult:
    """One Hamiltonian Monte Carlo transition (``num_leapfrog`` leapfrog steps) for every chain.

    ``H(x, p) = U(x) + ½ pᵀ A p`` with ``p ~ N(0, A⁻¹)``; the leapfrog trajectory of step ``h`` is
    accepted with probability ``min(1, exp(H(x, p) - H(x', p')))``.

    Args:
        potential_fn: ``U: (C, *event) -> (C,)``.
        state: current :class:`ChainState`.
        step_size: ``h: (C,)``.
        inverse_mass_matrix: diagonal ``A``, broadcastable to ``(C, *event)``.
        num_leapfrog: number of leapfrog steps ``L``.
        generator: optional ``torch.Generator``.

    Reference: Neal (2011), "MCMC using Hamiltonian dynamics", arXiv:1206.1901.

    Example:
        >>> U = lambda x: 0.5 * (x**2).sum(-1)
        >>> s = init_state(U, torch.zeros(5, 2))
        >>> hmc_step(U, s, torch.full((5,), 0.2), torch.ones(2), num_leapfrog=5).state.x.shape
        torch.Size([5, 2])
    """
    ndim = state.x.dim()
    h = append_dims(step_size, ndim)
    p = _randn(state.x, generator) / torch.sqrt(inverse_mass_matrix)
    energy = state.potential + 0.5 * batch_sum(inverse_mass_matrix * p**2)
    x, u, g = state.x, state.potential, state.grad
    p = p - 0.5 * h * g
    for i in range(num_leapfrog):
        x = x + h * inverse_mass_matrix * p
        u, g = potential_and_grad(potential_fn, x)
        if i < num_leapfrog - 1:
            p = p - h * g
    p = p - 0.5 * h * g
    energy_new = u + 0.5 * batch_sum(inverse_mass_matrix * p**2)
    return _metropolis(energy - energy_new, ChainState(x, u, g), state, generator)


#: transition functions by name (one module-level dict; a callable with the same signature also works)
KERNELS: dict[str, Callable[..., StepResult]] = {"ula": ula_step, "mala": mala_step, "hmc": hmc_step}

_DEFAULT_TARGET = {"mala": 0.574, "hmc": 0.8}


def find_reasonable_step_size(
    step_fn: Callable[..., StepResult],
    potential_fn: PotentialFn,
    state: ChainState,
    step_size: Tensor,
    inverse_mass_matrix: Tensor,
    *,
    target_accept_prob: float,
    generator: torch.Generator | None = None,
    max_iter: int = 60,
) -> Tensor:
    """Double or halve each chain's step size until its acceptance probability crosses the target.

    The heuristic of Hoffman & Gelman (2014, Alg. 4), per chain: from ``h``, look at the acceptance
    probability ``α`` of one proposal; if ``α > target`` keep doubling ``h``, else keep halving it, until
    ``α`` falls on the other side of the target. The chains do not move.

    Returns:
        step sizes ``(C,)``, clamped to ``[1e-10, 1e10]``.
    """
    h = step_size.detach().clone()
    a = step_fn(potential_fn, state, h, inverse_mass_matrix, generator=generator).accept_prob
    up = a > target_accept_prob
    direction = torch.where(up, 2.0, 0.5).to(h)
    active = torch.ones_like(up)
    for _ in range(max_iter):
        h = torch.where(active, h * direction, h)
        a = step_fn(potential_fn, state, h, inverse_mass_matrix, generator=generator).accept_prob
        crossed = (a > target_accept_prob) != up
        active = active & ~crossed & (h > 1e-10) & (h < 1e10)
        if not bool(active.any()):
            break
    return h.clamp(1e-10, 1e10)


@dataclass
class ChainResult:
    """Draws and sampler statistics of :func:`run_chains`.

    Attributes:
        samples: ``(C, num_samples, *event)`` draws after warmup (thinned).
        accept_prob: ``(C, num_samples)`` acceptance probability (mean over each thinning block).
        diverging: ``(C, num_samples)`` bool, a divergent transition in the thinning block.
        potential: ``(C, num_samples)`` the (untempered) potential ``U`` at each draw.
        step_size: ``(C,)`` step sizes used after warmup.
        inverse_mass_matrix: ``(*event)`` diagonal preconditioner used after warmup.
        kernel: the kernel's name.
        num_warmup: number of warmup iterations.
        thin: thinning factor.
    """

    samples: Tensor
    accept_prob: Tensor
    diverging: Tensor
    potential: Tensor
    step_size: Tensor
    inverse_mass_matrix: Tensor
    kernel: str
    num_warmup: int
    thin: int = 1

    @property
    def num_chains(self) -> int:
        """Number of chains ``C``."""
        return self.samples.shape[0]

    @property
    def num_samples(self) -> int:
        """Draws kept per chain."""
        return self.samples.shape[1]

    def acceptance_rate(self) -> Tensor:
        """Mean acceptance probability per chain, ``(C,)``."""
        return self.accept_prob.mean(1)

    def num_divergences(self) -> Tensor:
        """Number of divergent transitions per chain, ``(C,)``."""
        return self.diverging.sum(1)

    def to_inference_data(self, *, var_name: str = "x",
                          unpack: Callable[[Tensor], dict[str, Tensor]] | None = None) -> Any:
        """An ``arviz.InferenceData`` with the draws and the sampler statistics (``acceptance_rate``,
        ``diverging``, ``lp`` = ``-U``, ``step_size``) in ``sample_stats``.

        Args:
            var_name: the name of the draws in the posterior group.
            unpack: optional ``samples -> dict name -> (C, S, *shape)``, e.g.
                :meth:`BatchedModelPotential.constrain` to report a Pyro model's sites by name in
                their constrained space (then ``var_name`` is unused).

        Requires :mod:`probgen.diagnostics` (the only module that imports ArviZ).
        """
        from probgen import diagnostics

        stats = {
            "acceptance_rate": self.accept_prob,
            "diverging": self.diverging,
            "lp": -self.potential,
            "step_size": self.step_size[:, None].expand(-1, self.num_samples),
        }
        draws = unpack(self.samples) if unpack is not None else {var_name: self.samples}
        return diagnostics.to_inference_data(draws, sample_stats=stats)

    def summary(self, *, var_name: str = "x", unpack: Callable[[Tensor], dict[str, Tensor]] | None = None,
                **kwargs: Any) -> Any:
        """ArviZ summary table (means, sd, MCSE, bulk/tail ESS, R-hat) via :mod:`probgen.diagnostics`;
        ``kwargs`` go to ``arviz.summary``."""
        from probgen import diagnostics

        return diagnostics.summary(self.to_inference_data(var_name=var_name, unpack=unpack), **kwargs)


def _tempered(potential_fn: PotentialFn, temperature: float) -> PotentialFn:
    if temperature == 1.0:
        return potential_fn
    return lambda x: potential_fn(x) / temperature


def run_chains(
    potential_fn: PotentialFn,
    init: Tensor,
    *,
    kernel: str | Callable[..., StepResult] = "mala",
    num_samples: int,
    warmup_steps: int | None = None,
    step_size: float | Tensor | None = None,
    adapt_step_size: bool | None = None,
    target_accept_prob: float | None = None,
    num_leapfrog: int = 10,
    adapt_mass_matrix: bool = True,
    inverse_mass_matrix: Tensor | None = None,
    thin: int = 1,
    temperature: float = 1.0,
    jitter: float | None = None,
    callback: Callable[[int, ChainState], Any] | None = None,
    generator: torch.Generator | None = None,
) -> ChainResult:
    """Run ``C`` ULA, MALA or HMC chains on a batched potential, all in one tensor.

    Targets ``π_T(x) ∝ exp(-U(x) / T)`` (``T = temperature``). Each iteration makes one transition of
    every chain (see the module docstring for the equations). During the ``warmup_steps`` iterations each
    chain's step size is tuned by dual averaging to ``target_accept_prob`` and the diagonal
    preconditioner, shared by the chains, is estimated from the draws of all chains pooled (Stan's
    windows). Then ``num_samples * thin`` iterations run with both frozen, keeping every ``thin``-th.

    Args:
        potential_fn: ``U: (C, *event) -> (C,)``, the negative unnormalised log-density of one chain's
            state, evaluated for all chains at once (chains must not interact: the gradient is taken
            on ``U(x).sum()``). For a Pyro model, see :func:`probgen.infer.model_potential`.
        init: initial positions ``(C, *event)``; their dtype and device are kept throughout.
        kernel: ``"mala"``, ``"ula"``, ``"hmc"``, or a callable transition with the signature of
            :func:`mala_step` (``(potential_fn, state, step_size, inverse_mass_matrix, *, generator)
            -> StepResult``).
        num_samples: draws to keep per chain.
        warmup_steps: adaptation iterations, discarded (default: ``num_samples``, as Pyro's MCMC).
        step_size: initial step size(s), a number or ``(C,)`` (default 1 for MALA/HMC). When adapting,
            warmup first doubles/halves it per chain (:func:`find_reasonable_step_size`), as Pyro's
            HMC does. ULA requires it (its bias is ``O(h)``: choose it).
        adapt_step_size: tune the step sizes during warmup (default ``True`` for MALA, HMC and
            callables; ULA has no acceptance probability to tune to, so ``True`` is refused there).
        target_accept_prob: acceptance probability for dual averaging (default 0.574 for MALA,
            Roberts & Rosenthal 1998; 0.8 for HMC; required for a callable kernel with adaptation).
        num_leapfrog: leapfrog steps per HMC transition.
        adapt_mass_matrix: estimate the diagonal preconditioner during warmup (needs ``warmup_steps >=
            20`` to have a slow window).
        inverse_mass_matrix: initial diagonal preconditioner ``(*event)`` (default ones).
        thin: keep every ``thin``-th draw after warmup.
        temperature: ``T > 0`` divides the potential (tempering).
        jitter: ``j ∈ [0, 1]``: each iteration, each chain's step size is multiplied by ``u ~ U(1 - j,
            1 + j)`` (drawn afresh, independent of the state, so every transition stays reversible).
            Default 1 for HMC, 0 otherwise. HMC with a fixed trajectory ``T = L h`` is periodic on
            Gaussian directions: near ``T = π`` it maps ``x`` to about ``-x`` (antithetic draws, lag-1
            autocorrelation of ``x`` near -1 and of ``x²`` near +1), so ESS and R-hat mislead; with
            ``j = 1`` the trajectory is uniform on ``(0, 2T)`` and those autocorrelations are
            ``sin(2T)/(2T)`` and about ½ (Neal 2011, §5.4.2.2; Stan's and NumPyro's step-size jitter).
        callback: called as ``callback(i, state)`` after every iteration ``i`` (warmup included, ``i <
            warmup_steps`` during warmup) with the current :class:`ChainState` (tempered potential).
        generator: optional ``torch.Generator`` (on ``init``'s device) for reproducible runs.

    Returns:
        :class:`ChainResult`.

    Raises:
        ValueError: on a bad option, a wrongly shaped ``potential_fn`` output or a non-finite initial
            potential.

    References:
        Roberts & Tweedie (1996), Bernoulli 2(4); Roberts & Rosenthal (1998), JRSS B 60(1); Neal (2011),
        arXiv:1206.1901; Hoffman & Gelman (2014), arXiv:1111.4246.

    Example:
        >>> U = lambda x: 0.5 * (x**2).sum(-1)
        >>> res = run_chains(U, torch.zeros(100, 2), kernel="mala", num_samples=200, warmup_steps=100,
        ...                  generator=torch.Generator().manual_seed(0))
        >>> res.samples.shape
        torch.Size([100, 200, 2])
        >>> abs(res.samples.var().item() - 1.0) < 0.1
        True
    """
    kernel = check_choice_or_callable("kernel", kernel, tuple(KERNELS))
    check_tensor("init", init, min_ndim=2)
    if not callable(potential_fn):
        raise TypeError(f"potential_fn must be callable, got {type(potential_fn).__name__}")
    num_samples = check_int("num_samples", num_samples, minimum=1)
    warmup_steps = num_samples if warmup_steps is None else check_int("warmup_steps", warmup_steps, minimum=0)
    num_leapfrog = check_int("num_leapfrog", num_leapfrog, minimum=1)
    thin = check_int("thin", thin, minimum=1)
    temperature = check_positive("temperature", temperature)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    name = kernel if isinstance(kernel, str) else getattr(kernel, "__name__", "custom")
    if jitter is None:
        jitter = 1.0 if name == "hmc" else 0.0
    jitter = check_probability("jitter", jitter)
    if adapt_step_size is None:
        adapt_step_size = name != "ula"
    elif adapt_step_size and name == "ula":
        raise ValueError(
            "adapt_step_size=True is not supported for kernel 'ula': ULA has no accept/reject step, so "
            "there is no acceptance probability to tune the step size to; pass step_size and "
            "adapt_step_size=False (or use kernel 'mala')"
        )
    if target_accept_prob is None:
        if adapt_step_size and name not in _DEFAULT_TARGET:
            raise ValueError(
                "target_accept_prob is required to adapt the step size of a callable kernel, got None"
            )
        target_accept_prob = _DEFAULT_TARGET.get(name, 0.574)
    target_accept_prob = check_probability("target_accept_prob", target_accept_prob,
                                           open_low=True, open_high=True)

    num_chains = init.shape[0]
    event_shape = init.shape[1:]
    opts = {"dtype": init.dtype, "device": init.device}
    step_size = _as_step_size(step_size, num_chains, name, opts)
    if inverse_mass_matrix is None:
        inverse_mass_matrix = torch.ones(event_shape, **opts)
    else:
        check_tensor("inverse_mass_matrix", inverse_mass_matrix)
        if tuple(inverse_mass_matrix.shape) != tuple(event_shape) or bool((inverse_mass_matrix <= 0).any()):
            raise ValueError(
                f"inverse_mass_matrix must be a positive tensor of shape {tuple(event_shape)} (the event "
                f"shape of init), got shape {tuple(inverse_mass_matrix.shape)}"
            )
        inverse_mass_matrix = inverse_mass_matrix.to(**opts)

    step_fn = KERNELS[kernel] if isinstance(kernel, str) else kernel
    if name == "hmc":
        step_fn = partial(hmc_step, num_leapfrog=num_leapfrog)
    potential = _tempered(potential_fn, temperature)

    state = init_state(potential, init)
    bad = ~_finite_rows(state.potential, state.grad)
    if bool(bad.any()):
        raise ValueError(
            f"the potential or its gradient is not finite at init for {int(bad.sum())} of {num_chains} "
            f"chains (e.g. chain {int(bad.nonzero()[0, 0])}); start the chains inside the support"
        )

    def search(h: Tensor, inv_mass: Tensor) -> Tensor:
        return find_reasonable_step_size(step_fn, potential, state, h, inv_mass,
                                         target_accept_prob=target_accept_prob, generator=generator)

    adapter = WarmupAdapter(
        warmup_steps,
        step_size,
        inverse_mass_matrix,
        adapt_step_size=adapt_step_size and warmup_steps > 0,
        adapt_mass_matrix=adapt_mass_matrix and warmup_steps > 0,
        target_accept_prob=target_accept_prob,
        find_step_size=search if adapt_step_size else None,
    )
    if adapt_step_size and warmup_steps > 0:
        adapter.restart_step_size()

    def jittered(h: Tensor) -> Tensor:
        if jitter == 0.0:
            return h
        return h * (1.0 + jitter * (2.0 * _rand(num_chains, h, generator) - 1.0))

    for i in range(warmup_steps):
        res = step_fn(potential, state, jittered(adapter.step_size), adapter.inverse_mass_matrix,
                      generator=generator)
        state = res.state
        adapter.step(i, state.x, res.accept_prob)
        if callback is not None:
            callback(i, state)

    h, inv_mass = adapter.step_size, adapter.inverse_mass_matrix
    samples = torch.empty((num_chains, num_samples, *event_shape), **opts)
    accept = torch.zeros((num_chains, num_samples), **opts)
    diverging = torch.zeros((num_chains, num_samples), dtype=torch.bool, device=init.device)
    energies = torch.empty((num_chains, num_samples), **opts)
    for j in range(num_samples * thin):
        res = step_fn(potential, state, jittered(h), inv_mass, generator=generator)
        state = res.state
        k = j // thin
        accept[:, k] += res.accept_prob / thin
        diverging[:, k] |= res.diverging
        if (j + 1) % thin == 0:
            samples[:, k] = state.x
            energies[:, k] = state.potential * temperature
        if callback is not None:
            callback(warmup_steps + j, state)

    return ChainResult(
        samples=samples,
        accept_prob=accept,
        diverging=diverging,
        potential=energies,
        step_size=h,
        inverse_mass_matrix=inv_mass,
        kernel=name,
        num_warmup=warmup_steps,
        thin=thin,
    )


def _as_step_size(step_size: float | Tensor | None, num_chains: int, name: str, opts: dict) -> Tensor:
    if step_size is None:
        if name == "ula":
            raise ValueError(
                "kernel 'ula' needs an explicit step_size (its bias grows like O(step_size)), got None"
            )
        return torch.ones(num_chains, **opts)
    if isinstance(step_size, Tensor) and step_size.numel() > 1:
        check_tensor("step_size", step_size, ndim=1)
        if step_size.shape[0] != num_chains or bool((step_size <= 0).any()):
            raise ValueError(
                f"step_size must be a positive number or a positive tensor of shape ({num_chains},), got "
                f"shape {tuple(step_size.shape)} with min {step_size.min().item():g}"
            )
        return step_size.detach().to(**opts)
    return torch.full((num_chains,), check_positive("step_size", step_size), **opts)


class BatchedModelPotential:
    r"""The potential of a Pyro model's latent sites for ``C`` chains at once: ``(C, D) -> (C,)``.

    Built by :func:`model_potential`. The chains' unconstrained parameters are packed into ``z: (C, D)``
    (sites in sorted order, each flattened). ``U(z)`` runs the model once, conditioned on the
    constrained values ``x = T⁻¹(z)``, under an outer ``pyro.plate`` of size ``C`` placed left of the
    model's own plates, and returns per chain

    .. math:: U(z) = -\sum_{\text{sites}} \log p(\cdot) - \sum_{\text{latent}} \log\lvert\det
              \partial T^{-1}(z) / \partial z\rvert,

    the same potential that Pyro's ``initialize_model`` gives for one chain. Distribution validation is
    off inside (as in Pyro's ``MCMC``): a chain whose proposal leaves the support gets a non-finite
    potential, which the transitions treat as a rejection, instead of an error for all chains. The model must be
    vectorisable (broadcast over a leftmost batch dimension, as for ``Predictive(parallel=True)``);
    discrete latent sites are not supported.

    Attributes:
        site_names: latent site names, sorted.
        site_shapes: their (unbatched) shapes.
        transforms: site name -> transform from the constrained to the unconstrained space.
        dim: ``D``.
    """

    def __init__(self, model: Callable, model_args: tuple, model_kwargs: dict, *,
                 transforms: dict | None = None, max_plate_nesting: int | None = None) -> None:
        import pyro
        from pyro import poutine
        from pyro.infer.mcmc.util import _guess_max_plate_nesting, initialize_model

        init, _, transforms, trace = initialize_model(
            model, model_args, model_kwargs, transforms=transforms, max_plate_nesting=max_plate_nesting
        )
        if max_plate_nesting is None:
            max_plate_nesting = _guess_max_plate_nesting(model, model_args, model_kwargs)
        self._pyro, self._poutine = pyro, poutine
        self.model, self.model_args, self.model_kwargs = model, model_args, model_kwargs
        self.transforms = transforms
        self.max_plate_nesting = int(max_plate_nesting)
        self.site_names = sorted(init)
        self.site_shapes = {n: tuple(trace.nodes[n]["value"].shape) for n in self.site_names}
        self._unconstrained_shapes = {n: tuple(init[n].shape) for n in self.site_names}
        self._batch_ndim = {n: len(trace.nodes[n]["fn"].batch_shape) for n in self.site_names}
        self._prototype = init
        self.dim = sum(int(torch.Size(s).numel()) for s in self._unconstrained_shapes.values())

    def _split(self, z: Tensor) -> dict[str, Tensor]:
        out, pos = {}, 0
        lead = z.shape[:-1]
        for n in self.site_names:
            shape = self._unconstrained_shapes[n]
            size = int(torch.Size(shape).numel())
            out[n] = z[..., pos:pos + size].reshape(*lead, *shape)
            pos += size
        return out

    def init(self, num_chains: int, *, radius: float = 2.0, generator: torch.Generator | None = None) -> Tensor:
        """Initial points ``(C, D)``: uniform on ``(-radius, radius)`` in the unconstrained space (Pyro's
        ``init_to_uniform``), in the dtype/device of the model's parameters."""
        proto = self._prototype[self.site_names[0]]
        u = torch.rand((num_chains, self.dim), generator=generator, dtype=proto.dtype, device=proto.device)
        return (2.0 * u - 1.0) * radius

    def constrain(self, z: Tensor) -> dict[str, Tensor]:
        """Map unconstrained draws ``(..., D)`` (e.g. ``ChainResult.samples``, ``(C, S, D)``) to a dict
        ``name -> (..., *site_shape)`` in the constrained space."""
        out = {}
        for n, v in self._split(z).items():
            x = self.transforms[n].inv(v) if n in self.transforms else v
            out[n] = x.reshape(*z.shape[:-1], *self.site_shapes[n])
        return out

    def __call__(self, z: Tensor) -> Tensor:
        num_chains = z.shape[0]
        n_plates = self.max_plate_nesting
        values: dict[str, Tensor] = {}
        log_det = torch.zeros(num_chains, dtype=z.dtype, device=z.device)
        for n, v in self._split(z).items():
            if n in self.transforms:
                t_inv = self.transforms[n].inv
                x = t_inv(v)
                ladj = t_inv.log_abs_det_jacobian(v, x)
                log_det = log_det + ladj.reshape(num_chains, -1).sum(-1)
            else:
                x = v
            shape = self.site_shapes[n]
            pad = n_plates - self._batch_ndim[n]
            values[n] = x.reshape(num_chains, *([1] * pad), *shape)
        model = self._poutine.condition(self.model, data=values)
        # validation off while sampling, as Pyro's MCMC does: a chain whose proposal leaves the support
        # (a NaN or zero scale) gets a non-finite potential and is rejected; it must not raise for all
        with self._pyro.validation_enabled(False):
            with self._poutine.block(), self._pyro.plate("_probgen_chains", num_chains, dim=-(n_plates + 1)):
                trace = self._poutine.trace(model).get_trace(*self.model_args, **self.model_kwargs)
            trace.compute_log_prob()
        log_p = torch.zeros(num_chains, dtype=z.dtype, device=z.device)
        for site in trace.nodes.values():
            if site["type"] != "sample" or site["name"] == "_probgen_chains":
                continue
            lp = site["log_prob"]
            while lp.dim() < n_plates + 1:
                lp = lp.unsqueeze(0)
            lp = lp.reshape(*lp.shape[: lp.dim() - n_plates], -1).sum(-1)  # sum the model's plates
            lp = lp.reshape(-1, lp.shape[-1]).sum(0)  # (C,) or (1,)
            log_p = log_p + lp
        return -(log_p + log_det)


def model_potential(
    model: Callable,
    *model_args: Any,
    transforms: dict | None = None,
    max_plate_nesting: int | None = None,
    **model_kwargs: Any,
) -> BatchedModelPotential:
    """A batched potential ``(C, D) -> (C,)`` for a Pyro model's latent sites, for :func:`run_chains`.

    Uses Pyro's ``initialize_model`` for the transforms to the unconstrained space and evaluates the
    model for all chains in one vectorised pass (see :class:`BatchedModelPotential`).

    Args:
        model: a Pyro model with continuous latent sites, vectorisable over a leftmost batch dim.
        *model_args, **model_kwargs: the model's arguments.
        transforms: optional site name -> transform (as in Pyro's HMC).
        max_plate_nesting: as in Pyro's HMC (guessed by running the model once if None).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("n", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> pot = model_potential(model, torch.ones(5))
        >>> res = run_chains(pot, pot.init(200), num_samples=100, warmup_steps=100)
        >>> pot.constrain(res.samples)["mu"].shape
        torch.Size([200, 100])
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    return BatchedModelPotential(model, model_args, model_kwargs, transforms=transforms,
                                 max_plate_nesting=max_plate_nesting)
