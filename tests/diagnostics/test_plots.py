"""probgen.diagnostics.plots: every helper returns a Figure and writes a non-empty image atomically."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from probgen.diagnostics import (
    compare_panels,
    density_heatmap,
    image_grid,
    loss_curve,
    make_grid,
    save_figure,
    scatter_2d,
    trace_plot,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    leftovers = [p for p in os.listdir(path.parent) if ".tmp-" in p]
    assert leftovers == []  # the temporary file was moved into place


def test_scatter_2d_shared_equal_limits(tmp_path):
    out = tmp_path / "sub" / "scatter.png"
    fig = scatter_2d(torch.randn(200, 2), reference=3 + torch.randn(200, 2), path=out)
    _assert_png(out)
    a, b = fig.axes
    assert a.get_xlim() == b.get_xlim() and a.get_ylim() == b.get_ylim()
    (x0, x1), (y0, y1) = a.get_xlim(), a.get_ylim()
    assert abs((x1 - x0) - (y1 - y0)) < 1e-9
    assert [a.get_title(), b.get_title()] == ["samples", "data"]


def test_density_heatmap_evaluates_in_chunks_without_grad(tmp_path):
    calls = []

    def log_prob(x):
        calls.append((x.shape[0], torch.is_grad_enabled()))
        return -0.5 * (x**2).sum(-1)

    out = tmp_path / "density.png"
    fig = density_heatmap(log_prob, bounds=((-3, 3), (-2, 2)), resolution=30, chunk_size=100, path=out)
    _assert_png(out)
    assert sum(n for n, _ in calls) == 900 and max(n for n, _ in calls) == 100
    assert not any(g for _, g in calls)
    img = fig.axes[0].get_images()[0].get_array()
    assert img.shape == (30, 30)
    # peak of the standard normal is at the centre of the symmetric grid
    assert abs(float(img.max()) - 1.0) < 1e-12
    with pytest.raises(ValueError, match=r"log_prob_fn returned \(900, 1\); expected shape \(900,\)"):
        density_heatmap(lambda x: x[:, :1], resolution=30)


def test_make_grid_layout():
    imgs = torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 1, 2, 2)
    grid = make_grid(imgs, nrow=2, padding=1, pad_value=-1.0)
    assert grid.shape == (1, 7, 7)
    assert grid[0, 1, 1] == 0 and grid[0, 1, 4] == 1 and grid[0, 4, 1] == 2 and grid[0, 4, 4] == 3
    assert grid[0, 0, 0] == -1


def test_image_grid(tmp_path):
    out = tmp_path / "grid.png"
    fig = image_grid(torch.rand(12, 1, 8, 8) * 2 - 1, nrow=4, path=out)
    _assert_png(out)
    assert fig.axes[0].get_images()[0].get_array().shape == (2 * 9 + 1 + 9, 4 * 9 + 1)
    image_grid(torch.rand(3, 3, 4, 4), value_range=(0, 1))
    with pytest.raises(ValueError, match="images must have 1 or 3 channels"):
        image_grid(torch.rand(3, 2, 4, 4))


def test_loss_curve_inputs(tmp_path):
    class History:
        losses = [2.0 / (k + 1) for k in range(200)]

    out = tmp_path / "loss.png"
    fig = loss_curve(History(), path=out)
    _assert_png(out)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and len(ax.get_lines()) == 2  # raw + moving average
    fig2 = loss_curve(torch.linspace(-1, 1, 50))
    assert fig2.axes[0].get_yscale() == "linear"
    with pytest.raises(TypeError, match="history_or_losses must be a sequence of floats"):
        loss_curve(object())


def test_trace_plot_and_compare_panels(tmp_path):
    out = tmp_path / "trace.png"
    fig = trace_plot({"mu": torch.randn(2, 100), "theta": torch.randn(2, 100, 6)}, path=out, max_components=2)
    _assert_png(out)
    assert len(fig.axes) == 2 * 3
    out2 = tmp_path / "cmp.png"
    fig = compare_panels({"a": torch.randn(100, 2), "b": 2 * torch.randn(100, 2)}, reference=torch.randn(100, 2),
                         path=out2)
    _assert_png(out2)
    assert [ax.get_title() for ax in fig.axes] == ["data", "a", "b"]
    assert len({ax.get_xlim() for ax in fig.axes}) == 1
    fig = compare_panels({"ddpm": torch.rand(4, 1, 8, 8), "ddim": torch.rand(4, 1, 8, 8)})
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="mix 2-D points and images"):
        compare_panels({"a": torch.randn(4, 2), "b": torch.rand(4, 1, 8, 8)})


def test_save_figure_replaces_existing_file(tmp_path):
    out = tmp_path / "fig.png"
    out.write_bytes(b"old")
    save_figure(scatter_2d(torch.randn(10, 2)), out)
    _assert_png(out)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"samples must have shape \(N, 2\), got \(5, 3\)"):
        scatter_2d(torch.randn(5, 3))
    with pytest.raises(ValueError, match="bounds must satisfy low < high"):
        density_heatmap(lambda x: x.sum(-1), bounds=(1, -1))
    with pytest.raises(ValueError, match="resolution must be >= 2"):
        density_heatmap(lambda x: x.sum(-1), resolution=1)


def test_import_probgen_loads_neither_arviz_nor_matplotlib_and_plots_avoid_pyplot():
    # One subprocess (importing probgen is the slow part): nothing plotting-related at import time, and
    # the plot helpers use matplotlib.figure.Figure without ever importing pyplot.
    code = (
        "import sys, torch, probgen;"
        "print('matplotlib' in sys.modules, 'arviz' in sys.modules);"
        "probgen.diagnostics.scatter_2d(torch.randn(5, 2));"
        "print('matplotlib' in sys.modules, 'matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True", "False"]
