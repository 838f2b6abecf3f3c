"""Variational autoencoders as Pyro programs.

* :class:`VAE` — ``model(x)`` / ``guide(x)`` with a Gaussian or Bernoulli likelihood, a diagonal-Gaussian or
  flow (IAF, affine coupling) posterior, ELBO training and the IWAE log-likelihood bound;
* :class:`ConditionalVAE` — the conditional / semi-supervised VAE (Kingma et al. 2014, "M2"), labels
  marginalised by enumeration where missing (``y = -1``);
* :mod:`probgen.vae.nets` — the built-in encoder, decoder and classifier networks.
"""

from __future__ import annotations

from probgen.vae.conditional import ConditionalVAE
from probgen.vae.nets import Classifier, Decoder, GaussianEncoder
from probgen.vae.vae import ELBO_ESTIMATORS, LIKELIHOODS, POSTERIORS, VAE, ObservationModel

__all__ = [
    "VAE",
    "ConditionalVAE",
    "GaussianEncoder",
    "Decoder",
    "Classifier",
    "ObservationModel",
    "LIKELIHOODS",
    "POSTERIORS",
    "ELBO_ESTIMATORS",
]
