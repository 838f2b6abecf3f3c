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
    binary_data = True
    #: the last :class:`probgen.ebm.rbm_ais.LogPartitionBracket` computed by :meth:`log_likelihoods`
    log_z_bracket = None
    #: that bracket is the evaluation's fixed cost, paid once per set of parameters (free energies are cheap)
    cached_fixed_cost = True
    _bracket_key = None

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
        # a bracket on log Z (probgen.ebm.BernoulliRBM.log_partition_bracket: forward AIS below, reverse AIS from
        # its particles above, the schedule grown until they agree); it does not depend on the points, so the
        # cost probes and the evaluation share one run per set of parameters (`probgen nll` prints it)
        key = (id(model), model._param_key())
        if self.log_z_bracket is None or self._bracket_key != key:
            self.log_z_bracket, self._bracket_key = model.log_partition_bracket(), key
        br = self.log_z_bracket
        return {"NLL (AIS log Z)": (-free - br.log_z_lower, float(br.lower_stderr)),
                "NLL upper end (reverse AIS log Z)": (-free - br.log_z_upper, float(br.upper_stderr))}

    def sample(self, model, num_samples: int, **opts) -> Tensor:
        return model.sample(num_samples, gibbs_steps=opts.get("steps", 1000)).detach()

    def describe(self, model) -> str:
        return f"Bernoulli RBM ({model.n_visible} visible, {model.n_hidden} hidden, {model.objective.upper()}-{model.k})"
