"""ESS methods that need ``prob``, plot_trace's figure under ArviZ 0.x and 1.x, and the one-line
convergence warning (R-hat > 1.01, bulk ESS < 100 per chain, divergences)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from probgen import diagnostics
from probgen.diagnostics import ConvergenceWarning, convergence_warning, ess, plot_trace, summary
from probgen.diagnostics.arviz import _az, arviz_major_version


def _draws(seed: int = 0, chains: int = 4, n: int = 400) -> torch.Tensor:
    return torch.randn(chains, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("method, prob", [("quantile", 0.9), ("local", (0.2, 0.4)), ("tail", 0.1)])
def test_ess_methods_take_the_prob_they_need_and_match_arviz(method, prob):
    x = _draws()
    mine = float(ess(x, method=method, prob=prob))
    az = _az()
    ref = az.ess(diagnostics.to_inference_data(x), method=method, prob=prob)
    ref = ref["x"] if arviz_major_version() < 1 else ref["posterior"]["x"]
    assert mine == pytest.approx(float(np.asarray(ref.values)), rel=1e-12)
    assert 0 < mine < 2 * x.numel()


@pytest.mark.parametrize(
    "method, prob, match",
    [
        ("quantile", None, r"method='quantile' needs prob, a quantile in \(0, 1\), got None"),
        ("local", None, r"method='local' needs prob=\(lo, hi\)"),
        ("local", (0.5, 0.2), r"method='local' needs prob=\(lo, hi\) with 0 <= lo < hi <= 1, got \(0.5, 0.2\)"),
        ("quantile", 1.5, r"got 1.5"),
        ("bulk", 0.5, r"prob is only used by ess methods"),
    ],
)
def test_ess_prob_errors_name_the_argument(method, prob, match):
    with pytest.raises(ValueError, match=match):
        ess(_draws(), method=method, prob=prob)


def test_plot_trace_returns_a_matplotlib_figure_and_writes_path(tmp_path):
    from matplotlib.figure import Figure

    out = tmp_path / "trace.png"
    fig = plot_trace({"mu": _draws(n=50)}, path=out)
    assert isinstance(fig, Figure) and out.stat().st_size > 0


def test_plot_trace_arviz1_branch_unwraps_the_plot_collection(tmp_path, monkeypatch):
    """ArviZ 1.x returns a PlotCollection (which has its own savefig); a stand-in with the same
    ``viz["figure"]`` layout checks that plot_trace returns and writes the Figure inside it."""
    from matplotlib.figure import Figure

    import probgen.diagnostics.arviz as mod

    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    calls = {}

    class _Item:
        def item(self):
            return fig

    class PlotCollection:
        viz = {"figure": _Item()}

        def savefig(self, *a, **k):  # pragma: no cover - must not be what plot_trace saves
            raise AssertionError("plot_trace must save the Figure, not the PlotCollection")

    class FakeAz:
        __version__ = "1.0.0"
        InferenceData = type(_az().InferenceData())  # what to_inference_data passes through

        @staticmethod
        def plot_trace_dist(idata, **kwargs):
            calls.update(kwargs)
            return PlotCollection()

    idata = diagnostics.to_inference_data({"mu": _draws(n=20)})
    monkeypatch.setattr(mod, "_az", lambda: FakeAz)
    out = tmp_path / "t.png"
    assert plot_trace(idata, path=out) is fig
    assert out.stat().st_size > 0 and calls["backend"] == "matplotlib"


@pytest.mark.skipif(arviz_major_version() < 1, reason="ArviZ 1.x (Python >= 3.12) is not installed")
def test_plot_trace_under_arviz1(tmp_path):  # pragma: no cover - runs where ArviZ 1.x is installed
    from matplotlib.figure import Figure

    out = tmp_path / "trace.png"
    fig = plot_trace({"mu": _draws(n=50)}, path=out)
    assert isinstance(fig, Figure) and out.stat().st_size > 0


def test_convergence_warning_none_for_good_chains():
    assert convergence_warning(_draws()) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        summary(_draws())


def test_convergence_warning_names_rhat_ess_and_divergences():
    x = _draws() + torch.arange(4.0, dtype=torch.float64)[:, None]  # chains centred apart: R-hat >> 1
    msg = convergence_warning(x)
    assert msg.startswith("not converged: R-hat ") and "> 1.01 (x)" in msg and "\n" not in msg
    # AR(1) with phi = 0.99: bulk ESS ~ 400 * 4 / 199 ~ 8, far below 100 per chain
    g = torch.Generator().manual_seed(1)
    e = torch.randn(4, 400, generator=g, dtype=torch.float64)
    ar = torch.zeros_like(e)
    for t in range(1, 400):
        ar[:, t] = 0.99 * ar[:, t - 1] + e[:, t]
    assert "bulk ESS" in convergence_warning(ar) and "< 400 (100 per chain x 4 chains)" in convergence_warning(ar)
    div = torch.zeros(4, 400, dtype=torch.bool)
    div[1, 7] = div[2, 9] = True
    idata = diagnostics.to_inference_data({"x": _draws()}, sample_stats={"diverging": div})
    assert convergence_warning(idata) == "not converged: 2 divergent transitions (do not trust these estimates)"
    with pytest.warns(ConvergenceWarning, match="2 divergent transitions"):
        summary(idata)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        summary(idata, warn=False)
