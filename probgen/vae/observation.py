"""The observation model ``p(x | z)`` of the VAEs: Gaussian or Bernoulli, from the decoder output.

Shared by :class:`~probgen.vae.VAE` and :class:`~probgen.vae.ConditionalVAE`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from probgen._checks import check_binary, check_bool, check_choice, check_positive
from probgen.vae.nets import check_event_shape_tuple

__all__ = ["ObservationModel", "LIKELIHOODS"]

LIKELIHOODS: tuple[str, ...] = ("gaussian", "bernoulli")
"""Observation models ``p(x | z)``: ``N(decoder(z), σ² I)`` or ``Bernoulli(logits=decoder(z))``."""


class ObservationModel(nn.Module):
    """The observation model ``p(x | η)`` of a VAE, from the decoder output ``η``.

    * ``"gaussian"``: ``N(x; η, σ² I)`` with a fixed or learned ``σ`` (``obs_scale``);
    * ``"bernoulli"``: ``∏ Bernoulli(x_i; sigmoid(η_i))`` — ``η`` are logits and ``x`` must be 0/1.

    Args:
        likelihood: ``"gaussian"`` or ``"bernoulli"``.
        event_shape: shape of one observation (the event of the distribution).
        obs_scale: ``σ`` of the Gaussian (its initial value when learned).
        learn_obs_scale: learn ``log σ`` as a parameter (Gaussian only).

    Example:
        >>> obs = ObservationModel("bernoulli", (3,))
        >>> obs.dist(torch.zeros(2, 3)).log_prob(torch.ones(2, 3)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        likelihood: str,
        event_shape: Sequence[int],
        *,
        obs_scale: float = 1.0,
        learn_obs_scale: bool = False,
    ) -> None:
        super().__init__()
        self.likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
        self.event_shape = check_event_shape_tuple(event_shape)
        obs_scale = check_positive("obs_scale", obs_scale)
        check_bool("learn_obs_scale", learn_obs_scale)
        if learn_obs_scale and self.likelihood != "gaussian":
            raise ValueError("learn_obs_scale=True needs likelihood='gaussian'; a Bernoulli model has no scale")
        self.learn_obs_scale = learn_obs_scale
        # a fixed σ stays a Python float (exact in any dtype after .double()); a learned one is a parameter
        self._fixed_scale = obs_scale
        if learn_obs_scale:
            self.log_obs_scale = nn.Parameter(torch.tensor(math.log(obs_scale)))

    @property
    def obs_scale(self) -> Tensor:
        """``σ`` (a 0-d tensor)."""
        if self.learn_obs_scale:
            return self.log_obs_scale.exp()
        return torch.tensor(self._fixed_scale)

    def _scale_like(self, eta: Tensor) -> Tensor:
        if self.learn_obs_scale:
            return self.log_obs_scale.exp().to(eta.dtype)
        return eta.new_tensor(self._fixed_scale)

    def dist(self, eta: Tensor) -> dist.TorchDistribution:
        """``p(x | η)`` with batch shape ``η.shape[:-len(event_shape)]`` and event shape ``event_shape``."""
        n = len(self.event_shape)
        if self.likelihood == "gaussian":
            return dist.Normal(eta, self._scale_like(eta).expand(eta.shape)).to_event(n)
        return dist.Bernoulli(logits=eta).to_event(n)

    def mean(self, eta: Tensor) -> Tensor:
        """``E[x | η]``: ``η`` (Gaussian) or ``sigmoid(η)`` (Bernoulli)."""
        return eta if self.likelihood == "gaussian" else torch.sigmoid(eta)

    def draw(self, eta: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """One draw ``x ~ p(x | η)`` (with an optional ``generator``)."""
        if self.likelihood == "gaussian":
            noise = torch.randn(eta.shape, generator=generator, device=eta.device, dtype=eta.dtype)
            return eta + self._scale_like(eta) * noise
        u = torch.rand(eta.shape, generator=generator, device=eta.device, dtype=eta.dtype)
        return (u < torch.sigmoid(eta)).to(eta.dtype)

    def check_data(self, name: str, x: Tensor) -> Tensor:
        """Raise if ``x`` is not in the support (Bernoulli: entries must be exactly 0 or 1)."""
        if self.likelihood == "bernoulli":
            check_binary(name, x, model="likelihood='bernoulli'",
                         hint="binarize the data (probgen.data.binarized, or digits(..., binarize=True)) or use "
                              "likelihood='gaussian'")
        return x
