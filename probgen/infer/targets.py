"""Benchmark targets: named potentials ``U(x) = -log π(x) + const`` for testing and benchmarking samplers.

(This module was ``probgen.infer.potentials``; that name still works and warns.)

Each potential is batched, ``(C, D) -> (C,)``, and knows its exact moments where they exist, so a sampler's
output can be checked against the truth (``probgen mcmc --potential NAME`` prints both).

* ``"gaussian"`` — a correlated Gaussian N(0, Σ) with ``Σ_ij = ρ^|i-j|`` (AR(1) correlation, ρ = 0.9): the
  standard stress test for preconditioning and step-size adaptation.
* ``"funnel"`` — Neal's funnel (Neal 2003, *Slice sampling*): ``v ~ N(0, 3²)``, ``x_i | v ~ N(0, e^v)``,
  ``i = 1..D-1``; its neck defeats any single step size and produces divergences.
* ``"banana"`` — a twisted Gaussian (Haario et al. 1999): ``x_1 ~ N(0, 10)``, ``x_2 + b(x_1² - 10) ~ N(0, 1)``
  with ``b = 0.1``, other coordinates standard normal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from probgen._checks import check_choice, check_int

__all__ = ["Potential", "POTENTIALS", "get_potential", "correlated_gaussian", "neals_funnel", "banana"]


@dataclass(frozen=True)
class Potential:
    """A batched potential with its name, dimension and (where known) exact mean and covariance."""

    name: str
    dim: int
    fn: Callable[[Tensor], Tensor]
    mean: Tensor | None = None
    cov: Tensor | None = None

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x)


def _ar1_cov(dim: int, rho: float, dtype=torch.float64) -> Tensor:
    idx = torch.arange(dim, dtype=dtype)
    return rho ** (idx[:, None] - idx[None, :]).abs()


def correlated_gaussian(dim: int = 10, *, rho: float = 0.9) -> Potential:
    """``U(x) = ½ xᵀ Σ⁻¹ x`` with ``Σ_ij = ρ^|i-j|``.

    Example:
        >>> p = correlated_gaussian(3)
        >>> p(torch.zeros(2, 3)).tolist()
        [0.0, 0.0]
    """
    dim = check_int("dim", dim, minimum=1)
    cov = _ar1_cov(dim, rho)
    precision = torch.linalg.inv(cov)

    def fn(x: Tensor) -> Tensor:
        p = precision.to(x)
        return 0.5 * torch.einsum("ci,ij,cj->c", x, p, x)

    return Potential("gaussian", dim, fn, torch.zeros(dim, dtype=torch.float64), cov)


def neals_funnel(dim: int = 10) -> Potential:
    """Neal's funnel: ``v = x_0 ~ N(0, 9)``, ``x_i ~ N(0, e^v)`` for ``i >= 1``.

    ``U(x) = v²/18 + (D-1) v / 2 + ½ e^{-v} Σ_{i≥1} x_i²``. Mean 0; ``Var v = 9``; ``Var x_i = E e^v = e^{4.5}``.

    Example:
        >>> round(neals_funnel(2)(torch.zeros(1, 2)).item(), 6)
        0.0
    """
    dim = check_int("dim", dim, minimum=2)

    def fn(x: Tensor) -> Tensor:
        v, rest = x[:, 0], x[:, 1:]
        return v**2 / 18.0 + 0.5 * (dim - 1) * v + 0.5 * torch.exp(-v) * rest.pow(2).sum(-1)

    cov = torch.diag(torch.tensor([9.0] + [math.exp(4.5)] * (dim - 1), dtype=torch.float64))
    return Potential("funnel", dim, fn, torch.zeros(dim, dtype=torch.float64), cov)


def banana(dim: int = 2, *, b: float = 0.1) -> Potential:
    """The twisted Gaussian of Haario et al. (1999): ``y_1 = x_1 ~ N(0, 10)``, ``y_2 = x_2 + b (x_1² - 10) ~ N(0, 1)``.

    The mean is 0 in every coordinate (``E[x_2] = -b (E x_1² - 10) = 0``); ``Var x_2 = 1 + 2 b² 100``.

    Example:
        >>> banana(2)(torch.zeros(1, 2)).shape
        torch.Size([1])
    """
    dim = check_int("dim", dim, minimum=2)

    def fn(x: Tensor) -> Tensor:
        x1, x2, rest = x[:, 0], x[:, 1], x[:, 2:]
        y2 = x2 + b * (x1**2 - 10.0)
        return x1**2 / 20.0 + 0.5 * y2**2 + 0.5 * rest.pow(2).sum(-1)

    var = torch.ones(dim, dtype=torch.float64)
    var[0], var[1] = 10.0, 1.0 + 2 * b**2 * 100.0
    return Potential("banana", dim, fn, torch.zeros(dim, dtype=torch.float64), torch.diag(var))


POTENTIALS: dict[str, Callable[..., Potential]] = {
    "gaussian": correlated_gaussian,
    "funnel": neals_funnel,
    "banana": banana,
}


def get_potential(name: str, dim: int = 10) -> Potential:
    """The named potential in ``dim`` dimensions (see the module docstring for the list)."""
    check_choice("potential", name, tuple(POTENTIALS))
    return POTENTIALS[name](dim)
