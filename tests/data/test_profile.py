"""Data profiles: computed from the values and the shape, never the name; the settings row they select."""

from __future__ import annotations

import pytest
import torch

from probgen.data.profile import PROFILE_ROWS, data_profile


def test_rows_from_values_and_shapes():
    g = torch.Generator().manual_seed(0)
    cases = [
        (torch.randn(100, 2, generator=g), "2d", "continuous", None),
        (torch.randn(100, 5, generator=g) * 1000 + 3, "tabular", "continuous", None),
        (torch.randint(0, 5, (400, 8), generator=g).float() * 0.5, "tabular", "quantized", 5),
        (torch.bernoulli(torch.full((50, 20), 0.3), generator=g), "binary", "binary", 2),
        (torch.randint(0, 256, (30, 1, 6, 6), generator=g).float(), "grayscale", "quantized", 256),
        (torch.rand(30, 3, 4, 4, generator=g), "colour", "continuous", None),
        (torch.randn(10, 100, generator=g), "other", "continuous", None),
        (torch.randint(0, 3, (40, 2), generator=g).float(), "other", "quantized", 3),  # quantized 2-D
    ]
    for x, row, value_type, levels in cases:
        p = data_profile(x)
        assert (p.row, p.value_type, p.num_levels) == (row, value_type, levels), (tuple(x.shape), p)
        assert p.event_shape == tuple(x.shape[1:]) and p.size == len(x)
    assert {row for row, _ in PROFILE_ROWS} == {"2d", "tabular", "binary", "grayscale", "colour", "other"}


def test_grid_with_missing_levels_and_its_range():
    x = torch.tensor([[0.0], [0.25], [1.0]]).repeat(20, 3)[:, :3]  # levels 0, 1 and 4 of a 5-level grid
    p = data_profile(x)
    assert (p.value_type, p.num_levels, p.value_range) == ("quantized", 5, (0.0, 1.0))
    off = x.clone()
    off[0, 0] = 0.3137  # one value off every grid of <= 256 levels: continuous
    assert data_profile(off).value_type == "continuous"


def test_built_in_sets_profile_by_their_values():
    from probgen.data import load_dataset

    digits = data_profile(load_dataset("digits"))  # a DataSet is profiled by its training split
    assert (digits.row, digits.value_type, digits.num_levels, digits.value_range) == ("grayscale", "quantized", 17,
                                                                                     (-1.0, 1.0))
    binary = data_profile(load_dataset("digits-binary"))
    assert (binary.row, binary.value_type) == ("grayscale", "binary")
    assert data_profile(load_dataset("8gaussians", n_train=500, n_test=10)).describe() == \
        "2d: continuous, vector D = 2, N = 500"


def test_bad_input_names_the_problem():
    with pytest.raises(TypeError, match="data must be a tensor"):
        data_profile([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"shape \(N, \*event_shape\).*\(3,\)"):
        data_profile(torch.zeros(3))
    with pytest.raises(ValueError, match="event_shape"):
        data_profile(torch.zeros(3, 4), event_shape=(5,))


def test_a_data_set_binarized_every_batch_is_binary():
    """mnist-binary keeps grey levels in its training split and binarizes each batch: the model sees {0, 1}."""
    from types import SimpleNamespace

    from probgen.data.profile import data_profile

    grey = torch.randint(0, 256, (50, 1, 4, 4)).float() / 255
    assert data_profile(grey).value_type == "quantized"
    dynamic = SimpleNamespace(train=grey, num_levels=2, batch_transform=lambda x: torch.bernoulli(x))
    prof = data_profile(dynamic)
    assert (prof.value_type, prof.num_levels, prof.row) == ("binary", 2, "grayscale")
