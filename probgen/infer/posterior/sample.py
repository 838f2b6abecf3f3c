r"""``posterior_sample``: draws of a site of a Pyro model whose prior is a probgen model, given the observations.

.. code-block:: python

    def model(y):
        x = pyro.sample("x", ddpm.as_distribution())                       # any probgen prior
        pyro.sample("y", pg.infer.LinearGaussian(op, 0.1)(x), obs=y)        # or any Pyro likelihood of x
    post = pg.infer.posterior_sample(model, y, site="x", method="smc", num_samples=1000)
    post.samples            # (1000, *event)
    post.to_inference_data()  # ArviZ

Methods (one module each): ``"dps"``, ``"pigdm"``, ``"ddrm"``, ``"annealed-langevin"``, ``"smc"`` for
diffusion-type priors (any model with ``denoiser()``: DDPM, ScoreSDE, EDM, flow matching); ``"mcmc"`` for any prior with a differentiable ``log_prob`` (flows,
EBMs, diffusion models through the probability-flow ODE). ``"pigdm"`` and ``"ddrm"`` need the
observation to be ``LinearGaussian(op, σ)(x)``; the others read ``log p(y | x)`` from the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_choice, check_int
from probgen.infer.posterior._likelihood import AffineLikelihood, ModelLikelihood
from probgen.infer.posterior._prior import DiffusionPrior, affine_of, is_diffusion
from probgen.infer.posterior.calibration import GaussianMixture  # noqa: F401  (the doctest's prior)
from probgen.infer.posterior.ddrm import ddrm
from probgen.infer.posterior.dps import dps
from probgen.infer.posterior.langevin import annealed_langevin
from probgen.infer.posterior.mcmc import mcmc
from probgen.infer.posterior.pigdm import pigdm
from probgen.infer.posterior.smc import smc
from probgen.samplers.base import check_clip

__all__ = ["posterior_sample", "PosteriorResult", "POSTERIOR_METHODS"]

POSTERIOR_METHODS: dict[str, Callable[..., dict]] = {
    "dps": dps,
    "pigdm": pigdm,
    "ddrm": ddrm,
    "annealed-langevin": annealed_langevin,
    "smc": smc,
    "mcmc": mcmc,
}
"""``method`` name -> function; every one but ``"mcmc"`` runs on a diffusion prior."""

_LINEAR_METHODS = ("pigdm", "ddrm")


@dataclass
class PosteriorResult:
    """Posterior draws of one site with the method's diagnostics.

    Attributes:
        samples: ``(num_samples, *event)`` draws (equally weighted).
        method: the method's name; site: the site's name.
        wall_time: seconds.
        nfe: network (denoiser) evaluations, for the diffusion methods (per particle for SMC).
        log_weights: SMC: ``(K,)`` normalised log weights of the final particles (before resampling).
        ess: SMC: ``(steps,)`` effective sample size along the chain.
        accept_prob: MCMC: ``(chains, draws)`` acceptance probabilities.
        extra: the method's other outputs (``particles``, ``chains`` (a ``ChainResult``), ...).
    """

    samples: Tensor
    method: str
    site: str
    wall_time: float
    nfe: int = 0
    log_weights: Tensor | None = None
    ess: Tensor | None = None
    accept_prob: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def mean(self) -> Tensor:
        """Posterior mean ``(*event)``."""
        return self.samples.mean(0)

    def std(self) -> Tensor:
        """Pointwise posterior standard deviation ``(*event)`` (an uncertainty map for images)."""
        return self.samples.std(0)

    def to_inference_data(self) -> Any:
        """ArviZ ``InferenceData`` through :func:`probgen.diagnostics.to_inference_data`.

        MCMC: ``(chains, draws)`` with ``acceptance_rate`` and ``diverging`` in ``sample_stats``; the
        other methods: one chain of independent draws (SMC adds the final ``ess`` as an attribute-like
        constant stat).
        """
        from probgen import diagnostics

        chains = self.extra.get("chains")
        if chains is not None:
            return chains.to_inference_data(var_name=self.site)
        stats = None
        if self.ess is not None:
            stats = {"smc_ess": self.ess[-1].expand(1, self.samples.shape[0])}
        return diagnostics.to_inference_data({self.site: self.samples.unsqueeze(0)}, sample_stats=stats)


def posterior_sample(model: Callable, *args: Any, site: str, method: str = "smc", num_samples: int = 100,
                     generator: torch.Generator | None = None, clip_x0: tuple[float, float] | None = None,
                     **opts: Any) -> PosteriorResult:
    r"""Draws of ``p(x | y)`` for the site ``x`` of a Pyro model whose prior is a probgen model.

    The model is written as usual: ``x = pyro.sample(site, prior_model.as_distribution())`` and any
    observed sites of ``x``. The likelihood ``log p(y | x) = Σ_{obs} log p(y_obs | x)`` is read by
    tracing ``model(*args)`` with the site fixed (batched over particles with ``torch.func.vmap``) and
    differentiated with autograd; ``"pigdm"`` and ``"ddrm"`` need the one observation to be
    ``pg.infer.LinearGaussian(op, σ)(x)``.

    Args:
        model: the Pyro model; *args: its arguments (the observations).
        site: the name of the latent site with the probgen prior.
        method: ``"dps"``, ``"pigdm"``, ``"ddrm"``, ``"annealed-langevin"``, ``"smc"`` or ``"mcmc"``.
        num_samples: draws to return.
        generator: a ``torch.Generator`` for reproducible draws.
        clip_x0: diffusion methods: ``(low, high)`` clamps every denoised ``x̂₀`` to the data range (as
            DDPM's ``sample(clip_x0=...)``); advised for images with trained ε-networks, whose ``x̂₀`` at
            high noise is ``σ`` times off (it keeps the guided chains finite). Not for a standardized model.
        **opts: the method's options (``steps``, ``scale``, ``num_particles``, ``kernel``, ...; see
            each method's docstring in :mod:`probgen.infer.posterior`).

    Returns:
        :class:`PosteriorResult`.

    Raises:
        TypeError, ValueError: the site is not a probgen prior, an observation is misshaped or has NaN,
            the method needs a linear-Gaussian observation or a diffusion prior it does not have, an
            unknown option.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from probgen.diffusion import ScoreSDE
        >>> from probgen.sde import VPSDE
        >>> gm = GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.eye(2)[None])  # p = N(0, I)
        >>> prior = ScoreSDE((2,), sde=VPSDE(), net=gm.score_fn(VPSDE()), parameterization="score")
        >>> def model(y):
        ...     x = pyro.sample("x", prior.as_distribution())
        ...     pyro.sample("y", dist.Normal(x[..., 0], 0.5), obs=y)
        >>> post = posterior_sample(model, torch.tensor(1.0), site="x", method="smc", num_samples=200,
        ...                         steps=50, generator=torch.Generator().manual_seed(0))
        >>> post.samples.shape
        torch.Size([200, 2])
    """
    method = check_choice("method", method, tuple(POSTERIOR_METHODS))
    num_samples = check_int("num_samples", num_samples, minimum=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    clip_x0 = check_clip(clip_x0)
    likelihood = ModelLikelihood(model, args, {}, site)
    prior_model = getattr(likelihood.prior, "model", None)
    if method in _LINEAR_METHODS and likelihood.linear is None:
        raise ValueError(
            f"method={method!r} needs a linear-Gaussian observation of site {site!r}: write "
            f"pyro.sample('y', pg.infer.LinearGaussian(operator, noise_std)({site}), obs=y) as the model's only "
            f"observation; the model observes {sorted(likelihood.observed)} otherwise. Use 'dps', 'smc', "
            "'annealed-langevin' or 'mcmc' for other likelihoods")
    fn = POSTERIOR_METHODS[method]
    start = time.perf_counter()
    if method == "mcmc":
        if clip_x0 is not None:
            raise ValueError("clip_x0 applies to the diffusion methods, not to method='mcmc'")
        out = fn(likelihood.prior, likelihood, num_samples, generator=generator, dtype=likelihood.dtype,
                 device=likelihood.device, **opts)
        nfe = 0
    else:
        if not is_diffusion(prior_model):
            raise ValueError(
                f"method={method!r} needs a diffusion-type prior (a model with .denoiser(): DDPM, ScoreSDE, EDM, flow "
                f"matching) at site {site!r}, got {type(prior_model or likelihood.prior).__name__}; use method='mcmc'")
        affine = affine_of(prior_model)
        if affine is not None:  # a standardized model: sample z, observe x = loc + scale ⊙ z
            likelihood = AffineLikelihood(likelihood, *affine)
        if affine is not None and clip_x0 is not None:
            raise ValueError(f"clip_x0={clip_x0} cannot apply to the standardized model at site {site!r} (its "
                             "diffusion runs on standardized values); leave clip_x0=None")
        prior = DiffusionPrior(prior_model, dtype=likelihood.dtype, device=likelihood.device, clip_x0=clip_x0)
        try:
            out = fn(prior, likelihood, num_samples, generator=generator, **opts)
        except TypeError as error:
            if "unexpected keyword" in str(error):
                raise TypeError(f"method={method!r} got an unknown option: {error}") from None
            raise
        nfe = prior.nfe
        if affine is not None:
            out = {key: likelihood.to_x(value) if key in ("samples", "particles") else value
                   for key, value in out.items()}
    samples = out.pop("samples")
    chains = out.get("chains")
    return PosteriorResult(
        samples=samples.detach(), method=method, site=site, wall_time=time.perf_counter() - start, nfe=nfe,
        log_weights=out.pop("log_weights", None), ess=out.pop("ess", None),
        accept_prob=chains.accept_prob if chains is not None else None, extra=out)
