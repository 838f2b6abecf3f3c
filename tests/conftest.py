"""Shared test settings: one thread per worker (pytest-xdist runs two workers on CI's 2 cores), float64
checks seeded per test, and the Agg backend so no display is needed."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same global RNG state, so a test's result never depends on test order."""
    import pyro

    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield
