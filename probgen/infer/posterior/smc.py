r"""Twisted sequential Monte Carlo over the reverse diffusion (twisted diffusion sampler; Wu et al. 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from probgen._checks import check_choice, check_int, check_nonnegative, check_probability
from probgen.infer.posterior._guidance import Guidance
from probgen.ops.shapes import batch_sum

__all__ = ["smc", "systematic_resample", "effective_sample_size"]


def effective_sample_size(log_weights: Tensor) -> Tensor:
    """``ESS = 1/Σ w̄_k²`` of normalised weights ``w̄ = softmax(log_weights)``; ``(K,) -> ()``."""
    w = torch.softmax(log_weights, 0)
    return 1.0 / (w * w).sum()


def systematic_resample(log_weights: Tensor, num: int, generator: torch.Generator | None = None) -> Tensor:
    """``num`` ancestor indices by systematic resampling (Kitagawa 1996) of ``softmax(log_weights)``."""
    w = torch.softmax(log_weights, 0)
    u = (torch.rand((), generator=generator, dtype=w.dtype, device=w.device) + torch.arange(num, dtype=w.dtype,
                                                                                          device=w.device)) / num
    return torch.searchsorted(torch.cumsum(w, 0), u).clamp(max=w.shape[0] - 1)


def smc(prior, likelihood, num_samples: int, *, steps: int = 200, num_particles: int | None = None,
        resample_threshold: float = 0.5, scale: float = 1.0, twist: str = "auto",
        generator: torch.Generator | None = None) -> dict[str, Tensor]:
    r"""Sequential Monte Carlo on the reverse chain, twisted by an approximation ``p̃_t(y | x_t)`` of ``p(y | x_t)``.

    ``K`` particles start at ``x_T ~ N(0, σ_max² I)`` (σ-space, see :mod:`probgen.infer.posterior`) with
    weight ``p̃_T(y | x_T)``; each step ``σ_t → σ_s`` proposes
    from the guided ancestral kernel (as in DPS) and reweights so that the final weighted particles
    target ``p_θ(x_0) p(y | x_0)`` of the discretised reverse chain ``p_θ``:

    .. math::

        x_s ∼ r(x_s | x_t) = N\big(μ_t + c\, ∇\log p̃_t(y | x_t),\ σ̃^2\big),\qquad
        w_s = w_t\,\frac{p_θ(x_s | x_t)\, p̃_s(y | x_s)}{r(x_s | x_t)\, p̃_t(y | x_t)},

    resampling (systematic) when ``ESS < resample_threshold · K``; the last step is the deterministic
    denoising ``x_0 = x̂₀(x_{σ_min})``, weighted by ``p(y | x_0)/p̃(y | x_{σ_min})``. The twist only
    changes the variance: as ``K → ∞`` the weighted particles converge to the exact posterior of the
    chain, whatever the quality of ``p̃`` (``scale=0``: no twist, plain importance sampling with resampling).
    Returns ``num_samples`` draws resampled from the final weighted particles.

    Args:
        prior, likelihood: as in ``dps``; num_samples: draws returned; steps: network calls per particle (noise levels);
        num_particles: ``K`` (default ``num_samples``); resample_threshold: in ``[0, 1]``;
        scale: multiplies the twisting gradient in the proposal; twist: ``"dps"`` (``p̃_t = p(y | x̂₀(x_t))``,
        any likelihood), ``"pigdm"`` (``N(y; A x̂₀, σ_y² I + r_t² AAᵀ)``, linear-Gaussian; much lower weight
        variance) or ``"auto"`` (``"pigdm"`` when the observation is linear-Gaussian); generator: noise
        and resampling.

    Returns:
        ``{"samples": (num_samples, *event), "log_weights": (K,)`` final normalised log weights,
        ``"particles": (K, *event)``, ``"ess": (steps,)`` ESS before each resampling decision and of the final weights,
        ``"num_resampled": ()``}.

    References: Wu, Trippe, Naesseth, Blei & Cunningham (2023), "Practical and Asymptotically Exact
    Conditional Sampling in Diffusion Models", arXiv:2306.17775; Trippe et al. (2023), SMCDiff,
    arXiv:2206.04119; Kitagawa (1996) for systematic resampling.
    """
    steps = check_int("steps", steps, minimum=1)
    k = check_int("num_particles", num_particles if num_particles is not None else num_samples, minimum=1)
    resample_threshold = check_probability("resample_threshold", resample_threshold)
    scale = check_nonnegative("scale", scale)
    twist = check_choice("twist", twist, ("auto", "dps", "pigdm"))
    if twist == "auto":
        twist = "pigdm" if likelihood.linear is not None else "dps"
    elif twist == "pigdm" and likelihood.linear is None:
        raise ValueError("twist='pigdm' needs a linear-Gaussian observation (pg.infer.LinearGaussian); use twist='dps'")
    guidance = Guidance(prior, likelihood, twist)
    sigmas = prior.sigmas(steps)
    x = prior.prior(k, generator)
    ll, g, x0 = guidance(x, sigmas[0])
    logw = ll.clone()
    ess_trace, resampled = torch.empty(steps, dtype=logw.dtype, device=logw.device), 0
    noise = torch.empty_like(x)
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-2], sigmas[1:-1])):
        ess = effective_sample_size(logw)
        ess_trace[i] = ess
        if float(ess) < resample_threshold * k:
            idx = systematic_resample(logw, k, generator)
            x, ll, g, x0 = x[idx], ll[idx], g[idx], x0[idx]
            logw = torch.zeros_like(logw)
            resampled += 1
        mean, std, c = prior.ancestral(x, x0, sigma, sigma_next)
        shift = (scale * c) * g
        noise.normal_(generator=generator)
        x = mean + shift + std * noise
        ll_new, g, x0 = guidance(x, sigma_next)
        # log N(x; mean, std²) - log N(x; mean + shift, std²), with x - mean - shift = std * noise
        log_ratio = 0.5 * batch_sum(noise * noise) - 0.5 * batch_sum((std * noise + shift) ** 2) / std**2
        logw = logw + log_ratio + ll_new - ll
        ll = ll_new
        logw = logw - torch.logsumexp(logw, 0)
    with torch.no_grad():  # last step x_0 = x̂₀(x_{σ_min}): weight p(y | x_0) / p̃(y | x_{σ_min})
        logw = logw + guidance.log_prob(x0) - ll
        logw = logw - torch.logsumexp(logw, 0)
    ess_trace[-1] = effective_sample_size(logw)
    idx = systematic_resample(logw, num_samples, generator)
    # shuffle so that consecutive draws are not sorted by ancestor
    perm = torch.randperm(num_samples, generator=generator, device=torch.device("cpu")).to(idx.device)
    return {"samples": x0[idx[perm]], "log_weights": logw, "particles": x0, "ess": ess_trace,
            "num_resampled": torch.tensor(resampled)}
