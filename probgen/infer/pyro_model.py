r"""The potential of a Pyro model's latent sites for many chains at once, for :func:`run_chains`.

:func:`model_potential` turns a (vectorisable) Pyro model into a batched potential ``(C, D) -> (C,)``
in the unconstrained space, the same potential Pyro's ``initialize_model`` gives one chain of HMC.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["BatchedModelPotential", "model_potential"]


class BatchedModelPotential:
    r"""The potential of a Pyro model's latent sites for ``C`` chains at once: ``(C, D) -> (C,)``.

    Built by :func:`model_potential`. The chains' unconstrained parameters are packed into ``z: (C, D)``
    (sites in sorted order, each flattened). ``U(z)`` runs the model once, conditioned on the
    constrained values ``x = T⁻¹(z)``, under an outer ``pyro.plate`` of size ``C`` placed left of the
    model's own plates, and returns per chain

    .. math:: U(z) = -\sum_{\text{sites}} \log p(\cdot) - \sum_{\text{latent}} \log\lvert\det
              \partial T^{-1}(z) / \partial z\rvert,

    the same potential that Pyro's ``initialize_model`` gives for one chain. Distribution validation is
    off inside (as in Pyro's ``MCMC``): a chain whose proposal leaves the support gets a non-finite
    potential, which the transitions treat as a rejection, instead of an error for all chains. The model must be
    vectorisable (broadcast over a leftmost batch dimension, as for ``Predictive(parallel=True)``);
    discrete latent sites are not supported.

    Attributes:
        site_names: latent site names, sorted.
        site_shapes: their (unbatched) shapes.
        transforms: site name -> transform from the constrained to the unconstrained space.
        dim: ``D``.
    """

    def __init__(self, model: Callable, model_args: tuple, model_kwargs: dict, *,
                 transforms: dict | None = None, max_plate_nesting: int | None = None) -> None:
        import pyro
        from pyro import poutine
        from pyro.infer.mcmc.util import _guess_max_plate_nesting, initialize_model

        init, _, transforms, trace = initialize_model(
            model, model_args, model_kwargs, transforms=transforms, max_plate_nesting=max_plate_nesting
        )
        if max_plate_nesting is None:
            max_plate_nesting = _guess_max_plate_nesting(model, model_args, model_kwargs)
        self._pyro, self._poutine = pyro, poutine
        self.model, self.model_args, self.model_kwargs = model, model_args, model_kwargs
        self.transforms = transforms
        self.max_plate_nesting = int(max_plate_nesting)
        self.site_names = sorted(init)
        self.site_shapes = {n: tuple(trace.nodes[n]["value"].shape) for n in self.site_names}
        self._unconstrained_shapes = {n: tuple(init[n].shape) for n in self.site_names}
        self._batch_ndim = {n: len(trace.nodes[n]["fn"].batch_shape) for n in self.site_names}
        self._prototype = init
        self.dim = sum(int(torch.Size(s).numel()) for s in self._unconstrained_shapes.values())

    def _split(self, z: Tensor) -> dict[str, Tensor]:
        out, pos = {}, 0
        lead = z.shape[:-1]
        for n in self.site_names:
            shape = self._unconstrained_shapes[n]
            size = int(torch.Size(shape).numel())
            out[n] = z[..., pos:pos + size].reshape(*lead, *shape)
            pos += size
        return out

    def init(self, num_chains: int, *, radius: float = 2.0, generator: torch.Generator | None = None) -> Tensor:
        """Initial points ``(C, D)``: uniform on ``(-radius, radius)`` in the unconstrained space (Pyro's
        ``init_to_uniform``), in the dtype/device of the model's parameters."""
        proto = self._prototype[self.site_names[0]]
        u = torch.rand((num_chains, self.dim), generator=generator, dtype=proto.dtype, device=proto.device)
        return (2.0 * u - 1.0) * radius

    def constrain(self, z: Tensor) -> dict[str, Tensor]:
        """Map unconstrained draws ``(..., D)`` (e.g. ``ChainResult.samples``, ``(C, S, D)``) to a dict
        ``name -> (..., *site_shape)`` in the constrained space."""
        out = {}
        for n, v in self._split(z).items():
            x = self.transforms[n].inv(v) if n in self.transforms else v
            out[n] = x.reshape(*z.shape[:-1], *self.site_shapes[n])
        return out

    def __call__(self, z: Tensor) -> Tensor:
        num_chains = z.shape[0]
        n_plates = self.max_plate_nesting
        values: dict[str, Tensor] = {}
        log_det = torch.zeros(num_chains, dtype=z.dtype, device=z.device)
        for n, v in self._split(z).items():
            if n in self.transforms:
                t_inv = self.transforms[n].inv
                x = t_inv(v)
                ladj = t_inv.log_abs_det_jacobian(v, x)
                log_det = log_det + ladj.reshape(num_chains, -1).sum(-1)
            else:
                x = v
            shape = self.site_shapes[n]
            pad = n_plates - self._batch_ndim[n]
            values[n] = x.reshape(num_chains, *([1] * pad), *shape)
        model = self._poutine.condition(self.model, data=values)
        # validation off while sampling, as Pyro's MCMC does: a chain whose proposal leaves the support
        # (a NaN or zero scale) gets a non-finite potential and is rejected; it must not raise for all
        with self._pyro.validation_enabled(False):
            with self._poutine.block(), self._pyro.plate("_probgen_chains", num_chains, dim=-(n_plates + 1)):
                trace = self._poutine.trace(model).get_trace(*self.model_args, **self.model_kwargs)
            trace.compute_log_prob()
        log_p = torch.zeros(num_chains, dtype=z.dtype, device=z.device)
        for site in trace.nodes.values():
            if site["type"] != "sample" or site["name"] == "_probgen_chains":
                continue
            lp = site["log_prob"]
            while lp.dim() < n_plates + 1:
                lp = lp.unsqueeze(0)
            lp = lp.reshape(*lp.shape[: lp.dim() - n_plates], -1).sum(-1)  # sum the model's plates
            lp = lp.reshape(-1, lp.shape[-1]).sum(0)  # (C,) or (1,)
            log_p = log_p + lp
        return -(log_p + log_det)


def model_potential(
    model: Callable,
    *model_args: Any,
    transforms: dict | None = None,
    max_plate_nesting: int | None = None,
    **model_kwargs: Any,
) -> BatchedModelPotential:
    """A batched potential ``(C, D) -> (C,)`` for a Pyro model's latent sites, for :func:`run_chains`.

    Uses Pyro's ``initialize_model`` for the transforms to the unconstrained space and evaluates the
    model for all chains in one vectorised pass (see :class:`BatchedModelPotential`).

    Args:
        model: a Pyro model with continuous latent sites, vectorisable over a leftmost batch dim.
        *model_args, **model_kwargs: the model's arguments.
        transforms: optional site name -> transform (as in Pyro's HMC).
        max_plate_nesting: as in Pyro's HMC (guessed by running the model once if None).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from probgen.infer import run_chains
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     with pyro.plate("n", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> pot = model_potential(model, torch.ones(5))
        >>> res = run_chains(pot, pot.init(200), num_samples=100, warmup_steps=100)
        >>> pot.constrain(res.samples)["mu"].shape
        torch.Size([200, 100])
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    return BatchedModelPotential(model, model_args, model_kwargs, transforms=transforms,
                                 max_plate_nesting=max_plate_nesting)
