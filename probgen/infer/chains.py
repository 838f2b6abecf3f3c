r"""The batched chain driver: :func:`run_chains` runs ``C`` chains of a batched potential as one tensor.

Each iteration makes one transition of every chain (:mod:`probgen.infer.transitions`). Step sizes:
each chain has its own, tuned during warmup by dual averaging on its own acceptance probabilities
(:mod:`probgen.infer.adaptation`); the diagonal preconditioner is shared, estimated from the draws of
all chains pooled, in Stan's warmup windows. For HMC each chain draws its number of leapfrog steps
afresh every iteration (by default uniformly from ``{⌈L/4⌉, ..., L}``; ``jitter``, ``jitter_kind``), which
keeps fixed-length trajectories from being periodic on Gaussian directions.

This is one of the two MCMC drivers of probgen: Pyro's :class:`pyro.infer.MCMC` runs one chain per
process with the kernels :class:`probgen.infer.MALA` / :class:`probgen.infer.ULA` (or Pyro's own
HMC/NUTS); :func:`run_chains` runs thousands of chains in one tensor. ``probgen mcmc`` uses both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from probgen._checks import (
    check_choice,
    check_choice_or_callable,
    check_int,
    check_positive,
    check_probability,
    check_tensor,
)
from probgen.infer.adaptation import WarmupAdapter
from probgen.infer.transitions import (
    KERNELS,
    ChainState,
    PotentialFn,
    StepResult,
    _finite_rows,
    _rand,
    find_reasonable_step_size,
    hmc_step,
    init_state,
)

__all__ = ["ChainResult", "run_chains", "DRIVER_KERNELS", "JITTER_KINDS"]

#: kernel names :func:`run_chains` accepts: the batched transitions, and Pyro's NUTS (one chain at a time)
DRIVER_KERNELS = (*KERNELS, "nuts")

#: what ``run_chains(jitter=j, jitter_kind=...)`` randomises every iteration, per chain: ``"trajectory"`` (HMC
#: only) the number of leapfrog steps, uniform on ``{⌈(1 - j) L⌉, ..., L}``; ``"step_size"`` the step size,
#: ``h · u`` with ``u ~ U(1 - j, 1 + j)`` (Stan's ``stepsize_jitter``; PyMC's HMC uses ``j = 0.15``)
JITTER_KINDS = ("trajectory", "step_size")

_DEFAULT_TARGET = {"mala": 0.574, "hmc": 0.8, "nuts": 0.8}

#: HMC's default ``(jitter_kind, jitter)``: trajectory lengths uniform on ``{⌈L/4⌉, ..., L}``; of the options
#: measured in docs/mcmc.md ("Jittered trajectory length") it kept R-hat < 1.01 everywhere; on the T = π
#: Gaussian it had the largest min ESS and the smallest lag-1 autocorrelation of x² (that of x -0.34, against
#: -0.60 for {⌈L/2⌉..L} and -0.10 for {1..L}); on the benchmark's correlated Gaussian 16 % more min ESS than
#: ``{1, ..., L}`` (8 % less than {⌈L/2⌉..L})
_HMC_JITTER = ("trajectory", 0.75)
#: HMC's default ``jitter`` when ``jitter_kind="step_size"`` is asked for: ±20 %
_HMC_STEP_SIZE_JITTER = 0.2


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
    jitter_kind: str | None = None,
    callback: Callable[[int, ChainState], Any] | None = None,
    generator: torch.Generator | None = None,
    progress_bar: bool = False,
) -> ChainResult:
    """Run ``C`` ULA, MALA or HMC chains on a batched potential, all in one tensor (or NUTS chains).

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
        kernel: ``"mala"``, ``"ula"``, ``"hmc"``, ``"nuts"`` (Pyro's :class:`~pyro.infer.NUTS` under
            :class:`pyro.infer.MCMC`, one chain after another, each started at its row of ``init``
            with its own adaptation; ``callback``, ``jitter`` and ``jitter_kind`` do not apply; slow for many chains),
            or a callable transition with the signature of
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
        jitter: ``j ∈ [0, 1]``, how much each chain's transition is randomised, afresh every iteration
            and independently of the state (so each transition stays reversible); what is randomised is
            ``jitter_kind``. Default for HMC: ``j = 0.75`` with ``jitter_kind="trajectory"`` (``L_i`` uniform
            on ``{⌈L/4⌉, ..., L}``) and ``j = 0.2`` with ``"step_size"``; 0 (off) for the other kernels.
            HMC with a fixed trajectory ``T = Lh`` is periodic on Gaussian directions: near ``T = π`` it
            maps ``x`` to about ``-x`` (antithetic draws: lag-1 autocorrelation of ``x`` near -1, of ``x²``
            near +1), and ESS and R-hat mislead (Neal 2011, §5.4.2.2; Mackenzie 1989).
        jitter_kind: ``"trajectory"`` (HMC only): the number of leapfrog steps is drawn uniformly from
            ``{⌈(1 - j) L⌉, ..., L}`` (``L = num_leapfrog``; chains that stop early wait for the others,
            so an iteration still costs ``L`` gradients, and no step is longer than ``h``);
            ``"step_size"``: the step size is ``h · u``, ``u ~ U(1 - j, 1 + j)`` (Stan's ``stepsize_jitter``;
            needs ``j < 1``). Default ``"trajectory"`` for HMC, ``"step_size"`` otherwise. See
            :data:`JITTER_KINDS` and docs/mcmc.md for the measurements behind the HMC default.
        callback: called as ``callback(i, state)`` after every iteration ``i`` (warmup included, ``i <
            warmup_steps`` during warmup) with the current :class:`ChainState` (tempered potential).
        generator: optional ``torch.Generator`` (on ``init``'s device) for reproducible runs (for
            ``"nuts"`` it seeds Pyro's global RNG inside a forked RNG state).
        progress_bar: show Pyro's progress bar (``"nuts"`` only; the batched kernels run silently).

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
    kernel = check_choice_or_callable("kernel", kernel, DRIVER_KERNELS)
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
    if name == "nuts" and callback is not None:
        raise ValueError("callback is not supported for kernel 'nuts' (Pyro runs one chain at a time)")
    if name == "nuts" and (jitter or jitter_kind is not None):
        raise ValueError("jitter and jitter_kind are not used by kernel 'nuts' (its trajectories are not fixed), "
                         f"got jitter={jitter!r}, jitter_kind={jitter_kind!r}")
    jitter, jitter_kind = _check_jitter(jitter, jitter_kind, name)
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

    if name == "nuts":
        return _run_nuts(
            _tempered(potential_fn, temperature), init, num_samples=num_samples, warmup_steps=warmup_steps,
            step_size=float(step_size[0]), adapt_step_size=adapt_step_size,
            target_accept_prob=target_accept_prob, adapt_mass_matrix=adapt_mass_matrix,
            thin=thin, temperature=temperature, generator=generator, progress_bar=progress_bar,
        )
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

    lo, hi = max(1, math.ceil((1.0 - jitter) * num_leapfrog - 1e-9)), num_leapfrog

    def transition(h: Tensor, inv_mass: Tensor) -> StepResult:
        if jitter == 0.0:
            return step_fn(potential, state, h, inv_mass, generator=generator)
        u = _rand(num_chains, h, generator)
        if jitter_kind == "trajectory":  # each chain draws its number of leapfrog steps
            steps = (lo + torch.floor(u * (hi - lo + 1))).long().clamp(max=hi)
            return hmc_step(potential, state, h, inv_mass, num_leapfrog=steps, generator=generator)
        return step_fn(potential, state, h * (1.0 + jitter * (2.0 * u - 1.0)), inv_mass, generator=generator)

    for i in range(warmup_steps):
        res = transition(adapter.step_size, adapter.inverse_mass_matrix)
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
        res = transition(h, inv_mass)
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


def _check_jitter(jitter: float | None, jitter_kind: str | None, name: str) -> tuple[float, str]:
    """``(jitter, jitter_kind)`` checked, with the kernel's defaults filled in (see :func:`run_chains`)."""
    if jitter_kind is not None:
        check_choice("jitter_kind", jitter_kind, JITTER_KINDS)
    if name == "hmc":
        jitter_kind = jitter_kind or _HMC_JITTER[0]
        if jitter is None:
            jitter = _HMC_JITTER[1] if jitter_kind == _HMC_JITTER[0] else _HMC_STEP_SIZE_JITTER
    else:
        if jitter_kind == "trajectory":
            raise ValueError(f"jitter_kind='trajectory' needs kernel 'hmc' (kernel {name!r} makes no leapfrog "
                             "trajectory); use jitter_kind='step_size'")
        jitter_kind = "step_size"
    jitter = 0.0 if jitter is None else check_probability("jitter", jitter)
    if jitter_kind == "step_size" and jitter >= 1.0:
        raise ValueError(f"jitter must lie in [0, 1) for jitter_kind='step_size' (the step size is multiplied by "
                         f"u ~ U(1 - jitter, 1 + jitter), which must stay positive), got {jitter}")
    return jitter, jitter_kind


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


def _run_nuts(
    potential: PotentialFn,
    init: Tensor,
    *,
    num_samples: int,
    warmup_steps: int,
    step_size: float,
    adapt_step_size: bool,
    target_accept_prob: float,
    adapt_mass_matrix: bool,
    thin: int,
    temperature: float,
    generator: torch.Generator | None,
    progress_bar: bool,
) -> ChainResult:
    """Pyro's NUTS under :class:`pyro.infer.MCMC`, one chain after another (so a closure potential need
    not be picklable), collected into a :class:`ChainResult` like the batched kernels'."""
    from pyro.infer import MCMC, NUTS

    num_chains, event_shape = init.shape[0], init.shape[1:]
    opts = {"dtype": init.dtype, "device": init.device}
    samples = torch.empty((num_chains, num_samples, *event_shape), **opts)
    accept = torch.empty((num_chains, num_samples), **opts)
    diverging = torch.zeros((num_chains, num_samples), dtype=torch.bool, device=init.device)
    step_sizes = torch.empty(num_chains, **opts)
    inv_mass = torch.zeros(event_shape, **opts)
    seed = None if generator is None else int(torch.randint(2**62, (1,), generator=generator,
                                                             device=generator.device).item())
    devices = [init.device] if init.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        for c in range(num_chains):
            kernel = NUTS(potential_fn=lambda p: potential(p["x"][None])[0], step_size=step_size,
                          adapt_step_size=adapt_step_size, adapt_mass_matrix=adapt_mass_matrix,
                          target_accept_prob=target_accept_prob)
            mcmc = MCMC(kernel, num_samples=num_samples * thin, warmup_steps=warmup_steps,
                        initial_params={"x": init[c].detach()}, disable_progbar=not progress_bar)
            mcmc.run()
            samples[c] = mcmc.get_samples()["x"][thin - 1::thin].to(**opts)
            diag = mcmc.diagnostics()
            div = torch.as_tensor(diag.get("divergences", {}).get("chain 0", []), dtype=torch.long)
            diverging[c, torch.div(div, thin, rounding_mode="floor")] = True
            accept[c] = float(diag.get("acceptance rate", {}).get("chain 0", float("nan")))
            step_sizes[c] = float(kernel.step_size)
            inv_mass += next(iter(kernel.inverse_mass_matrix.values())).reshape(event_shape).to(**opts)
    with torch.no_grad():
        flat = samples.reshape(num_chains * num_samples, *event_shape)
        energies = potential(flat).reshape(num_chains, num_samples) * temperature
    return ChainResult(
        samples=samples, accept_prob=accept, diverging=diverging, potential=energies, step_size=step_sizes,
        inverse_mass_matrix=inv_mass / num_chains, kernel="nuts", num_warmup=warmup_steps, thin=thin,
    )
