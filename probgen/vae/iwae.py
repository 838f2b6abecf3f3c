r"""The importance-weighted estimate of ``log p(x)`` shared by the VAEs (Burda et al. 2016), in pieces.

.. math::

    \hat{\mathcal L}_K(x) = \log \frac1K \sum_{k=1}^K w_k,\qquad w_k = \frac{p(x, z_k)}{q(z_k | x)},\quad
    z_k \sim q(\cdot | x),

computed chunk by chunk (:func:`log_mean_exp_chunked`) from particles whose stream does not depend on the
chunking (:func:`standard_normal_particles`), so that ``K = 5000`` fits in memory and the result does not
depend on ``chunk_size``. Each model supplies its own log-weights; :func:`iwae_distribution` turns a model's
``log_likelihood`` into its ``as_distribution()``.

Reference:
    Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", arXiv:1509.00519.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from probgen._checks import check_int
from probgen.protocol import ModelDistribution

__all__ = ["standard_normal_particles", "log_mean_exp_chunked", "particle_chunk", "iwae_distribution"]

_ROWS_PER_CHUNK = 1 << 16  # particles x batch rows evaluated at once when chunk_size is None


def standard_normal_particles(
    num_particles: int, shape: Sequence[int], *, like: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """``num_particles`` independent ``N(0, I)`` draws of ``shape``, stacked: ``(num_particles, *shape)``.

    Each particle is drawn by its own ``randn`` call, so a stream of particles does not depend on how it is
    cut into chunks: ``cat([f(7), f(7), f(6)]) == f(20)`` from the same RNG state. (One ``randn`` of the
    whole block would not: torch's CPU normal sampler vectorises over blocks of 16 values.)

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> standard_normal_particles(3, (2, 4), like=torch.zeros(()), generator=g).shape
        torch.Size([3, 2, 4])
    """
    draws = [
        torch.randn(tuple(shape), generator=generator, device=like.device, dtype=like.dtype)
        for _ in range(num_particles)
    ]
    return torch.stack(draws)


def log_mean_exp_chunked(log_weight: Callable[[int], Tensor], num_particles: int, chunk_size: int) -> Tensor:
    """``log (1/K) Σ_k exp(w_k)`` with the ``K`` log-weights produced and reduced chunk by chunk.

    ``log_weight(k)`` returns ``k`` fresh log-weights ``(k, B)``; the running ``logsumexp`` is merged with
    ``logaddexp`` so that only one chunk is in memory at a time (``K = 5000`` particles fit easily).

    Example:
        >>> f = lambda k: torch.zeros(k, 2)
        >>> log_mean_exp_chunked(f, 10, 3).tolist()
        [0.0, 0.0]
    """
    total: Tensor | None = None
    done = 0
    while done < num_particles:
        k = min(chunk_size, num_particles - done)
        lse = torch.logsumexp(log_weight(k), dim=0)
        total = lse if total is None else torch.logaddexp(total, lse)
        done += k
    assert total is not None  # num_particles >= 1 is validated by the callers
    return total - math.log(num_particles)


def particle_chunk(chunk_size: int | None, batch_size: int) -> int:
    """Particles evaluated at once by an IWAE estimate: ``chunk_size`` (checked), or ``max(1, 65536 // B)``
    when ``None`` (bounded memory: at most 65536 particle-by-batch rows)."""
    if chunk_size is None:
        return max(1, _ROWS_PER_CHUNK // batch_size)
    return check_int("chunk_size", chunk_size, minimum=1)


def iwae_distribution(model: nn.Module, num_particles: int) -> ModelDistribution:
    """``model.as_distribution``: ``log_prob`` is ``model.log_likelihood(x, num_particles=K)`` (an IWAE lower
    bound, not the exact density); ``sample`` draws ``x ~ p(x | z)`` (``model.sample(n, mean=False)``)."""
    num_particles = check_int("num_particles", num_particles, minimum=1)

    def log_prob(value: Tensor) -> Tensor:
        return model.log_likelihood(value, num_particles=num_particles)

    return ModelDistribution(model, model.event_shape, log_prob_fn=log_prob, sample_opts={"mean": False})
