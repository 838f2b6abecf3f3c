"""Warmup adaptation shared by every probgen MCMC kernel: dual averaging and diagonal preconditioning.

The same code tunes one chain (the :class:`~probgen.infer.MALA` / :class:`~probgen.infer.ULA` Pyro
kernels, ``C = 1``) and ``C`` chains held in one tensor (:func:`~probgen.infer.run_chains`).

* **Step size** — dual averaging (Nesterov, 2009; Hoffman & Gelman, 2014, arXiv:1111.4246, Alg. 5) on
  ``log h`` with the statistic ``H_t = δ - α_t`` (target acceptance ``δ``, observed acceptance
  probability ``α_t``)::

      log h_{t+1} = μ - √t / γ · (1 / (t + t₀)) Σ_{i≤t} H_i,      μ = log(10 h₀)
      log h̄_{t+1} = t^{-κ} log h_{t+1} + (1 - t^{-κ}) log h̄_t

  vectorised over chains by running :class:`pyro.ops.dual_averaging.DualAveraging` on tensors of shape
  ``(C,)``: every chain gets its own step size from its own acceptance history.
* **Preconditioner** — the diagonal inverse mass matrix ``A = diag(Var[x])`` is estimated with Welford's
  algorithm in Stan's windows (a fast start buffer, doubling slow windows, a fast end buffer) and
  regularised as in Stan: ``A = n/(n+5) · s² + 10⁻³ · 5/(n+5)``. With several chains the variance is
  pooled over chains (Chan et al., 1979, parallel update).

Example:
    >>> adapter = DualAveragingStepSize(torch.full((3,), 0.1), target_accept_prob=0.574)
    >>> adapter.update(torch.tensor([0.9, 0.5, 0.1])).shape
    torch.Size([3])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.ops.dual_averaging import DualAveraging
from torch import Tensor

from probgen._checks import check_int, check_probability

__all__ = ["adaptation_windows", "DualAveragingStepSize", "PooledWelfordVariance", "WarmupAdapter"]


def adaptation_windows(
    warmup_steps: int, *, start_buffer: int = 75, end_buffer: int = 50, initial_window: int = 25
) -> list[tuple[int, int]]:
    """Stan's warmup windows ``[(start, end), ...]`` (both ends inclusive, 0-based iterations).

    The first window (start buffer) and the last (end buffer) adapt the step size only; the windows in
    between, each twice as long as the one before, also estimate the preconditioner, which is updated at
    the end of each of them. When the three default buffers do not fit in ``warmup_steps`` they are
    scaled to 15 % / 75 % / 10 % of it; fewer than 20 warmup steps make one window.

    Reference: Stan Reference Manual, "Automatic parameter tuning" (Carpenter et al., 2017).

    Example:
        >>> adaptation_windows(1000)
        [(0, 74), (75, 99), (100, 149), (150, 249), (250, 449), (450, 949), (950, 999)]
    """
    warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
    if warmup_steps == 0:
        return []
    if warmup_steps < 20:
        return [(0, warmup_steps - 1)]
    if start_buffer + end_buffer + initial_window > warmup_steps:
        start_buffer = int(0.15 * warmup_steps)
        end_buffer = int(0.1 * warmup_steps)
        initial_window = warmup_steps - start_buffer - end_buffer
    windows = [(0, start_buffer - 1)]
    end_start = warmup_steps - end_buffer
    size, start = initial_window, start_buffer
    while start < end_start:
        cur_size = size
        if 3 * cur_size <= end_start - start:
            size = 2 * cur_size
        else:
            cur_size = end_start - start
        windows.append((start, start + cur_size - 1))
        start += cur_size
    windows.append((end_start, warmup_steps - 1))
    return windows


class DualAveragingStepSize:
    """Per-chain step sizes tuned by dual averaging towards a target acceptance probability.

    Args:
        step_size: initial step sizes, ``(C,)``.
        target_accept_prob: the acceptance probability ``δ`` to aim for (0.574 for MALA, Roberts &
            Rosenthal 1998; 0.8 for HMC as in Pyro and Stan).
        t0, kappa, gamma: the free parameters of Hoffman & Gelman (2014), Pyro's defaults.

    Reference: Hoffman & Gelman (2014), "The No-U-Turn Sampler", arXiv:1111.4246, Section 3.2.

    Example:
        >>> da = DualAveragingStepSize(torch.ones(2), target_accept_prob=0.8)
        >>> h = da.update(torch.tensor([1.0, 0.0]))   # chain 0 accepted: bigger step; chain 1: smaller
        >>> bool(h[0] > h[1])
        True
    """

    def __init__(
        self,
        step_size: Tensor,
        *,
        target_accept_prob: float,
        t0: float = 10.0,
        kappa: float = 0.75,
        gamma: float = 0.05,
    ) -> None:
        self.target_accept_prob = check_probability("target_accept_prob", target_accept_prob,
                                                    open_low=True, open_high=True)
        self._scheme = DualAveraging(t0=t0, kappa=kappa, gamma=gamma)
        self.step_size = step_size.detach().clone()
        self.reset(self.step_size)

    def reset(self, step_size: Tensor) -> None:
        """Restart the scheme around ``step_size`` (prox-centre ``μ = log(10 h)``)."""
        self.step_size = step_size.detach().clone()
        self._scheme.prox_center = torch.log(10.0 * self.step_size)
        self._scheme.reset()

    def update(self, accept_prob: Tensor) -> Tensor:
        """Feed the acceptance probabilities ``α_t: (C,)``; return the step sizes to use next, ``(C,)``."""
        a = torch.nan_to_num(accept_prob.detach().to(self.step_size), nan=0.0)
        self._scheme.step(self.target_accept_prob - a)
        log_h, _ = self._scheme.get_state()
        self.step_size = torch.exp(log_h)
        return self.step_size

    def final(self) -> Tensor:
        """The averaged step size ``h̄`` to keep after warmup, ``(C,)``."""
        if self._scheme._t == 0:  # no update since the last reset
            return self.step_size
        _, log_h_avg = self._scheme.get_state()
        self.step_size = torch.exp(log_h_avg)
        return self.step_size


class PooledWelfordVariance:
    """Streaming per-coordinate variance of draws ``x: (C, *event)``, pooled over the ``C`` chains.

    Each update merges the ``C`` new draws into the running mean and sum of squares (Chan, Golub &
    LeVeque, 1979), so the estimate equals the sample variance of every draw seen, over all chains.

    Example:
        >>> w = PooledWelfordVariance()
        >>> w.update(torch.tensor([[0.0], [2.0]])); w.update(torch.tensor([[4.0]]))
        >>> w.variance(regularize=False)
        tensor([4.])
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every draw."""
        self.count = 0
        self._mean: Tensor | None = None
        self._m2: Tensor | None = None

    def update(self, x: Tensor) -> None:
        """Add the draws ``x: (C, *event)``."""
        x = x.detach()
        n_b = x.shape[0]
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        if self._mean is None:
            self.count, self._mean, self._m2 = n_b, mean_b, m2_b
            return
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + delta**2 * (n_a * n_b / n)
        self.count = n

    def variance(self, *, regularize: bool = True) -> Tensor:
        """The sample variance ``(*event)``; with ``regularize``, Stan's shrinkage towards ``10⁻³``."""
        if self._m2 is None or self.count < 2:
            raise ValueError(f"need at least 2 draws to estimate a variance, got {self.count}")
        var = self._m2 / (self.count - 1)
        if regularize:
            n = self.count
            var = (n / (n + 5.0)) * var + 1e-3 * (5.0 / (n + 5.0))
        return var


class WarmupAdapter:
    """Drives step-size and preconditioner adaptation through Stan's warmup windows.

    Call :meth:`step` once per warmup iteration with the state and acceptance probabilities; read
    :attr:`step_size` ``(C,)`` and :attr:`inverse_mass_matrix` ``(*event)`` before the next iteration.

    Args:
        warmup_steps: number of warmup iterations.
        step_size: initial step sizes ``(C,)``.
        inverse_mass_matrix: initial diagonal preconditioner ``(*event)`` (usually ones).
        adapt_step_size: tune the step sizes by dual averaging.
        adapt_mass_matrix: estimate the diagonal preconditioner (pooled over chains) in the slow windows.
        target_accept_prob: the acceptance probability dual averaging aims for.
        find_step_size: optional ``f(step_size, inverse_mass_matrix) -> step_size`` called when the
            preconditioner changes, to restart dual averaging from a sensible value.

    Example:
        >>> wa = WarmupAdapter(10, torch.ones(4), torch.ones(2), adapt_step_size=True,
        ...                    adapt_mass_matrix=False, target_accept_prob=0.574)
        >>> for t in range(10):
        ...     wa.step(t, torch.randn(4, 2), torch.full((4,), 0.9))
        >>> bool((wa.step_size > 1).all())
        True
    """

    def __init__(
        self,
        warmup_steps: int,
        step_size: Tensor,
        inverse_mass_matrix: Tensor,
        *,
        adapt_step_size: bool,
        adapt_mass_matrix: bool,
        target_accept_prob: float,
        find_step_size: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
        self.adapt_step_size = bool(adapt_step_size)
        self.adapt_mass_matrix = bool(adapt_mass_matrix)
        self.step_size = step_size.detach().clone()
        self.inverse_mass_matrix = inverse_mass_matrix.detach().clone()
        self._find_step_size = find_step_size
        self._windows = adaptation_windows(self.warmup_steps)
        self._window = 0
        self._welford = PooledWelfordVariance()
        self._dual = (
            DualAveragingStepSize(self.step_size, target_accept_prob=target_accept_prob)
            if self.adapt_step_size
            else None
        )

    @property
    def windows(self) -> list[tuple[int, int]]:
        """The warmup windows, see :func:`adaptation_windows`."""
        return list(self._windows)

    def restart_step_size(self) -> None:
        """Search a reasonable step size (if a search is given) and restart dual averaging from it."""
        if self._find_step_size is not None:
            self.step_size = self._find_step_size(self.step_size, self.inverse_mass_matrix).detach()
        if self._dual is not None:
            self._dual.reset(self.step_size)

    def step(self, t: int, x: Tensor, accept_prob: Tensor) -> None:
        """Record warmup iteration ``t`` (0-based): draws ``x: (C, *event)``, acceptance ``(C,)``."""
        if t >= self.warmup_steps or not (self.adapt_step_size or self.adapt_mass_matrix):
            return
        num_windows = len(self._windows)
        start, end = self._windows[self._window]
        slow = self.adapt_mass_matrix and 0 < self._window < num_windows - 1
        if self._dual is not None:
            self.step_size = self._dual.update(accept_prob)
        if slow:
            self._welford.update(x)
        if t == end:
            last = self._window == num_windows - 1
            self._window += 1
            if last:
                if self._dual is not None:
                    self.step_size = self._dual.final()
            elif slow and self._welford.count >= 2:
                self.inverse_mass_matrix = self._welford.variance(regularize=True).to(self.inverse_mass_matrix)
                self._welford.reset()
                self.restart_step_size()

