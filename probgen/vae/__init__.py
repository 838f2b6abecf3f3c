"""Variational autoencoders as Pyro programs.

* :class:`VAE` — ``model(x)`` / ``guide(x)`` with a Gaussian or Bernoulli likelihood, a diagonal-Gaussian or
  flow (IAF, affine coupling) posterior, ELBO training and the IWAE log-likelihood bound;
* :class:`ConditionalVAE` — the conditional / semi-supervised VAE (Kingma et al. 2014, "M2"), labels
  marginalised by enumeration where missing (``y = -1``);
* :mod:`probgen.vae.nets` — the built-in encoder, decoder and classifier networks;
* :mod:`probgen.vae.conv` — :class:`ConvEncoder` / :class:`ConvDecoder` for 28×28 and 32×32×3 images;
* :mod:`probgen.vae.observation` — :class:`ObservationModel`, ``p(x | z)`` (Gaussian or Bernoulli);
* :mod:`probgen.vae.posterior` — the guide's flow layers (IAF, affine coupling) and its sampler;
* :mod:`probgen.vae.iwae` — the chunked importance-weighted estimate of ``log p(x)`` both VAEs use.
"""

from __future__ import annotations

from probgen.vae.conditional import ConditionalVAE
from probgen.vae.conv import ConvDecoder, ConvEncoder
from probgen.vae.nets import Classifier, Decoder, GaussianEncoder
from probgen.vae.observation import LIKELIHOODS, ObservationModel
from probgen.vae.posterior import POSTERIORS
from probgen.vae.vae import ELBO_ESTIMATORS, VAE

__all__ = [
    "VAE",
    "ConditionalVAE",
    "GaussianEncoder",
    "Decoder",
    "Classifier",
    "ConvEncoder",
    "ConvDecoder",
    "ObservationModel",
    "LIKELIHOODS",
    "POSTERIORS",
    "ELBO_ESTIMATORS",
]
