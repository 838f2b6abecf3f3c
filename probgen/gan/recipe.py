"""Command-line recipe (build, tuned defaults, scoring, sampling) for GANs: no likelihood,
evaluated by their samples.

Read through :mod:`probgen.registry`; the shared behaviour is :class:`probgen.recipes.Recipe`.
"""

from __future__ import annotations

from probgen.recipes import Recipe

__all__ = ["GANRecipe", "WGANGPRecipe"]


class GANRecipe(Recipe):
    """The original GAN (non-saturating generator loss); no likelihood: evaluated by its samples."""

    name = "gan"
    has_likelihood = False
    settings = {
        "default": {"fit": {"steps": 1000, "batch_size": 256, "lr": 1e-3}},
        # images: DCGAN nets (probgen.gan.conv_nets: BatchNorm generator, LeakyReLU(0.2) discriminator, no pooling),
        # Adam(2e-4, betas 0.5, 0.999) as Radford et al.; measured on MNIST in docs/gan.md "GANs on MNIST"
        "grayscale": {"model": {"conv_channels": (32, 64), "latent_dim": 64},
                      "fit": {"steps": 3000, "batch_size": 64, "lr": 2e-4}},
        "colour": {"model": {"conv_channels": (32, 64), "latent_dim": 64},
                   "fit": {"steps": 3000, "batch_size": 64, "lr": 2e-4}},
    }

    def _model_class(self):
        from probgen.gan import GAN

        return GAN

    def build(self, dataset, *, kind=None, objective=None):
        return self._model_class()(tuple(dataset.event_shape), **self.settings_for(dataset)["model"])

    def evaluate(self, model, dataset, *, trace=None, bound=None, num_points=None) -> dict[str, dict]:
        """Sample metrics against the test split (MMD², sliced Wasserstein, precision/recall, KDE)."""
        if trace is not None or bound is not None:
            raise ValueError(f"family {self.name!r} has no likelihood: --trace and --bound do not apply")
        from probgen.evaluation import has_image_features, sample_metrics

        n = min(len(dataset.test), num_points or 2000)
        samples = self.sample(model, n).detach().cpu().reshape(n, *dataset.event_shape)
        data_range = tuple(dataset.data_range) if getattr(dataset, "data_range", None) is not None else (-1.0, 1.0)
        return sample_metrics(samples, dataset.test[:n], reference=dataset.train[:n],
                              image_features=has_image_features(dataset.event_shape), data_range=data_range)

    def describe(self, model) -> str:
        return f"{type(model).__name__} ({model.latent_dim}-d latent)"


class WGANGPRecipe(GANRecipe):
    """WGAN with gradient penalty (Gulrajani et al. 2017)."""

    name = "wgan-gp"
    # the GAN's rows, but images get a budget of their own: every generator step costs n_critic critic updates,
    # each with the gradient penalty's double backward (docs/gan.md "GANs on MNIST")
    settings = {
        **GANRecipe.settings,
        "grayscale": {"model": {"conv_channels": (32, 64), "latent_dim": 64},
                      "fit": {"steps": 700, "batch_size": 64, "lr": 2e-4}},
        "colour": {"model": {"conv_channels": (32, 64), "latent_dim": 64},
                   "fit": {"steps": 700, "batch_size": 64, "lr": 2e-4}},
    }

    def _model_class(self):
        from probgen.gan import WGANGP

        return WGANGP
