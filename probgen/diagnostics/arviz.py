"""MCMC output as ArviZ ``InferenceData``: conversion, summaries, R-hat, ESS and trace plots.

This is the only probgen module that imports :mod:`arviz`, and it does so lazily (inside functions):
importing ArviZ pulls in matplotlib, which ``import probgen`` must not do.

Inputs accepted everywhere (``samples``):

* a ``pyro.infer.MCMC`` object after ``run`` — draws from ``get_samples(group_by_chain=True)``,
  divergent transitions from ``diagnostics()`` (``sample_stats["diverging"]``) and the per-chain
  acceptance rate (``sample_stats.attrs["acceptance_rate"]``);
* a dict ``name -> Tensor (chains, draws, *shape)`` — probgen's batched chains;
* a Tensor ``(chains, draws, *shape)``, named ``"x"``;
* an ArviZ ``InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (ArviZ 1.x), passed through.

ArviZ versions. ArviZ 0.x (0.17–0.23 tested here with 0.23) takes ``az.from_dict(posterior=...,
sample_stats=...)`` and returns an ``InferenceData``. ArviZ 1.x (a metapackage over arviz-base,
arviz-stats and arviz-plots, Python >= 3.12) dropped ``from_pyro``, takes
``az.from_dict({"posterior": {...}, "sample_stats": {...}})`` and returns an ``xarray.DataTree``;
its ``summary`` rounds to 2 digits unless ``round_to`` is given and reports an equal-tailed interval
instead of the HDI. The small branch for 1.x below follows the arviz-base / arviz-stats signatures
but could not be exercised here (1.x needs Python >= 3.12).

References:
    Vehtari, Gelman, Simpson, Carpenter and Bürkner (2021), Rank-normalization, folding, and
    localization: an improved R-hat for assessing convergence of MCMC, Bayesian Analysis,
    arXiv:1903.08008.
    Kumar, Carroll, Hartikainen and Martin (2019), ArviZ, JOSS 4(33), 1143.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from probgen._checks import check_choice

__all__ = [
    "to_inference_data",
    "summary",
    "rhat",
    "ess",
    "plot_trace",
    "convergence_warning",
    "ConvergenceWarning",
    "arviz_major_version",
    "RHAT_METHODS",
    "ESS_METHODS",
    "RHAT_THRESHOLD",
    "MIN_ESS_PER_CHAIN",
]

RHAT_METHODS = ("rank", "split", "folded", "z_scale", "identity")
ESS_METHODS = ("bulk", "tail", "mean", "sd", "median", "mad", "local", "quantile", "identity")
#: methods of :func:`ess` that take ``prob`` (``"local"`` and ``"quantile"`` need it)
_ESS_PROB_METHODS = ("tail", "quantile", "local")

#: R-hat above this flags chains that have not mixed (Vehtari et al. 2021)
RHAT_THRESHOLD = 1.01
#: bulk ESS below this many per chain is too few for reliable R-hat and MCSE (Vehtari et al. 2021)
MIN_ESS_PER_CHAIN = 100


class ConvergenceWarning(UserWarning):
    """Issued by :func:`summary` when R-hat, bulk ESS or divergences say the draws are not reliable."""


def _az() -> Any:
    with warnings.catch_warnings():
        # ArviZ 0.2x warns at import about the coming 1.0 refactor.
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def arviz_major_version() -> int:
    """Major version of the installed ArviZ (0 or 1)."""
    return int(str(_az().__version__).split(".")[0])


def _to_numpy(name: str, value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def _is_inference_data(obj: Any) -> bool:
    az = _az()
    if hasattr(az, "InferenceData") and isinstance(obj, az.InferenceData):
        return True
    try:
        import xarray as xr
    except ImportError:  # pragma: no cover - arviz depends on xarray
        return False
    return hasattr(xr, "DataTree") and isinstance(obj, xr.DataTree)


def _is_pyro_mcmc(obj: Any) -> bool:
    from pyro.infer import MCMC

    return isinstance(obj, MCMC)


def _mcmc_arrays(mcmc: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    if getattr(mcmc, "_samples", None) is None:
        raise ValueError("samples is a pyro.infer.MCMC that has not been run; call mcmc.run(...) first")
    draws = {k: _to_numpy(k, v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    if not draws:
        raise ValueError("the pyro.infer.MCMC run has no sample sites")
    num_chains, num_draws = next(iter(draws.values())).shape[:2]
    stats: dict[str, np.ndarray] = {}
    attrs: dict[str, Any] = {}
    diag = mcmc.diagnostics()
    if "divergences" in diag:
        diverging = np.zeros((num_chains, num_draws), dtype=bool)
        for c in range(num_chains):
            idx = np.asarray(diag["divergences"].get(f"chain {c}", []), dtype=np.int64)
            idx = idx[(idx >= 0) & (idx < num_draws)]
            diverging[c, idx] = True
        stats["diverging"] = diverging
    if "acceptance rate" in diag:
        attrs["acceptance_rate"] = [float(diag["acceptance rate"][f"chain {c}"]) for c in range(num_chains)]
    return draws, stats, attrs


def _chain_arrays(samples: Any) -> dict[str, np.ndarray]:
    if isinstance(samples, Tensor):
        samples = {"x": samples}
    if not isinstance(samples, Mapping) or not samples:
        raise TypeError(
            "samples must be a pyro.infer.MCMC, a dict name -> Tensor (chains, draws, *shape), a Tensor "
            f"(chains, draws, *shape) or an ArviZ InferenceData, got {type(samples).__name__}"
        )
    out: dict[str, np.ndarray] = {}
    lead: tuple[int, int] | None = None
    for name, value in samples.items():
        if not isinstance(name, str):
            raise TypeError(f"samples keys must be strings, got {type(name).__name__} {name!r}")
        arr = _to_numpy(f"samples[{name!r}]", value)
        if arr.ndim < 2:
            raise ValueError(f"samples[{name!r}] must have shape (chains, draws, *shape), got {tuple(arr.shape)}")
        if lead is None:
            lead = tuple(arr.shape[:2])
        elif tuple(arr.shape[:2]) != lead:
            raise ValueError(
                f"samples[{name!r}] has (chains, draws) = {tuple(arr.shape[:2])}, but other variables have {lead}"
            )
        out[name] = arr
    return out


def _from_dict(posterior: dict, sample_stats: dict, coords: Any, dims: Any) -> Any:
    az = _az()
    if arviz_major_version() >= 1:  # arviz-base: from_dict({group: {var: array}}, *, coords, dims)
        groups = {"posterior": posterior}
        if sample_stats:
            groups["sample_stats"] = sample_stats
        return az.from_dict(groups, coords=coords, dims=dims)
    return az.from_dict(posterior=posterior, sample_stats=sample_stats or None, coords=coords, dims=dims)


def to_inference_data(
    samples: Any,
    *,
    sample_stats: Mapping[str, Tensor | np.ndarray] | None = None,
    coords: Mapping[str, Sequence] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
) -> Any:
    """Convert MCMC draws to ArviZ ``InferenceData`` (``xarray.DataTree`` under ArviZ 1.x).

    Args:
        samples: a run ``pyro.infer.MCMC``, a dict ``name -> Tensor (chains, draws, *shape)``, a
            Tensor ``(chains, draws, *shape)`` (named ``"x"``), or an ``InferenceData`` (returned as is).
        sample_stats: extra per-draw statistics ``name -> (chains, draws)``; ``"diverging"`` (bool)
            is what ArviZ reports as divergent transitions (``summary``, ``plot_trace``).
        coords: ArviZ coordinates, e.g. ``{"dim": ["a", "b"]}``.
        dims: ArviZ dimension names per variable, e.g. ``{"theta": ["dim"]}``.

    Returns:
        ``InferenceData`` with a ``posterior`` group (and ``sample_stats`` when available).

    Example:
        >>> idata = to_inference_data({"mu": torch.randn(2, 100)})
        >>> dict(idata.posterior.sizes)
        {'chain': 2, 'draw': 100}
    """
    if _is_inference_data(samples):
        if sample_stats is not None:
            raise ValueError("sample_stats cannot be added to an existing InferenceData; pass the draws instead")
        return samples
    attrs: dict[str, Any] = {}
    if _is_pyro_mcmc(samples):
        posterior, stats, attrs = _mcmc_arrays(samples)
    else:
        posterior, stats = _chain_arrays(samples), {}
    lead = next(iter(posterior.values())).shape[:2]
    for name, value in (sample_stats or {}).items():
        arr = _to_numpy(f"sample_stats[{name!r}]", value)
        if tuple(arr.shape[:2]) != tuple(lead):
            raise ValueError(
                f"sample_stats[{name!r}] must have shape (chains, draws) = {tuple(lead)}, got {tuple(arr.shape)}"
            )
        stats[name] = arr.astype(bool) if name == "diverging" else arr
    idata = _from_dict(posterior, stats, coords, dims)
    if attrs and stats:
        idata["sample_stats"].attrs.update(attrs)
    elif attrs:
        idata["posterior"].attrs.update(attrs)
    return idata


def summary(samples_or_idata: Any, *, warn: bool = True, **kwargs: Any) -> Any:
    """ArviZ summary table: mean, sd, credible interval, MCSE, bulk/tail ESS and R-hat per scalar.

    When ``warn`` is true and the table shows R-hat > 1.01, bulk ESS < 100 per chain, or the draws
    carry divergent transitions, a :class:`ConvergenceWarning` is issued with the one line of
    :func:`convergence_warning`.

    Args:
        samples_or_idata: anything :func:`to_inference_data` accepts.
        warn: issue the :class:`ConvergenceWarning` (``False``: call :func:`convergence_warning`
            yourself).
        **kwargs: forwarded to ``arviz.summary`` (``var_names``, ``kind``, ``round_to``, ...).

    Returns:
        ``pandas.DataFrame`` indexed by variable (``"theta[0]"`` for vector components), with columns
        ``mean``, ``sd``, ``mcse_mean``, ``mcse_sd``, ``ess_bulk``, ``ess_tail``, ``r_hat`` and the
        interval bounds (``hdi_3%``/``hdi_97%`` in ArviZ 0.x, ``eti89_lb``/``eti89_ub`` in 1.x).

    Example:
        >>> df = summary({"mu": torch.randn(2, 200)})
        >>> {"mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"} <= set(df.columns)
        True
    """
    idata = to_inference_data(samples_or_idata)
    az = _az()
    if arviz_major_version() >= 1:
        kwargs.setdefault("round_to", "none")  # arviz-stats rounds to 2 digits by default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # e.g. R-hat of a constant draw
        table = az.summary(idata, **kwargs)
    if warn:
        message = convergence_warning(idata, table=table)
        if message is not None:
            warnings.warn(message, ConvergenceWarning, stacklevel=2)
    return table


def _num_chains(idata: Any) -> int:
    return int(idata["posterior"].sizes["chain"])


def _divergences(idata: Any) -> int | None:
    try:
        stats = idata["sample_stats"]
    except (KeyError, AttributeError):
        return None
    if "diverging" not in getattr(stats, "data_vars", stats):
        return None
    return int(np.asarray(stats["diverging"].values).sum())


def _worst(table: Any, column: str, largest: bool) -> tuple[float, str] | None:
    if table is None or column not in getattr(table, "columns", ()):
        return None
    values = np.asarray(table[column].values, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).any():
        return None
    i = int(np.nanargmax(values) if largest else np.nanargmin(values))
    return float(values[i]), str(table.index[i])


def convergence_warning(
    samples_or_idata: Any,
    *,
    table: Any = None,
    rhat_threshold: float = RHAT_THRESHOLD,
    min_ess_per_chain: float = MIN_ESS_PER_CHAIN,
) -> str | None:
    """One line saying why the draws are not reliable, or ``None`` when they pass the checks.

    The checks of Vehtari et al. (2021) and Stan: rank-normalized R-hat above ``rhat_threshold``
    (1.01), bulk ESS below ``min_ess_per_chain`` (100) times the number of chains, and any divergent
    transition (``sample_stats["diverging"]``), for the worst scalar of each.

    Args:
        samples_or_idata: anything :func:`to_inference_data` accepts.
        table: a :func:`summary` table of the same draws (computed, diagnostics only, if ``None``).
        rhat_threshold: largest acceptable R-hat.
        min_ess_per_chain: smallest acceptable bulk ESS per chain.

    Returns:
        e.g. ``"not converged: R-hat 1.86 > 1.01 (x[0]); bulk ESS 12 < 400 (100 per chain x 4
        chains) (x[0]); 5757 divergent transitions"``, or ``None``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> convergence_warning(torch.randn(4, 500, generator=g)) is None
        True
        >>> stuck = torch.randn(4, 500, generator=g) + torch.arange(4.0)[:, None]  # chains apart
        >>> convergence_warning(stuck).startswith("not converged: R-hat")
        True
    """
    idata = to_inference_data(samples_or_idata)
    if table is None:
        table = summary(idata, kind="diagnostics", warn=False)
    num_chains = _num_chains(idata)
    problems = []
    worst_rhat = _worst(table, "r_hat", largest=True)
    if worst_rhat is not None and worst_rhat[0] > rhat_threshold:
        problems.append(f"R-hat {worst_rhat[0]:.3g} > {rhat_threshold:g} ({worst_rhat[1]})")
    worst_ess = _worst(table, "ess_bulk", largest=False)
    need = min_ess_per_chain * num_chains
    if worst_ess is not None and worst_ess[0] < need:
        problems.append(f"bulk ESS {worst_ess[0]:.0f} < {need:.0f} ({min_ess_per_chain:g} per chain x "
                        f"{num_chains} chains) ({worst_ess[1]})")
    divergences = _divergences(idata)
    if divergences:
        problems.append(f"{divergences} divergent transitions")
    if not problems:
        return None
    return "not converged: " + "; ".join(problems) + " (do not trust these estimates)"


def _as_dataset(result: Any) -> Any:
    if hasattr(result, "data_vars"):
        return result
    if hasattr(result, "children") and "posterior" in result.children:  # DataTree (ArviZ 1.x)
        return result["posterior"].to_dataset()
    return result.to_dataset()


def _diagnostic(kind: str, samples_or_idata: Any, var_names: Sequence[str] | None, **kw: Any) -> Any:
    single = isinstance(samples_or_idata, Tensor)
    idata = to_inference_data(samples_or_idata)
    az = _az()
    fn = az.rhat if kind == "rhat" else az.ess
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ds = _as_dataset(fn(idata, var_names=list(var_names) if var_names else None, **kw))
    out = {name: torch.as_tensor(np.asarray(ds[name].values, dtype=np.float64)) for name in ds.data_vars}
    return out["x"] if single else out


def rhat(
    samples_or_idata: Any, *, var_names: Sequence[str] | None = None, method: str = "rank"
) -> Tensor | dict[str, Tensor]:
    """Rank-normalized split-R̂ (Vehtari et al. 2021) per scalar component, computed by ArviZ.

    .. math::

        \\hat R = \\sqrt{\\frac{\\frac{N-1}{N} W + \\frac{1}{N} B}{W}}

    on rank-normalized split chains (``W``: mean within-chain variance, ``B/N``: variance of chain
    means); ``method="rank"`` takes the max of the bulk and folded (tail) versions. Values above
    1.01 signal chains that have not mixed.

    Args:
        samples_or_idata: anything :func:`to_inference_data` accepts.
        var_names: restrict to these variables.
        method: ``"rank"``, ``"split"``, ``"folded"``, ``"z_scale"`` or ``"identity"``.

    Returns:
        For a Tensor input, a float64 Tensor of shape ``shape`` (``()`` for scalar chains); otherwise a
        dict ``name -> Tensor``.

    Example:
        >>> r = rhat(torch.randn(4, 500))
        >>> bool(r < 1.02)
        True
    """
    check_choice("method", method, RHAT_METHODS)
    return _diagnostic("rhat", samples_or_idata, var_names, method=method)


def ess(
    samples_or_idata: Any,
    *,
    var_names: Sequence[str] | None = None,
    method: str = "bulk",
    relative: bool = False,
    prob: float | tuple[float, float] | None = None,
) -> Tensor | dict[str, Tensor]:
    """Effective sample size per scalar component (Vehtari et al. 2021), computed by ArviZ.

    .. math::

        \\mathrm{ESS} = \\frac{M N}{\\hat\\tau},\\qquad \\hat\\tau = -1 + 2 \\sum_{t} \\hat\\rho_t

    (``M`` chains of ``N`` draws, ``ρ̂_t`` the combined autocorrelation, Geyer's truncation);
    ``"bulk"`` works on rank-normalized draws, ``"tail"`` is the min of the 5% and 95% quantile ESS.

    Args:
        samples_or_idata: anything :func:`to_inference_data` accepts.
        var_names: restrict to these variables.
        method: ``"bulk"``, ``"tail"``, ``"mean"``, ``"sd"``, ``"median"``, ``"mad"``, ``"local"``,
            ``"quantile"`` or ``"identity"``.
        relative: divide by the number of draws ``M N``.
        prob: for ``"quantile"`` (required) the quantile ``p ∈ (0, 1)`` whose estimate's ESS is wanted;
            for ``"local"`` (required) the interval ``(lo, hi)``, ``0 ≤ lo < hi ≤ 1``, whose
            probability ``P(lo-quantile < θ ≤ hi-quantile)`` is estimated; for ``"tail"`` optional
            (default ``(0.05, 0.95)``'s minimum). Other methods take none.

    Returns:
        Like :func:`rhat`.

    Example:
        >>> e = ess(torch.randn(2, 500))
        >>> 500 < float(e) < 1500
        True
        >>> float(ess(torch.randn(2, 500), method="quantile", prob=0.9)) > 100
        True
    """
    check_choice("method", method, ESS_METHODS)
    kw: dict[str, Any] = {"method": method, "relative": bool(relative)}
    if prob is not None or method in ("quantile", "local"):
        kw["prob"] = _check_ess_prob(method, prob)
    return _diagnostic("ess", samples_or_idata, var_names, **kw)


def _check_ess_prob(method: str, prob: Any) -> float | tuple[float, float]:
    if method not in _ESS_PROB_METHODS:
        raise ValueError(f"prob is only used by ess methods {_ESS_PROB_METHODS}, got method={method!r} "
                         f"with prob={prob!r}")
    if method == "local" or (method == "tail" and isinstance(prob, (tuple, list))):
        ok = (isinstance(prob, (tuple, list)) and len(prob) == 2
              and all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in prob)
              and 0.0 <= prob[0] < prob[1] <= 1.0)
        if not ok:
            raise ValueError(f"ess method={method!r} needs prob=(lo, hi) with 0 <= lo < hi <= 1, got {prob!r}")
        return (float(prob[0]), float(prob[1]))
    ok = isinstance(prob, (int, float)) and not isinstance(prob, bool) and 0.0 < prob < 1.0
    if not ok:
        raise ValueError(f"ess method={method!r} needs prob, a quantile in (0, 1), got {prob!r}")
    return float(prob)


def plot_trace(
    samples_or_idata: Any,
    *,
    var_names: Sequence[str] | None = None,
    path: str | None = None,
    **kwargs: Any,
) -> Any:
    """ArviZ's trace plot (density and trace per variable, divergences marked); returns the Figure.

    Under ArviZ 0.x this is ``arviz.plot_trace`` (an array of Axes); under ArviZ 1.x it is
    ``arviz_plots.plot_trace_dist`` with the matplotlib backend (a ``PlotCollection``). Either way the
    matplotlib ``Figure`` is returned and ``path`` writes it.

    Args:
        samples_or_idata: anything :func:`to_inference_data` accepts.
        var_names: restrict to these variables.
        path: if given, write the figure there (atomically).
        **kwargs: forwarded to ``arviz.plot_trace``.

    Example:
        >>> fig = plot_trace({"mu": torch.randn(2, 50)})
        >>> type(fig).__name__
        'Figure'
    """
    from probgen.diagnostics.plots import _use_agg_if_unset, save_figure

    _use_agg_if_unset()
    idata = to_inference_data(samples_or_idata)
    az = _az()
    if var_names is not None:
        kwargs["var_names"] = list(var_names)
    if arviz_major_version() >= 1:  # arviz-plots: plot_trace draws the traces only, _dist adds densities
        kwargs.setdefault("backend", "matplotlib")
        plot = getattr(az, "plot_trace_dist", None) or az.plot_trace
    else:
        plot = az.plot_trace
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ArviZ 0.2x vs. matplotlib >= 3.11 kwargs
        result = plot(idata, **kwargs)
    fig = _figure_of(result)
    if hasattr(fig, "set_layout_engine"):  # keep titles clear of the tick labels above them
        fig.set_layout_engine("constrained")
    if path is not None:
        save_figure(fig, path)
    return fig


def _figure_of(result: Any) -> Any:
    """The matplotlib Figure behind what an ArviZ plot returned (0.x: Axes or an array of them; 1.x: a
    ``PlotCollection``, which has a ``savefig`` method of its own but is not a Figure)."""
    from matplotlib.figure import Figure

    if isinstance(result, Figure):
        return result
    if hasattr(result, "viz"):  # arviz-plots PlotCollection (1.x): the figure is viz["figure"]
        viz = result.viz
        for key in ("figure", "chart"):  # "chart" in arviz-plots < 0.5
            try:
                fig = viz[key].item()
            except (KeyError, AttributeError):
                continue
            if isinstance(fig, Figure):
                return fig
    if isinstance(result, np.ndarray):
        return result.ravel()[0].get_figure()
    if hasattr(result, "get_figure"):
        return result.get_figure()
    raise TypeError(f"cannot find the matplotlib figure of {type(result).__name__}")
