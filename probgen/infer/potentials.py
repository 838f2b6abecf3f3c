"""Deprecated name of :mod:`probgen.infer.targets` (the benchmark targets); importing it warns."""

from __future__ import annotations

import warnings

from probgen.infer.targets import (  # noqa: F401
    POTENTIALS,
    Potential,
    banana,
    correlated_gaussian,
    get_potential,
    neals_funnel,
)

__all__ = ["Potential", "POTENTIALS", "get_potential", "correlated_gaussian", "neals_funnel", "banana"]

warnings.warn(
    "probgen.infer.potentials is renamed probgen.infer.targets (it holds benchmark targets); "
    "import from probgen.infer.targets",
    DeprecationWarning,
    stacklevel=2,
)
