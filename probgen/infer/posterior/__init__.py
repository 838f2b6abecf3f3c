"""Posterior sampling with trained generative models as priors (inverse problems, imputation).

* :func:`posterior_sample` — the one entry point (methods ``"dps"``, ``"pigdm"``, ``"ddrm"``,
  ``"annealed-langevin"``, ``"smc"``, ``"mcmc"``, one module each) returning a :class:`PosteriorResult`;
* :class:`LinearGaussian` and the operators :class:`MaskOperator`, :class:`DenseOperator`,
  :class:`BlurOperator`, :class:`SubsampleOperator` (forward, adjoint, SVD);
* :func:`posterior_calibration` and :class:`GaussianMixture` — checks against exact posteriors.

See docs/conditioning.md.
"""

from __future__ import annotations

from probgen.infer.posterior.calibration import GaussianMixture, posterior_calibration
from probgen.infer.posterior.operators import (
    OPERATORS,
    BlurOperator,
    DenseOperator,
    LinearGaussian,
    LinearGaussianDistribution,
    LinearOperator,
    MaskOperator,
    OperatorSVD,
    SubsampleOperator,
    make_operator,
)
from probgen.infer.posterior.sample import POSTERIOR_METHODS, PosteriorResult, posterior_sample

__all__ = [
    "posterior_sample",
    "PosteriorResult",
    "POSTERIOR_METHODS",
    "LinearGaussian",
    "LinearGaussianDistribution",
    "LinearOperator",
    "OperatorSVD",
    "MaskOperator",
    "DenseOperator",
    "BlurOperator",
    "SubsampleOperator",
    "make_operator",
    "OPERATORS",
    "posterior_calibration",
    "GaussianMixture",
]
