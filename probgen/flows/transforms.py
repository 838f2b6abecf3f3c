"""Transforms that :mod:`pyro.distributions.transforms` lacks, written as Pyro ``TransformModule`` s.

Direction convention (Pyro's): a transform ``T`` maps the base (noise) side to the data side,
``y = T(z)``; :class:`~pyro.distributions.TransformedDistribution` samples with ``T`` and scores
with ``T⁻¹``:

.. math::

    \\log p(y) = \\log p_{\\text{base}}(T^{-1}(y)) - \\log\\left|\\det \\frac{\\partial T}{\\partial z}\\right|
    _{z = T^{-1}(y)}.

What is here:

* :class:`ActNorm` — per-dimension affine normalisation with data-dependent initialisation
  (Kingma & Dhariwal, 2018, arXiv:1807.03039).
* :class:`Permutation` — a fixed permutation kept as a buffer (so it moves with ``.to(device)`` and
  is saved in the ``state_dict``), unlike :class:`pyro.distributions.transforms.Permute`.
* :class:`InvertiblePlanar` / :class:`InvertibleRadial` — Pyro's planar and radial transforms
  (Rezende & Mohamed, 2015, arXiv:1505.05770) with the inverse Pyro leaves out: a bracketed 1-D
  bisection for planar and the closed-form root of a quadratic for radial.
* :class:`AffineAutoregressive` — Pyro's affine autoregressive transform whose sequential inverse
  keeps the input dtype (Pyro's builds float32 zeros and fails in float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms import AffineAutoregressive as _PyroAffineAutoregressive
from pyro.distributions.transforms import Planar, Radial
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from torch import Tensor

from probgen._checks import check_int

__all__ = ["ActNorm", "Permutation", "InvertiblePlanar", "InvertibleRadial", "AffineAutoregressive"]


class ActNorm(TransformModule):
    """Per-dimension affine map with data-dependent initialisation (Glow's ActNorm).

    .. math::

        y = z \\odot e^{s} + b, \\qquad \\log|\\det \\partial y / \\partial z| = \\textstyle\\sum_i s_i.

    The first time the inverse (density) direction sees a batch ``y: (B, D)`` with ``B >= 2``
    while the module is not yet initialised, ``b`` and ``s`` are set to the batch mean and log
    standard deviation, so that ``z = (y - b) e^{-s}`` has zero mean and unit variance per
    dimension. The flag is a buffer (``initialized``), so a loaded checkpoint is not
    re-initialised. Before initialisation (e.g. sampling from a fresh model) the map is the
    identity.

    Reference: Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    2018, arXiv:1807.03039.

    Args:
        dim: event size ``D``.
        eps: floor added to the batch standard deviation at initialisation.

    Example:
        >>> t = ActNorm(2)
        >>> z = t.inv(torch.tensor([[1.0, 10.0], [3.0, 30.0]]))
        >>> [[round(v, 4) for v in row] for row in z.tolist()]
        [[-1.0, -1.0], [1.0, 1.0]]
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, dim: int, *, eps: float = 1e-6) -> None:
        super().__init__(cache_size=1)
        dim = check_int("dim", dim, minimum=1)
        self.dim = dim
        self.eps = float(eps)
        self.loc = torch.nn.Parameter(torch.zeros(dim))
        self.log_scale = torch.nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))


    @torch.no_grad()
    def initialize(self, y: Tensor) -> None:
        """Set ``loc`` and ``log_scale`` from a batch ``y: (B, D)`` so that ``T⁻¹(y)`` is standardised."""
        flat = y.reshape(-1, self.dim)
        self.loc.copy_(flat.mean(0))
        self.log_scale.copy_(torch.log(flat.std(0, correction=0) + self.eps))
        self.initialized.fill_(True)

    def _call(self, x: Tensor) -> Tensor:
        return x * torch.exp(self.log_scale) + self.loc

    def _inverse(self, y: Tensor) -> Tensor:
        if not bool(self.initialized) and y.reshape(-1, self.dim).shape[0] >= 2:
            self.initialize(y)
        return (y - self.loc) * torch.exp(-self.log_scale)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.log_scale.sum().expand(x.shape[:-1])


class Permutation(TransformModule):
    """Reorder the last dimension by a fixed permutation: ``y = z[..., perm]`` (``log|det| = 0``).

    The permutation is a buffer, so it follows ``.to(device)`` and is stored in the
    ``state_dict``. Use :meth:`reverse` (deterministic) or :meth:`random` (seeded).

    Args:
        permutation: a ``LongTensor`` holding a permutation of ``0, ..., D-1``.

    Example:
        >>> Permutation.reverse(3)(torch.tensor([[1.0, 2.0, 3.0]])).tolist()
        [[3.0, 2.0, 1.0]]
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    volume_preserving = True

    def __init__(self, permutation: Tensor) -> None:
        super().__init__(cache_size=1)
        if not isinstance(permutation, Tensor) or permutation.dim() != 1 or permutation.is_floating_point():
            raise TypeError(f"permutation must be a 1-D LongTensor, got {permutation!r}")
        perm = permutation.long()
        if not torch.equal(torch.sort(perm).values, torch.arange(perm.numel(), device=perm.device)):
            raise ValueError(f"permutation must hold each of 0..{perm.numel() - 1} once, got {perm.tolist()}")
        self.register_buffer("permutation", perm)
        self.register_buffer("inv_permutation", torch.argsort(perm))


    @classmethod
    def reverse(cls, dim: int) -> Permutation:
        """The reversal ``(D-1, ..., 0)``."""
        dim = check_int("dim", dim, minimum=1)
        return cls(torch.arange(dim - 1, -1, -1))

    @classmethod
    def random(cls, dim: int, *, generator: torch.Generator | None = None) -> Permutation:
        """A uniformly random permutation drawn with ``generator`` (CPU)."""
        dim = check_int("dim", dim, minimum=1)
        return cls(torch.randperm(dim, generator=generator))

    def _call(self, x: Tensor) -> Tensor:
        return x.index_select(-1, self.permutation)

    def _inverse(self, y: Tensor) -> Tensor:
        return y.index_select(-1, self.inv_permutation)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return x.new_zeros(x.shape[:-1])


class InvertiblePlanar(Planar):
    """Pyro's planar transform ``y = z + û tanh(wᵀz + b)`` with a numerical inverse.

    Pyro constrains ``c = wᵀû > -1``, so ``α ↦ α + c tanh(α + b)`` is increasing. Projecting
    ``y`` on ``w`` gives the scalar equation ``wᵀy = α + c tanh(α + b)`` for ``α = wᵀz``, whose root
    lies in ``[wᵀy - |c|, wᵀy + |c|]``; it is found by bisection (``num_bisections`` halvings, to
    machine precision in float64), polished by one Newton step that carries the implicit-function
    gradient, and then ``z = y - û tanh(α + b)``.

    Reference: Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015,
    arXiv:1505.05770.

    Example:
        >>> t = InvertiblePlanar(2)
        >>> z = torch.randn(4, 2)
        >>> bool(torch.allclose(t.inv(t(z)), z, atol=1e-5))
        True
    """

    def __init__(self, input_dim: int, *, num_bisections: int = 64) -> None:
        super().__init__(check_int("input_dim", input_dim, minimum=1))
        self.num_bisections = check_int("num_bisections", num_bisections, minimum=1)


    def _inverse(self, y: Tensor) -> Tensor:
        bias, u, w = self._params()
        u_hat = self.u_hat(u, w)
        c = (w * u_hat).sum(-1)
        s = (y * w).sum(-1)
        lo = s - c.abs() - 1e-6
        hi = s + c.abs() + 1e-6
        for _ in range(self.num_bisections):
            mid = 0.5 * (lo + hi)
            above = mid + c * torch.tanh(mid + bias) > s
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
        alpha0 = (0.5 * (lo + hi)).detach()
        # one Newton step from the (detached) root: same value, and by the implicit function theorem
        # the right first derivatives w.r.t. y and the parameters (so rsample and autograd Jacobians work)
        act0 = torch.tanh(alpha0 + bias)
        alpha = alpha0 - (alpha0 + c * act0 - s) / (1 + c * (1 - act0.pow(2)))
        x = y - u_hat * torch.tanh(alpha + bias).unsqueeze(-1)
        # refresh the cached log-determinant for the (x, y) pair the base class now caches
        act = torch.tanh((x * w).sum(-1, keepdim=True) + bias)
        psi = (1.0 - act.pow(2)) * w
        self._cached_logDetJ = torch.log(torch.abs(1 + (psi * u_hat).sum(-1)))
        return x


class InvertibleRadial(Radial):
    """Pyro's radial transform ``y = z + β (z - z₀) / (α + r)``, ``r = |z - z₀|``, with its inverse.

    Pyro constrains ``α > 0`` and ``β > -α``. Taking norms, ``ρ = |y - z₀| = r (1 + β / (α + r))``,
    i.e. ``r² + (α + β - ρ) r - α ρ = 0``, whose non-negative root is

    .. math:: r = \\tfrac12\\left(\\rho - \\alpha - \\beta + \\sqrt{(\\alpha + \\beta - \\rho)^2 + 4\\alpha\\rho}\\right),

    and then ``z = z₀ + (y - z₀) / (1 + β / (α + r))``.

    Reference: Rezende & Mohamed, 2015, arXiv:1505.05770.

    Example:
        >>> t = InvertibleRadial(2)
        >>> z = torch.randn(4, 2)
        >>> bool(torch.allclose(t.inv(t(z)), z, atol=1e-5))
        True
    """

    def __init__(self, input_dim: int) -> None:
        super().__init__(check_int("input_dim", input_dim, minimum=1))


    def _inverse(self, y: Tensor) -> Tensor:
        x0, alpha_prime, beta_prime = self._params()
        alpha = F.softplus(alpha_prime)
        beta = -alpha + F.softplus(beta_prime)
        diff_y = y - x0
        rho = diff_y.norm(dim=-1, keepdim=True)
        b = alpha + beta - rho
        r = 0.5 * (-b + torch.sqrt(b * b + 4 * alpha * rho))
        x = x0 + diff_y / (1 + beta / (alpha + r))
        h = (alpha + r).reciprocal()
        beta_h = beta * h
        self._cached_logDetJ = (
            (x0.size(-1) - 1) * torch.log1p(beta_h) + torch.log1p(beta_h - beta * h * h * r)
        ).sum(-1)
        return x


class AffineAutoregressive(_PyroAffineAutoregressive):
    """Pyro's :class:`~pyro.distributions.transforms.AffineAutoregressive` with a dtype-safe inverse.

    ``y_i = z_i e^{s_i(z_{<i})} + m_i(z_{<i})``: the forward map (base → data) is one network
    pass; the inverse is sequential, ``D`` passes. Used as is it is an IAF (Kingma et al., 2016,
    arXiv:1606.04934); used through ``.inv`` it is a MAF (Papamakarios et al., 2017,
    arXiv:1705.07057). Pyro's inverse starts from float32 zeros, which fails for float64
    models; this one starts from ``zeros_like(y)``. Only the plain (non-``stable``) variant is
    supported.

    Example:
        >>> from pyro.nn import AutoRegressiveNN
        >>> t = AffineAutoregressive(AutoRegressiveNN(3, [8], permutation=torch.arange(3))).double()
        >>> z = torch.randn(2, 3, dtype=torch.float64)
        >>> bool(torch.allclose(t.inv(t(z)), z))
        True
    """


    def _inverse(self, y: Tensor) -> Tensor:
        x = torch.zeros_like(y)
        log_scale = None
        for idx in self.arn.permutation.tolist():
            mean, log_scale = self.arn(x)
            log_scale = clamp_preserve_gradients(log_scale, self.log_scale_min_clip, self.log_scale_max_clip)
            x = x.clone()
            x[..., idx] = (y[..., idx] - mean[..., idx]) * torch.exp(-log_scale[..., idx])
        # the last pass saw every coordinate but the last in order, which no log-scale depends on,
        # so its log-scales are those of the final x (as in Pyro)
        self._cached_log_scale = log_scale
        return x
