r"""Transitions of many MCMC chains held in one tensor: ULA, MALA and HMC, vectorised over chains.

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

The chain driver that runs these transitions with warmup adaptation is :func:`probgen.infer.chains.run_chains`;
Pyro's ``MCMC`` runs the one-chain case through :class:`probgen.infer.MALA` / :class:`probgen.infer.ULA`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from probgen.ops.shapes import append_dims, batch_sum

__all__ = [
    "ChainState",
    "StepResult",
    "potential_and_grad",
    "init_state",
    "ula_step",
    "mala_step",
    "hmc_step",
    "find_reasonable_step_size",
    "KERNELS",
    "DIVERGENCE_THRESHOLD",
    "PotentialFn",
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
    num_leapfrog: int | Tensor = 10,
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
        num_leapfrog: number of leapfrog steps ``L``, or a ``(C,)`` integer tensor of per-chain counts
            (each chain stops at its own; the others' extra steps do not move it).
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
    if isinstance(num_leapfrog, Tensor):  # per-chain trajectory lengths: chains past theirs stay put
        steps = num_leapfrog.to(device=x.device)
        for i in range(int(steps.max())):
            x_new = x + h * inverse_mass_matrix * p
            u_new, g_new = potential_and_grad(potential_fn, x_new)
            active = i < steps
            a = append_dims(active, ndim)
            x, u, g = torch.where(a, x_new, x), torch.where(active, u_new, u), torch.where(a, g_new, g)
            p = torch.where(append_dims(i < steps - 1, ndim), p - h * g, p)
    else:
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


