"""Tests of probgen.data.load_dataset / DataSet / list_datasets on a toy set, the digits and user files."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from probgen.data import (
    DATASET_NAMES,
    DataSet,
    digits,
    list_datasets,
    load_dataset,
    to_levels,
    toy2d,
    toy2d_entropy,
    toy2d_log_prob,
)


def _sorted_rows(x: torch.Tensor) -> list:
    return sorted(map(tuple, x.reshape(len(x), -1).tolist()))


def test_toy_set_fields():
    ds = load_dataset("rings", seed=3, n_train=1000, n_test=200)
    assert isinstance(ds, DataSet) and ds.name == "rings" and ds.kind == "toy2d"
    assert ds.train.shape == (1000, 2) and ds.test.shape == (200, 2) and ds.train.dtype == torch.float32
    assert ds.event_shape == (2,) and ds.num_levels is None and ds.data_range == (-4.0, 4.0)
    assert ds.labels_train is None and ds.labels_test is None
    # train and test are independent draws with seeds 2*seed and 2*seed + 1
    assert torch.equal(ds.train, toy2d("rings", 1000, seed=6)) and torch.equal(ds.test, toy2d("rings", 200, seed=7))
    x = ds.test.double()
    torch.testing.assert_close(ds.log_prob(x), toy2d_log_prob("rings", x))
    assert ds.entropy == toy2d_entropy("rings")  # the 1e6-sample estimate, cached
    assert 0 < ds.entropy[1] < 5e-3
    # the mean log-density of the test points estimates -entropy: 4 standard errors of the test mean
    lp = ds.log_prob(x)
    assert abs(float(-lp.mean()) - ds.entropy[0]) < 4 * float(lp.std()) / math.sqrt(len(lp)) + 4 * ds.entropy[1]


def test_toy_defaults_and_seeds():
    ds = load_dataset("moons")
    assert ds.train.shape == (50_000, 2) and ds.test.shape == (10_000, 2)
    assert ds.log_prob is None and ds.entropy is None
    assert torch.equal(load_dataset("moons", n_train=10, n_test=5).train, load_dataset("moons", n_train=10, n_test=5).train)
    assert not torch.equal(load_dataset("moons", n_train=10, seed=1).train, load_dataset("moons", n_train=10, seed=0).train)


@pytest.mark.parametrize(
    ("name", "levels", "data_range"), [("digits", 17, (-1.0, 1.0)), ("digits-binary", 2, (0.0, 1.0))]
)
def test_digits_fields(name, levels, data_range):
    ds = load_dataset(name)
    assert ds.kind == "image" and ds.event_shape == (1, 8, 8)
    assert ds.train.shape == (1433, 1, 8, 8) and ds.test.shape == (364, 1, 8, 8)
    assert ds.num_levels == levels and ds.data_range == data_range
    assert ds.log_prob is None and ds.entropy is None
    assert ds.labels_train.shape == (1433,) and ds.labels_test.dtype == torch.int64
    assert ds.train.min() == data_range[0] and ds.train.max() == data_range[1]
    # the scaled values are exactly the levels k -> low + (high - low) k / (L - 1)
    k = to_levels(ds.train, num_levels=levels, data_range=data_range)
    low, high = data_range
    torch.testing.assert_close(low + (high - low) * k / (levels - 1), ds.train.double(), check_dtype=False)
    x_ref, y_ref = digits("test", binarize=True) if name == "digits-binary" else digits("test")
    assert torch.equal(ds.test, x_ref) and torch.equal(ds.labels_test, y_ref)


def test_digits_subsets_and_limits():
    ds = load_dataset("digits", n_train=100, n_test=10)
    assert ds.train.shape == (100, 1, 8, 8) and ds.labels_train.shape == (100,) and ds.test.shape[0] == 10
    with pytest.raises(ValueError, match=r"n_train must be <= 1433 for data set 'digits', got 2000"):
        load_dataset("digits", n_train=2000)


def test_file_split_90_10(tmp_path):
    data = np.arange(150, dtype=np.float64).reshape(50, 3) / 8  # not all integers: continuous (see test_files)
    path = tmp_path / "my.npy"
    np.save(path, data)
    ds = load_dataset(path, seed=1)
    assert ds.kind == "file" and ds.name == str(path) and ds.event_shape == (3,)
    assert ds.train.shape == (45, 3) and ds.test.shape == (5, 3)
    assert ds.log_prob is None and ds.entropy is None and ds.num_levels is None and ds.labels_train is None
    assert _sorted_rows(torch.cat([ds.train, ds.test])) == _sorted_rows(torch.from_numpy(data))
    assert ds.data_range == (float(ds.train.min()), float(ds.train.max()))
    assert torch.equal(load_dataset(str(path), seed=1).test, ds.test)  # same seed, same split
    assert not torch.equal(load_dataset(path, seed=2).test, ds.test)
    assert not torch.equal(ds.test, torch.from_numpy(data[:5]).float())  # shuffled


def test_file_sizes_event_shape_and_csv(tmp_path):
    np.save(tmp_path / "img.npy", np.random.default_rng(0).normal(size=(11, 2, 2)))
    ds = load_dataset(tmp_path / "img.npy", n_test=3, n_train=4)
    assert ds.event_shape == (2, 2) and ds.test.shape == (3, 2, 2) and ds.train.shape == (4, 2, 2)
    with pytest.raises(ValueError, match=r"n_train \+ n_test must be <= 11 .*got 10 \+ 3"):
        load_dataset(tmp_path / "img.npy", n_test=3, n_train=10)
    with pytest.raises(ValueError, match=r"n_test must be < 11"):
        load_dataset(tmp_path / "img.npy", n_test=11)
    (tmp_path / "d.csv").write_text("a,b\n" + "\n".join(f"{i},{2 * i}" for i in range(20)))
    ds = load_dataset(str(tmp_path / "d.csv"))
    assert ds.train.shape == (18, 2) and ds.test.shape == (2, 2)
    np.save(tmp_path / "one.npy", np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"one\.npy: need at least 2 rows"):
        load_dataset(tmp_path / "one.npy")


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown data set 'svhn'; valid names: '8gaussians', .*'digits', "
                                         r"'digits-binary', .*'mnist'.*a path to a \.npy/\.csv/\.pt file, or a "
                                         r"folder of PNG images"):
        load_dataset("svhn")
    with pytest.raises(FileNotFoundError, match=r"missing\.csv: no such file"):
        load_dataset(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=r"seed must be >= 0"):
        load_dataset("rings", seed=-1)
    with pytest.raises(ValueError, match=r"n_train must be >= 1, got 0"):
        load_dataset("rings", n_train=0)
    with pytest.raises(TypeError, match=r"name_or_path must be a data set name or a file path, got int"):
        load_dataset(3)


def test_list_datasets_and_repr():
    rows = list_datasets()
    names = [name for name, _ in rows]
    assert all(name in names for name in DATASET_NAMES)
    assert all(isinstance(d, str) and d for _, d in rows)
    ds = load_dataset("checkerboard", n_train=10, n_test=5)
    text = repr(ds)
    assert "train=(10, 2)" in text and "entropy=3.4657" in text and len(text) < 400
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"


def test_load_is_a_deprecated_alias_of_load_dataset():
    """``probgen.data.load`` (the old name, easily confused with ``probgen.load`` of checkpoints) still works, warns
    with the new name, and returns exactly what ``load_dataset`` returns."""
    import probgen as pg

    with pytest.warns(DeprecationWarning, match=r"probgen\.data\.load_dataset"):
        old = pg.data.load("moons", seed=3, n_train=20, n_test=7)
    new = pg.data.load_dataset("moons", seed=3, n_train=20, n_test=7)
    assert isinstance(old, DataSet)
    assert torch.equal(old.train, new.train) and torch.equal(old.test, new.test)
    assert "load" not in pg.data.__all__ and "load_dataset" in pg.data.__all__
    assert pg.load is not pg.data.load  # checkpoints and data sets never share a name
