r"""Linear observation operators and the linear-Gaussian likelihood ``y = A x + σ_y ε``.

Every operator maps a batch ``x: (B, *event)`` to ``A x: (B, m)`` and exposes

* ``forward(x)`` (also ``op(x)``) and ``adjoint(y)`` (``Aᵀ y``, back to ``(B, *event)``);
* ``svd()``: the singular value decomposition ``A = U diag(s) Vᵀ`` as functions, the form DDRM needs
  (Kawar et al. 2022): ``Vt(x) -> (B, n)``, ``V(z) -> (B, *event)``, ``Ut(y) -> (B, m)``,
  ``U(z) -> (B, m)`` and ``singulars: (k,)``, ``k = min(m, n)``: the first ``k`` spectral coordinates of
  ``Vt`` pair with the first ``k`` of ``Ut`` (``Ut(A x)[:, :k] = s ⊙ Vt(x)[:, :k]``), the other
  ``n - k`` coordinates of ``Vt`` span the null space;
* ``dense()``: the ``(m, n)`` matrix (tests and small problems).

Operators: :class:`MaskOperator` (inpainting, imputation: keep the observed entries),
:class:`DenseOperator` (any matrix: one coordinate, random projections), :class:`BlurOperator`
(separable Gaussian or box blur with zero padding) and :class:`SubsampleOperator` (block averaging).
The separable ones act on the last one (vectors) or two (images ``(C, H, W)``) axes with 1-D factors
``A = A_H ⊗ A_W``; their SVD is the Kronecker product of the factors' SVDs, never a dense ``n × n`` one.

:class:`LinearGaussian` ties an operator to the noise level: ``LinearGaussian(op, σ_y)(x)`` is the Pyro
distribution ``N(A x, σ_y² I)`` of the observation, to be written in a model as
``pyro.sample("y", LinearGaussian(op, 0.1)(x), obs=y)``; the posterior samplers read the operator back
from it (:func:`probgen.infer.posterior_sample`).

Reference: Kawar, Elad, Ermon & Song (2022), "Denoising Diffusion Restoration Models", arXiv:2201.11793.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
from torch import Tensor

from probgen._checks import check_choice, check_int, check_positive, check_shape_arg, check_tensor

__all__ = [
    "LinearOperator",
    "OperatorSVD",
    "MaskOperator",
    "DenseOperator",
    "BlurOperator",
    "SubsampleOperator",
    "LinearGaussian",
    "LinearGaussianDistribution",
    "make_operator",
    "OPERATORS",
]


def _event(event_shape: Any) -> tuple[int, ...]:
    return check_shape_arg("event_shape", event_shape)


class OperatorSVD:
    """``A = U diag(s) Vᵀ`` given as functions (see the module docstring for the conventions).

    Attributes:
        singulars: ``(k,)`` singular values paired with the first ``k`` spectral coordinates.
    """

    def __init__(self, *, Vt, V, Ut, U, singulars: Tensor):
        self.Vt, self.V, self.Ut, self.U = Vt, V, Ut, U
        self.singulars = singulars


class LinearOperator:
    """Base class: ``A: (B, *event) -> (B, m)``; subclasses define ``_forward``, ``_adjoint``, ``svd``.

    Attributes:
        event_shape: the shape of one ``x``.
        out_dim: ``m``, the size of one observation.
    """

    event_shape: tuple[int, ...]
    out_dim: int

    @property
    def in_dim(self) -> int:
        """``n = prod(event_shape)``."""
        return math.prod(self.event_shape)

    def _check(self, name: str, x: Any, shape: tuple[int, ...]) -> Tensor:
        x = check_tensor(name, x, finite=False)
        if tuple(x.shape[1:]) != shape or x.dim() != len(shape) + 1:
            raise ValueError(f"{name} must have shape (batch, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
        return x

    def forward(self, x: Tensor) -> Tensor:
        """``A x``: ``(B, *event) -> (B, m)``."""
        return self._forward(self._check("x", x, self.event_shape))

    __call__ = forward

    def adjoint(self, y: Tensor) -> Tensor:
        """``Aᵀ y``: ``(B, m) -> (B, *event)``."""
        return self._adjoint(self._check("y", y, (self.out_dim,)))

    def dense(self, *, dtype: torch.dtype = torch.float64, device: Any = None) -> Tensor:
        """The ``(m, n)`` matrix of ``A`` (columns ``A e_j``)."""
        eye = torch.eye(self.in_dim, dtype=dtype, device=device).reshape(self.in_dim, *self.event_shape)
        return self._forward(eye).T

    def svd(self) -> OperatorSVD:
        """``A = U diag(s) Vᵀ`` as functions (built once per operator, then cached)."""
        cached = getattr(self, "_svd_cache", None)
        if cached is None:
            cached = self._svd_cache = self._make_svd()
        return cached

    def _make_svd(self) -> OperatorSVD:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(event_shape={self.event_shape}, out_dim={self.out_dim})"


class MaskOperator(LinearOperator):
    """Keep the observed entries: ``(A x)_j = x_{i_j}`` for the ``True`` entries ``i_j`` of ``mask``.

    For inpainting (images) and imputation (tables): ``A`` is ``m`` rows of the identity, so
    ``U = I``, ``s = 1`` and ``Vᵀ x = (x_observed, x_missing)``.

    Args:
        mask: bool tensor of the event shape, ``True`` where ``x`` is observed (at least one).

    Example:
        >>> op = MaskOperator(torch.tensor([True, False, True]))
        >>> op(torch.tensor([[1.0, 2.0, 3.0]]))
        tensor([[1., 3.]])
    """

    def __init__(self, mask: Tensor):
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() == 0:
            raise TypeError(f"mask must be a bool tensor shaped like one x, got {mask!r:.60}")
        if not bool(mask.any()):
            raise ValueError("mask observes no entry (all False)")
        self.mask = mask
        self.event_shape = tuple(mask.shape)
        flat = mask.reshape(-1)
        self.observed = flat.nonzero().squeeze(1)
        self.missing = (~flat).nonzero().squeeze(1)
        self.out_dim = int(self.observed.numel())
        self._perm = torch.cat([self.observed, self.missing])

    def _forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)[:, self.observed.to(x.device)]

    def _adjoint(self, y: Tensor) -> Tensor:
        out = y.new_zeros(y.shape[0], self.in_dim)
        out[:, self.observed.to(y.device)] = y
        return out.reshape(y.shape[0], *self.event_shape)

    def _make_svd(self) -> OperatorSVD:
        perm = self._perm
        inv = torch.argsort(perm)

        def Vt(x: Tensor) -> Tensor:
            return x.reshape(x.shape[0], -1)[:, perm.to(x.device)]

        def V(z: Tensor) -> Tensor:
            return z[:, inv.to(z.device)].reshape(z.shape[0], *self.event_shape)

        return OperatorSVD(Vt=Vt, V=V, Ut=lambda y: y, U=lambda y: y,
                           singulars=torch.ones(self.out_dim, dtype=torch.float64))


class DenseOperator(LinearOperator):
    """Any matrix ``A: (m, n)`` acting on the flattened ``x`` (SVD by :func:`torch.linalg.svd`).

    Args:
        matrix: ``(m, n)`` float tensor.
        event_shape: shape of one ``x`` (default ``(n,)``).

    Example:
        >>> op = DenseOperator(torch.tensor([[1.0, 0.0]]))   # observe the first coordinate
        >>> op(torch.tensor([[3.0, 4.0]]))
        tensor([[3.]])
    """

    def __init__(self, matrix: Tensor, event_shape: Sequence[int] | None = None):
        matrix = check_tensor("matrix", matrix, ndim=2)
        self.matrix = matrix
        self.event_shape = _event(event_shape if event_shape is not None else (matrix.shape[1],))
        if math.prod(self.event_shape) != matrix.shape[1]:
            raise ValueError(f"matrix has {matrix.shape[1]} columns but event_shape {self.event_shape} has "
                             f"{math.prod(self.event_shape)} entries")
        self.out_dim = int(matrix.shape[0])
        self._svd = None

    def _forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1) @ self.matrix.to(x).T

    def _adjoint(self, y: Tensor) -> Tensor:
        return (y @ self.matrix.to(y)).reshape(y.shape[0], *self.event_shape)

    def _make_svd(self) -> OperatorSVD:
        if self._svd is None:
            U, s, Vh = torch.linalg.svd(self.matrix.to(torch.float64), full_matrices=True)
            self._svd = (U, s, Vh)
        U, s, Vh = self._svd
        return OperatorSVD(
            Vt=lambda x: x.reshape(x.shape[0], -1) @ Vh.to(x).T,
            V=lambda z: (z @ Vh.to(z)).reshape(z.shape[0], *self.event_shape),
            Ut=lambda y: y @ U.to(y), U=lambda z: z @ U.to(z).T, singulars=s)


class _Separable(LinearOperator):
    """``A = A_1 ⊗ … ⊗ A_r`` acting on the last ``r`` axes (``r = len(factors)``), leading axes untouched."""

    def _setup(self, event_shape: tuple[int, ...], factors: list[Tensor]) -> None:
        self.event_shape = event_shape
        self.factors = factors
        r = len(factors)
        self._lead = event_shape[: len(event_shape) - r]
        self._out_axes = tuple(int(f.shape[0]) for f in factors)
        self.out_dim = math.prod(self._lead) * math.prod(self._out_axes)
        self._svds = None

    def _apply(self, x: Tensor, mats: Sequence[Tensor], shape: tuple[int, ...]) -> Tensor:
        """Apply ``mats[i]`` along the ``i``-th of the last ``r`` axes of ``x: (B, *lead, *axes)``."""
        x = x.reshape(x.shape[0], *self._lead, *shape)
        r = len(mats)
        for i, m in enumerate(mats):
            axis = x.dim() - r + i
            x = torch.movedim(torch.movedim(x, axis, -1) @ m.to(x).T, -1, axis)
        return x

    def _forward(self, x: Tensor) -> Tensor:
        in_axes = tuple(self.event_shape[len(self._lead):])
        return self._apply(x, self.factors, in_axes).reshape(x.shape[0], -1)

    def _adjoint(self, y: Tensor) -> Tensor:
        out = self._apply(y, [f.T for f in self.factors], self._out_axes)
        return out.reshape(y.shape[0], *self.event_shape)

    def _make_svd(self) -> OperatorSVD:
        if self._svds is None:
            self._svds = [torch.linalg.svd(f.to(torch.float64), full_matrices=True) for f in self.factors]
        Us = [u for u, _, _ in self._svds]
        Vhs = [vh for _, _, vh in self._svds]
        in_axes = tuple(self.event_shape[len(self._lead):])
        ks = tuple(min(a, b) for a, b in zip(self._out_axes, in_axes))
        # singular values on the (k_1, ..., k_r) block, repeated over the leading axes
        grid = self._svds[0][1][: ks[0]]
        for (_, s, _), k in zip(self._svds[1:], ks[1:]):
            grid = grid[..., None] * s[:k]
        s_full = grid.expand(*self._lead, *ks).reshape(-1)
        # ordering: the block coordinates [k_1 x ... x k_r] of every leading index first, then the rest
        def block_index(axes: tuple[int, ...]) -> Tensor:
            idx = torch.arange(math.prod(self._lead) * math.prod(axes)).reshape(*self._lead, *axes)
            inside = torch.ones(axes, dtype=torch.bool)
            for i, k in enumerate(ks):
                sl = [slice(None)] * len(axes)
                sl[i] = slice(k, None)
                inside[tuple(sl)] = False
            inside = inside.expand(*self._lead, *axes)
            return torch.cat([idx[inside], idx[~inside]])

        perm_in, perm_out = block_index(in_axes), block_index(self._out_axes)
        inv_in, inv_out = torch.argsort(perm_in), torch.argsort(perm_out)

        def Vt(x: Tensor) -> Tensor:
            z = self._apply(x, [vh for vh in Vhs], in_axes).reshape(x.shape[0], -1)
            return z[:, perm_in.to(x.device)]

        def V(z: Tensor) -> Tensor:
            z = z[:, inv_in.to(z.device)]
            return self._apply(z, [vh.T for vh in Vhs], in_axes).reshape(z.shape[0], *self.event_shape)

        def Ut(y: Tensor) -> Tensor:
            return self._apply(y, [u.T for u in Us], self._out_axes).reshape(y.shape[0], -1)[:, perm_out.to(y.device)]

        def U(z: Tensor) -> Tensor:
            z = z[:, inv_out.to(z.device)]
            return self._apply(z, Us, self._out_axes).reshape(z.shape[0], -1)

        return OperatorSVD(Vt=Vt, V=V, Ut=Ut, U=U, singulars=s_full)


def _spatial_axes(event_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes a separable operator acts on: ``(D,)`` for vectors, ``(H, W)`` for ``(C, H, W)`` images."""
    if len(event_shape) == 1:
        return event_shape
    if len(event_shape) in (2, 3):
        return event_shape[-2:]
    raise ValueError(f"event_shape must be (D,), (H, W) or (C, H, W), got {event_shape}")


def _blur_matrix(n: int, kernel: Tensor) -> Tensor:
    """``(n, n)`` 'same' convolution with zero padding by an odd 1-D ``kernel``."""
    half = kernel.shape[0] // 2
    mat = torch.zeros(n, n, dtype=torch.float64)
    for offset in range(-half, half + 1):
        mat += torch.diag(torch.full((n - abs(offset),), float(kernel[offset + half]), dtype=torch.float64), offset)
    return mat


class BlurOperator(_Separable):
    r"""Separable blur with zero padding: ``A = K_H ⊗ K_W`` (or ``K`` for vectors), ``m = n``.

    ``kind="gaussian"``: ``k_j ∝ exp(-j²/(2 w²))``, ``|j| ≤ ⌊size/2⌋``; ``kind="box"``: ``k_j = 1/size``.

    Args:
        event_shape: ``(D,)``, ``(H, W)`` or ``(C, H, W)``.
        size: odd kernel length.
        width: the Gaussian's standard deviation in pixels (``kind="gaussian"``).
        kind: ``"gaussian"`` or ``"box"``.

    Example:
        >>> op = BlurOperator((1, 4, 4), size=3, kind="box")
        >>> op(torch.ones(1, 1, 4, 4)).reshape(4, 4)[1, 1].item()
        1.0
    """

    def __init__(self, event_shape: Sequence[int], *, size: int = 5, width: float = 1.0, kind: str = "gaussian"):
        event_shape = _event(event_shape)
        size = check_int("size", size, minimum=1)
        if size % 2 == 0:
            raise ValueError(f"size must be odd, got {size}")
        width = check_positive("width", width)
        kind = check_choice("kind", kind, ("gaussian", "box"))
        j = torch.arange(size, dtype=torch.float64) - size // 2
        kernel = torch.exp(-0.5 * (j / width) ** 2) if kind == "gaussian" else torch.ones(size, dtype=torch.float64)
        kernel = kernel / kernel.sum()
        self.size, self.width, self.kind = size, width, kind
        self._setup(event_shape, [_blur_matrix(n, kernel) for n in _spatial_axes(event_shape)])


class SubsampleOperator(_Separable):
    """Average non-overlapping blocks of ``factor`` pixels per axis (super-resolution): ``m = n / factor^r``.

    Args:
        event_shape: ``(D,)``, ``(H, W)`` or ``(C, H, W)``; the spatial sizes divisible by ``factor``.
        factor: block size ``>= 1``.

    Example:
        >>> SubsampleOperator((4,), factor=2)(torch.tensor([[1.0, 3.0, 5.0, 7.0]]))
        tensor([[2., 6.]])
    """

    def __init__(self, event_shape: Sequence[int], *, factor: int = 2):
        event_shape = _event(event_shape)
        factor = check_int("factor", factor, minimum=1)
        axes = _spatial_axes(event_shape)
        if any(n % factor for n in axes):
            raise ValueError(f"factor={factor} must divide the spatial sizes {axes}")
        self.factor = factor
        mats = [torch.kron(torch.eye(n // factor, dtype=torch.float64),
                           torch.full((1, factor), 1.0 / factor, dtype=torch.float64)) for n in axes]
        self._setup(event_shape, mats)


OPERATORS: tuple[str, ...] = ("inpaint", "blur", "subsample", "noise")
"""Names accepted by :func:`make_operator` (and the CLI's ``--operator``)."""


def make_operator(name: str, event_shape: Sequence[int], *, mask: Tensor | None = None, **opts: Any) -> LinearOperator:
    """An operator by name: ``"inpaint"`` (:class:`MaskOperator`, ``mask`` required), ``"blur"``,
    ``"subsample"`` or ``"noise"`` (the identity, pure denoising).

    Example:
        >>> make_operator("noise", (3,)).out_dim
        3
    """
    name = check_choice("operator", name, OPERATORS)
    event_shape = _event(event_shape)
    if name == "inpaint":
        if mask is None:
            raise ValueError("operator 'inpaint' needs mask=... (True where x is observed)")
        return MaskOperator(mask)
    if name == "blur":
        return BlurOperator(event_shape, **opts)
    if name == "subsample":
        return SubsampleOperator(event_shape, **opts)
    return MaskOperator(torch.ones(event_shape, dtype=torch.bool))


class LinearGaussianDistribution(dist.Normal):
    """``N(A x, σ_y² I)`` over ``y: (*batch, m)`` (one event of size ``m``) that remembers ``A``, ``σ_y`` and ``x``.

    Built by :class:`LinearGaussian`; behaves as ``dist.Normal(A x, σ_y).to_event(1)``.
    """

    def __init__(self, operator: LinearOperator, noise_std: float, x: Tensor):
        self.operator, self.noise_std, self.x = operator, noise_std, x
        event_dim = len(operator.event_shape)
        batch = x.shape[: x.dim() - event_dim]
        loc = operator._forward(x.reshape(-1, *operator.event_shape)).reshape(*batch, operator.out_dim)
        super().__init__(loc, torch.full_like(loc, noise_std))
        self._reinterpret()

    def _reinterpret(self) -> None:
        # one event of size m (what .to_event(1) would give), keeping this class for the samplers to read
        self._batch_shape, self._event_shape = self._batch_shape[:-1], self._batch_shape[-1:]

    def log_prob(self, value: Tensor) -> Tensor:
        return super().log_prob(value).sum(-1)

    def expand(self, batch_shape, _instance=None):
        return dist.Normal(self.loc, self.scale).to_event(1).expand(batch_shape)


class LinearGaussian:
    r"""The linear-Gaussian likelihood ``p(y | x) = N(y; A x, σ_y² I)``.

    ``LinearGaussian(op, σ_y)(x)`` is the Pyro distribution of ``y`` given ``x``; writing it in a model,
    ``pyro.sample("y", LinearGaussian(op, 0.1)(x), obs=y)``, lets the methods that need linear-Gaussian
    structure (``"pigdm"``, ``"ddrm"``) find ``A`` and ``σ_y``.

    Args:
        operator: a :class:`LinearOperator`, or a ``(m, n)`` matrix (wrapped as :class:`DenseOperator`).
        noise_std: ``σ_y > 0``.

    Example:
        >>> lik = LinearGaussian(torch.eye(2), 0.5)
        >>> lik(torch.zeros(2)).log_prob(torch.zeros(2)).shape
        torch.Size([])
    """

    def __init__(self, operator: LinearOperator | Tensor, noise_std: float):
        if isinstance(operator, Tensor):
            operator = DenseOperator(operator)
        if not isinstance(operator, LinearOperator):
            raise TypeError(f"operator must be a probgen.infer.LinearOperator or a matrix, got {type(operator).__name__}")
        self.operator = operator
        self.noise_std = check_positive("noise_std", noise_std)

    def __call__(self, x: Tensor) -> LinearGaussianDistribution:
        x = check_tensor("x", x, finite=False)
        event = self.operator.event_shape
        if tuple(x.shape[x.dim() - len(event):]) != event:
            raise ValueError(f"x must end with the operator's event shape {event}, got {tuple(x.shape)}")
        return LinearGaussianDistribution(self.operator, self.noise_std, x)

    def sample(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``y = A x + σ_y ε`` for ``x: (B, *event)`` -> ``(B, m)``."""
        ax = self.operator(x)
        return ax + self.noise_std * torch.randn(ax.shape, generator=generator, dtype=ax.dtype, device=ax.device)

    def __repr__(self) -> str:
        return f"LinearGaussian({self.operator!r}, noise_std={self.noise_std:g})"
