"""Uniform dequantization, dynamic binarization and the one bits/dim convention of every family.

Quantized data (the digits' 17 levels, 8-bit images' 256) are stored by :func:`probgen.data.load_dataset` as integer
levels ``k in {0, ..., L-1}`` scaled to ``x = low + (high - low) k / (L - 1)`` (``data_range = (low, high)``,
``(-1, 1)`` for every built-in image set).

* :func:`dequantize`, :func:`dequantize_scaled`, :func:`to_levels`: uniform dequantization (Uria et al., 2013,
  arXiv:1306.0186; Theis et al., 2016, arXiv:1511.01844) ``z = low + (high - low)(k + u)/L``, ``u ~ U[0, 1)^D``:
  ``L`` bins of width ``(high - low)/L`` tiling ``[low, high)``;
* :func:`bits_per_dim`: bits per dimension, the single convention used by every family (flows, VAEs, score
  SDEs, DDPM, RBMs, the CLI);
* :func:`dynamic_binarize`: a fresh Bernoulli draw of grey levels per batch (Salakhutdinov & Murray, 2008;
  Burda et al., 2016), the standard training input of binary models on MNIST.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from probgen._checks import check_int, check_tensor

__all__ = ["dequantize", "dequantize_scaled", "to_levels", "bits_per_dim", "dynamic_binarize"]


def _check_num_levels(num_levels: int) -> int:
    return check_int("num_levels", num_levels, minimum=2)


def _check_range(data_range: Sequence[float]) -> tuple[float, float]:
    if not isinstance(data_range, (tuple, list)) or len(data_range) != 2:
        raise ValueError(f"data_range must be a pair (low, high), got {data_range!r}")
    low, high = (float(v) for v in data_range)
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"data_range must be finite with high > low, got {data_range!r}")
    return low, high


def dequantize(k: Tensor, num_levels: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantization of integer levels into ``[0, 1)``.

    ``y = (k + u) / L``, ``u ~ U[0, 1)`` independently per entry, ``L = num_levels``: level ``k`` is spread
    uniformly over its bin ``[k/L, (k+1)/L)``. Map ``y`` to a model's data range with
    ``z = low + (high - low) * y`` and score it with :func:`bits_per_dim`.

    Args:
        k: integer-valued tensor (any integer dtype, or a float dtype holding whole numbers) with entries in
            ``{0, ..., num_levels - 1}``, any shape.
        num_levels: number of levels ``L >= 2`` (17 for the digits).
        generator: optional ``torch.Generator`` on ``k``'s device for the uniform noise.

    Returns:
        Tensor shaped like ``k`` with entries in ``[0, 1)``; ``k``'s dtype if it is float32/float64, else the
        default float dtype; on ``k``'s device.

    Reference:
        Uria, Murray & Larochelle (2013), arXiv:1306.0186; Theis, van den Oord & Bethge (2016), arXiv:1511.01844.

    Example:
        >>> y = dequantize(torch.tensor([0, 16]), 17, generator=torch.Generator().manual_seed(0))
        >>> bool((y[0] < 1 / 17) and (16 / 17 <= y[1] < 1))
        True
    """
    num_levels = _check_num_levels(num_levels)
    check_tensor("k", k, floating=False)
    if k.dtype == torch.bool or k.is_complex():
        raise TypeError(f"k must hold integer levels (an integer or float tensor), got {k.dtype}")
    if k.is_floating_point():
        if k.dtype in (torch.float16, torch.bfloat16):
            raise TypeError(f"k must be float32, float64 or an integer dtype, got {k.dtype}")
        if not bool((k == torch.round(k)).all()):
            raise ValueError("k must hold whole numbers (integer levels); got non-integer values")
        dtype = k.dtype
    else:
        dtype = torch.get_default_dtype()
    low, high = int(k.min()), int(k.max())
    if low < 0 or high > num_levels - 1:
        raise ValueError(
            f"k must lie in {{0, ..., {num_levels - 1}}} for num_levels={num_levels}, got values in [{low}, {high}]"
        )
    u = torch.rand(k.shape, generator=generator, device=k.device, dtype=dtype)
    # (k + u) / L < 1 in exact arithmetic; clamp guards float32 rounding of (L - 1 + u) / L up to 1.
    y = (k.to(dtype) + u) / num_levels
    return torch.clamp(y, max=1.0 - torch.finfo(dtype).eps / 2)


def to_levels(x: Tensor, *, num_levels: int, data_range: Sequence[float] = (-1.0, 1.0)) -> Tensor:
    """Recover integer levels from data scaled as ``x = low + (high - low) k / (L - 1)``.

    This inverts the scaling of :func:`digits` (``k = 0 -> low``, ``k = L - 1 -> high``), rounding to the
    nearest level, so that ``dequantize(to_levels(x, ...), L)`` dequantizes a :func:`probgen.data.load_dataset` split.

    Args:
        x: scaled data, any shape, floating.
        num_levels: ``L >= 2``.
        data_range: ``(low, high)`` of the scaled data.

    Returns:
        ``LongTensor`` shaped like ``x``, entries clamped to ``{0, ..., L - 1}``.

    Example:
        >>> to_levels(torch.tensor([-1.0, 0.0, 1.0]), num_levels=17).tolist()
        [0, 8, 16]
    """
    num_levels = _check_num_levels(num_levels)
    low, high = _check_range(data_range)
    check_tensor("x", x)
    k = torch.round((x - low) / (high - low) * (num_levels - 1))
    return k.clamp(0, num_levels - 1).to(torch.int64)


def dequantize_scaled(
    x: Tensor,
    *,
    num_levels: int,
    data_range: Sequence[float] = (-1.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Uniformly dequantize data in the scaling of :func:`load_dataset`, onto the same range.

    ``x = low + (high - low) k / (L - 1)`` (levels ``k``) becomes ``z = low + (high - low) (k + u) / L`` with
    ``u ~ U[0, 1)``: each level owns a bin of width ``Δ = (high - low) / L``, and a continuous density
    ``p(z)`` gives the discrete model ``P(k) = ∫_bin p(z) dz ≥ Δ^D exp(E_u log p(z))`` (see
    :func:`bits_per_dim`). Use it as ``probgen.fit(..., batch_transform=...)`` so that every step sees
    fresh noise.

    Example:
        >>> z = dequantize_scaled(torch.tensor([-1.0, 1.0]), num_levels=17)
        >>> bool((z >= -1).all() and (z < 1).all())
        True
    """
    low, high = _check_range(data_range)
    k = to_levels(x, num_levels=num_levels, data_range=(low, high))
    return low + (high - low) * dequantize(k.to(x.dtype), num_levels, generator=generator)


def bits_per_dim(
    log_prob_nats: Tensor,
    num_dims: int,
    *,
    num_levels: int | None,
    data_range: Sequence[float] = (-1.0, 1.0),
) -> Tensor:
    r"""Bits per dimension of quantized data: the one convention of every family in probgen.

    Bits per dim is ``-log2 P(k) / D`` for a discrete model ``P`` of the integer levels ``k in {0..L-1}^D``.
    A model reports it in one of two ways:

    * ``num_levels=L``: ``log_prob_nats`` is a continuous log-density ``log p_z(z)`` at the uniformly dequantized
      point ``z = low + (high - low)(k + u)/L``, ``u ~ U[0, 1)^D`` (:func:`dequantize_scaled`). ``z`` is the affine
      image of ``y = k + u in [0, L)^D``, the data "scaled to ``[0, 256)`` and dequantized" of the papers, with
      Jacobian ``dz/dy = (high - low)/L`` per dimension, so ``log p_y(y) = log p_z(z) + D log((high - low)/L)``
      and

      .. math::

          \mathrm{bpd} = -\frac{\log p_z(z) + D \log\frac{high - low}{L}}{D \ln 2}
                       = -\frac{\log p_y(y)}{D \ln 2},

      an upper bound, in expectation over ``u``, on ``-log2 P(k) / D`` for ``P(k) = ∫_{bin k} p_y`` (Jensen).
      For 8-bit images (``L = 256``) in ``[-1, 1]`` this is ``-log p_z / (D ln 2) + 7`` (the offset of Song et
      al., 2021), in ``[0, 1]`` it is ``+ 8``. A density uniform on ``[low, high]^D`` gives ``log2 L``.
    * ``num_levels=None``: ``log_prob_nats`` is already the log-probability of the levels, or a lower bound on
      it (a discretized decoder's ELBO as in DDPM, a Bernoulli likelihood of binary data, an RBM's ``log P``), and
      ``bpd = -log P / (D ln 2)``.

    ``num_levels`` has no default, so that a density is never silently scored as a probability.

    Args:
        log_prob_nats: ``log p_z(z)`` (or ``log P(k)``) in nats, any shape (typically ``(B,)``).
        num_dims: ``D``, the number of scalars per data point (784 for MNIST, 3072 for CIFAR-10).
        num_levels: ``L >= 2`` for a density of dequantized data, ``None`` for a discrete log-probability.
        data_range: ``(low, high)`` of the scaled data ``z`` (used with ``num_levels``).

    Returns:
        Bits per dim, shaped like ``log_prob_nats``.

    Reference:
        Theis, van den Oord & Bethge (2016), arXiv:1511.01844; Papamakarios et al. (2017), arXiv:1705.07057;
        Song et al. (2021), arXiv:2011.13456.

    Example:
        >>> lp = torch.tensor([-64 * math.log(2.0)])  # uniform density on [-1, 1]^64
        >>> round(float(bits_per_dim(lp, 64, num_levels=17)), 6) == round(math.log2(17), 6)
        True
        >>> float(bits_per_dim(torch.tensor([-784 * math.log(2.0)]), 784, num_levels=None))  # P = 2^-784
        1.0
    """
    check_tensor("log_prob_nats", log_prob_nats, nonempty=False, finite=False)
    num_dims = check_int("num_dims", num_dims, minimum=1)
    if num_levels is None:
        return -log_prob_nats / (num_dims * math.log(2.0))
    num_levels = _check_num_levels(num_levels)
    low, high = _check_range(data_range)
    log_pk = log_prob_nats + num_dims * (math.log(high - low) - math.log(num_levels))
    return -log_pk / (num_dims * math.log(2.0))


def dynamic_binarize(x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """A fresh binarization ``b ~ Bernoulli(x)`` of grey levels ``x in [0, 1]``, drawn anew on every call.

    Dynamic binarization (Salakhutdinov & Murray, 2008; Burda et al., 2016, arXiv:1509.00519) trains a binary
    model on a new Bernoulli draw of each image every time it is seen, which regularizes far better than one
    fixed binarization. ``load_dataset("mnist-binary")`` keeps the grey levels ``k / 255`` as its training split and
    this function as :attr:`DataSet.batch_transform`; pass it to ``probgen.fit(..., batch_transform=...)``.

    Args:
        x: ``(B, *event)`` floating tensor with entries in ``[0, 1]`` (Bernoulli probabilities).
        generator: optional ``torch.Generator`` on ``x``'s device (default: the global RNG, which
            :func:`probgen.fit` seeds).

    Returns:
        A tensor shaped like ``x``, same dtype and device, with entries in ``{0, 1}``.

    Example:
        >>> b = dynamic_binarize(torch.tensor([0.0, 1.0, 0.5]), generator=torch.Generator().manual_seed(0))
        >>> b[:2].tolist(), float(b[2]) in (0.0, 1.0)
        ([0.0, 1.0], True)
    """
    check_tensor("x", x)
    if x.numel() and (bool((x < 0).any()) or bool((x > 1).any())):
        raise ValueError(f"x must hold probabilities in [0, 1], got values in [{float(x.min()):g}, {float(x.max()):g}]")
    return torch.bernoulli(x, generator=generator)
