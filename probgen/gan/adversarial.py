"""The shared two-player machinery of :class:`~probgen.gan.GAN` and :class:`~probgen.gan.WGANGP`.

:class:`AdversarialModel` holds the generator as a Pyro program (``z ~ N(0, I)``, ``x = G(z)``), sampling,
the distribution view, the ``k``-discriminator-updates-then-one-generator-update :meth:`~AdversarialModel.training_step`
that :func:`probgen.fit` calls, its diagnostics and the checkpoint ``config()``. A family subclass
(:mod:`probgen.gan.models`) supplies only its two objectives and its own options.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from probgen._checks import (
    check_choice,
    check_events,
    check_int,
    check_interval,
    check_output_shape,
    check_positive,
    check_shape_arg,
    check_widths,
)
from probgen.gan.conv_nets import (
    DISCRIMINATOR_NORMS,
    ConvDiscriminator,
    ConvGenerator,
    DCGANDiscriminator,
    DCGANGenerator,
)
from probgen.gan.losses import sample_diversity
from probgen.gan.nets import _Discriminator, _Generator
from probgen.nn import ACTIVATIONS
from probgen.protocol import ModelDistribution

__all__ = ["AdversarialModel", "BATCH_MODES", "CONV_ARCHS"]

#: the image networks ``conv_channels=`` builds: ``"dcgan"`` (default; :class:`~probgen.gan.conv_nets.DCGANGenerator`
#: with batch normalisation and :class:`~probgen.gan.conv_nets.DCGANDiscriminator`) or ``"upsample"`` (the earlier
#: :class:`~probgen.gan.conv_nets.ConvGenerator` / :class:`~probgen.gan.conv_nets.ConvDiscriminator`, no
#: normalisation; kept for checkpoints written with them)
CONV_ARCHS: tuple[str, ...] = ("dcgan", "upsample")


BATCH_MODES: tuple[str, ...] = ("reuse", "split")
"""How the ``k`` discriminator (critic) updates of one :meth:`AdversarialModel.training_step` use the
minibatch: ``"reuse"`` (default) runs every update on the whole minibatch against fresh generator draws;
``"split"`` cuts it into ``k`` disjoint parts, so each update sees new real data as in Algorithm 1 of
Gulrajani et al. (``batch_size = k * m`` then gives their critic batch ``m``). On 8gaussians with
``batch_size=256`` "reuse" trained WGAN-GP more stably (critic batches of 256 rather than 51; see
``docs/gan.md``)."""

_DEFAULT_HIDDEN = (128, 128, 128)


# ----------------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` of ``module``'s parameters for the block (no wasted gradients)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _grad_norm(params: Sequence[Tensor], like: Tensor) -> Tensor:
    """Euclidean norm of all the gradients of ``params``, as a 0-d tensor on their device (no sync)."""
    norms = [torch.linalg.vector_norm(p.grad.detach()) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else like.new_zeros(())


def _check_conv_channels(channels: Any, event_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(event_shape) != 3:
        raise ValueError(f"conv_channels needs an image event shape (C, H, W), got {event_shape}")
    return check_widths("conv_channels", channels, min_len=1)


def _check_betas(betas: Any) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2) of Adam coefficients in [0, 1), got {betas!r}")
    out = tuple(check_interval(f"betas[{i}]", b, 0.0, 1.0) for i, b in enumerate(betas))
    for i, b in enumerate(out):
        if b >= 1.0:
            raise ValueError(f"betas[{i}] must lie in [0, 1), got {b}")
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------
# the shared two-player model


class AdversarialModel(nn.Module):
    r"""Shared machinery of :class:`GAN` and :class:`WGANGP`: the generator program, sampling, the
    two-player ``training_step`` and its diagnostics. Subclasses supply the two objectives.

    One ``fit`` step (:meth:`training_step`) is ``k`` discriminator/critic updates followed by one
    generator update (``k = d_steps`` for :class:`GAN`, ``n_critic`` for :class:`WGANGP`). With the
    default ``batch_mode="reuse"`` every one of the ``k`` updates uses the whole minibatch of ``B`` data
    points against ``B`` fresh generator draws; with ``"split"`` the minibatch is cut into ``k`` disjoint
    parts, one per update (``fit(..., batch_size=k * m)`` then reproduces the papers' critic minibatch
    ``m``). The generator update draws ``B`` fresh latents. ``steps`` of ``fit`` count generator updates.

    Metrics returned by :meth:`training_step` (recorded by :func:`probgen.fit` in
    ``history.metrics``):

    * ``"d_loss"``: the discriminator/critic loss, averaged over the ``k`` updates (before each update);
    * ``"g_loss"``: the generator loss before its update;
    * ``"grad_norm_d"`` / ``"grad_norm_g"``: the Euclidean norm of each player's parameter gradient
      (the discriminator's averaged over its ``k`` updates) — vanishing ``grad_norm_g`` with a confident
      discriminator is the saturation that the non-saturating loss and WGAN-GP avoid;
    * ``"diversity"``: :func:`sample_diversity` of the generator's batch against the real batch — it
      falls well below 1 when the generator collapses onto few modes;
    * family-specific entries (``"d_acc"`` for GAN; ``"gp"`` and ``"wasserstein_estimate"`` for WGAN-GP).

    Args (shared by :class:`~probgen.gan.GAN` and :class:`~probgen.gan.WGANGP`, keyword-only after
    ``event_shape``):
        event_shape: shape of one data point, or its dimension (``2`` for ``(2,)``).
        latent_dim: ``L``, the dimension of ``z``.
        generator: custom ``nn.Module`` ``(B, L) -> (B, *event_shape)``; default an MLP.
        discriminator: custom ``nn.Module`` ``(B, *event_shape) -> (B,)`` (logits for GAN, the critic ``f``
            for WGAN-GP); default an MLP.
        hidden: hidden widths of the built-in MLPs.
        activation: activation of the built-in MLPs (a name for ``config()``).
        betas: Adam ``(β₁, β₂)``; default the family's (``_betas_default``).
        batch_mode: ``"reuse"`` or ``"split"`` (see :data:`BATCH_MODES`).
        conv_channels: for image events ``(C, H, W)``: build convolutional nets with these channel counts
            (per stride-2 level, from the image side) instead of MLPs; recorded by ``config()`` so that
            checkpoints rebuild them.
        conv_arch: which conv nets (:data:`CONV_ARCHS`): ``"dcgan"`` (default) builds
            :class:`~probgen.gan.conv_nets.DCGANGenerator` (batch normalisation, tanh output; sampled in eval
            mode) and :class:`~probgen.gan.conv_nets.DCGANDiscriminator`; ``"upsample"`` the earlier
            :class:`~probgen.gan.conv_nets.ConvGenerator` / :class:`~probgen.gan.conv_nets.ConvDiscriminator`.
        conv_norm: the DCGAN discriminator's normalisation (:data:`~probgen.gan.conv_nets.DISCRIMINATOR_NORMS`):
            ``"none"`` (default; on MNIST spectral normalisation did not train faster, docs/gan.md "GANs on
            MNIST"), ``"spectral"`` or ``"layer"``; the ``"upsample"`` nets take ``"none"`` only.
        num_updates: ``k``, discriminator (critic) updates per generator update; a subclass exposes it under
            its paper's name (``_num_updates_name``: ``d_steps`` for GAN, ``n_critic`` for WGAN-GP).
        num_updates_name: deprecated (warns): that name, now the class attribute ``_num_updates_name``.

    Attributes:
        generator: ``G: (B, latent_dim) -> (B, *event_shape)``.
        discriminator: ``D: (B, *event_shape) -> (B,)`` (the critic of WGAN-GP).
    """

    family: str = ""
    _betas_default: tuple[float, float] = (0.5, 0.999)
    _num_updates_name: str = "num_updates"

    def __init__(
        self,
        event_shape: int | Sequence[int],
        *,
        latent_dim: int = 8,
        generator: nn.Module | None = None,
        discriminator: nn.Module | None = None,
        hidden: Sequence[int] = _DEFAULT_HIDDEN,
        activation: str | Callable = "relu",
        betas: Sequence[float] | None = None,
        batch_mode: str = "reuse",
        conv_channels: Sequence[int] | None = None,
        conv_arch: str = "dcgan",
        conv_norm: str = "none",
        num_updates: int = 1,
        num_updates_name: str | None = None,
    ) -> None:
        super().__init__()
        self.event_shape = check_shape_arg("event_shape", event_shape)
        self.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        self.hidden = check_widths("hidden", hidden)
        if isinstance(activation, str):
            check_choice("activation", activation, tuple(ACTIVATIONS))
        elif not callable(activation):
            raise TypeError(f"activation must be a name ({', '.join(map(repr, ACTIVATIONS))}) or a callable, "
                            f"got {type(activation).__name__}")
        self.activation = activation
        self.betas = _check_betas(self._betas_default if betas is None else betas)
        self.batch_mode = check_choice("batch_mode", batch_mode, BATCH_MODES)
        if num_updates_name is not None:  # the old way of naming k, before the class attribute
            warnings.warn("AdversarialModel(num_updates_name=...) is deprecated: set the class attribute "
                          "_num_updates_name in the subclass", DeprecationWarning, stacklevel=2)
            self._num_updates_name = num_updates_name
        self.num_updates = check_int(self._num_updates_name, num_updates, minimum=1)
        for name, net in (("generator", generator), ("discriminator", discriminator)):
            if net is not None and not isinstance(net, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module or None (built-in MLP), got {type(net).__name__}")
        self._custom = tuple(n for n, net in (("generator", generator), ("discriminator", discriminator))
                             if net is not None)
        self.conv_channels = None if conv_channels is None else _check_conv_channels(conv_channels, self.event_shape)
        self.conv_arch = check_choice("conv_arch", conv_arch, CONV_ARCHS)
        self.conv_norm = check_choice("conv_norm", conv_norm, DISCRIMINATOR_NORMS)
        if self.conv_channels is not None and self.conv_arch == "upsample" and self.conv_norm != "none":
            raise ValueError(f"conv_norm={self.conv_norm!r} needs conv_arch='dcgan' (the 'upsample' nets have no "
                             "normalisation); pass conv_norm='none'")
        if self.conv_channels is not None and self.conv_arch == "dcgan":  # image GANs, rebuilt from the config
            default_g = lambda: DCGANGenerator(self.latent_dim, self.event_shape,  # noqa: E731
                                               channels=self.conv_channels)
            default_d = lambda: DCGANDiscriminator(self.event_shape, channels=self.conv_channels,  # noqa: E731
                                                   norm=self.conv_norm)
        elif self.conv_channels is not None:
            default_g = lambda: ConvGenerator(self.latent_dim, self.event_shape,  # noqa: E731
                                              channels=self.conv_channels, output="tanh")
            default_d = lambda: ConvDiscriminator(self.event_shape, channels=self.conv_channels)  # noqa: E731
        else:
            default_g = lambda: _Generator(self.latent_dim, self.event_shape, self.hidden, activation)  # noqa: E731
            default_d = lambda: _Discriminator(self.event_shape, self.hidden, activation)  # noqa: E731
        self.generator = generator if generator is not None else default_g()
        self.discriminator = discriminator if discriminator is not None else default_d()
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # follows .to() / .double()
        if self._custom:
            self._probe_networks()

    # --- checks ------------------------------------------------------------------------------------------
    def _probe_networks(self) -> None:
        """Check custom networks' output shapes once at construction (the torchsde habit)."""
        like = next(iter(self.generator.parameters()), self._anchor)
        with torch.no_grad():
            z = torch.zeros(2, self.latent_dim, dtype=like.dtype, device=like.device)
            x = check_output_shape("generator", self.generator(z), (2, *self.event_shape))
            d = self.discriminator(x)
        if not isinstance(d, Tensor) or tuple(d.shape) not in ((2,), (2, 1)):
            got = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
            raise ValueError(f"discriminator must return shape (batch,) or (batch, 1), got {got} for a batch of 2")

    def _check_x(self, name: str, x: Any) -> Tensor:
        return check_events(name, x, self.event_shape, dtype=self._anchor.dtype)

    # --- the generator as a Pyro program -----------------------------------------------------------------
    def model(self, num_samples: int) -> Tensor:
        """The generator as a Pyro program: ``z ~ N(0, I_L)`` (site ``"z"``), ``x = G(z)`` (site ``"x"``).

        Args:
            num_samples: number of draws ``n`` (the size of ``pyro.plate("samples", n)``).

        Returns:
            ``x: (n, *event_shape)``.
        """
        num_samples = check_int("num_samples", num_samples, minimum=1)
        loc = torch.zeros((), dtype=self._anchor.dtype, device=self._anchor.device)
        prior = dist.Normal(loc, torch.ones_like(loc)).expand([self.latent_dim]).to_event(1)
        with pyro.plate("samples", num_samples):
            z = pyro.sample("z", prior)
            x = pyro.deterministic("x", self.generate(z), event_dim=len(self.event_shape))
        return x

    def generate(self, z: Tensor) -> Tensor:
        """``G(z)``: map latents ``z: (B, latent_dim)`` to points ``(B, *event_shape)``."""
        return self.generator(z)

    def sample(self, num_samples: int) -> Tensor:
        """Draw ``num_samples`` points by running :meth:`model` (without gradients), with the generator in
        ``eval()`` mode for the call (batch normalisation then uses its running statistics, so each draw depends
        on its own ``z`` only; the generator's mode is restored afterwards).

        Seed with ``pyro.set_rng_seed`` / ``torch.manual_seed``: the same seed gives the same draws.

        Returns:
            ``(num_samples, *event_shape)`` on the model's device and dtype.
        """
        was_training = self.generator.training
        self.generator.eval()
        try:
            with torch.no_grad():
                return self.model(num_samples)
        finally:
            self.generator.train(was_training)

    def _draw_latents(self, n: int) -> Tensor:
        return torch.randn(n, self.latent_dim, dtype=self._anchor.dtype, device=self._anchor.device)

    def _scores(self, x: Tensor) -> Tensor:
        out = self.discriminator(x)
        return out.reshape(x.shape[0])

    def as_distribution(self) -> ModelDistribution:
        """The generator as a Pyro distribution that can be sampled but not scored.

        A GAN's ``p_θ`` is the push-forward of ``N(0, I)`` through ``G``, which has no tractable density
        (none at all when ``latent_dim < D``); ``log_prob`` raises ``NotImplementedError``. Estimate a
        likelihood from samples with :func:`probgen.metrics.kde_log_likelihood` if needed.
        """
        return ModelDistribution(self, self.event_shape, log_prob_fn=self._no_log_prob)

    def _no_log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} has no log_prob: a GAN's distribution is an implicit push-forward G(z), "
            "z ~ N(0, I), without a tractable density; use probgen.metrics.kde_log_likelihood on samples or "
            "sample-based metrics (mmd, precision_recall)"
        )

    # --- objectives (subclasses) -------------------------------------------------------------------------
    def _discriminator_objective(self, real: Tensor, fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, extras)``: the loss to back-propagate and detached 0-d diagnostics to average."""
        raise NotImplementedError

    def _generator_objective(self, fake_scores: Tensor) -> Tensor:
        raise NotImplementedError

    def loss(self, x: Tensor) -> Tensor:
        """The generator's loss on a batch of fresh draws (as many as ``x`` has rows), for the protocol.

        Training does not use it: :func:`probgen.fit` calls :meth:`training_step`, which alternates the
        discriminator and generator updates. ``x`` only sets the batch size (and is validated).

        Returns:
            A scalar tensor, differentiable with respect to the generator's parameters.
        """
        x = self._check_x("x", x)
        fake = self.generate(self._draw_latents(x.shape[0]))
        return self._generator_objective(self._scores(fake))

    # --- training ----------------------------------------------------------------------------------------
    def configure_optimizers(self, lr: float) -> list[Optimizer]:
        """Adam for each player, with the papers' ``betas``: ``[discriminator_opt, generator_opt]``."""
        lr = check_positive("lr", lr)
        return [
            torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=self.betas),
            torch.optim.Adam(self.generator.parameters(), lr=lr, betas=self.betas),
        ]

    def _check_optimizers(self, optimizers: Any) -> tuple[Optimizer, Optimizer]:
        if not isinstance(optimizers, (list, tuple)) or len(optimizers) != 2 or not all(
                isinstance(o, Optimizer) for o in optimizers):
            raise TypeError(
                "optimizers must be the list [discriminator_optimizer, generator_optimizer] returned by "
                f"configure_optimizers(lr), got {optimizers!r}"
            )
        return optimizers[0], optimizers[1]

    def _real_parts(self, real: Tensor) -> list[Tensor]:
        k = self.num_updates
        if self.batch_mode == "reuse" or k == 1:
            return [real] * k
        if real.shape[0] < 2 * k:
            raise ValueError(
                f"batch_mode='split' cuts each minibatch into {self._num_updates_name}={k} parts of at least 2 "
                f"points, so the batch needs >= {2 * k} rows, got {real.shape[0]}; raise batch_size or use "
                "batch_mode='reuse'"
            )
        return list(torch.tensor_split(real, k))

    def training_step(self, batch: tuple[Tensor, ...] | Tensor, optimizers: Sequence[Optimizer]) -> dict[str, float]:
        """One round of the game: ``k`` discriminator (critic) updates, then one generator update.

        Args:
            batch: ``(x,)`` with ``x: (B, *event_shape)`` (extra tensors such as labels are ignored).
            optimizers: ``[discriminator_opt, generator_opt]`` from :meth:`configure_optimizers`.

        Returns:
            ``{"loss", "d_loss", "g_loss", "grad_norm_d", "grad_norm_g", "diversity", ...}`` as floats;
            see the class docstring and the subclasses for the family-specific entries and for which
            value is reported as ``"loss"``.
        """
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        real = self._check_x("batch[0]", real)
        opt_d, opt_g = self._check_optimizers(optimizers)
        parts = self._real_parts(real)

        d_params = [p for p in self.discriminator.parameters() if p.requires_grad]
        g_params = [p for p in self.generator.parameters() if p.requires_grad]
        # running sums kept as tensors on the model's device; converted to floats once, at the end
        d_sums: dict[str, Tensor] = {}
        d_loss_sum = grad_d_sum = self._anchor.new_zeros(())
        for part in parts:
            with torch.no_grad():
                fake = self.generate(self._draw_latents(part.shape[0]))
            opt_d.zero_grad(set_to_none=True)
            d_loss, extras = self._discriminator_objective(part, fake)
            d_loss.backward()
            grad_d_sum = grad_d_sum + _grad_norm(d_params, d_loss)
            opt_d.step()
            d_loss_sum = d_loss_sum + d_loss.detach()
            for key, value in extras.items():
                d_sums[key] = d_sums[key] + value if key in d_sums else value

        opt_g.zero_grad(set_to_none=True)
        fake = self.generate(self._draw_latents(real.shape[0]))
        with _frozen(self.discriminator):
            g_loss = self._generator_objective(self._scores(fake))
        g_loss.backward()
        grad_g = _grad_norm(g_params, g_loss)
        opt_g.step()

        k = len(parts)
        values = {key: value / k for key, value in d_sums.items()}
        values.update({
            "d_loss": d_loss_sum / k,
            "g_loss": g_loss.detach(),
            "grad_norm_d": grad_d_sum / k,
            "grad_norm_g": grad_g,
            "diversity": sample_diversity(fake.detach(), real),
        })
        names = list(values)
        floats = torch.stack([values[n].to(real.dtype) for n in names]).tolist()  # one device sync
        metrics = dict(zip(names, floats))
        metrics["loss"] = metrics[self._reported_loss]
        return metrics

    _reported_loss: str = "g_loss"

    # --- checkpoints -------------------------------------------------------------------------------------
    def _base_config(self) -> dict[str, Any]:
        if self._custom:
            raise TypeError(
                f"config() needs the built-in networks; this {type(self).__name__} has a custom "
                f"{' and '.join(self._custom)} (save its state_dict and rebuild it yourself)"
            )
        if not isinstance(self.activation, str):
            raise TypeError(f"config() needs the activation given by name, got {self.activation!r}")
        return {
            "event_shape": list(self.event_shape),
            "latent_dim": self.latent_dim,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "betas": list(self.betas),
            "batch_mode": self.batch_mode,
            self._num_updates_name: self.num_updates,
            **({"conv_channels": list(self.conv_channels), "conv_arch": self.conv_arch, "conv_norm": self.conv_norm}
               if self.conv_channels is not None else {}),
        }

    def config(self) -> dict[str, Any]:
        """JSON-safe constructor arguments: ``type(m)(**m.config())`` rebuilds the architecture."""
        return self._base_config()

    def extra_repr(self) -> str:
        return (f"event_shape={self.event_shape}, latent_dim={self.latent_dim}, "
                f"{self._num_updates_name}={self.num_updates}, batch_mode={self.batch_mode!r}")


