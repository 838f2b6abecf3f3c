r"""Checking posterior samplers against exact posteriors: Gaussian-mixture priors, linear-Gaussian observations.

A Gaussian mixture ``p(x) = Σ_k w_k N(x; μ_k, Σ_k)`` has everything in closed form:

* the diffused marginal ``p_t = Σ_k w_k N(α_t μ_k, α_t² Σ_k + σ_t² I)``, its score and Tweedie's
  denoiser ``E[x_0 | x_t]`` (``denoise``), so it can stand as the *exact* network of a ScoreSDE
  (``score_fn``), a DDPM (``eps_fn``: ``ε̂ = -σ_t s``) or flow matching (``velocity_fn``), or, through
  ``denoise``, of any family's preconditioned network (EDM);
* the posterior under ``y = A x + σ_y ε``, again a mixture:

  .. math::

      Σ'_k = (Σ_k^{-1} + AᵀA/σ_y²)^{-1},\quad μ'_k = Σ'_k(Σ_k^{-1} μ_k + Aᵀ y/σ_y²),\quad
      w'_k ∝ w_k\, N(y;\ A μ_k,\ A Σ_k Aᵀ + σ_y² I).

:func:`posterior_calibration` draws ``x* ~ p``, ``y ~ p(y | x*)``, runs each method and compares its draws
with the exact posterior: error of the mean and covariance, MMD² and sliced Wasserstein to exact draws,
and the coverage of its central 50 % / 90 % intervals under the exact posterior (computed from the
mixture's marginal CDFs, so the only noise is the method's own).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import torch
from torch import Tensor, nn

from probgen._checks import check_int, check_tensor
from probgen.infer.posterior.operators import LinearGaussian, LinearOperator
from probgen.ops.shapes import append_dims

__all__ = ["GaussianMixture", "posterior_calibration"]


class _FunctionNet(nn.Module):
    """A parameter-free ``nn.Module`` around ``fn(x, t)`` (the models expect a module as their network)."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.fn(x, t)


class GaussianMixture:
    r"""A Gaussian mixture ``Σ_k w_k N(μ_k, Σ_k)`` in ``R^D`` with closed-form scores and posteriors.

    Args:
        weights: ``(K,)`` positive (normalised here); means: ``(K, D)``; covs: ``(K, D, D)`` SPD.

    Example:
        >>> gm = GaussianMixture(torch.ones(2), torch.tensor([[-1.0], [1.0]]), 0.1 * torch.ones(2, 1, 1))
        >>> post = gm.posterior(torch.eye(1), 0.1, torch.tensor([1.0]))
        >>> round(float(post.weights[1]), 4)
        1.0
    """

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor):
        self.weights = check_tensor("weights", weights, ndim=1) / weights.sum()
        self.means = check_tensor("means", means, ndim=2)
        self.covs = check_tensor("covs", covs, ndim=3)
        k, d = self.means.shape
        if self.weights.shape[0] != k or tuple(self.covs.shape) != (k, d, d):
            raise ValueError(f"weights (K,), means (K, D), covs (K, D, D) disagree: {tuple(weights.shape)}, "
                             f"{tuple(means.shape)}, {tuple(covs.shape)}")
        self.dim = d

    def _components(self, alpha: Tensor, sigma: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        a = append_dims(alpha.to(like), 3)[:, None]  # (B, 1, 1, 1)
        s = append_dims(sigma.to(like), 3)[:, None]
        eye = torch.eye(self.dim, dtype=like.dtype, device=like.device)
        means = a[..., 0] * self.means.to(like)  # (B, K, D)
        covs = a * a * self.covs.to(like) + s * s * eye  # (B, K, D, D)
        return means, covs

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)``: ``(B, D) -> (B,)``."""
        ones = x.new_ones(x.shape[0])
        return self.marginal_log_prob(x, ones, 0 * ones)

    def marginal_log_prob(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """``log p_t(x)`` with ``p_t = Σ w_k N(α μ_k, α² Σ_k + σ² I)``; ``alpha, sigma: (B,)``."""
        means, covs = self._components(alpha, sigma, x)
        comp = torch.distributions.MultivariateNormal(means, covariance_matrix=covs).log_prob(x[:, None])
        return torch.logsumexp(comp + self.weights.to(x).log(), -1)

    def marginal_score(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """``∇ log p_t(x) = Σ_k r_k(x) C_k^{-1}(α μ_k - x)`` with responsibilities ``r_k``; ``(B, D)``."""
        means, covs = self._components(alpha, sigma, x)
        chol = torch.linalg.cholesky(covs)
        diff = (means - x[:, None])[..., None]  # (B, K, D, 1)
        sol = torch.cholesky_solve(diff, chol)[..., 0]  # C^{-1}(m - x)
        comp = torch.distributions.MultivariateNormal(means, scale_tril=chol).log_prob(x[:, None])
        resp = torch.softmax(comp + self.weights.to(x).log(), -1)
        return (resp[..., None] * sol).sum(1)

    def denoise(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """Tweedie's ``E[x_0 | x_t = x] = (x + σ² ∇ log p_t(x)) / α`` on the path ``x_t = α x_0 + σ z``; ``(B, D)``."""
        n = x.dim()
        return (x + append_dims(sigma**2, n) * self.marginal_score(x, alpha, sigma)) / append_dims(alpha, n)

    def score_fn(self, sde: Any) -> nn.Module:
        """The exact score ``net(x, t)`` for ``ScoreSDE(..., net=gm.score_fn(sde), parameterization="score")``."""
        return _FunctionNet(lambda x, t: self.marginal_score(x, sde.marginal_scale(t), sde.marginal_std(t)))

    def eps_fn(self, schedule: Any) -> nn.Module:
        """The exact noise predictor ``eps_net(x, index) = -σ_t s(x, t)``, ``t = (index + 1)/N``, for a DDPM
        with this ``schedule`` (``DDPM(..., eps_net=gm.eps_fn(model.schedule))``)."""
        def eps(x: Tensor, index: Tensor) -> Tensor:
            t = schedule.index_to_time(index).to(x)
            sigma = schedule.marginal_std(t)
            return -append_dims(sigma, x.dim()) * self.marginal_score(x, schedule.marginal_alpha(t), sigma)
        return _FunctionNet(eps)

    def velocity_fn(self, path: Any) -> nn.Module:
        """The exact flow-matching velocity ``net(x, t) = E[α' x_0 + σ' z | x_t = x] = α' x̂₀ + σ' (x - α x̂₀)/σ``
        on a Gaussian ``path`` (``mean_scale``, ``std``, ``d_mean_scale``, ``d_std``), for
        ``FlowMatching(..., net=gm.velocity_fn(model.path))``."""
        def velocity(x: Tensor, t: Tensor) -> Tensor:
            t = t.to(x)
            a, s = path.mean_scale(t), path.std(t)
            x0 = self.denoise(x, a, s)
            n = x.dim()
            da, ds = append_dims(path.d_mean_scale(t), n), append_dims(path.d_std(t), n)
            return da * x0 + ds * (x - append_dims(a, n) * x0) / append_dims(s, n)
        return _FunctionNet(velocity)

    def sample(self, num: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``(num, D)`` draws."""
        comp = torch.multinomial(self.weights, num, replacement=True, generator=generator)
        z = torch.randn(num, self.dim, generator=generator, dtype=self.means.dtype, device=self.means.device)
        chol = torch.linalg.cholesky(self.covs)[comp]
        return self.means[comp] + (chol @ z[..., None])[..., 0]

    def mean(self) -> Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> Tensor:
        m = self.mean()
        d = self.means - m
        return (self.weights[:, None, None] * (self.covs + d[:, :, None] * d[:, None, :])).sum(0)

    def marginal_cdf(self, value: Tensor) -> Tensor:
        """``P(x_i ≤ value_i)`` per coordinate; ``value: (..., D) -> (..., D)``."""
        sd = torch.diagonal(self.covs, dim1=-2, dim2=-1).sqrt()  # (K, D)
        z = (value[..., None, :] - self.means) / sd
        return (self.weights[:, None] * torch.special.ndtr(z)).sum(-2)

    def posterior(self, matrix: Tensor, noise_std: float, y: Tensor) -> GaussianMixture:
        """The exact posterior of ``x`` given ``y = A x + σ_y ε`` (see the module docstring)."""
        a = matrix.to(self.means)
        y = y.to(self.means)
        prec = torch.linalg.inv(self.covs) + (a.T @ a / noise_std**2)
        covs = torch.linalg.inv(prec)
        covs = 0.5 * (covs + covs.mT)
        rhs = (torch.linalg.solve(self.covs, self.means[..., None])[..., 0] + (a.T @ y) / noise_std**2)
        means = (covs @ rhs[..., None])[..., 0]
        pred_cov = a @ self.covs @ a.T + noise_std**2 * torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
        log_ev = torch.distributions.MultivariateNormal(self.means @ a.T, covariance_matrix=pred_cov).log_prob(y)
        weights = torch.softmax(log_ev + self.weights.log(), 0)
        return GaussianMixture(weights, means, covs)


def _interval_coverage(exact: GaussianMixture, draws: Tensor, level: float) -> Tensor:
    lo = torch.quantile(draws, 0.5 - level / 2, dim=0)
    hi = torch.quantile(draws, 0.5 + level / 2, dim=0)
    return (exact.marginal_cdf(hi) - exact.marginal_cdf(lo)).mean()


def _metrics(exact: GaussianMixture, draws: Tensor, reference: Tensor, generator: torch.Generator) -> dict[str, float]:
    from probgen.metrics import mmd, sliced_wasserstein

    draws = draws.to(exact.means)
    cov = torch.cov(draws.T).reshape(exact.dim, exact.dim)
    true_cov = exact.covariance()
    return {
        "mean_err": float((draws.mean(0) - exact.mean()).norm()),
        "cov_err": float((cov - true_cov).norm() / true_cov.norm()),
        "mmd": float(mmd(draws, reference)),
        "sw": float(sliced_wasserstein(draws, reference, generator=generator)),
        "cover50": float(_interval_coverage(exact, draws, 0.5)),
        "cover90": float(_interval_coverage(exact, draws, 0.9)),
    }


def posterior_calibration(
    prior_model: Any,
    mixture: GaussianMixture,
    operator: LinearOperator | Tensor,
    noise_std: float,
    *,
    methods: Sequence[str] = ("dps", "pigdm", "ddrm", "annealed-langevin", "smc"),
    num_samples: int = 500,
    num_observations: int = 1,
    method_options: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    r"""Per method: mean/covariance error, MMD², sliced W₂ and 50/90 % coverage against the exact posterior.

    For each of ``num_observations`` draws ``x* ~ mixture``, ``y = A x* + σ_y ε``, the model
    ``x ~ prior_model.as_distribution(); y ~ LinearGaussian(operator, σ_y)(x)`` is conditioned by
    :func:`~probgen.infer.posterior_sample` with each method, and its ``num_samples`` draws are compared with
    the exact posterior mixture (``mixture.posterior``): ``mean_err = ‖m̂ - m‖``,
    ``cov_err = ‖Ĉ - C‖_F/‖C‖_F``, ``mmd`` (MMD², :func:`probgen.metrics.mmd`) and ``sw``
    (:func:`probgen.metrics.sliced_wasserstein`) to ``num_samples`` exact draws, and ``cover50``/``cover90``:
    the exact posterior mass of the method's central intervals, averaged over coordinates (nominal 0.5 and
    0.9; a calibrated method is off by about ``sqrt(q(1-q)/n)``). The row ``"exact"`` scores exact draws
    (the Monte Carlo floor of each metric). Metrics are averaged over observations; ``wall_s`` is the mean
    time of one call.

    Args:
        prior_model: a diffusion model (or any probgen model) whose prior is ``mixture`` (e.g. a ScoreSDE
            with ``net=mixture.score_fn(sde)``).
        mixture: the prior as a :class:`GaussianMixture`.
        operator: a :class:`~probgen.infer.LinearOperator` on ``(D,)`` or a matrix ``(m, D)``.
        noise_std: ``σ_y``.
        methods: method names of :func:`~probgen.infer.posterior_sample`.
        num_samples: draws per method and observation.
        num_observations: repetitions over ``(x*, y)``.
        method_options: ``{method: {option: value}}`` passed to ``posterior_sample`` (e.g. ``steps``).
        seed: seeds ``x*``, ``y`` and every method.

    Returns:
        One dict per method (and ``"exact"``): ``method, mean_err, cov_err, mmd, sw, cover50, cover90, wall_s``.
    """
    from probgen.infer.posterior.sample import posterior_sample

    lik = LinearGaussian(operator, noise_std)
    num_samples = check_int("num_samples", num_samples, minimum=2)
    num_observations = check_int("num_observations", num_observations, minimum=1)
    options = dict(method_options or {})
    unknown = sorted(set(options) - set(methods))
    if unknown:
        raise ValueError(f"method_options names methods {unknown} that are not in methods={list(methods)}")
    if tuple(lik.operator.event_shape) != (mixture.dim,):
        raise ValueError(f"operator acts on {lik.operator.event_shape}; the mixture is on ({mixture.dim},)")
    matrix = lik.operator.dense(dtype=mixture.means.dtype)
    gen = torch.Generator().manual_seed(seed)
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in ("exact", *methods)}

    def model(y: Tensor) -> None:
        x = pyro.sample("x", prior_model.as_distribution())
        pyro.sample("y", lik(x), obs=y)

    for _ in range(num_observations):
        x_true = mixture.sample(1, generator=gen)
        y = lik.sample(x_true, generator=gen)[0]
        exact = mixture.posterior(matrix, noise_std, y)
        reference = exact.sample(num_samples, generator=gen)
        start = time.perf_counter()
        rows["exact"].append({**_metrics(exact, exact.sample(num_samples, generator=gen), reference, gen),
                              "wall_s": time.perf_counter() - start})
        for method in methods:
            mgen = torch.Generator().manual_seed(int(torch.randint(2**31, (1,), generator=gen)))
            post = posterior_sample(model, y, site="x", method=method, num_samples=num_samples, generator=mgen,
                                    **options.get(method, {}))
            rows[method].append({**_metrics(exact, post.samples, reference, gen), "wall_s": post.wall_time})
    out = []
    for method, values in rows.items():
        out.append({"method": method, **{key: sum(v[key] for v in values) / len(values) for key in values[0]}})
    return out
