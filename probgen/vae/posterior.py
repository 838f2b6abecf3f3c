r"""The amortised posterior ``q_φ(z | x)`` of :class:`~probgen.vae.VAE`: a diagonal Gaussian, optionally pushed
through conditional flow layers (inverse autoregressive or affine coupling) given a context ``h(x)``.

.. math::

    z_0 \sim N(\mathrm{loc}(x), \mathrm{diag}\,\mathrm{scale}(x)^2),\quad z_K = f_K \circ \dots \circ f_1(z_0),
    \qquad \log q(z_K | x) = \log N(z_0) - \sum_k \log \lvert\det \partial f_k / \partial z_{k-1}\rvert.

Reference:
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), "Improved Variational Inference with
    Inverse Autoregressive Flow", arXiv:1606.04934.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.nn import ConditionalAutoRegressiveNN
from torch import Tensor, nn

from probgen.vae.iwae import standard_normal_particles

__all__ = ["POSTERIORS", "build_posterior_flows", "condition_flows", "sample_posterior"]

POSTERIORS: tuple[str, ...] = ("gaussian", "iaf", "coupling")
"""Guide families: diagonal Gaussian, or that Gaussian pushed through conditional IAF / affine-coupling layers."""


def build_posterior_flows(
    kind: str, latent_dim: int, context_dim: int, num_flows: int, hidden: Sequence[int]
) -> nn.ModuleList:
    """``num_flows`` conditional Pyro transforms ``z -> z'`` given a context ``h(x)``.

    * ``"iaf"``: :class:`pyro.distributions.transforms.ConditionalAffineAutoregressive` in its numerically
      stable gated form ``z' = σ ⊙ z + (1 - σ) ⊙ m`` with ``(m, s) = ARN(z, h)``, ``σ = sigmoid(s)``
      (Kingma et al. 2016, eq. 14). Its forward (sampling) direction costs one network pass.
    * ``"coupling"``: :class:`pyro.distributions.transforms.ConditionalAffineCoupling` (Dinh et al. 2017,
      arXiv:1605.08803), the untouched half and ``h`` setting the affine map of the other half.

    :class:`VAE` reverses the latent coordinates between layers.
    """
    layers = []
    for _ in range(num_flows):
        if kind == "iaf":
            arn = ConditionalAutoRegressiveNN(
                latent_dim, context_dim, list(hidden), permutation=torch.arange(latent_dim)
            )
            layers.append(T.ConditionalAffineAutoregressive(arn, stable=True))
        else:
            layers.append(T.conditional_affine_coupling(latent_dim, context_dim, hidden_dims=list(hidden)))
    return nn.ModuleList(layers)


def condition_flows(flows: nn.ModuleList | None, context: Tensor | None, latent_dim: int) -> list:
    """The flow layers conditioned on ``context: (B, context_dim)``, with the latent coordinates reversed between
    layers (``[]`` for a Gaussian posterior, ``flows=None``)."""
    if flows is None:
        return []
    reverse = torch.arange(latent_dim - 1, -1, -1, device=context.device)
    out: list = []
    for i, layer in enumerate(flows):
        if i > 0:
            out.append(T.Permute(reverse))
        out.append(layer.condition(context))
    return out


def sample_posterior(
    loc: Tensor, scale: Tensor, transforms: list, num: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """``num`` draws ``z ~ q(z|x)``, ``(num, B, L)``, with their log-densities ``log q(z|x)``, ``(num, B)``.

    Example:
        >>> z, log_q = sample_posterior(torch.zeros(2, 3), torch.ones(2, 3), [], 4, None)
        >>> z.shape, log_q.shape
        (torch.Size([4, 2, 3]), torch.Size([4, 2]))
    """
    eps = standard_normal_particles(num, loc.shape, like=loc, generator=generator)
    z = loc + scale * eps
    log_q = dist.Normal(loc, scale).to_event(1).log_prob(z)
    for t in transforms:
        z_next = t(z)
        log_q = log_q - t.log_abs_det_jacobian(z, z_next)
        z = z_next
    return z, log_q
