"""``ConditionalVAE``: the conditional and semi-supervised VAE ("M2" of Kingma et al. 2014) as Pyro programs.

Generative model, for labels ``y ∈ {0, …, C-1}`` and latents ``z ∈ R^L``:

.. math::

    y \\sim \\mathrm{Cat}(1/C),\\qquad z \\sim N(0, I_L),\\qquad x \\mid y, z \\sim p_θ(x \\mid z, y),

guide ``q_φ(y | x) = Cat(π_φ(x))`` (a classifier) and ``q_φ(z | x, y) = N(μ_φ(x, y), diag σ_φ(x, y)²)``.
A labelled pair contributes the ELBO of ``log p(x, y)``,

.. math::

    \\mathcal L(x, y) = \\mathbb E_{q_φ(z|x,y)}\\big[\\log p_θ(x|z,y) + \\log p(y) + \\log p(z) - \\log q_φ(z|x,y)\\big],

and an unlabelled ``x`` (label ``-1``) the ELBO of ``log p(x)`` with ``y`` summed out exactly,

.. math::

    \\mathcal U(x) = \\sum_y q_φ(y|x)\\, \\mathcal L(x, y) + \\mathcal H\\big(q_φ(y|x)\\big).

The training loss adds the classification term of M2 on the labelled data,

.. math::

    J^α = -\\sum_{\\text{labelled}} \\mathcal L(x, y) - \\sum_{\\text{unlabelled}} \\mathcal U(x)
          + α \\sum_{\\text{labelled}} -\\log q_φ(y | x),

divided by the batch size. The sum over ``y`` is done by Pyro: the guide's ``y_u`` site is marked for
parallel enumeration (what ``pyro.infer.config_enumerate`` does) and ``TraceEnum_ELBO`` integrates it
out, following Pyro's SS-VAE example; :meth:`ConditionalVAE.elbo` writes the same sum out explicitly.

Reference:
    Kingma, Rezende, Mohamed & Welling (2014), "Semi-Supervised Learning with Deep Generative Models",
    arXiv:1406.5298; Sohn, Lee & Yan (2015), "Learning Structured Output Representation using Deep
    Conditional Generative Models" (the conditional VAE).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceEnum_ELBO
from torch import Tensor, nn
from torch.nn import functional as F

from probgen._checks import (
    check_choice,
    check_events,
    check_int,
    check_nonnegative,
    check_output_shape,
    check_widths,
)
from probgen.protocol import ModelDistribution
from probgen.vae.nets import DEFAULT_HIDDEN, Classifier, Decoder, GaussianEncoder, check_event_shape_tuple
from probgen.vae.iwae import iwae_distribution, log_mean_exp_chunked, particle_chunk, standard_normal_particles
from probgen.vae.observation import LIKELIHOODS, ObservationModel

__all__ = ["ConditionalVAE"]



class ConditionalVAE(nn.Module):
    """Conditional / semi-supervised VAE (M2): ``p(x | z, y)``, ``q(z | x, y)``, ``q(y | x)``; label ``-1`` = missing.

    Args:
        event_shape: shape of one observation, e.g. ``(1, 8, 8)``.
        num_classes: ``C``.
        latent_dim: ``L``.
        likelihood: ``"gaussian"`` (mean ``decoder(z, y)``, scale ``obs_scale``) or ``"bernoulli"`` (logits).
        obs_scale: ``σ`` of the Gaussian likelihood (initial value if ``learn_obs_scale``).
        learn_obs_scale: learn ``σ``.
        alpha: weight ``α`` of the classification loss ``-log q(y|x)`` per labelled datum (relative to the
            per-datum ELBO). Kingma et al. use ``α = 0.1 N`` on a summed objective, Pyro's SS-VAE example 46;
            the default 10 was measured on the digits (docs/vae.md).
        hidden: hidden widths of the built-in nets.
        activation: activation of the built-in nets (a name, for ``config()``).
        encoder: ``encoder(x: (N, *event), y_onehot: (N, C)) -> (loc, scale)``; ``None``: built in.
        decoder: ``decoder(z: (N, L), y_onehot: (N, C)) -> (N, *event)``; ``None``: built in.
        classifier: ``classifier(x: (N, *event)) -> logits (N, C)``; ``None``: built in.

    Shapes:
        ``x: (B, *event_shape)``, ``y: LongTensor (B,)`` with entries in ``{-1, 0, …, C-1}``.

    References:
        Kingma et al. (2014), arXiv:1406.5298; Sohn et al. (2015), NeurIPS.

    Example:
        >>> cvae = ConditionalVAE((4,), 3, 2, hidden=(16,))
        >>> x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, -1, -1, 0])
        >>> cvae.loss(x, y).shape, cvae.elbo(x, y).shape, cvae.sample(5, y=2).shape
        (torch.Size([]), torch.Size([6]), torch.Size([5, 4]))
        >>> cvae.classify(x).shape
        torch.Size([6])
    """

    family = "cvae"

    def __init__(
        self,
        event_shape: Sequence[int],
        num_classes: int,
        latent_dim: int,
        *,
        likelihood: str = "gaussian",
        obs_scale: float = 1.0,
        learn_obs_scale: bool = False,
        alpha: float = 10.0,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        activation: str | Callable = "silu",
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        classifier: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.event_shape = check_event_shape_tuple(event_shape)
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        self.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        check_choice("likelihood", likelihood, LIKELIHOODS)
        self.alpha = check_nonnegative("alpha", alpha)
        self.hidden = check_widths("hidden", hidden, min_len=1)
        self.activation = activation
        nets = (("encoder", encoder), ("decoder", decoder), ("classifier", classifier))
        for name, net in nets:
            if net is not None and not isinstance(net, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module or None (built-in net), got {type(net).__name__}")
        self._custom = tuple(name for name, net in nets if net is not None)
        C = self.num_classes
        self.encoder = encoder if encoder is not None else GaussianEncoder(
            self.event_shape, self.latent_dim, hidden=self.hidden, activation=activation, cond_features=C
        )
        self.decoder = decoder if decoder is not None else Decoder(
            self.latent_dim, self.event_shape, hidden=self.hidden[::-1], activation=activation, cond_features=C
        )
        self.classifier = classifier if classifier is not None else Classifier(self.event_shape, C, hidden=self.hidden, activation=activation)
        self.observation = ObservationModel(
            likelihood, self.event_shape, obs_scale=obs_scale, learn_obs_scale=learn_obs_scale
        )
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    # --- checks and net calls ------------------------------------------------------------------------------
    @property
    def likelihood(self) -> str:
        """``"gaussian"`` or ``"bernoulli"``."""
        return self.observation.likelihood

    def _check_x(self, x: Any) -> Tensor:
        check_events("x", x, self.event_shape, dtype=self._anchor.dtype)
        return self.observation.check_data("x", x)

    def _check_y(self, y: Any, batch_size: int, *, allow_missing: bool = True) -> Tensor:
        if y is None:
            return torch.full((batch_size,), -1, dtype=torch.long, device=self._anchor.device)
        if not isinstance(y, Tensor) or y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
            got = y.dtype if isinstance(y, Tensor) else type(y).__name__
            raise TypeError(f"y must be an integer (Long) tensor of labels, got {got}")
        if y.shape != (batch_size,):
            raise ValueError(f"y must have shape ({batch_size},) to match x, got {tuple(y.shape)}")
        low = -1 if allow_missing else 0
        if y.numel() and (int(y.min()) < low or int(y.max()) >= self.num_classes):
            valid = f"{{-1 (missing), 0, ..., {self.num_classes - 1}}}" if allow_missing else \
                f"{{0, ..., {self.num_classes - 1}}}"
            raise ValueError(f"y must hold labels in {valid}, got values in [{int(y.min())}, {int(y.max())}]")
        return y.long()

    def _onehot(self, y: Tensor) -> Tensor:
        return F.one_hot(y, self.num_classes).to(self._anchor.dtype)

    def _encode(self, x: Tensor, onehot: Tensor) -> tuple[Tensor, Tensor]:
        """``q(z|x,y)`` parameters for ``x: (..., *event)``, ``onehot: (..., C)``, leading dims broadcast."""
        n = len(self.event_shape)
        lead = torch.broadcast_shapes(x.shape[: x.dim() - n], onehot.shape[:-1])
        xf = x.expand(*lead, *self.event_shape).reshape(-1, *self.event_shape)
        out = self.encoder(xf, onehot.expand(*lead, self.num_classes).reshape(-1, self.num_classes))
        if not isinstance(out, (tuple, list)) or len(out) < 2:
            raise TypeError(f"encoder(x, y_onehot) must return (loc, scale), got {type(out).__name__}")
        want = (xf.shape[0], self.latent_dim)
        loc = check_output_shape("encoder (loc)", out[0], want)
        scale = check_output_shape("encoder (scale)", out[1], want)
        return loc.reshape(*lead, self.latent_dim), scale.reshape(*lead, self.latent_dim)

    def _decode(self, z: Tensor, onehot: Tensor) -> Tensor:
        lead = torch.broadcast_shapes(z.shape[:-1], onehot.shape[:-1])
        zf = z.expand(*lead, self.latent_dim).reshape(-1, self.latent_dim)
        out = self.decoder(zf, onehot.expand(*lead, self.num_classes).reshape(-1, self.num_classes))
        check_output_shape("decoder", out, (zf.shape[0], *self.event_shape))
        return out.reshape(*lead, *self.event_shape)

    def _logits(self, x: Tensor) -> Tensor:
        return check_output_shape("classifier", self.classifier(x), (x.shape[0], self.num_classes))

    def _prior_z(self, batch: int) -> dist.TorchDistribution:
        loc = self._anchor.new_zeros((batch, self.latent_dim))
        return dist.Normal(loc, torch.ones_like(loc)).to_event(1)

    def _prior_y(self, batch: int) -> dist.TorchDistribution:
        return dist.Categorical(logits=self._anchor.new_zeros((batch, self.num_classes)))

    # --- Pyro programs -------------------------------------------------------------------------------------
    def model(self, x: Tensor, y: Tensor | None = None) -> None:
        """``y ~ Cat(1/C)`` (observed where known), ``z ~ N(0, I)``, ``x ~ p(x | z, y)`` observed.

        Labelled and unlabelled rows live in two plates, ``"labelled"`` and ``"unlabelled"``.
        """
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        pyro.module("decoder", self.decoder)
        if self.observation.learn_obs_scale:
            pyro.module("observation", self.observation)
        known = y >= 0
        x_l, y_l, x_u = x[known], y[known], x[~known]
        if x_l.shape[0]:
            with pyro.plate("labelled", x_l.shape[0]):
                pyro.sample("y_l", self._prior_y(x_l.shape[0]), obs=y_l)
                z = pyro.sample("z_l", self._prior_z(x_l.shape[0]))
                pyro.sample("x_l", self.observation.dist(self._decode(z, self._onehot(y_l))), obs=x_l)
        if x_u.shape[0]:
            with pyro.plate("unlabelled", x_u.shape[0]):
                y_u = pyro.sample("y_u", self._prior_y(x_u.shape[0]))
                z = pyro.sample("z_u", self._prior_z(x_u.shape[0]))
                pyro.sample("x_u", self.observation.dist(self._decode(z, self._onehot(y_u))), obs=x_u)

    def guide(self, x: Tensor, y: Tensor | None = None) -> None:
        """``z ~ q(z | x, y)`` for labelled rows; ``y ~ q(y | x)`` (enumerated in parallel), ``z ~ q(z | x, y)``
        for unlabelled rows."""
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        pyro.module("encoder", self.encoder)
        pyro.module("classifier", self.classifier)
        known = y >= 0
        x_l, y_l, x_u = x[known], y[known], x[~known]
        if x_l.shape[0]:
            with pyro.plate("labelled", x_l.shape[0]):
                pyro.sample("z_l", dist.Normal(*self._encode(x_l, self._onehot(y_l))).to_event(1))
        if x_u.shape[0]:
            with pyro.plate("unlabelled", x_u.shape[0]):
                y_u = pyro.sample("y_u", dist.Categorical(logits=self._logits(x_u)),
                                  infer={"enumerate": "parallel", "expand": True})
                pyro.sample("z_u", dist.Normal(*self._encode(x_u, self._onehot(y_u))).to_event(1))

    # --- objectives ----------------------------------------------------------------------------------------
    def loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """``J^α / B``: ``-ELBO`` (labels enumerated where missing) plus ``α · (-log q(y|x))`` on labelled rows.

        ``y=None`` treats every row as unlabelled.
        """
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        neg_elbo = TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False).differentiable_loss(self.model, self.guide, x, y)
        known = y >= 0
        if self.alpha > 0 and bool(known.any()):
            neg_elbo = neg_elbo + self.alpha * F.cross_entropy(self._logits(x[known]), y[known], reduction="sum")
        return neg_elbo / x.shape[0]

    def _labelled_elbo(self, x: Tensor, onehot: Tensor) -> Tensor:
        """One-sample ``L(x, y)`` for ``x (..., *event)``, ``onehot (..., C)`` -> ``(...)``."""
        loc, scale = self._encode(x, onehot)
        q = dist.Normal(loc, scale).to_event(1)
        z = q.rsample()
        log_p = self.observation.dist(self._decode(z, onehot)).log_prob(x) - math.log(self.num_classes)
        return log_p + self._prior_z(1).log_prob(z) - q.log_prob(z)

    def elbo(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Per-datum ELBO in nats, ``(B,)``: ``L(x, y)`` (a bound on ``log p(x, y)``) where ``y`` is known,
        ``U(x) = Σ_y q(y|x) L(x, y) + H(q(y|x))`` (a bound on ``log p(x)``) where ``y = -1``.

        The sum over ``y`` is written out (one ``z`` draw per class); it is the quantity Pyro's
        ``TraceEnum_ELBO`` computes from :meth:`model` and :meth:`guide`.
        """
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        out = x.new_zeros(x.shape[0])
        known = y >= 0
        if bool(known.any()):  # same order as the guide: labelled draws first
            out[known] = self._labelled_elbo(x[known], self._onehot(y[known]))
        if bool((~known).any()):
            x_u = x[~known]
            classes = torch.arange(self.num_classes, device=x.device)
            onehot = self._onehot(classes).unsqueeze(1).expand(self.num_classes, x_u.shape[0], self.num_classes)
            per_class = self._labelled_elbo(x_u, onehot)  # (C, n_u)
            log_q = torch.log_softmax(self._logits(x_u), dim=-1).T  # (C, n_u)
            q = log_q.exp()
            out[~known] = (q * (per_class - log_q)).sum(0)
        return out

    def log_likelihood(
        self,
        x: Tensor,
        num_particles: int = 1000,
        *,
        y: Tensor | None = None,
        chunk_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """IWAE estimate (nats, ``(B,)``) of ``log p(x | y)`` if ``y`` is given, else of ``log p(x)``.

        ``log p̂(x | y) = log (1/K) Σ_k p(z_k) p(x | z_k, y) / q(z_k | x, y)`` with ``z_k ~ q(z | x, y)``, and
        ``log p̂(x) = logsumexp_y [log p̂(x | y)] - log C`` (the sum over classes is exact). Both are stochastic
        lower bounds that tighten with ``K`` (Burda et al. 2016, arXiv:1509.00519). Evaluated without gradients.
        """
        x = self._check_x(x)
        num_particles = check_int("num_particles", num_particles, minimum=1)
        chunk = particle_chunk(chunk_size, x.shape[0])
        with torch.no_grad():
            if y is not None:
                return self._conditional_iwae(x, self._check_y(y, x.shape[0], allow_missing=False),
                                              num_particles, chunk, generator)
            per_class = torch.stack([
                self._conditional_iwae(x, torch.full((x.shape[0],), c, dtype=torch.long, device=x.device),
                                       num_particles, chunk, generator)
                for c in range(self.num_classes)
            ])
            return torch.logsumexp(per_class, dim=0) - math.log(self.num_classes)

    def _conditional_iwae(self, x: Tensor, y: Tensor, num_particles: int, chunk: int,
                          generator: torch.Generator | None) -> Tensor:
        onehot = self._onehot(y)
        loc, scale = self._encode(x, onehot)
        q = dist.Normal(loc, scale).to_event(1)
        prior = self._prior_z(1)

        def log_weight(k: int) -> Tensor:
            z = loc + scale * standard_normal_particles(k, loc.shape, like=loc, generator=generator)
            log_px = self.observation.dist(self._decode(z, onehot)).log_prob(x)
            return log_px + prior.log_prob(z) - q.log_prob(z)

        return log_mean_exp_chunked(log_weight, num_particles, chunk)

    # --- prediction and generation -------------------------------------------------------------------------
    def class_probs(self, x: Tensor) -> Tensor:
        """``q(y | x)``, ``(B, C)``, without gradients."""
        with torch.no_grad():
            return torch.softmax(self._logits(self._check_x(x)), dim=-1)

    def classify(self, x: Tensor) -> Tensor:
        """``argmax_y q(y | x)``, a ``LongTensor (B,)``."""
        return self.class_probs(x).argmax(-1)

    def sample(
        self,
        num_samples: int,
        *,
        y: int | Tensor | None = None,
        mean: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Generate ``(num_samples, *event_shape)`` images of the requested classes, without gradients.

        Args:
            num_samples: ``n``.
            y: a class (``int``), a ``LongTensor (n,)`` of classes, or ``None`` (drawn from ``p(y)``).
            mean: return ``E[x | z, y]`` (default) instead of a draw of ``p(x | z, y)``.
            generator: optional ``torch.Generator``.
        """
        num_samples = check_int("num_samples", num_samples, minimum=1)
        device, dtype = self._anchor.device, self._anchor.dtype
        if y is None:
            labels = torch.randint(self.num_classes, (num_samples,), generator=generator, device=device)
        elif isinstance(y, int) and not isinstance(y, bool):
            check_int("y", y, minimum=0, maximum=self.num_classes - 1)
            labels = torch.full((num_samples,), y, dtype=torch.long, device=device)
        else:
            labels = self._check_y(y, num_samples, allow_missing=False).to(device)
        with torch.no_grad():
            z = torch.randn(num_samples, self.latent_dim, generator=generator, device=device, dtype=dtype)
            eta = self._decode(z, self._onehot(labels))
            return self.observation.mean(eta) if mean else self.observation.draw(eta, generator=generator)

    def as_distribution(self, *, num_particles: int = 100) -> ModelDistribution:
        """A Pyro distribution over ``x`` whose ``log_prob`` is the IWAE estimate of ``log p(x)`` (labels summed
        out) with ``K = num_particles`` — a stochastic lower bound, not the exact density."""
        return iwae_distribution(self, num_particles)

    def config(self) -> dict[str, Any]:
        """JSON-safe arguments such that ``ConditionalVAE(**m.config())`` rebuilds it (built-in nets only)."""
        if self._custom:
            raise ValueError(
                f"config() describes the built-in networks only, but this ConditionalVAE has a custom "
                f"{' and '.join(self._custom)}; save it with probgen.save(path, model) and read it back with "
                "probgen.load(path, model=ConditionalVAE(...)) built with the same networks"
            )
        if not isinstance(self.activation, str):
            raise ValueError(f"config() needs the activation given by name, got {self.activation!r}")
        return {
            "event_shape": list(self.event_shape),
            "num_classes": self.num_classes,
            "latent_dim": self.latent_dim,
            "likelihood": self.likelihood,
            "obs_scale": float(self.observation.obs_scale.detach()),
            "learn_obs_scale": self.observation.learn_obs_scale,
            "alpha": self.alpha,
            "hidden": list(self.hidden),
            "activation": self.activation,
        }

    def extra_repr(self) -> str:
        return (f"event_shape={self.event_shape}, num_classes={self.num_classes}, latent_dim={self.latent_dim}, "
                f"likelihood={self.likelihood!r}, alpha={self.alpha:g}")
