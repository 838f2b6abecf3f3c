"""benchmarks/bench_colour.py: the held-out region shares no pixel with the training patches, and the discrete
baselines are the probabilities they claim (closed forms on data built by the test; nothing is downloaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_colour.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_colour", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_region_split_has_no_overlap(bench):
    h, w, boundary = 48, 100, 60
    cols = np.broadcast_to(np.arange(w, dtype=np.uint8)[None, :, None], (h, w, 3)).copy()  # pixel = its column
    train, test = bench.cut(cols, 0, boundary, 8), bench.cut(cols, boundary, w, 8)
    assert train.shape[1:] == (32, 32, 3) and train.dtype == np.uint8
    assert int(train.max()) < boundary <= int(test.min())  # no training patch reaches into the held-out columns
    assert len(train) == 3 * 4 and len(test) == 3 * 2  # rows 0, 8, 16; columns 0, 8, 16, 24 | 60, 68
    assert np.array_equal(test[0, 0, :, 0], np.arange(boundary, boundary + 32))


def test_baselines_closed_forms(bench):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(64, 32, 32, 3)).astype(np.uint8)
    flat = np.full((3, 32, 32, 3), 7, dtype=np.uint8)  # constant patches: every difference is 0
    out = bench.baselines(train, flat)
    assert np.allclose(out["8-bit uniform (every level 1/256)"], 8.0)
    hist = [out[k] for k in out if k.startswith("i.i.d.")][0]
    expected = -np.mean([np.log2(((train[..., c] == 7).sum() + 1) / (train[..., c].size + 256)) for c in range(3)])
    assert np.allclose(hist, expected)
    sub = [out[k] for k in out if k.startswith("left-neighbour")][0]
    zero_diff = [np.log2(((np.diff(train[..., c].astype(int), axis=2) == 0).sum() + 1)
                         / (train[:, :, 1:, c].size + 511)) for c in range(3)]
    first = [np.log2(((train[:, :, 0, c] == 7).sum() + 1) / (train[:, :, 0, c].size + 256)) for c in range(3)]
    assert np.allclose(sub, -(32 * sum(first) + 32 * 31 * sum(zero_diff)) / 3072)
