"""``VAE``: the variational autoencoder as a Pyro model and guide, with an IWAE likelihood estimate.

The generative model and the amortised posterior are two Pyro programs,

.. code-block:: text

    model(x):  z_b ~ N(0, I_L)              guide(x):  z_b ~ q_φ(z | x_b)
               x_b ~ p_θ(x | z_b)   (obs)              (diagonal Gaussian, optionally pushed through a flow)

under one ``pyro.plate("data", B)``, so Pyro's ``Trace_ELBO`` on them is the ELBO of Kingma & Welling,

.. math::

    \\mathcal L(x) = \\mathbb E_{q_φ(z|x)}[\\log p_θ(x|z)] - \\mathrm{KL}(q_φ(z|x)\\,\\|\\,p(z)) \\le \\log p_θ(x),

and :meth:`VAE.log_likelihood` is the importance-weighted bound of Burda et al. with the encoder as proposal,

.. math::

    \\mathcal L_K(x) = \\log \\frac1K \\sum_{k=1}^K \\frac{p_θ(x, z_k)}{q_φ(z_k|x)},\\quad z_k \\sim q_φ(\\cdot|x),
    \\qquad \\mathcal L_1 \\le \\mathcal L_K \\le \\mathcal L_{K+1} \\to \\log p_θ(x)\\ (K \\to \\infty)\\ \\text{in expectation}.

References:
    Kingma & Welling (2014), "Auto-Encoding Variational Bayes", arXiv:1312.6114.
    Rezende, Mohamed & Wierstra (2014), arXiv:1401.4082.
    Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", arXiv:1509.00519.
    Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling (2016), "Improved Variational Inference with
    Inverse Autoregressive Flow", arXiv:1606.04934.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import Tensor, nn

from probgen._checks import check_choice, check_events, check_int, check_output_shape, check_widths
from probgen.protocol import ModelDistribution
from probgen.vae.conv import ConvDecoder, ConvEncoder
from probgen.vae.iwae import (
    iwae_distribution,
    log_mean_exp_chunked,
    particle_chunk,
    standard_normal_particles,
)
from probgen.vae.nets import DEFAULT_HIDDEN, Decoder, GaussianEncoder, check_event_shape_tuple
from probgen.vae.observation import LIKELIHOODS, ObservationModel
from probgen.vae.posterior import POSTERIORS, build_posterior_flows, condition_flows, sample_posterior

__all__ = [
    "VAE",
    "ELBO_ESTIMATORS",
    # defined in the modules named for them, re-exported here where they used to live
    "ObservationModel",
    "LIKELIHOODS",
    "POSTERIORS",
    "log_mean_exp_chunked",
    "standard_normal_particles",
]

ELBO_ESTIMATORS: tuple[str, ...] = ("analytic", "mc")
"""``"analytic"``: closed-form Gaussian KL (``TraceMeanField_ELBO``); ``"mc"``: one-sample ``log p - log q``
(``Trace_ELBO``)."""


def _flat_apply(net: Callable[..., Any], inp: Tensor, width: int, *extra: Tensor) -> tuple[Any, tuple[int, ...]]:
    """Call ``net`` on ``inp`` with its leading dims flattened to one batch dim (custom nets see ``(N, width)``)."""
    lead = tuple(inp.shape[:-1])
    flat = [inp.reshape(-1, width)] + [e.expand(*lead, e.shape[-1]).reshape(-1, e.shape[-1]) for e in extra]
    return net(*flat), lead


# ----------------------------------------------------------------------------------------------
# the VAE


class VAE(nn.Module):
    """Variational autoencoder: ``model(x)`` / ``guide(x)`` Pyro programs, ELBO training, IWAE evaluation.

    The model is ``z ~ N(0, I_L)``, ``x | z ~ p_θ(x | z)`` (Gaussian with mean ``decoder(z)`` and scale
    ``obs_scale``, or Bernoulli with logits ``decoder(z)``); the guide is ``q_φ(z | x)``, the diagonal
    Gaussian ``N(loc, diag scale²)`` with ``(loc, scale) = encoder(x)``, optionally pushed through
    ``num_flows`` conditional IAF or affine-coupling layers (``posterior=``).

    ``loss(x)`` is ``-ELBO`` averaged over the batch, computed by Pyro (``TraceMeanField_ELBO`` — analytic
    Gaussian KL — for ``elbo="analytic"``, ``Trace_ELBO`` for ``elbo="mc"``; a flow posterior has no closed
    KL and always uses ``"mc"``). ``log_likelihood(x, K)`` is the IWAE bound ``L_K`` (see the module
    docstring), a stochastic lower bound of ``log p_θ(x)`` that tightens as ``K`` grows.

    Args:
        encoder: ``nn.Module`` with ``encoder(x: (N, *event)) -> (loc, scale)``, each ``(N, L)``, ``scale > 0``
            (a third output ``(N, context_dim)``, if returned, is the context of a flow posterior);
            ``None`` builds :class:`probgen.vae.nets.GaussianEncoder` (needs ``event_shape``).
        decoder: ``nn.Module`` with ``decoder(z: (N, L)) -> (N, *event)``, the Gaussian mean or the Bernoulli
            logits; ``None`` builds :class:`probgen.vae.nets.Decoder` (needs ``event_shape``).
        latent_dim: ``L``.
        likelihood: ``"gaussian"`` or ``"bernoulli"`` (data must then be exactly 0/1).
        obs_scale: ``σ`` of the Gaussian likelihood (initial value if ``learn_obs_scale``).
        event_shape: shape of one observation; required for the built-in nets, inferred from the decoder
            otherwise.
        hidden: hidden widths of the built-in nets (the decoder uses them reversed).
        activation: activation of the built-in nets (a name, for ``config()``).
        learn_obs_scale: learn ``σ`` (a scalar) with the other parameters.
        posterior: ``"gaussian"``, ``"iaf"`` or ``"coupling"`` (flows need ``latent_dim >= 2``).
        num_flows: number of flow layers of a flow posterior.
        flow_hidden: hidden widths of each flow layer's network (default ``(max(64, 10 L),)``).
        context_dim: width of the flow context for a custom encoder: the encoder's third output; default
            ``2 L``, the context then being ``[loc, log scale]``. The built-in encoder supplies its last
            hidden layer.
        elbo: ``"analytic"`` or ``"mc"``; default ``"analytic"`` for a Gaussian posterior, ``"mc"`` for flows.
        conv_channels: for image data ``(C, H, W)``: build the built-in nets as
            :class:`probgen.vae.conv.ConvEncoder` / :class:`~probgen.vae.conv.ConvDecoder` with these channels per
            stride-2 level and a dense layer of ``hidden[-1]`` (``None``: the MLPs). A flow posterior then takes
            the context ``[loc, log scale]``.

    Shapes:
        ``x: (B, *event_shape)``; ``elbo(x)``, ``log_likelihood(x)``: ``(B,)`` nats; ``sample(n)``:
        ``(n, *event_shape)``.

    References:
        Kingma & Welling (2014), arXiv:1312.6114; Burda et al. (2016), arXiv:1509.00519;
        Kingma et al. (2016), arXiv:1606.04934.

    Example:
        >>> vae = VAE(latent_dim=2, event_shape=(4,), hidden=(16,))
        >>> x = torch.randn(8, 4)
        >>> vae.loss(x).shape, vae.elbo(x).shape, vae.log_likelihood(x, num_particles=10).shape
        (torch.Size([]), torch.Size([8]), torch.Size([8]))
        >>> vae.sample(3).shape
        torch.Size([3, 4])
    """

    family = "vae"

    def __init__(
        self,
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        latent_dim: int | None = None,
        likelihood: str = "gaussian",
        obs_scale: float = 1.0,
        *,
        event_shape: Sequence[int] | None = None,
        hidden: Sequence[int] = DEFAULT_HIDDEN,
        activation: str | Callable = "silu",
        learn_obs_scale: bool = False,
        posterior: str = "gaussian",
        num_flows: int = 2,
        flow_hidden: Sequence[int] | None = None,
        context_dim: int | None = None,
        elbo: str | None = None,
        conv_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if latent_dim is None:
            raise ValueError("latent_dim is required: the dimension L of the latent variable z, e.g. latent_dim=8")
        self.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        check_choice("likelihood", likelihood, LIKELIHOODS)
        self.posterior_kind = check_choice("posterior", posterior, POSTERIORS)
        self.num_flows = check_int("num_flows", num_flows, minimum=1)
        if self.posterior_kind != "gaussian" and self.latent_dim < 2:
            raise ValueError(f"posterior={posterior!r} needs latent_dim >= 2, got latent_dim={latent_dim}")
        if elbo is None:
            elbo = "analytic" if self.posterior_kind == "gaussian" else "mc"
        self.elbo_estimator = check_choice("elbo", elbo, ELBO_ESTIMATORS)
        if self.elbo_estimator == "analytic" and self.posterior_kind != "gaussian":
            raise ValueError(
                f"elbo='analytic' needs posterior='gaussian' (a {posterior!r} posterior has no closed-form KL); "
                "use elbo='mc'"
            )
        for name, net in (("encoder", encoder), ("decoder", decoder)):
            if net is not None and not isinstance(net, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module or None (built-in net), got {type(net).__name__}")
        self.hidden = check_widths("hidden", hidden, min_len=1)
        self.activation = activation
        self._custom = tuple(n for n, net in (("encoder", encoder), ("decoder", decoder)) if net is not None)
        if event_shape is None:
            if encoder is None or decoder is None:
                raise ValueError("event_shape is required when the encoder or the decoder is built in (None)")
            event_shape = self._probe_event_shape(decoder)
        self.event_shape = check_event_shape_tuple(event_shape)

        uses_flow = self.posterior_kind != "gaussian"
        self.conv_channels = None if conv_channels is None else check_widths("conv_channels", conv_channels, min_len=1)
        if self.conv_channels is not None and len(self.event_shape) != 3:
            raise ValueError(f"conv_channels needs an image event_shape (C, H, W), got {self.event_shape}")
        if encoder is None and self.conv_channels is not None:
            encoder = ConvEncoder(self.event_shape, self.latent_dim, channels=self.conv_channels,
                                  hidden=self.hidden[-1], activation=activation)
            self.context_dim = 2 * self.latent_dim if uses_flow else 0
        elif encoder is None:
            encoder = GaussianEncoder(
                self.event_shape, self.latent_dim, hidden=self.hidden, activation=activation,
                context_features=self.hidden[-1] if uses_flow else 0,
            )
            self.context_dim = self.hidden[-1] if uses_flow else 0
        else:
            self.context_dim = (2 * self.latent_dim if context_dim is None else
                                check_int("context_dim", context_dim, minimum=1)) if uses_flow else 0
        if decoder is None and self.conv_channels is not None:
            decoder = ConvDecoder(self.latent_dim, self.event_shape, channels=self.conv_channels,
                                  hidden=self.hidden[-1], activation=activation)
        elif decoder is None:
            decoder = Decoder(self.latent_dim, self.event_shape, hidden=self.hidden[::-1], activation=activation)
        self.encoder = encoder
        self.decoder = decoder
        self.observation = ObservationModel(
            likelihood, self.event_shape, obs_scale=obs_scale, learn_obs_scale=learn_obs_scale
        )
        self.flow_hidden = (
            check_widths("flow_hidden", flow_hidden, min_len=1) if flow_hidden is not None else (max(64, 10 * self.latent_dim),)
        )
        self.flows = (
            build_posterior_flows(self.posterior_kind, self.latent_dim, self.context_dim, self.num_flows,
                                  self.flow_hidden)
            if uses_flow else None
        )
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # follows .to() / .double()

    # --- small helpers -----------------------------------------------------------------------------------
    def _probe_event_shape(self, decoder: nn.Module) -> tuple[int, ...]:
        like = next(iter(decoder.parameters()), torch.zeros(()))
        with torch.no_grad():
            out = decoder(torch.zeros(2, self.latent_dim, dtype=like.dtype, device=like.device))
        if not isinstance(out, Tensor) or out.dim() < 2 or out.shape[0] != 2:
            raise ValueError("could not infer event_shape from decoder(z: (2, latent_dim)); pass event_shape=...")
        return tuple(out.shape[1:])

    @property
    def likelihood(self) -> str:
        """``"gaussian"`` or ``"bernoulli"``."""
        return self.observation.likelihood

    @property
    def obs_scale(self) -> Tensor:
        """``σ`` of the Gaussian likelihood (0-d tensor)."""
        return self.observation.obs_scale

    def _check_x(self, x: Any, name: str = "x") -> Tensor:
        check_events(name, x, self.event_shape, dtype=self._anchor.dtype)
        return self.observation.check_data(name, x)

    def _encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        out = self.encoder(x)
        if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
            raise TypeError(f"encoder(x) must return (loc, scale) or (loc, scale, context), got {type(out).__name__}")
        want = (x.shape[0], self.latent_dim)
        loc = check_output_shape("encoder (loc)", out[0], want)
        scale = check_output_shape("encoder (scale)", out[1], want)
        context = None
        if self.flows is not None:
            if len(out) == 3:
                context = check_output_shape("encoder (context)", out[2], (x.shape[0], self.context_dim))
            else:
                context = torch.cat([loc, scale.log()], dim=-1)
        return loc, scale, context

    def _decode(self, z: Tensor) -> Tensor:
        out, lead = _flat_apply(self.decoder, z, self.latent_dim)
        n = math.prod(lead)
        check_output_shape("decoder", out, (n, *self.event_shape))
        return out.reshape(*lead, *self.event_shape)

    def _transforms(self, context: Tensor | None) -> list:
        return condition_flows(self.flows, context, self.latent_dim)

    def prior(self, batch_shape: Sequence[int] = ()) -> dist.TorchDistribution:
        """``p(z) = N(0, I_L)`` with batch shape ``batch_shape`` (on the model's device and dtype)."""
        loc = self._anchor.new_zeros((*batch_shape, self.latent_dim))
        return dist.Normal(loc, torch.ones_like(loc)).to_event(1)

    def likelihood_dist(self, z: Tensor) -> dist.TorchDistribution:
        """``p_θ(x | z)``, batch shape ``z.shape[:-1]``, event shape ``event_shape``."""
        return self.observation.dist(self._decode(z))

    def posterior(self, x: Tensor) -> dist.TorchDistribution:
        """``q_φ(z | x)``: batch shape ``(B,)``, event shape ``(L,)`` (a ``TransformedDistribution`` for flows)."""
        loc, scale, context = self._encode(self._check_x(x))
        base = dist.Normal(loc, scale).to_event(1)
        transforms = self._transforms(context)
        return dist.TransformedDistribution(base, transforms) if transforms else base

    # --- Pyro programs -----------------------------------------------------------------------------------
    def model(self, x: Tensor) -> None:
        """The generative model: ``z_b ~ N(0, I)``, ``x_b ~ p_θ(x | z_b)`` observed, in ``plate("data", B)``."""
        x = self._check_x(x)
        pyro.module("decoder", self.decoder)
        if self.observation.learn_obs_scale:
            pyro.module("observation", self.observation)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior((x.shape[0],)))
            pyro.sample("x", self.likelihood_dist(z), obs=x)

    def guide(self, x: Tensor) -> None:
        """The amortised posterior: ``z_b ~ q_φ(z | x_b)`` in ``plate("data", B)``."""
        pyro.module("encoder", self.encoder)
        if self.flows is not None:
            pyro.module("posterior_flow", self.flows)
        q = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", q)

    # --- objectives and estimates ------------------------------------------------------------------------
    def _pyro_elbo(self, estimator: str):
        cls = TraceMeanField_ELBO if estimator == "analytic" else Trace_ELBO
        return cls(max_plate_nesting=1)  # given, so Pyro does not run the model an extra time to guess it

    def loss(self, x: Tensor) -> Tensor:
        """``-ELBO`` per datum averaged over the batch (nats), from Pyro's ``differentiable_loss``.

        Example:
            >>> vae = VAE(latent_dim=2, event_shape=(3,), hidden=(8,))
            >>> bool(torch.isfinite(vae.loss(torch.randn(5, 3))))
            True
        """
        x = self._check_x(x)
        return self._pyro_elbo(self.elbo_estimator).differentiable_loss(self.model, self.guide, x) / x.shape[0]

    def elbo(self, x: Tensor, *, estimator: str | None = None) -> Tensor:
        """Per-datum one-sample ELBO ``log p(x|z) - KL`` in nats, ``(B,)``, from traces of the Pyro programs.

        ``estimator="analytic"`` uses ``KL(q || p)`` in closed form, ``"mc"`` the one-sample
        ``log q(z|x) - log p(z)``; both are unbiased for the same ELBO. Default: the model's ``elbo`` setting.

        Example:
            >>> vae = VAE(latent_dim=2, event_shape=(3,), hidden=(8,))
            >>> vae.elbo(torch.randn(5, 3), estimator="mc").shape
            torch.Size([5])
        """
        x = self._check_x(x)
        estimator = self.elbo_estimator if estimator is None else check_choice("estimator", estimator,
                                                                                ELBO_ESTIMATORS)
        if estimator == "analytic" and self.flows is not None:
            raise ValueError(f"estimator='analytic' needs posterior='gaussian', this VAE has {self.posterior_kind!r}")
        guide_tr = poutine.trace(self.guide).get_trace(x)
        model_tr = poutine.trace(poutine.replay(self.model, trace=guide_tr)).get_trace(x)
        log_px = model_tr.nodes["x"]["fn"].log_prob(x)
        q, p = guide_tr.nodes["z"]["fn"], model_tr.nodes["z"]["fn"]
        if estimator == "analytic":
            kl = torch.distributions.kl_divergence(q, p)
        else:
            z = guide_tr.nodes["z"]["value"]
            kl = q.log_prob(z) - p.log_prob(z)
        return log_px - kl

    def log_likelihood(
        self,
        x: Tensor,
        num_particles: int = 1000,
        *,
        chunk_size: int | None = None,
        generator: torch.Generator | None = None,
        differentiable: bool = False,
    ) -> Tensor:
        """IWAE estimate of ``log p_θ(x)`` (nats, ``(B,)``) with the encoder ``q_φ(z|x)`` as proposal.

        .. math::

            \\hat{\\mathcal L}_K(x) = \\log \\frac1K \\sum_{k=1}^K
            \\frac{p(z_k)\\, p_θ(x | z_k)}{q_φ(z_k | x)},\\qquad z_k \\overset{iid}{\\sim} q_φ(z | x).

        ``E[L̂_K] <= log p_θ(x)`` for every ``K`` (Jensen), the bound increases with ``K`` and converges to
        ``log p_θ(x)``; it is an estimate, not the exact value. With the exact posterior as proposal every
        weight equals ``p_θ(x)`` and the estimate is exact even for ``K = 1``.

        Args:
            x: ``(B, *event_shape)``.
            num_particles: ``K``.
            chunk_size: particles evaluated at once (memory ``∝ chunk_size · B``); ``None`` picks
                ``max(1, 65536 // B)``. The result does not depend on it for a given RNG state.
            generator: optional ``torch.Generator`` for the particles.
            differentiable: keep the autograd graph (memory grows with ``K``); ``False`` evaluates under
                ``torch.no_grad()``.

        Reference:
            Burda, Grosse & Salakhutdinov (2016), arXiv:1509.00519.

        Example:
            >>> vae = VAE(latent_dim=2, event_shape=(3,), hidden=(8,))
            >>> vae.log_likelihood(torch.randn(4, 3), num_particles=50, chunk_size=7).shape
            torch.Size([4])
        """
        x = self._check_x(x)
        num_particles = check_int("num_particles", num_particles, minimum=1)
        chunk = particle_chunk(chunk_size, x.shape[0])
        with torch.set_grad_enabled(bool(differentiable) and torch.is_grad_enabled()):
            loc, scale, context = self._encode(x)
            transforms = self._transforms(context)
            prior = self.prior()

            def log_weight(k: int) -> Tensor:
                z, log_q = sample_posterior(loc, scale, transforms, k, generator)
                return self.likelihood_dist(z).log_prob(x) + prior.log_prob(z) - log_q

            return log_mean_exp_chunked(log_weight, num_particles, chunk)

    # --- generation and representation ---------------------------------------------------------------------
    def sample(self, num_samples: int, *, mean: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``z ~ N(0, I)`` and return the decoder mean ``E[x | z]`` (``mean=True``) or ``x ~ p(x | z)``.

        Returns:
            ``(num_samples, *event_shape)`` on the model's device, without gradients.

        Example:
            >>> VAE(latent_dim=2, event_shape=(1, 8, 8), hidden=(8,)).sample(5).shape
            torch.Size([5, 1, 8, 8])
        """
        num_samples = check_int("num_samples", num_samples, minimum=1)
        with torch.no_grad():
            z = torch.randn(num_samples, self.latent_dim, generator=generator, device=self._anchor.device,
                            dtype=self._anchor.dtype)
            eta = self._decode(z)
            return self.observation.mean(eta) if mean else self.observation.draw(eta, generator=generator)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(loc, scale)`` of the Gaussian ``q_φ(z | x)`` (the flow's base for a flow posterior), ``(B, L)`` each."""
        loc, scale, _ = self._encode(self._check_x(x))
        return loc, scale

    def reconstruct(self, x: Tensor, *, mean: bool = True) -> Tensor:
        """Decode the posterior's central latent: ``loc`` pushed through the flow layers (if any).

        Returns ``E[x | z]`` (``mean=True``) or a draw of ``p(x | z)``, ``(B, *event_shape)``, without gradients.
        """
        with torch.no_grad():
            loc, _, context = self._encode(self._check_x(x))
            z = loc
            for t in self._transforms(context):
                z = t(z)
            eta = self._decode(z)
            return self.observation.mean(eta) if mean else self.observation.draw(eta)

    def as_distribution(self, *, num_particles: int = 100) -> ModelDistribution:
        """A Pyro distribution whose ``log_prob`` is the IWAE estimate :meth:`log_likelihood` with ``K =
        num_particles`` — a stochastic lower bound of ``log p_θ(x)``, not the exact density — and whose
        ``sample`` draws ``x ~ p(x | z)``, ``z ~ N(0, I)``.

        Example:
            >>> vae = VAE(latent_dim=2, event_shape=(3,), hidden=(8,))
            >>> vae.as_distribution(num_particles=10).log_prob(torch.randn(4, 3)).shape
            torch.Size([4])
        """
        return iwae_distribution(self, num_particles)

    def config(self) -> dict[str, Any]:
        """JSON-safe arguments such that ``VAE(**vae.config())`` rebuilds the architecture (built-in nets only)."""
        if self._custom:
            raise ValueError(
                f"config() describes the built-in networks only, but this VAE has a custom {' and '.join(self._custom)}; "
                "save it with probgen.save(path, model) and read it back with probgen.load(path, model=VAE(...)) "
                "built with the same networks"
            )
        if not isinstance(self.activation, str):
            raise ValueError(f"config() needs the activation given by name, got {self.activation!r}")
        return {
            "encoder": None,
            "decoder": None,
            "latent_dim": self.latent_dim,
            "likelihood": self.likelihood,
            "obs_scale": float(self.obs_scale.detach()),
            "event_shape": list(self.event_shape),
            "hidden": list(self.hidden),
            "activation": self.activation,
            "learn_obs_scale": self.observation.learn_obs_scale,
            "posterior": self.posterior_kind,
            "num_flows": self.num_flows,
            "flow_hidden": list(self.flow_hidden),
            "elbo": self.elbo_estimator,
            "conv_channels": None if self.conv_channels is None else list(self.conv_channels),
        }

    def extra_repr(self) -> str:
        return (f"latent_dim={self.latent_dim}, event_shape={self.event_shape}, likelihood={self.likelihood!r}, "
                f"posterior={self.posterior_kind!r}, elbo={self.elbo_estimator!r}")
