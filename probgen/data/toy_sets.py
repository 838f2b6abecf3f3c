"""The 2-D toy data sets of the flow and diffusion papers, with exact log-densities where they exist.

The generators follow ``lib/toy_data.py`` of FFJORD (Grathwohl et al., 2019, arXiv:1810.01367), written in
torch and made i.i.d.: every point draws its own mixture component and angle (FFJORD spaces the angles of
``rings`` and ``circles`` evenly, which is not a sample from any density). With that change four sets have a
closed-form density:

* ``8gaussians``: an equal mixture of 8 isotropic Gaussians,
  ``p(x) = 1/8 sum_k N(x; c_k, s^2 I)``, ``c_k = 2 sqrt(2) (cos(k pi/4), sin(k pi/4))``, ``s = 1/(2 sqrt(2))``.
* ``checkerboard``: uniform on the 8 squares ``[2i, 2i+2) x [2j, 2j+2)``, ``i, j in {-2, ..., 1}``,
  ``i + j`` even: ``p(x) = 1/32`` there and ``0`` elsewhere.
* ``rings``: an equal mixture over the radii ``R_k in {0.75, 1.5, 2.25, 3}`` of "a uniform point on the
  circle of radius ``R_k`` plus ``N(0, s^2 I)`` noise", ``s = 0.08``. Averaging the Gaussian kernel over
  the angle gives the Rice-type density
  ``p(x) = 1/4 sum_k exp(-(r^2 + R_k^2) / (2 s^2)) I_0(r R_k / s^2) / (2 pi s^2)``, ``r = |x|``,
  with ``I_0`` the modified Bessel function. It is smooth at ``r = 0`` (no ``1/r`` factor appears in
  Cartesian coordinates) and is evaluated with the scaled ``i0e`` so it never overflows.
* ``circles``: the same construction with radii ``{1.5, 3}`` and ``s = 0.24`` (scikit-learn's
  ``make_circles(factor=0.5, noise=0.08)`` scaled by 3, as in FFJORD).

``moons``, ``2spirals``, ``pinwheel`` and ``swissroll`` have no closed-form density.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor

from probgen._checks import check_choice, check_event_shape, check_int, check_tensor

__all__ = [
    "TOY2D_NAMES",
    "TOY2D_WITH_DENSITY",
    "TOY2D_DESCRIPTIONS",
    "toy2d",
    "toy2d_log_prob",
    "toy2d_entropy",
]

TOY2D_NAMES: tuple[str, ...] = (
    "8gaussians",
    "checkerboard",
    "rings",
    "moons",
    "circles",
    "2spirals",
    "pinwheel",
    "swissroll",
)
"""Names accepted by :func:`toy2d`."""

TOY2D_WITH_DENSITY: tuple[str, ...] = ("8gaussians", "checkerboard", "rings", "circles")
"""Names accepted by :func:`toy2d_log_prob` and :func:`toy2d_entropy` (the sets with an exact density)."""

TOY2D_DESCRIPTIONS: dict[str, str] = {
    "8gaussians": "mixture of 8 Gaussians on a circle of radius 2*sqrt(2) (exact density)",
    "checkerboard": "uniform on the 8 black squares of a 4x4 checkerboard on [-4,4]^2 (exact density)",
    "rings": "4 noisy concentric rings, radii 0.75..3, noise 0.08 (exact density)",
    "moons": "two interleaving half circles (sklearn make_moons, noise 0.1, scaled by 2)",
    "circles": "2 noisy concentric circles, radii 1.5 and 3, noise 0.24 (exact density)",
    "2spirals": "two interleaved spirals (FFJORD)",
    "pinwheel": "5 curved Gaussian arms (FFJORD pinwheel)",
    "swissroll": "2-D swiss roll (sklearn make_swiss_roll, noise 1, divided by 5)",
}
"""One line per set, used by ``probgen data list``."""

_FLOAT_DTYPES = (torch.float32, torch.float64)

# ---------------------------------------------------------------------------------------------------
# constants of the sets with a density
_SQRT2 = math.sqrt(2.0)
_GAUSS8_RADIUS = 2.0 * _SQRT2  # FFJORD: scale 4 then divided by 1.414
_GAUSS8_STD = 0.5 / _SQRT2
_RINGS_RADII = (0.75, 1.5, 2.25, 3.0)
_RINGS_STD = 0.08
_CIRCLES_RADII = (1.5, 3.0)
_CIRCLES_STD = 0.24
_CHECKER_LOG_DENSITY = -math.log(32.0)  # 8 squares of area 4


def _gauss8_centers(dtype: torch.dtype, device: torch.device | str | None) -> Tensor:
    angle = torch.arange(8, dtype=dtype, device=device) * (math.pi / 4.0)
    return _GAUSS8_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)


# ---------------------------------------------------------------------------------------------------
# generators: every one takes (n, generator) and returns float64 CPU points (n, 2)
def _rand(n: int, g: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _randn(*shape: int, g: torch.Generator | None) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _randint(high: int, n: int, g: torch.Generator | None) -> Tensor:
    return torch.randint(0, high, (n,), generator=g)


def _gen_8gaussians(n: int, g: torch.Generator | None) -> Tensor:
    centers = _gauss8_centers(torch.float64, None)
    return centers[_randint(8, n, g)] + _GAUSS8_STD * _randn(n, 2, g=g)


def _gen_checkerboard(n: int, g: torch.Generator | None) -> Tensor:
    # FFJORD: x1 ~ U[-2, 2); x2 ~ U([-2, -1) u [0, 1)) shifted up by 1 in odd columns; all times 2.
    # Given x1, x2 is uniform on two intervals of equal length, so the points are uniform on the squares.
    x1 = 4.0 * _rand(n, g) - 2.0
    x2 = _rand(n, g) - 2.0 * _randint(2, n, g).to(torch.float64)
    x2 = x2 + torch.remainder(torch.floor(x1), 2.0)
    return 2.0 * torch.stack([x1, x2], dim=-1)


def _gen_rings_like(n: int, g: torch.Generator | None, radii: tuple[float, ...], std: float) -> Tensor:
    radius = torch.tensor(radii, dtype=torch.float64)[_randint(len(radii), n, g)]
    angle = 2.0 * math.pi * _rand(n, g)
    circle = radius.unsqueeze(-1) * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
    return circle + std * _randn(n, 2, g=g)


def _gen_rings(n: int, g: torch.Generator | None) -> Tensor:
    return _gen_rings_like(n, g, _RINGS_RADII, _RINGS_STD)


def _gen_circles(n: int, g: torch.Generator | None) -> Tensor:
    return _gen_rings_like(n, g, _CIRCLES_RADII, _CIRCLES_STD)


def _gen_moons(n: int, g: torch.Generator | None) -> Tensor:
    # sklearn make_moons(noise=0.1), then FFJORD's x * 2 + (-1, -0.2); the angle is drawn uniformly.
    theta = math.pi * _rand(n, g)
    upper = _randint(2, n, g).to(torch.bool)
    x = torch.where(upper, torch.cos(theta), 1.0 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    points = torch.stack([x, y], dim=-1) + 0.1 * _randn(n, 2, g=g)
    return 2.0 * points + torch.tensor([-1.0, -0.2], dtype=torch.float64)


def _gen_2spirals(n: int, g: torch.Generator | None) -> Tensor:
    turn = torch.sqrt(_rand(n, g)) * (540.0 * 2.0 * math.pi / 360.0)
    arm = torch.stack([-torch.cos(turn) * turn, torch.sin(turn) * turn], dim=-1)
    arm = arm + 0.5 * torch.stack([_rand(n, g), _rand(n, g)], dim=-1)
    sign = 1.0 - 2.0 * _randint(2, n, g).to(torch.float64)
    return sign.unsqueeze(-1) * arm / 3.0 + 0.1 * _randn(n, 2, g=g)


def _gen_pinwheel(n: int, g: torch.Generator | None) -> Tensor:
    num_arms, rate = 5, 0.25
    feats = _randn(n, 2, g=g) * torch.tensor([0.3, 0.1], dtype=torch.float64)
    feats[:, 0] += 1.0
    arm = _randint(num_arms, n, g).to(torch.float64)
    angle = arm * (2.0 * math.pi / num_arms) + rate * torch.exp(feats[:, 0])
    cos, sin = torch.cos(angle), torch.sin(angle)
    # FFJORD: features @ [[cos, -sin], [sin, cos]]
    x = feats[:, 0] * cos + feats[:, 1] * sin
    y = -feats[:, 0] * sin + feats[:, 1] * cos
    return 2.0 * torch.stack([x, y], dim=-1)


def _gen_swissroll(n: int, g: torch.Generator | None) -> Tensor:
    # sklearn make_swiss_roll(noise=1.0) keeps coordinates (0, 2); FFJORD divides by 5.
    t = 1.5 * math.pi * (1.0 + 2.0 * _rand(n, g))
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=-1) + _randn(n, 2, g=g)
    return points / 5.0


_GENERATORS: dict[str, Callable[[int, torch.Generator | None], Tensor]] = {
    "8gaussians": _gen_8gaussians,
    "checkerboard": _gen_checkerboard,
    "rings": _gen_rings,
    "moons": _gen_moons,
    "circles": _gen_circles,
    "2spirals": _gen_2spirals,
    "pinwheel": _gen_pinwheel,
    "swissroll": _gen_swissroll,
}


def _check_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def toy2d(
    name: str,
    n: int,
    *,
    seed: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw ``n`` i.i.d. points from a 2-D toy data set.

    The points are drawn in float64 on the CPU from a ``torch.Generator`` seeded with ``seed`` (the global
    torch RNG when ``seed`` is ``None``), then cast to ``dtype`` and moved to ``device``: the same seed gives
    the same points on every machine and device. See the module docstring and ``docs/data.md`` for each
    generator; they follow FFJORD (Grathwohl et al., 2019, arXiv:1810.01367, ``lib/toy_data.py``).

    Args:
        name: one of :data:`TOY2D_NAMES`.
        n: number of points, ``>= 1``.
        seed: integer seed, or ``None`` to use (and advance) the global torch RNG.
        device: where the result lives.
        dtype: ``torch.float32`` or ``torch.float64``.

    Returns:
        Tensor of shape ``(n, 2)``.

    Example:
        >>> x = toy2d("8gaussians", 5, seed=0)
        >>> x.shape, x.dtype
        (torch.Size([5, 2]), torch.float32)
        >>> bool((toy2d("8gaussians", 5, seed=0) == x).all())
        True
    """
    check_choice("name", name, TOY2D_NAMES)
    n = check_int("n", n, minimum=1)
    _check_dtype(dtype)
    generator = None
    if seed is not None:
        seed = check_int("seed", seed, minimum=0)
        generator = torch.Generator(device="cpu").manual_seed(seed)
    points = _GENERATORS[name](n, generator)
    return points.to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------------
# exact log-densities: all written in torch on x's device and dtype, differentiable in x
def _log_prob_8gaussians(x: Tensor) -> Tensor:
    centers = _gauss8_centers(x.dtype, x.device)
    sq = (x.unsqueeze(-2) - centers).pow(2).sum(-1)  # (n, 8)
    log_norm = -math.log(2.0 * math.pi * _GAUSS8_STD**2)
    return torch.logsumexp(-0.5 * sq / _GAUSS8_STD**2, dim=-1) + log_norm - math.log(8.0)


def _log_prob_checkerboard(x: Tensor) -> Tensor:
    cell = torch.floor(x / 2.0)
    inside = ((cell >= -2) & (cell <= 1)).all(-1)
    black = torch.remainder(cell.sum(-1), 2.0) == 0
    # 0 that keeps x in the autograd graph (gradient 0), also for infinite x
    zero = torch.nan_to_num(x, posinf=0.0, neginf=0.0).mul(0.0).sum(-1)
    return torch.where(inside & black, zero + _CHECKER_LOG_DENSITY, zero - math.inf)


def _log_prob_rings_like(x: Tensor, radii: tuple[float, ...], std: float) -> Tensor:
    # p(x) = 1/K sum_k exp(-(r^2 + R^2)/(2 s^2)) I0(r R / s^2) / (2 pi s^2)
    #      = 1/K sum_k exp(-(r - R)^2/(2 s^2)) i0e(r R / s^2) / (2 pi s^2),   i0e(z) = exp(-z) I0(z), z >= 0
    r = torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # gradient 0 (not NaN) at r = 0
    radius = torch.tensor(radii, dtype=x.dtype, device=x.device)
    var = std**2
    log_terms = -0.5 * (r - radius).pow(2) / var + torch.log(torch.special.i0e(r * radius / var))
    return torch.logsumexp(log_terms, dim=-1) - math.log(2.0 * math.pi * var) - math.log(len(radii))


def _log_prob_rings(x: Tensor) -> Tensor:
    return _log_prob_rings_like(x, _RINGS_RADII, _RINGS_STD)


def _log_prob_circles(x: Tensor) -> Tensor:
    return _log_prob_rings_like(x, _CIRCLES_RADII, _CIRCLES_STD)


_LOG_PROBS: dict[str, Callable[[Tensor], Tensor]] = {
    "8gaussians": _log_prob_8gaussians,
    "checkerboard": _log_prob_checkerboard,
    "rings": _log_prob_rings,
    "circles": _log_prob_circles,
}


def _check_has_density(name: str) -> str:
    check_choice("name", name, TOY2D_NAMES)
    if name not in TOY2D_WITH_DENSITY:
        raise ValueError(
            f"toy data set {name!r} has no closed-form density; sets with one: "
            f"{', '.join(repr(s) for s in TOY2D_WITH_DENSITY)}"
        )
    return name


def toy2d_log_prob(name: str, x: Tensor) -> Tensor:
    """Exact log-density (nats) of a 2-D toy data set at the points ``x``.

    Densities (``r = |x|``, ``N`` the Gaussian density, ``I_0`` the modified Bessel function):

    * ``8gaussians``: ``log 1/8 sum_k N(x; c_k, s^2 I)``, ``c_k = 2 sqrt(2) (cos k pi/4, sin k pi/4)``,
      ``s = 1/(2 sqrt 2)``;
    * ``checkerboard``: ``log(1/32)`` on the 8 squares ``[2i, 2i+2) x [2j, 2j+2)`` with ``i + j`` even,
      ``i, j in {-2, ..., 1}``, and ``-inf`` elsewhere;
    * ``rings`` / ``circles``: ``log 1/K sum_k exp(-(r^2 + R_k^2)/(2 s^2)) I_0(r R_k / s^2) / (2 pi s^2)``
      with ``R = (0.75, 1.5, 2.25, 3)``, ``s = 0.08`` (rings) and ``R = (1.5, 3)``, ``s = 0.24`` (circles):
      a uniform point on a circle of radius ``R_k`` plus isotropic Gaussian noise, the angle integrated out.

    Computed on ``x``'s device and dtype and differentiable in ``x`` (the checkerboard's gradient is 0).

    Args:
        name: one of :data:`TOY2D_WITH_DENSITY`.
        x: points, shape ``(n, 2)``, float32 or float64.

    Returns:
        Tensor of shape ``(n,)``.

    Example:
        >>> x = toy2d("rings", 4, seed=0, dtype=torch.float64)
        >>> toy2d_log_prob("rings", x).shape
        torch.Size([4])
        >>> toy2d_log_prob("checkerboard", torch.tensor([[1.0, 1.0], [1.0, 3.0]])).tolist()[1]
        -inf
    """
    _check_has_density(name)
    check_tensor("x", x, finite=False)
    check_event_shape("x", x, (2,))
    if bool(torch.isnan(x).any()):
        raise ValueError(f"x contains {int(torch.isnan(x).sum())} NaN values")
    return _LOG_PROBS[name](x)


@functools.lru_cache(maxsize=None)
def _entropy_cached(name: str, num_samples: int, seed: int) -> tuple[float, float]:
    # chunked so memory stays small; chunk statistics are merged with Chan et al.'s pairwise update
    chunk = 250_000
    generator = torch.Generator(device="cpu").manual_seed(seed)
    count, mean, m2 = 0, 0.0, 0.0
    while count < num_samples:
        m = min(chunk, num_samples - count)
        lp = _LOG_PROBS[name](_GENERATORS[name](m, generator))
        chunk_mean = float(lp.mean())
        chunk_m2 = float((lp - chunk_mean).pow(2).sum())
        delta = chunk_mean - mean
        total = count + m
        mean += delta * m / total
        m2 += chunk_m2 + delta**2 * count * m / total
        count = total
    var = m2 / (num_samples - 1)
    return -mean, math.sqrt(var / num_samples)


def toy2d_entropy(name: str, *, num_samples: int = 1_000_000, seed: int = 0) -> tuple[float, float]:
    """Monte Carlo estimate of the differential entropy ``H = -E_p[log p(x)]`` (nats) and its standard error.

    ``H_hat = -1/n sum_i log p(x_i)`` over ``n = num_samples`` i.i.d. draws, computed in float64; the
    standard error is the sample standard deviation of ``log p(x_i)`` divided by ``sqrt(n)``. Results are
    cached per ``(name, num_samples, seed)`` within a process. For ``checkerboard`` the estimate is exactly
    ``log 32`` with standard error 0.

    Args:
        name: one of :data:`TOY2D_WITH_DENSITY`.
        num_samples: Monte Carlo sample size, ``>= 2``.
        seed: seed of the draws.

    Returns:
        ``(entropy, stderr)`` as Python floats, in nats.

    Example:
        >>> h, se = toy2d_entropy("checkerboard", num_samples=1000)
        >>> round(h, 6) == round(math.log(32), 6), se < 1e-12
        (True, True)
    """
    _check_has_density(name)
    num_samples = check_int("num_samples", num_samples, minimum=2)
    seed = check_int("seed", seed, minimum=0)
    return _entropy_cached(name, num_samples, seed)
