"""Maximum mean discrepancy (MMD²), its permutation test, and the kernel inception distance (KID).

The squared MMD between distributions :math:`P` and :math:`Q` under a kernel :math:`k` is

.. math::

    \\mathrm{MMD}^2(P, Q) = \\mathbb{E}\\,k(x, x') + \\mathbb{E}\\,k(y, y') - 2\\,\\mathbb{E}\\,k(x, y),
    \\qquad x, x' \\sim P,\\; y, y' \\sim Q,

which is zero iff :math:`P = Q` for a characteristic kernel (Gaussian, inverse multiquadric).
Everything here runs on the inputs' device in blocks, so the memory used by a kernel matrix stays
bounded except in :func:`mmd_test`, which holds the pooled ``(N, N)`` kernel matrix once.

References:
    Gretton, Borgwardt, Rasch, Schölkopf, Smola (2012), "A kernel two-sample test", JMLR 13.
    Bińkowski, Sutherland, Arbel, Gretton (2018), "Demystifying MMD GANs", arXiv:1801.01401.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from probgen._checks import check_choice_or_callable, check_int, check_nonnegative, check_positive, check_tensor

__all__ = ["mmd", "mmd_test", "kid", "median_bandwidth", "KERNELS"]

#: Names accepted by ``kernel=`` (a callable ``kernel(x, y) -> (n, m)`` matrix is accepted too).
KERNELS = ("gaussian", "imq", "polynomial")

_BLOCK = 2048  # rows/columns of a kernel block: 2048² floats = 16 MiB in float32
_MEDIAN_MAX_POINTS = 1000  # the median heuristic looks at most at this many pooled points


# ---------------------------------------------------------------------------------------------------
# shared helpers (also used by kde.py, manifold.py, sliced.py and frechet.py)


def _check_features(name: str, x: object, *, min_samples: int = 1) -> Tensor:
    """Check a feature matrix ``(N, F)`` with at least ``min_samples`` rows."""
    x = check_tensor(name, x, ndim=2)
    if x.shape[0] < min_samples:
        raise ValueError(f"{name} must have at least {min_samples} samples (rows), got shape {tuple(x.shape)}")
    return x


def _check_pair(x_name: str, x: object, y_name: str, y: object, *, min_samples: int = 1) -> tuple[Tensor, Tensor]:
    """Check two feature matrices with the same number of columns, dtype and device."""
    x = _check_features(x_name, x, min_samples=min_samples)
    y = _check_features(y_name, y, min_samples=min_samples)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{x_name} and {y_name} must have the same number of features (columns), "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.device != y.device:
        raise ValueError(f"{x_name} and {y_name} must be on the same device, got {x.device} and {y.device}")
    if x.dtype != y.dtype:
        raise TypeError(f"{x_name} and {y_name} must have the same dtype, got {x.dtype} and {y.dtype}")
    return x, y


def _sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """Squared Euclidean distances ``(n, F), (m, F) -> (n, m)``, clamped at zero against round-off."""
    d = x.pow(2).sum(-1, keepdim=True) + y.pow(2).sum(-1).unsqueeze(0) - 2.0 * (x @ y.mT)
    return d.clamp_min_(0.0)


def median_bandwidth(z: Tensor) -> Tensor:
    """Median heuristic: the median pairwise Euclidean distance between the rows of ``z``.

    At most 1,000 evenly spaced rows are used (deterministic), so the cost stays bounded; pairs of a
    row with itself are left out.

    Args:
        z: ``(N, F)`` pooled sample, ``N >= 2``.

    Returns:
        A 0-d tensor on ``z``'s device and dtype; 1.0 if every pair coincides.

    Example:
        >>> float(median_bandwidth(torch.tensor([[0.0], [1.0], [3.0]])))
        2.0
    """
    z = _check_features("z", z, min_samples=2)
    n = z.shape[0]
    if n > _MEDIAN_MAX_POINTS:
        idx = torch.linspace(0, n - 1, _MEDIAN_MAX_POINTS, device=z.device).round().long()
        z = z[idx]
        n = z.shape[0]
    d2 = _sq_dists(z, z)
    iu = torch.triu_indices(n, n, offset=1, device=z.device)
    dists = d2[iu[0], iu[1]].sqrt()
    # torch.median returns the lower median; average the two middle values like numpy
    sorted_d = dists.sort().values
    k = sorted_d.numel()
    med = 0.5 * (sorted_d[(k - 1) // 2] + sorted_d[k // 2])
    return torch.where(med > 0, med, torch.ones_like(med))


def _make_kernel(
    kernel: str | Callable[[Tensor, Tensor], Tensor],
    bandwidth: Tensor | None,
    *,
    degree: int,
    gamma: float | None,
    coef0: float,
    num_features: int,
) -> Callable[[Tensor, Tensor], Tensor]:
    if callable(kernel):
        return kernel
    if kernel == "gaussian":
        h2 = bandwidth**2

        def k(a: Tensor, b: Tensor) -> Tensor:
            return torch.exp(-_sq_dists(a, b) / (2.0 * h2))

    elif kernel == "imq":
        h2 = bandwidth**2

        def k(a: Tensor, b: Tensor) -> Tensor:
            return torch.rsqrt(1.0 + _sq_dists(a, b) / h2)

    else:  # polynomial
        g = 1.0 / num_features if gamma is None else gamma

        def k(a: Tensor, b: Tensor) -> Tensor:
            return (g * (a @ b.mT) + coef0) ** degree

    return k


def _kernel_sums(k: Callable[[Tensor, Tensor], Tensor], a: Tensor, b: Tensor, *, same: bool) -> tuple[Tensor, Tensor]:
    """Blocked ``(sum of all k(a_i, b_j), sum of the diagonal k(a_i, b_i) if same)``."""
    total = a.new_zeros(())
    diag = a.new_zeros(())
    for i in range(0, a.shape[0], _BLOCK):
        ai = a[i : i + _BLOCK]
        for j in range(0, b.shape[0], _BLOCK):
            block = k(ai, b[j : j + _BLOCK])
            total = total + block.sum()
            if same and i == j:
                diag = diag + block.diagonal().sum()
    return total, diag


def _resolve_kernel(
    x: Tensor,
    y: Tensor,
    kernel: str | Callable,
    bandwidth: float | Tensor | None,
    *,
    degree: int,
    gamma: float | None,
    coef0: float,
) -> Callable[[Tensor, Tensor], Tensor]:
    kernel = check_choice_or_callable("kernel", kernel, KERNELS)
    check_int("degree", degree, minimum=1)
    if gamma is not None:
        gamma = check_positive("gamma", gamma)
    coef0 = check_nonnegative("coef0", coef0)
    h = None
    if kernel in ("gaussian", "imq"):
        if bandwidth is None:
            h = median_bandwidth(torch.cat([x, y]))
        else:
            h = torch.as_tensor(check_positive("bandwidth", bandwidth), dtype=x.dtype, device=x.device)
    elif bandwidth is not None:
        raise ValueError(f"bandwidth is only used by the 'gaussian' and 'imq' kernels, got kernel={kernel!r}")
    return _make_kernel(kernel, h, degree=degree, gamma=gamma, coef0=float(coef0), num_features=x.shape[1])


def mmd(
    x: Tensor,
    y: Tensor,
    *,
    kernel: str | Callable[[Tensor, Tensor], Tensor] = "gaussian",
    bandwidth: float | Tensor | None = None,
    unbiased: bool = True,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> Tensor:
    """Squared maximum mean discrepancy between two samples.

    The unbiased U-statistic (Gretton et al. 2012, eq. 3) leaves out the diagonal terms:

    .. math::

        \\widehat{\\mathrm{MMD}}^2_u = \\frac{1}{m(m-1)}\\sum_{i \\ne j} k(x_i, x_j)
        + \\frac{1}{n(n-1)}\\sum_{i \\ne j} k(y_i, y_j) - \\frac{2}{mn}\\sum_{i,j} k(x_i, y_j);

    it can be negative, and its mean is exactly zero when both samples come from one distribution.
    The biased V-statistic (``unbiased=False``) keeps the diagonals and is always ``>= 0``.

    Kernels, with ``d = |a - b|`` and bandwidth ``h``:

    * ``"gaussian"``: ``exp(-d² / (2 h²))``;
    * ``"imq"`` (inverse multiquadric): ``(1 + d² / h²)^(-1/2)``;
    * ``"polynomial"``: ``(gamma aᵀb + coef0)^degree`` with ``gamma = 1 / F`` by default (the KID kernel);
    * a callable ``kernel(a: (n, F), b: (m, F)) -> (n, m)``.

    With ``bandwidth=None`` the median heuristic is used: ``h`` is the median pairwise distance of the
    pooled sample ``[x; y]`` (:func:`median_bandwidth`).

    Args:
        x: ``(m, F)`` first sample, ``m >= 2``.
        y: ``(n, F)`` second sample, ``n >= 2``.
        kernel: kernel name or callable.
        bandwidth: ``h`` for the Gaussian and IMQ kernels, ``None`` for the median heuristic.
        unbiased: U-statistic (default) or V-statistic.
        degree, gamma, coef0: polynomial kernel parameters.

    Returns:
        0-d tensor, the MMD² estimate, on ``x``'s device and dtype.

    Reference:
        Gretton, Borgwardt, Rasch, Schölkopf, Smola (2012), "A kernel two-sample test", JMLR 13:723–773.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g) + 1.0
        >>> bool(mmd(x, y) > 0.1)
        True
    """
    x, y = _check_pair("x", x, "y", y, min_samples=2)
    k = _resolve_kernel(x, y, kernel, bandwidth, degree=degree, gamma=gamma, coef0=coef0)
    m, n = x.shape[0], y.shape[0]
    kxx, dxx = _kernel_sums(k, x, x, same=True)
    kyy, dyy = _kernel_sums(k, y, y, same=True)
    kxy, _ = _kernel_sums(k, x, y, same=False)
    if unbiased:
        return (kxx - dxx) / (m * (m - 1)) + (kyy - dyy) / (n * (n - 1)) - 2.0 * kxy / (m * n)
    return kxx / m**2 + kyy / n**2 - 2.0 * kxy / (m * n)


def mmd_test(
    x: Tensor,
    y: Tensor,
    *,
    num_permutations: int = 500,
    kernel: str | Callable[[Tensor, Tensor], Tensor] = "gaussian",
    bandwidth: float | Tensor | None = None,
    unbiased: bool = True,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """Permutation two-sample test of ``H0: P = Q`` with the MMD² statistic.

    The pooled sample ``z = [x; y]`` (``N = m + n`` rows) is relabelled ``num_permutations`` times;
    the p-value is

    .. math::

        p = \\frac{1 + \\#\\{b : \\widehat{\\mathrm{MMD}}^2_{(b)} \\ge \\widehat{\\mathrm{MMD}}^2\\}}{1 + B},

    which is a valid (slightly conservative) p-value for any ``B``. The median-heuristic bandwidth
    depends on the pooled sample only, so it is the same under every relabelling. The pooled
    ``(N, N)`` kernel matrix is computed once; permutations are then evaluated ``batch_size`` at a
    time with one matrix product, through ``uᵀ K u`` for the 0/1 indicator ``u`` of the first group.

    Args:
        x: ``(m, F)``, ``m >= 2``.
        y: ``(n, F)``, ``n >= 2``.
        num_permutations: ``B >= 1``.
        kernel, bandwidth, unbiased, degree, gamma, coef0: as in :func:`mmd`.
        generator: a ``torch.Generator`` on ``x``'s device, for reproducible permutations.
        batch_size: permutations evaluated per matrix product (memory ``N × batch_size``).

    Returns:
        ``(mmd2, p_value)``, two 0-d tensors on ``x``'s device.

    Reference:
        Gretton et al. (2012), "A kernel two-sample test", JMLR 13, section 5 and appendix.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + 1.0
        >>> stat, p = mmd_test(x, y, num_permutations=99, generator=g)
        >>> bool(p <= 0.01)
        True
    """
    x, y = _check_pair("x", x, "y", y, min_samples=2)
    num_permutations = check_int("num_permutations", num_permutations, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    k = _resolve_kernel(x, y, kernel, bandwidth, degree=degree, gamma=gamma, coef0=coef0)
    m, n = x.shape[0], y.shape[0]
    z = torch.cat([x, y])
    N = m + n
    K = torch.empty(N, N, dtype=z.dtype, device=z.device)
    for i in range(0, N, _BLOCK):
        for j in range(0, N, _BLOCK):
            K[i : i + _BLOCK, j : j + _BLOCK] = k(z[i : i + _BLOCK], z[j : j + _BLOCK])
    if unbiased:
        K.diagonal().zero_()
        cxx, cyy = 1.0 / (m * (m - 1)), 1.0 / (n * (n - 1))
    else:
        cxx, cyy = 1.0 / m**2, 1.0 / n**2
    cxy = 1.0 / (m * n)
    row = K.sum(1)  # K 1
    total = row.sum()  # 1ᵀ K 1

    def stat(u: Tensor) -> Tensor:
        # u: (P, N) indicators of the first group; v = 1 - u
        q = ((u @ K) * u).sum(1)  # uᵀ K u
        a = u @ row  # uᵀ K 1
        return cxx * q + cyy * (total - 2.0 * a + q) - 2.0 * cxy * (a - q)

    u0 = torch.zeros(1, N, dtype=z.dtype, device=z.device)
    u0[0, :m] = 1.0
    observed = stat(u0)[0]
    exceed = torch.zeros((), dtype=torch.long, device=z.device)
    done = 0
    while done < num_permutations:
        p = min(batch_size, num_permutations - done)
        perm = torch.rand(p, N, generator=generator, device=z.device).argsort(dim=1)
        u = torch.zeros(p, N, dtype=z.dtype, device=z.device)
        u.scatter_(1, perm[:, :m], 1.0)
        exceed = exceed + (stat(u) >= observed).sum()
        done += p
    p_value = (1.0 + exceed.to(z.dtype)) / (1.0 + num_permutations)
    return observed, p_value


def kid(
    x_feats: Tensor,
    y_feats: Tensor,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Kernel inception distance: unbiased polynomial-kernel MMD² averaged over random subsets.

    For each of ``num_subsets`` subsets, ``s = min(subset_size, m, n)`` rows of each feature matrix are
    drawn without replacement and the unbiased :func:`mmd` U-statistic with the cubic kernel

    .. math::

        k(a, b) = (\\gamma\\, a^\\top b + c_0)^{d}, \\qquad \\gamma = 1/F,\\; c_0 = 1,\\; d = 3,

    is computed; KID is their mean. Unlike FID, KID is an unbiased estimator of a population quantity
    (mean exactly 0 when both sets come from one distribution), so values from different sample sizes
    are comparable. The std is over subsets (population std, as in the reference implementation) and
    measures subset-to-subset variability, not the standard error of the mean. Computed in float64.

    Args:
        x_feats: ``(m, F)`` features of the real data, ``m >= 2``.
        y_feats: ``(n, F)`` features of the generated data, ``n >= 2``.
        num_subsets: number of subsets.
        subset_size: rows per subset (capped at ``min(m, n)``).
        degree, gamma, coef0: polynomial kernel parameters.
        generator: a ``torch.Generator`` on the features' device, for reproducible subsets.

    Returns:
        ``(mean, std)``, two 0-d tensors in the features' dtype and device.

    Reference:
        Bińkowski, Sutherland, Arbel, Gretton (2018), "Demystifying MMD GANs", arXiv:1801.01401.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a, b = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
        >>> mean, std = kid(a, b, num_subsets=10, subset_size=100, generator=g)
        >>> bool(mean.abs() < 0.05)
        True
    """
    x, y = _check_pair("x_feats", x_feats, "y_feats", y_feats, min_samples=2)
    num_subsets = check_int("num_subsets", num_subsets, minimum=1)
    subset_size = check_int("subset_size", subset_size, minimum=2)
    degree = check_int("degree", degree, minimum=1)
    if gamma is not None:
        gamma = check_positive("gamma", gamma)
    coef0 = check_nonnegative("coef0", coef0)
    out_dtype = x.dtype
    x, y = x.double(), y.double()
    m, n, F = x.shape[0], y.shape[0], x.shape[1]
    s = min(subset_size, m, n)
    g = 1.0 / F if gamma is None else gamma
    # subsets per batched matrix product: keep (chunk, s, s) under ~16M entries
    chunk = max(1, (1 << 24) // (s * s))
    values = []
    for start in range(0, num_subsets, chunk):
        c = min(chunk, num_subsets - start)
        ix = torch.rand(c, m, generator=generator, device=x.device).argsort(dim=1)[:, :s]
        iy = torch.rand(c, n, generator=generator, device=x.device).argsort(dim=1)[:, :s]
        xs, ys = x[ix], y[iy]  # (c, s, F)
        kxx = (g * (xs @ xs.mT) + coef0) ** degree
        kyy = (g * (ys @ ys.mT) + coef0) ** degree
        kxy = (g * (xs @ ys.mT) + coef0) ** degree
        off = s * (s - 1)
        vxx = (kxx.sum((1, 2)) - kxx.diagonal(dim1=1, dim2=2).sum(1)) / off
        vyy = (kyy.sum((1, 2)) - kyy.diagonal(dim1=1, dim2=2).sum(1)) / off
        values.append(vxx + vyy - 2.0 * kxy.mean((1, 2)))
    v = torch.cat(values)
    return v.mean().to(out_dtype), v.std(correction=0).to(out_dtype)
