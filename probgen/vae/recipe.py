"""Command-line recipe (build, tuned defaults, scoring, sampling) for VAEs: Gaussian likelihood with a
learnt scale for real data, Bernoulli for binary data.

Read through :mod:`probgen.registry`; the shared behaviour is :class:`probgen.recipes.Recipe`.
"""

from __future__ import annotations

import torch

from probgen.recipes import Recipe, numel

__all__ = ["VAERecipe"]


class VAERecipe(Recipe):
    """A VAE: Gaussian likelihood with a learnt scale for real data, Bernoulli for binary data."""

    name = "vae"
    bounds = ("elbo", "iwae")
    max_eval_points = 2000  # IWAE with K = 1000 costs 1000 decoder passes per point
    #: tabular vectors (features in their own units: thousands next to fractions) are standardized inside the
    #: model, as the flows' are; a Gaussian decoder with one learnt scale cannot fit raw units (wine: 3,344 nats)
    standardize = True
    #: the general default, and the ``binary`` row (vectors of 0/1, Bernoulli likelihood), measured on the held-out
    #: Bernoulli mixture ``bernmix`` of benchmarks/bench_profiles.py (D = 32, N = 5,000): -ELBO 0.62 nats above the
    #: entropy (docs/cli.md)
    _vectors = {"model": {"latent_dim": 8}, "fit": {"steps": 2000, "batch_size": 128, "lr": 1e-3}}
    settings = {
        "default": _vectors,
        "binary": _vectors,
        "2d": {"model": {"latent_dim": 2}, "fit": {"steps": 4000, "batch_size": 256, "lr": 1e-3}},
        # tabular: 375 passes over the data (1,500 steps at N = 512); on tabsynth (benchmarks/bench_profiles.py) the
        # held-out -ELBO flattens from 1,000 steps on, at 21.46 nats against 22.04 for a full-covariance Gaussian.
        # Early stopping (10 % held out, -ELBO scored every 25 steps, patience 8, best kept): tabsynth KL 5.28 ± 0.14
        # against 5.19 ± 0.17 without; breast cancer +5.45 ± 1.66 nats behind the Gaussian against +8.76 ± 1.17;
        # wine +0.11 ± 0.30 against -0.02 ± 0.29 (docs/cli.md)
        "tabular": {"fit": {"epochs": 375, "max_steps": 2000, "batch_size": 128, "lr": 1e-3, "validation": 0.1,
                            "eval_every": 25, "patience": 8}},
        # images: the convolutional encoder/decoder (probgen.vae.conv), settings of docs/vae.md "images"
        "grayscale": {"model": {"latent_dim": 16, "hidden": (128,), "conv_channels": (8, 16)},
                      "fit": {"steps": 1000, "batch_size": 128, "lr": 1e-3}},
        "colour": {"model": {"latent_dim": 32, "hidden": (256,), "conv_channels": (16, 32)},
                   "fit": {"steps": 1000, "batch_size": 128, "lr": 1e-3}},
    }
    num_particles = 1000
    #: a VAE of large events (more than 256 values: MNIST, CIFAR-10) is scored on fewer test points with fewer
    #: importance samples: IWAE costs K decoder passes per point, and K = 1000 on 2000 MNIST images takes tens
    #: of minutes on 2 CPU cores (``probgen nll --bound iwae -n`` scores more)
    image_eval = {"points": 1000, "particles": 100, "min_size": 257}

    def _large(self, model) -> bool:
        return numel(getattr(model, "event_shape", ()) or ()) >= self.image_eval["min_size"]

    def standardizes(self, dataset) -> bool:
        """Continuous tabular vectors only (the other rows keep the settings they were tuned with)."""
        return super().standardizes(dataset) and self.profile(dataset).row == "tabular"

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.vae import VAE

        options = dict(self.settings_for(dataset)["model"])
        if self.profile(dataset).value_type == "binary":
            return VAE(likelihood="bernoulli", event_shape=tuple(dataset.event_shape), **options)
        return self.standardized(VAE(likelihood="gaussian", obs_scale=0.3, learn_obs_scale=True,
                                     event_shape=tuple(dataset.event_shape), **options), dataset)

    def evaluate(self, model, dataset, *, trace=None, bound=None, num_points=None) -> dict[str, dict]:
        if num_points is None and self._large(model):
            num_points = self.image_eval["points"]
        return super().evaluate(model, dataset, trace=trace, bound=bound, num_points=num_points)

    def batch_transform(self, dataset):
        return None if dataset.num_levels == 2 else super().batch_transform(dataset)

    def is_continuous(self, model) -> bool:
        return model.likelihood != "bernoulli"

    def log_likelihoods(self, model, x, *, trace=None, bound=None):
        out = {}
        with torch.no_grad():
            if bound in (None, "elbo"):
                out["-ELBO"] = (torch.cat([model.elbo(c).detach() for c in x.split(512)]), 0.0)
            if bound in (None, "iwae"):
                k = self.image_eval["particles"] if self._large(model) else self.num_particles
                out[f"NLL (IWAE, K={k})"] = (torch.cat([model.log_likelihood(c, num_particles=k).detach()
                                                        for c in x.split(256)]), 0.0)
        return out

    def extra_metrics(self, model, dataset) -> dict[str, dict]:
        """Reconstruction quality (MSE, PSNR, SSIM for images) and, with labels, how well k-means on the
        posterior means recovers the classes (homogeneity, completeness, V-measure)."""
        from probgen.metrics import clustering_scores, reconstruction_metrics

        device = next(model.parameters()).device
        x = dataset.test[: self.max_eval_points].to(device)
        out: dict[str, dict] = {}
        wrapped = hasattr(model, "to_standard")  # a standardized VAE: encode z = to_standard(x), map back
        inner = model.model if wrapped else model
        to_z = model.to_standard if wrapped else (lambda v: v)
        from_z = model.from_standard if wrapped else (lambda v: v)
        with torch.no_grad():
            recon = from_z(inner.reconstruct(to_z(x)))
            low, high = dataset.data_range if dataset.num_levels else (float(x.min()), float(x.max()))
            for name, value in reconstruction_metrics(x, recon, data_range=high - low).items():
                out[f"reconstruction {name}"] = {"value": float(value), "stderr": None, "unit": "", "kind": "latent"}
            if dataset.labels_test is not None:
                latents = inner.encode(to_z(x))[0].reshape(len(x), -1).cpu()
                labels = dataset.labels_test[: len(x)]
                for name, value in clustering_scores(latents, labels).items():
                    if name == "num_clusters":
                        continue
                    out[f"latent {name}"] = {"value": float(value), "stderr": None, "unit": "", "kind": "latent"}
        return out

    def describe(self, model) -> str:
        conv = " conv" if getattr(model, "conv_channels", None) else ""
        return f"VAE ({model.likelihood} likelihood, {model.latent_dim}-d latent{conv})"
