"""Matplotlib figures for generative models: samples, densities, image grids, losses and traces.

This is the only probgen module that imports matplotlib, and only inside functions, so
``import probgen`` stays free of it. Figures are built with :class:`matplotlib.figure.Figure`
directly (no pyplot, no global figure state, no display needed); each function returns its Figure,
which a notebook displays, and writes a PNG (or any format matplotlib knows, from the suffix)
atomically when ``path`` is given: the file is written to a temporary name in the same folder and
moved into place with ``os.replace``, so a reader never sees a half-written image.

Every function also takes ``ax=`` to draw into an existing matplotlib Axes (then the Axes' Figure is
returned).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_int, check_tensor

__all__ = [
    "scatter_2d",
    "density_heatmap",
    "image_grid",
    "loss_curve",
    "trace_plot",
    "compare_panels",
    "compare_runs",
    "save_figure",
    "make_grid",
]


def _use_agg_if_unset() -> None:
    """Select the Agg backend before pyplot is first imported, unless the user chose a backend."""
    if "matplotlib.pyplot" in sys.modules or os.environ.get("MPLBACKEND"):
        return
    import matplotlib

    matplotlib.use("Agg")


def _new_figure(ncols: int = 1, nrows: int = 1, *, size: float = 4.0) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size * ncols, size * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig: Any, path: str | os.PathLike) -> str:
    """Write ``fig`` to ``path`` atomically, through :func:`probgen.checkpoint.atomic_write` (a random
    temporary name created with ``O_EXCL | O_NOFOLLOW`` in the same folder, then ``os.replace``).

    The format is taken from the suffix (``.png`` if there is none). Returns the path written.
    """
    from probgen.checkpoint import atomic_write

    path = os.fspath(path)
    suffix = os.path.splitext(path)[1] or ".png"
    atomic_write(path, lambda handle: fig.savefig(handle, format=suffix.lstrip("."), dpi=fig.dpi,
                                                  bbox_inches="tight"))
    return path


def _finish(fig: Any, path: str | os.PathLike | None) -> Any:
    if path is not None:
        save_figure(fig, path)
    return fig


def _points(name: str, x: Any) -> Tensor:
    check_tensor(name, x, ndim=2, finite=False)
    if x.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {tuple(x.shape)}")
    return x.detach().to("cpu", torch.float64)


def _limits(clouds: Sequence[Tensor], pad: float = 0.05) -> tuple[tuple[float, float], tuple[float, float]]:
    allpts = torch.cat([c[torch.isfinite(c).all(-1)] for c in clouds])
    if allpts.numel() == 0:
        return (-1.0, 1.0), (-1.0, 1.0)
    # robust extent: a few far-out samples (an untrained model's tails) must not shrink the picture
    q = 0.0 if len(allpts) < 200 else 0.002
    lo, hi = torch.quantile(allpts, q, dim=0), torch.quantile(allpts, 1 - q, dim=0)
    span = (hi - lo).max().clamp_min(1e-12)
    mid = (hi + lo) / 2
    half = span * (0.5 + pad)  # equal extent on both axes
    return (float(mid[0] - half), float(mid[0] + half)), (float(mid[1] - half), float(mid[1] + half))


def _scatter(ax: Any, pts: Tensor, title: str | None, lims: Any, s: float) -> None:
    ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=s, alpha=0.5, linewidths=0)
    ax.set_xlim(*lims[0])
    ax.set_ylim(*lims[1])
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)


def scatter_2d(
    samples: Tensor,
    *,
    reference: Tensor | None = None,
    titles: Sequence[str] = ("samples", "data"),
    path: str | os.PathLike | None = None,
    ax: Any = None,
    marker_size: float = 2.0,
) -> Any:
    """Scatter 2-D samples, beside reference data when given, on equal axes with shared limits.

    Args:
        samples: ``(N, 2)``.
        reference: optional ``(M, 2)`` drawn in a second panel with the same limits.
        titles: panel titles (samples, reference).
        path: where to write the figure.
        ax: an Axes for the samples panel (only without ``reference``).
        marker_size: scatter marker size.

    Returns:
        The matplotlib Figure.

    Example:
        >>> fig = scatter_2d(torch.randn(100, 2), reference=torch.randn(100, 2))
        >>> len(fig.axes)
        2
    """
    pts = _points("samples", samples)
    clouds = [pts]
    if reference is not None:
        clouds.append(_points("reference", reference))
        if ax is not None:
            raise ValueError("ax can only be given without reference (two panels are drawn)")
    # with a reference, both panels use the data's extent, so the eye compares like with like
    lims = _limits(clouds[1:], pad=0.15) if reference is not None else _limits(clouds)
    if ax is None:
        fig, axes = _new_figure(len(clouds))
        axes = list(axes[0])
    else:
        fig, axes = ax.get_figure(), [ax]
    titles = list(titles) + [None] * 2
    for a, c, title in zip(axes, clouds, titles):
        _scatter(a, c, title, lims, marker_size)
    return _finish(fig, path)


def _bounds(bounds: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    def pair(b: Any) -> tuple[float, float]:
        lo, hi = (float(v) for v in b)
        if not lo < hi:
            raise ValueError(f"bounds must satisfy low < high, got {tuple(b)}")
        return lo, hi

    try:
        if len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds):
            return pair(bounds), pair(bounds)
        if len(bounds) == 2:
            return pair(bounds[0]), pair(bounds[1])
    except TypeError:
        pass
    raise ValueError(f"bounds must be (low, high) or ((xlow, xhigh), (ylow, yhigh)), got {bounds!r}")


def _module_device_dtype(fn: Any) -> tuple[torch.device, torch.dtype]:
    if isinstance(fn, torch.nn.Module):
        for p in fn.parameters():
            return p.device, p.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def density_heatmap(
    log_prob_fn: Callable[[Tensor], Tensor],
    *,
    bounds: Any = (-4.0, 4.0),
    resolution: int = 200,
    path: str | os.PathLike | None = None,
    ax: Any = None,
    log_scale: bool = False,
    chunk_size: int = 10_000,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    title: str | None = None,
) -> Any:
    """Heat map of a 2-D density ``p(x) = exp(log_prob_fn(x))`` on a regular grid.

    The ``resolution²`` grid points are evaluated in chunks of ``chunk_size`` under
    ``torch.no_grad()`` on ``device`` (the module's device when ``log_prob_fn`` is an ``nn.Module``).

    Args:
        log_prob_fn: ``(N, 2) -> (N,)`` log-density (normalised or not).
        bounds: ``(low, high)`` for both axes or ``((xlow, xhigh), (ylow, yhigh))``.
        resolution: grid points per axis.
        path: where to write the figure.
        ax: an Axes to draw into.
        log_scale: show ``log p`` instead of ``p``.
        chunk_size: points per call of ``log_prob_fn``.
        device, dtype: where to evaluate (defaults: the module's, else CPU / default dtype).
        title: panel title.

    Example:
        >>> fig = density_heatmap(lambda x: -0.5 * (x ** 2).sum(-1), resolution=20)
        >>> type(fig).__name__
        'Figure'
    """
    if not callable(log_prob_fn):
        raise TypeError(f"log_prob_fn must be callable (N, 2) -> (N,), got {type(log_prob_fn).__name__}")
    (x0, x1), (y0, y1) = _bounds(bounds)
    resolution = check_int("resolution", resolution, minimum=2)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    dev, dt = _module_device_dtype(log_prob_fn)
    dev = torch.device(device) if device is not None else dev
    dt = dtype or dt
    xs = torch.linspace(x0, x1, resolution, device=dev, dtype=dt)
    ys = torch.linspace(y0, y1, resolution, device=dev, dtype=dt)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)
    values = []
    with torch.no_grad():
        for chunk in grid.split(chunk_size):
            out = log_prob_fn(chunk)
            if not isinstance(out, Tensor) or out.shape != (chunk.shape[0],):
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"log_prob_fn returned {got}; expected shape ({chunk.shape[0]},)")
            values.append(out.detach().to("cpu", torch.float64))
    logp = torch.cat(values).reshape(resolution, resolution)
    image = logp if log_scale else torch.exp(logp - logp[torch.isfinite(logp)].max())
    if ax is None:
        fig, axes = _new_figure()
        ax = axes[0, 0]
    else:
        fig = ax.get_figure()
    ax.imshow(image.numpy(), origin="lower", extent=(x0, x1, y0, y1), cmap="viridis", aspect="equal")
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def make_grid(images: Tensor, *, nrow: int | None = None, padding: int = 1, pad_value: float = 1.0) -> Tensor:
    """Tile images ``(N, C, H, W)`` into one ``(C, rows·(H+p)+p, nrow·(W+p)+p)`` tensor.

    Example:
        >>> make_grid(torch.zeros(6, 1, 2, 2), nrow=3, padding=1).shape
        torch.Size([1, 7, 10])
    """
    check_tensor("images", images, ndim=4, finite=False)
    n, c, h, w = images.shape
    nrow = check_int("nrow", nrow, minimum=1) if nrow is not None else max(1, math.ceil(math.sqrt(n)))
    nrow = min(nrow, n)
    rows = math.ceil(n / nrow)
    p = check_int("padding", padding, minimum=0)
    grid = images.new_full((c, rows * (h + p) + p, nrow * (w + p) + p), pad_value)
    for k in range(n):
        r, col = divmod(k, nrow)
        grid[:, p + r * (h + p) : p + r * (h + p) + h, p + col * (w + p) : p + col * (w + p) + w] = images[k]
    return grid


def image_grid(
    images: Tensor,
    *,
    nrow: int | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    path: str | os.PathLike | None = None,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Show images ``(N, C, H, W)`` (``C`` = 1 grey, 3 RGB) as one grid.

    Values are clipped to ``value_range`` and mapped to [0, 1].

    Example:
        >>> fig = image_grid(torch.rand(10, 1, 8, 8) * 2 - 1, nrow=5)
        >>> type(fig).__name__
        'Figure'
    """
    check_tensor("images", images, ndim=4, finite=False)
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels (N, C, H, W), got shape {tuple(images.shape)}")
    lo, hi = (float(v) for v in value_range)
    if not lo < hi:
        raise ValueError(f"value_range must satisfy low < high, got {tuple(value_range)}")
    scaled = ((images.detach().to("cpu", torch.float32) - lo) / (hi - lo)).clamp(0, 1)
    grid = make_grid(scaled, nrow=nrow, padding=1, pad_value=1.0)
    if ax is None:
        n_cols = grid.shape[2] / max(grid.shape[1], 1)
        fig, axes = _new_figure(size=4.0)
        fig.set_size_inches(4.0 * max(1.0, n_cols), 4.0)
        ax = axes[0, 0]
    else:
        fig = ax.get_figure()
    if grid.shape[0] == 1:
        ax.imshow(grid[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def _losses(history_or_losses: Any) -> Tensor:
    values = getattr(history_or_losses, "losses", history_or_losses)
    if isinstance(values, Tensor):
        out = values.detach().to("cpu", torch.float64).reshape(-1)
    else:
        try:
            out = torch.tensor([float(v) for v in values], dtype=torch.float64)
        except (TypeError, ValueError):
            raise TypeError(
                "history_or_losses must be a sequence of floats, a 1-D tensor, or an object with .losses, "
                f"got {type(history_or_losses).__name__}"
            ) from None
    if out.numel() == 0:
        raise ValueError("history_or_losses is empty")
    return out


def loss_curve(
    history_or_losses: Any,
    *,
    path: str | os.PathLike | None = None,
    ax: Any = None,
    window: int | None = None,
    title: str | None = "training loss",
) -> Any:
    """Plot a loss history: the raw values, and a moving average over ``window`` steps on top.

    The y axis is logarithmic when every finite value is positive.

    Args:
        history_or_losses: a list / tensor of floats, or an object with ``.losses`` (``fit``'s history).
        path: where to write the figure.
        ax: an Axes to draw into.
        window: moving-average width (default ``max(1, n // 50)``).
        title: panel title.

    Example:
        >>> fig = loss_curve([1.0 / (k + 1) for k in range(100)])
        >>> fig.axes[0].get_yscale()
        'log'
    """
    y = _losses(history_or_losses)
    n = y.numel()
    window = check_int("window", window, minimum=1) if window is not None else max(1, n // 50)
    if ax is None:
        fig, axes = _new_figure(size=4.0)
        fig.set_size_inches(6.0, 4.0)
        ax = axes[0, 0]
    else:
        fig = ax.get_figure()
    steps = torch.arange(n, dtype=torch.float64)
    ax.plot(steps.numpy(), y.numpy(), alpha=0.35, linewidth=0.8, label="loss")
    finite = torch.isfinite(y)
    if window > 1 and n >= window:
        filled = torch.where(finite, y, torch.zeros_like(y))
        csum = torch.cat([filled.new_zeros(1), filled.cumsum(0)])
        ccount = torch.cat([filled.new_zeros(1), finite.to(torch.float64).cumsum(0)])
        avg = (csum[window:] - csum[:-window]) / (ccount[window:] - ccount[:-window]).clamp_min(1)
        ax.plot(steps[window - 1 :].numpy(), avg.numpy(), linewidth=1.5, label=f"moving average ({window})")
        ax.legend(loc="best")
    if bool(finite.any()) and bool((y[finite] > 0).all()):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def trace_plot(
    samples: Tensor | Mapping[str, Tensor],
    *,
    path: str | os.PathLike | None = None,
    max_components: int = 4,
) -> Any:
    """Matplotlib-native trace plot of batched chains: trace and histogram per scalar component.

    For ArviZ's own trace plot (with divergences marked) use
    :func:`probgen.diagnostics.plot_trace`.

    Args:
        samples: a Tensor ``(chains, draws, *shape)`` or a dict ``name -> Tensor (chains, draws, *shape)``.
        path: where to write the figure.
        max_components: at most this many scalar components per variable are drawn.

    Example:
        >>> fig = trace_plot({"mu": torch.randn(2, 50), "theta": torch.randn(2, 50, 3)})
        >>> len(fig.axes)
        8
    """
    if isinstance(samples, Tensor):
        samples = {"x": samples}
    if not isinstance(samples, Mapping) or not samples:
        raise TypeError(f"samples must be a Tensor or a dict of Tensors (chains, draws, *shape), got {type(samples).__name__}")
    max_components = check_int("max_components", max_components, minimum=1)
    rows: list[tuple[str, Tensor]] = []
    for name, value in samples.items():
        check_tensor(f"samples[{name!r}]", value, min_ndim=2, finite=False)
        flat = value.detach().to("cpu", torch.float64).reshape(value.shape[0], value.shape[1], -1)
        for j in range(min(flat.shape[-1], max_components)):
            label = name if value.dim() == 2 else f"{name}[{j}]"
            rows.append((label, flat[:, :, j]))
    fig, axes = _new_figure(2, len(rows), size=3.0)
    fig.set_size_inches(10.0, 2.2 * len(rows))
    for (label, chains), (ax_hist, ax_trace) in zip(rows, axes):
        for c in range(chains.shape[0]):
            ax_hist.hist(chains[c].numpy(), bins=30, density=True, histtype="step")
            ax_trace.plot(chains[c].numpy(), linewidth=0.6, alpha=0.8)
        ax_hist.set_title(label)
        ax_trace.set_title(label)
    return _finish(fig, path)


def compare_panels(
    panels: Mapping[str, Tensor],
    *,
    reference: Tensor | None = None,
    path: str | os.PathLike | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    marker_size: float = 2.0,
) -> Any:
    """Side-by-side samples from several samplers (and the data), on shared limits.

    2-D point clouds ``(N, 2)`` are scattered with equal axes and common limits; images
    ``(N, C, H, W)`` are tiled with :func:`image_grid`.

    Args:
        panels: ordered ``title -> samples``.
        reference: optional data, drawn first under the title ``"data"``.
        path: where to write the figure.
        value_range: pixel range for images.
        marker_size: scatter marker size.

    Example:
        >>> fig = compare_panels({"ode": torch.randn(50, 2), "sde": torch.randn(50, 2)},
        ...                      reference=torch.randn(50, 2))
        >>> [ax.get_title() for ax in fig.axes]
        ['data', 'ode', 'sde']
    """
    if not isinstance(panels, Mapping) or not panels:
        raise TypeError(f"panels must be a non-empty dict title -> Tensor, got {type(panels).__name__}")
    items = ([("data", reference)] if reference is not None else []) + list(panels.items())
    kinds = set()
    for title, value in items:
        check_tensor(f"panels[{title!r}]", value, finite=False)
        if value.dim() == 2 and value.shape[1] == 2:
            kinds.add("points")
        elif value.dim() == 4:
            kinds.add("images")
        else:
            raise ValueError(f"panels[{title!r}] must have shape (N, 2) or (N, C, H, W), got {tuple(value.shape)}")
    if len(kinds) > 1:
        raise ValueError("panels mix 2-D points and images; compare one kind at a time")
    fig, axes = _new_figure(len(items), size=4.0)
    axes = list(axes[0])
    if kinds == {"points"}:
        clouds = [_points(f"panels[{t!r}]", v) for t, v in items]
        lims = _limits(clouds[:1], pad=0.15) if reference is not None else _limits(clouds)
        for ax, (title, _), pts in zip(axes, items, clouds):
            _scatter(ax, pts, title, lims, marker_size)
    else:
        for ax, (title, value) in zip(axes, items):
            image_grid(value, value_range=value_range, ax=ax, title=title)
    return _finish(fig, path)


def compare_runs(
    samples: Mapping[str, Tensor],
    tables: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    reference: Tensor | None = None,
    path: str | os.PathLike | None = None,
    max_metrics: int = 8,
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> Any:
    """One figure comparing trained models: their samples beside the data (top) and, below, one small bar
    chart per metric that every run reports (with standard-error bars where known).

    Args:
        samples: ``run name -> samples`` (``(N, 2)`` points or ``(N, C, H, W)`` images).
        tables: ``run name -> {metric -> {"value", "stderr", ...}}`` (what ``probgen evaluate`` writes).
        reference: data drawn first in the sample row.
        path: where to write the figure.
        max_metrics: at most this many metric panels.
        value_range: pixel range for images.

    Example:
        >>> t = {"a": {"m": {"value": 1.0, "stderr": 0.1}}, "b": {"m": {"value": 2.0, "stderr": None}}}
        >>> fig = compare_runs({"a": torch.randn(50, 2), "b": torch.randn(50, 2)}, t)
        >>> len(fig.subfigs)
        2
    """
    from matplotlib.figure import Figure

    if not isinstance(samples, Mapping) or not samples:
        raise TypeError("samples must be a non-empty dict run name -> Tensor")
    names = list(samples)
    shared = [m for m in dict.fromkeys(k for t in tables.values() for k in t)
              if all(m in tables.get(r, {}) for r in names)]
    # a value every run shares (the data's entropy, a data-vs-data floor) is a property of the data: no bar
    shared = [m for m in shared if len({round(float(tables[r][m]["value"]), 12) for r in names}) > 1 or len(names) == 1]
    shared = shared[:max_metrics]
    ncols_top = len(names) + (reference is not None)
    ncols = max(ncols_top, min(len(shared), 4), 1)
    nrows_bottom = max(1, math.ceil(len(shared) / ncols)) if shared else 0
    fig = Figure(figsize=(3.6 * ncols, 3.8 + 2.8 * nrows_bottom), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3.8, max(2.8 * nrows_bottom, 0.01)])
    axes = top.subplots(1, ncols_top, squeeze=False)[0]
    items = ([("data", reference)] if reference is not None else []) + list(samples.items())
    if all(v.dim() == 2 and v.shape[1] == 2 for _, v in items):
        clouds = [_points(f"samples[{t!r}]", v) for t, v in items]
        lims = _limits(clouds[:1], pad=0.15) if reference is not None else _limits(clouds)
        for ax, (title, _), pts in zip(axes, items, clouds):
            _scatter(ax, pts, title, lims, 2.0)
    else:
        for ax, (title, value) in zip(axes, items):
            image_grid(value[:36], value_range=value_range, ax=ax, title=title)
    if shared:
        bars = bottom.subplots(nrows_bottom, ncols, squeeze=False).ravel()
        colors = [f"C{i}" for i in range(len(names))]
        for ax, metric in zip(bars, shared):
            vals = [float(tables[r][metric]["value"]) for r in names]
            errs = [float(tables[r][metric].get("stderr") or 0.0) for r in names]
            ax.bar(range(len(names)), vals, yerr=errs, color=colors, capsize=3)
            ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
            ax.set_title(metric, fontsize=9)
        for ax in bars[len(shared):]:
            ax.set_visible(False)
    return _finish(fig, path)


# keep torch referenced for doctest namespaces
_ = torch
