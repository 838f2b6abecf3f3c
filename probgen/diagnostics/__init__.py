"""Diagnostics: ArviZ conversion and convergence checks, and matplotlib figures.

``probgen.diagnostics.arviz`` is the only module importing arviz and ``probgen.diagnostics.plots`` the
only one importing matplotlib; both import them lazily, so ``import probgen`` loads neither.
"""

from probgen.diagnostics.arviz import (
    ConvergenceWarning,
    convergence_warning,
    ess,
    plot_trace,
    rhat,
    summary,
    to_inference_data,
)
from probgen.diagnostics.plots import (
    compare_panels,
    density_heatmap,
    image_grid,
    loss_curve,
    make_grid,
    save_figure,
    scatter_2d,
    trace_plot,
)

__all__ = [
    "to_inference_data",
    "summary",
    "rhat",
    "ess",
    "plot_trace",
    "convergence_warning",
    "ConvergenceWarning",
    "scatter_2d",
    "density_heatmap",
    "image_grid",
    "loss_curve",
    "trace_plot",
    "compare_panels",
    "save_figure",
    "make_grid",
]
