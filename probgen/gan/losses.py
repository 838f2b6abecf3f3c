r"""The objectives of the two players, as plain functions of the discriminator (critic) outputs.

**GAN** (Goodfellow et al. 2014). With ``D_φ`` returning a logit and ``σ`` the logistic function,
the discriminator minimises the binary cross-entropy and the generator the *non-saturating* loss,

.. math::

    \mathcal L_D = -\mathbb E_{x \sim p}\log σ(D(x)) - \mathbb E_z \log\big(1 - σ(D(G(z)))\big),
    \qquad \mathcal L_G = -\mathbb E_z \log σ\big(D(G(z))\big).

**WGAN-GP** (Arjovsky et al. 2017; Gulrajani et al. 2017): the critic loss with the gradient penalty
at random interpolates ``x̂ = ε x + (1 - ε) x̃``,

.. math::

    \mathcal L_f = \mathbb E_z f(G(z)) - \mathbb E_{x} f(x)
      + λ\, \mathbb E_{x̂}\big(\lVert \nabla_{x̂} f(x̂) \rVert_2 - 1\big)^2,
    \qquad \mathcal L_G = -\mathbb E_z f(G(z)).

Also :func:`sample_diversity`, the mode-collapse signal recorded at every step. The networks are in
:mod:`probgen.gan.nets`, the models in :mod:`probgen.gan.models`.

References:
    Goodfellow et al. (2014), "Generative Adversarial Nets", arXiv:1406.2661.
    Gulrajani et al. (2017), "Improved Training of Wasserstein GANs", arXiv:1704.00028.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from probgen._checks import check_tensor
from probgen.ops.shapes import append_dims, flatten_event

__all__ = [
    "discriminator_loss",
    "nonsaturating_generator_loss",
    "wasserstein_critic_loss",
    "wasserstein_generator_loss",
    "gradient_penalty",
    "sample_diversity",
]

# ----------------------------------------------------------------------------------------------------
# objectives (plain functions of the discriminator outputs: the math kept apart from the networks)


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    r"""Binary cross-entropy of a logit discriminator, real labelled 1 and fake 0.

    .. math::

        \mathcal L_D = \tfrac1B \sum_b \operatorname{softplus}(-D(x_b))
          + \tfrac1{B'} \sum_b \operatorname{softplus}(D(\tilde x_b)),

    since ``-log σ(a) = softplus(-a)`` and ``-log(1 - σ(a)) = softplus(a)`` (computed stably).

    Args:
        real_logits: ``(B,)`` discriminator logits on data.
        fake_logits: ``(B',)`` logits on generated samples.

    Returns:
        A scalar tensor.

    Reference:
        Goodfellow et al. (2014), arXiv:1406.2661, eq. 1.

    Example:
        >>> round(discriminator_loss(torch.zeros(4), torch.zeros(4)).item(), 4)   # 2 log 2
        1.3863
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def nonsaturating_generator_loss(fake_logits: Tensor) -> Tensor:
    r"""The non-saturating generator loss ``-E log σ(D(G(z)))``.

    .. math::

        \mathcal L_G = \tfrac1B \sum_b -\log σ\big(D(G(z_b))\big) = \tfrac1B \sum_b
          \operatorname{softplus}\big(-D(G(z_b))\big).

    Args:
        fake_logits: ``(B,)`` discriminator logits on generated samples.

    Reference:
        Goodfellow et al. (2014), arXiv:1406.2661, section 3.

    Example:
        >>> round(nonsaturating_generator_loss(torch.zeros(3)).item(), 4)   # log 2
        0.6931
    """
    return F.softplus(-fake_logits).mean()


def wasserstein_critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    r"""The critic's part of the WGAN objective, ``E f(x̃) - E f(x)`` (its negative estimates ``W_1``).

    Args:
        real_scores: ``(B,)`` critic values on data.
        fake_scores: ``(B',)`` critic values on generated samples.

    Reference:
        Arjovsky et al. (2017), arXiv:1701.07875, eq. 3.

    Example:
        >>> wasserstein_critic_loss(torch.tensor([2.0, 4.0]), torch.tensor([1.0])).item()
        -2.0
    """
    return fake_scores.mean() - real_scores.mean()


def wasserstein_generator_loss(fake_scores: Tensor) -> Tensor:
    r"""The WGAN generator loss ``-E f(G(z))``.

    Example:
        >>> wasserstein_generator_loss(torch.tensor([1.0, 3.0])).item()
        -2.0
    """
    return -fake_scores.mean()


def _interpolate(real: Tensor, fake: Tensor, eps: Tensor) -> Tensor:
    eps = append_dims(eps.to(real.dtype), real.dim())
    return eps * real + (1.0 - eps) * fake


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    eps: Tensor | None = None,
    create_graph: bool = True,
) -> Tensor:
    r"""Two-sided gradient penalty of WGAN-GP at random interpolates of real and fake points.

    .. math::

        \mathrm{GP} = \tfrac1B \sum_b \big(\lVert \nabla_{x} f(x)\rvert_{x = x̂_b} \rVert_2 - 1\big)^2,
        \qquad x̂_b = ε_b x_b + (1 - ε_b)\, \tilde x_b,\quad ε_b \sim U[0, 1].

    The gradient is per sample (``f`` must act on each row separately, as an MLP without batch
    normalisation does), its norm taken over every event dimension. For a linear critic
    ``f(x) = wᵀx + c`` the gradient is ``w`` everywhere, so ``GP = (‖w‖ - 1)²``.

    Args:
        critic: ``f: (B, *event) -> (B,)`` (or ``(B, 1)``).
        real: ``(B, *event)`` data.
        fake: ``(B, *event)`` generated samples (detached or not; the penalty only differentiates
            through the interpolate).
        eps: optional ``(B,)`` interpolation weights in ``[0, 1]``; drawn ``U[0, 1]`` when ``None``.
        create_graph: keep the graph of the gradient so that the penalty can be back-propagated to the
            critic's parameters (needed for training; ``False`` for monitoring).

    Returns:
        A scalar tensor (the unweighted penalty; WGAN-GP multiplies it by ``λ``).

    Reference:
        Gulrajani et al. (2017), arXiv:1704.00028, eq. 3 and Algorithm 1.

    Example:
        >>> critic = lambda x: x @ torch.tensor([3.0, 4.0])           # ‖w‖ = 5
        >>> gradient_penalty(critic, torch.randn(6, 2), torch.randn(6, 2)).item()
        16.0
    """
    check_tensor("real", real, min_ndim=2)
    check_tensor("fake", fake, min_ndim=2)
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    batch = real.shape[0]
    if eps is not None:
        check_tensor("eps", eps, ndim=1)
        if eps.shape[0] != batch:
            raise ValueError(f"eps must have shape ({batch},), got {tuple(eps.shape)}")
        if bool((eps < 0).any()) or bool((eps > 1).any()):
            raise ValueError("eps must lie in [0, 1]")
    return _penalty(critic, real, fake, eps, create_graph)


def _penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, eps: Tensor | None,
             create_graph: bool) -> Tensor:
    """:func:`gradient_penalty` without the argument checks (the training loop's path: no device syncs)."""
    batch = real.shape[0]
    if eps is None:
        eps = torch.rand(batch, device=real.device, dtype=real.dtype)
    x_hat = _interpolate(real.detach(), fake.detach(), eps).requires_grad_(True)
    with torch.enable_grad():
        scores = critic(x_hat)
        if not isinstance(scores, Tensor) or scores.numel() != batch:
            got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(f"critic must return one value per sample, shape ({batch},) or ({batch}, 1); got {got}")
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=create_graph)
    norm = flatten_event(grad).norm(dim=1)
    return ((norm - 1.0) ** 2).mean()


# ----------------------------------------------------------------------------------------------------
# diagnostics


def _mean_pairwise_distance(x: Tensor) -> Tensor:
    flat = flatten_event(x)
    if flat.shape[0] < 2:
        raise ValueError(f"need at least 2 points for a pairwise distance, got {flat.shape[0]}")
    return torch.pdist(flat).mean()


def sample_diversity(samples: Tensor, reference: Tensor) -> Tensor:
    r"""Mean pairwise distance of ``samples`` relative to that of ``reference`` (a mode-collapse signal).

    .. math::

        \mathrm{diversity} = \frac{\binom{B}{2}^{-1}\sum_{i<j} \lVert \tilde x_i - \tilde x_j\rVert_2}
                                  {\binom{M}{2}^{-1}\sum_{i<j} \lVert x_i - x_j\rVert_2}.

    About 1 when the generator spreads like the data; well below 1 when it collapses onto few modes
    (a generator stuck on one mode of 8gaussians gives ``≈ σ / R``, about 0.15).

    Args:
        samples: ``(B, *event)`` generated points, ``B >= 2``.
        reference: ``(M, *event)`` data points, ``M >= 2``.

    Example:
        >>> x = torch.randn(200, 2)
        >>> round(sample_diversity(x, x).item(), 6)
        1.0
    """
    with torch.no_grad():
        return _mean_pairwise_distance(samples) / _mean_pairwise_distance(reference).clamp_min(1e-12)


