r"""MALA/HMC on ``log p(x) + log p(y | x)`` for priors with a differentiable exact density."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_int

__all__ = ["mcmc"]


def mcmc(prior_dist, likelihood, num_samples: int, *, kernel: str = "mala", num_chains: int | None = None,
         warmup_steps: int | None = None, init: Tensor | None = None, generator: torch.Generator | None = None,
         dtype: torch.dtype, device: torch.device, **run_opts: Any) -> dict[str, Any]:
    r"""Batched MCMC chains (:func:`probgen.infer.run_chains`) on the unnormalised posterior

    .. math::

        π(x) ∝ p(x)\, p(y | x),\qquad U(x) = -\log p(x) - \log p(y | x),

    with ``log p(x)`` the prior's ``log_prob`` (a flow's exact density, an EBM's ``-E(x)``, a diffusion
    model's probability-flow ODE density with the exact trace — differentiable, so slow: small ``D``) and
    ``∇U`` by autograd. Exact as the chains mix; check ``accept_prob`` and the ArviZ diagnostics.

    Args:
        prior_dist: the site's distribution (its ``log_prob``); likelihood: ``log p(y | x)``.
        num_samples: total draws, split over ``num_chains`` chains (default ``min(num_samples, 16)``).
        kernel: ``"mala"``, ``"hmc"`` or ``"ula"``; warmup_steps: adaptation steps per chain (default:
            the draws per chain); init: ``(num_chains, *event)`` starts (default: prior draws);
        generator: seeds the chains; **run_opts: further options of :func:`~probgen.infer.run_chains`.

    Returns:
        ``{"samples": (num_samples, *event), "chains": ChainResult}``.

    References: Roberts & Tweedie (1996); Neal (2011), arXiv:1206.1901.
    """
    from probgen.infer.batched import run_chains

    chains = check_int("num_chains", num_chains if num_chains is not None else min(num_samples, 16), minimum=1)
    per_chain = math.ceil(num_samples / chains)
    if init is None:
        with torch.no_grad():
            init = prior_dist.sample((chains,))
    init = init.detach().to(dtype=dtype, device=device)
    if tuple(init.shape) != (chains, *prior_dist.event_shape):
        raise ValueError(f"init must have shape {(chains, *prior_dist.event_shape)}, got {tuple(init.shape)}")

    def potential(x: Tensor) -> Tensor:
        return -(prior_dist.log_prob(x) + likelihood.log_prob(x))

    result = run_chains(potential, init, kernel=kernel, num_samples=per_chain, warmup_steps=warmup_steps,
                        generator=generator, **run_opts)
    draws = result.samples.transpose(0, 1).reshape(-1, *result.samples.shape[2:])[:num_samples]
    return {"samples": draws, "chains": result}
