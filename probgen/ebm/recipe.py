"""Command-line recipe (build, tuned defaults, scoring, sampling) for energy-based models and
Bernoulli RBMs.

Read through :mod:`probgen.registry`; the shared behaviour is :class:`probgen.recipes.Recipe`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen.recipes import Recipe, numel, require_binary

__all__ = ["EBMRecipe", "RBMRecipe"]


class EBMRecipe(Recipe):
    """An energy-based model; its normalizer is estimated by AIS for the test log-likelihood."""

    name = "ebm"
    objectives = ("dsm", "cd", "pcd", "ssm", "esm", "nce")
    sample_methods = ("langevin", "mala", "persistent")
    # (model options, training options) per objective, from docs/ebm.md's measurements
    tuned = {
        "dsm": ({"sigma": 0.1}, {"steps": 1500, "batch_size": 256, "lr": 1e-3}),
        "cd": ({"sample_steps": 40, "step_size": 0.05, "alpha": 0.1}, {"steps": 800, "batch_size": 128, "lr": 1e-3}),
        "pcd": ({"sample_steps": 40, "step_size": 0.05, "alpha": 0.1}, {"steps": 1000, "batch_size": 128, "lr": 1e-3}),
        "ssm": ({}, {"steps": 1500, "batch_size": 256, "lr": 1e-3}),
        "esm": ({}, {"steps": 1500, "batch_size": 256, "lr": 1e-3}),
        "nce": ({"noise_ratio": 4}, {"steps": 2000, "batch_size": 256, "lr": 1e-3}),
    }

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.ebm import EBM

        self.objective = objective or "dsm"
        model_opts, self.settings = self.tuned[self.objective][0], {"default": {"fit": self.tuned[self.objective][1]}}
        return EBM(event_shape=tuple(dataset.event_shape), objective=self.objective, init_noise="gaussian",
                   init_scale=2.5, **model_opts)

    def log_likelihoods(self, model, x, *, trace=None, bound=None):
        with torch.no_grad():
            energy = torch.cat([model.energy(c).detach() for c in x.split(1024)])
        log_z, se = model.log_partition(num_chains=500, num_steps=300, return_stderr=True)
        return {"NLL (AIS log Z)": (-energy / model.temperature - log_z.detach(), float(se))}

    def sample(self, model, num_samples: int, **opts) -> Tensor:
        opts.setdefault("steps", 500)
        if opts.get("method", "langevin") == "langevin":
            opts.setdefault("step_size", 0.01)
        return model.sample(num_samples, **opts).detach()

    def describe(self, model) -> str:
        return f"EBM ({model.objective if isinstance(model.objective, str) else 'custom'} objective)"


class RBMRecipe(Recipe):
    """A Bernoulli RBM for binary data (CD-1 by default; ``--objective pcd``)."""

    name = "rbm"
    objectives = ("cd", "pcd")
    continuous = False
    #: tuned on digits-binary (docs/ebm.md); the ``binary`` row (vectors of 0/1) keeps it, measured on the held-out
    #: Bernoulli mixture ``bernmix`` of benchmarks/bench_profiles.py (D = 32, N = 5,000): KL 0.85 nats (docs/cli.md)
    _fit = {"fit": {"steps": 1500, "batch_size": 64, "lr": 3e-3}}
    settings = {"default": _fit, "binary": _fit}

    def check_dataset(self, dataset) -> None:
        require_binary(self.name, dataset)

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.ebm import BernoulliRBM

        return BernoulliRBM(numel(dataset.event_shape), 64, objective=objective or "cd", k=1, num_chains=100,
                            event_shape=tuple(dataset.event_shape))

    def log_likelihoods(self, model, x, *, trace=None, bound=None):
        with torch.no_grad():
            free = torch.cat([model.free_energy(c).detach() for c in x.split(1024)])
        if min(model.n_visible, model.n_hidden) <= 20:
            return {"NLL": (-free - model.log_partition("exact").detach(), 0.0)}
        # AIS's stochastic lower bound on log Z gives an upper estimate of log p(x); RAISE the other side of the
        # bracket (probgen.ebm.BernoulliRBM.log_likelihood_bracket; its defaults are sized from the model)
        bracket = model.log_likelihood_bracket(x)
        return {"NLL (AIS log Z)": (bracket.log_likelihood_upper.detach(), float(bracket.lower_stderr)),
                "NLL upper bound (RAISE log Z)": (bracket.log_likelihood_lower.detach(), float(bracket.upper_stderr))}

    def sample(self, model, num_samples: int, **opts) -> Tensor:
        return model.sample(num_samples, gibbs_steps=opts.get("steps", 1000)).detach()

    def describe(self, model) -> str:
        return f"Bernoulli RBM ({model.n_visible} visible, {model.n_hidden} hidden, {model.objective.upper()}-{model.k})"
