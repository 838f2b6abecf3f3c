r"""Generative adversarial networks: the original GAN (non-saturating) and WGAN-GP.

The generator is a Pyro program: a latent draw pushed through a network,

.. code-block:: text

    model(n):  z_b ~ N(0, I_L)               (site "z", under pyro.plate("samples", n))
               x_b = G_θ(z_b)                (pyro.deterministic site "x")

so ``pyro.poutine.trace(gan.model).get_trace(n)`` records both sites and :meth:`GAN.sample` runs that
program. A GAN defines no density, hence no ``log_prob``: it is trained by a two-player game against a
discriminator (GAN) or critic (WGAN-GP) ``D_φ``.

**GAN** (Goodfellow et al. 2014). With ``D_φ`` returning a logit and ``σ`` the logistic function,
the discriminator minimises the binary cross-entropy and the generator the *non-saturating* loss,

.. math::

    \mathcal L_D = -\mathbb E_{x \sim p}\log σ(D(x)) - \mathbb E_z \log\big(1 - σ(D(G(z)))\big),
    \qquad \mathcal L_G = -\mathbb E_z \log σ\big(D(G(z))\big),

which has the fixed points of the minimax game but strong gradients early in training.

**WGAN-GP** (Arjovsky et al. 2017; Gulrajani et al. 2017). The critic ``f = D_φ`` estimates the
Kantorovich–Rubinstein dual of the Wasserstein-1 distance; the 1-Lipschitz constraint is softened into a
penalty on the gradient norm at random interpolates ``x̂ = ε x + (1 - ε) x̃``, ``ε ~ U[0, 1]``:

.. math::

    \mathcal L_f = \mathbb E_z f(G(z)) - \mathbb E_{x} f(x)
      + λ\, \mathbb E_{x̂}\big(\lVert \nabla_{x̂} f(x̂) \rVert_2 - 1\big)^2,
    \qquad \mathcal L_G = -\mathbb E_z f(G(z)),

and ``Ŵ = E_x f(x) - E_z f(G(z))`` is the running estimate of ``W_1(p, p_θ)`` (up to the Lipschitz
constant reached by the critic).

References:
    Goodfellow et al. (2014), "Generative Adversarial Nets", arXiv:1406.2661.
    Arjovsky, Chintala & Bottou (2017), "Wasserstein GAN", arXiv:1701.07875.
    Gulrajani et al. (2017), "Improved Training of Wasserstein GANs", arXiv:1704.00028.
    Metz et al. (2016), "Unrolled Generative Adversarial Networks", arXiv:1611.02163 (the 8-Gaussians
    mode-collapse setting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from probgen._checks import check_nonnegative
from probgen.gan.adversarial import BATCH_MODES, AdversarialModel  # noqa: F401 - BATCH_MODES used to live here
from probgen.gan.losses import (
    _penalty,
    discriminator_loss,
    nonsaturating_generator_loss,
    wasserstein_critic_loss,
    wasserstein_generator_loss,
)

__all__ = ["GAN", "WGANGP"]


class GAN(AdversarialModel):
    r"""The original GAN with the non-saturating generator loss (Goodfellow et al. 2014).

    .. math::

        \mathcal L_D = -\mathbb E_{x}\log σ(D(x)) - \mathbb E_z \log\big(1 - σ(D(G(z)))\big),\qquad
        \mathcal L_G = -\mathbb E_z \log σ\big(D(G(z))\big),

    ``D`` returning logits. One :meth:`training_step` = ``d_steps`` discriminator updates + one generator
    update (see :class:`AdversarialModel`); the metrics add ``"d_acc"``, the discriminator's accuracy on
    its real and fake points (logit > 0 means "real"; about 0.5 at equilibrium, near 1 when it wins).
    ``history.losses`` records ``"g_loss"``, the same quantity as :meth:`loss`.

    Args:
        event_shape: shape of one data point, or its dimension (``2`` for ``(2,)``).
        d_steps: discriminator updates per generator update (``k`` of Goodfellow et al.'s Algorithm 1).
        **options: the options shared with :class:`WGANGP`, documented on
            :class:`~probgen.gan.adversarial.AdversarialModel`: ``latent_dim=8``, ``generator``,
            ``discriminator`` (of logits), ``hidden=(128, 128, 128)``, ``activation="relu"``, ``betas``
            (default ``(0.5, 0.999)``, Radford et al. 2015, arXiv:1511.06434), ``batch_mode="reuse"``,
            ``conv_channels``, ``conv_arch="dcgan"``, ``conv_norm="none"`` (or ``"spectral"``, Miyato et al. 2018).

    Shapes:
        ``sample(n)``: ``(n, *event_shape)``; ``loss(x)``: scalar.

    References:
        Goodfellow et al. (2014), arXiv:1406.2661.

    Example:
        >>> gan = GAN(2, latent_dim=2, hidden=(16,))
        >>> gan.sample(5).shape
        torch.Size([5, 2])
        >>> out = gan.training_step((torch.randn(8, 2),), gan.configure_optimizers(1e-3))
        >>> sorted(out)
        ['d_acc', 'd_loss', 'diversity', 'g_loss', 'grad_norm_d', 'grad_norm_g', 'loss']
    """

    family = "gan"
    _betas_default = (0.5, 0.999)
    _num_updates_name = "d_steps"

    def __init__(self, event_shape: int | Sequence[int], *, d_steps: int = 1, **options: Any) -> None:
        super().__init__(event_shape, num_updates=d_steps, **options)

    @property
    def d_steps(self) -> int:
        """Discriminator updates per generator update."""
        return self.num_updates

    def _discriminator_objective(self, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        real_logits = self._scores(real)
        fake_logits = self._scores(fake)
        loss = discriminator_loss(real_logits, fake_logits)
        with torch.no_grad():
            correct = (real_logits > 0).sum() + (fake_logits <= 0).sum()
            acc = correct.to(real_logits.dtype) / (real_logits.numel() + fake_logits.numel())
        return loss, {"d_acc": acc}

    def _generator_objective(self, fake_scores: Tensor) -> Tensor:
        return nonsaturating_generator_loss(fake_scores)


class WGANGP(AdversarialModel):
    r"""Wasserstein GAN with gradient penalty (Gulrajani et al. 2017).

    .. math::

        \mathcal L_f = \mathbb E_z f(G(z)) - \mathbb E_x f(x) + λ\,\mathbb E_{x̂}\big(\lVert\nabla f(x̂)\rVert_2 - 1\big)^2,
        \qquad \mathcal L_G = -\mathbb E_z f(G(z)).

    One :meth:`training_step` = ``n_critic`` critic updates + one generator update (Algorithm 1 of the
    paper); with the default ``batch_mode="reuse"`` each critic update sees the whole minibatch (and
    fresh generator draws), with ``"split"`` its own ``B / n_critic`` rows. Metrics add ``"gp"`` (the
    unweighted penalty) and
    ``"wasserstein_estimate"`` ``Ŵ = E f(x) - E f(x̃)`` (averaged over the critic updates), which
    decreases as the samples improve (Arjovsky et al. 2017, section 4.2). ``history.losses`` records
    the critic loss ``"d_loss"`` (``= -Ŵ + λ GP``), the meaningful training curve of a WGAN, while
    :meth:`loss` returns the generator loss ``-E f(G(z))`` for the protocol.

    Args:
        event_shape: shape of one data point, or its dimension (``2`` for ``(2,)``).
        gp_weight: ``λ`` (10 in the paper; 0 turns the penalty off, an unconstrained critic).
        n_critic: critic updates per generator update (5 in the paper).
        **options: as in :class:`GAN` (see :class:`~probgen.gan.adversarial.AdversarialModel`), except that
            ``discriminator`` is the critic ``f: (B, *event_shape) -> (B,)``, which must act per sample (no
            batch normalisation) for the penalty to be right, ``betas`` defaults to ``(0.0, 0.9)`` as in
            the paper (the critic never uses batch normalisation; ``conv_norm="layer"`` is the per-sample
            normalisation Gulrajani et al. suggest instead).

    References:
        Gulrajani et al. (2017), arXiv:1704.00028; Arjovsky et al. (2017), arXiv:1701.07875.

    Example:
        >>> wgan = WGANGP(2, latent_dim=2, hidden=(16,), n_critic=2)
        >>> out = wgan.training_step((torch.randn(8, 2),), wgan.configure_optimizers(1e-3))
        >>> sorted(out)
        ['d_loss', 'diversity', 'g_loss', 'gp', 'grad_norm_d', 'grad_norm_g', 'loss', 'wasserstein_estimate']
    """

    family = "wgan-gp"
    _betas_default = (0.0, 0.9)
    _num_updates_name = "n_critic"
    _reported_loss = "d_loss"

    def __init__(self, event_shape: int | Sequence[int], *, gp_weight: float = 10.0, n_critic: int = 5,
                 **options: Any) -> None:
        super().__init__(event_shape, num_updates=n_critic, **options)
        self.gp_weight = check_nonnegative("gp_weight", gp_weight)

    @property
    def n_critic(self) -> int:
        """Critic updates per generator update."""
        return self.num_updates

    @property
    def critic(self) -> nn.Module:
        """The critic ``f`` (the same module as ``discriminator``)."""
        return self.discriminator

    def _discriminator_objective(self, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        real_scores = self._scores(real)
        fake_scores = self._scores(fake)
        critic_loss = wasserstein_critic_loss(real_scores, fake_scores)
        # with gp_weight = 0 the penalty is still measured (no graph kept): the "gp" diagnostic stays meaningful
        gp = _penalty(self._scores, real, fake, None, self.gp_weight > 0)
        loss = critic_loss + self.gp_weight * gp if self.gp_weight > 0 else critic_loss
        return loss, {
            "gp": gp.detach(),
            "wasserstein_estimate": -critic_loss.detach(),
        }

    def _generator_objective(self, fake_scores: Tensor) -> Tensor:
        return wasserstein_generator_loss(fake_scores)

    def config(self) -> dict[str, Any]:
        """JSON-safe constructor arguments: ``WGANGP(**m.config())`` rebuilds the architecture."""
        out = self._base_config()
        out["gp_weight"] = self.gp_weight
        return out
