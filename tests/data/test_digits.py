"""Tests of probgen.data.digits: the fixed split, scalings, binarization, dequantization and bits/dim."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from probgen.data import DIGITS_SPLIT_SIZES, bits_per_dim, dequantize, digits, to_levels


@pytest.fixture(scope="module")
def sk():
    bunch = load_digits()
    return bunch.data, bunch.target


def test_split_sizes_and_classes(sk):
    _, target = sk
    counts = np.bincount(target, minlength=10)
    x_tr, y_tr = digits("train")
    x_te, y_te = digits("test")
    x_all, y_all = digits("all")
    assert x_tr.shape == (1433, 1, 8, 8) and y_tr.shape == (1433,) and y_tr.dtype == torch.int64
    assert x_te.shape == (364, 1, 8, 8) and x_all.shape == (1797, 1, 8, 8)
    assert {k: len(digits(k)[1]) for k in ("train", "test", "all")} == DIGITS_SPLIT_SIZES
    # every class: test gets ceil(n_c / 5) images (positions 0, 5, 10, ...), train the rest
    assert torch.bincount(y_te, minlength=10).tolist() == [math.ceil(c / 5) for c in counts]
    assert torch.bincount(y_tr, minlength=10).tolist() == [c - math.ceil(c / 5) for c in counts]
    torch.testing.assert_close(x_all.sum(), x_tr.sum() + x_te.sum())


def test_split_is_every_fifth_image_of_each_class_in_file_order(sk):
    data, target = sk
    test_idx = np.sort(np.concatenate([np.flatnonzero(target == c)[::5] for c in range(10)]))
    train_idx = np.setdiff1d(np.arange(len(target)), test_idx)
    x_te, y_te = digits("test", scale="raw")
    x_tr, y_tr = digits("train", scale="raw")
    assert np.array_equal(x_te.reshape(-1, 64).numpy(), data[test_idx].astype(np.float32))
    assert np.array_equal(y_te.numpy(), target[test_idx])
    assert np.array_equal(x_tr.reshape(-1, 64).numpy(), data[train_idx].astype(np.float32))
    assert np.array_equal(y_tr.numpy(), target[train_idx])


def test_deterministic():
    a, la = digits("train")
    b, lb = digits("train")
    assert torch.equal(a, b) and torch.equal(la, lb)
    a.add_(1.0)  # callers may modify what they get without changing later results
    assert torch.equal(digits("train")[0], b)


def test_scales_and_dtype():
    raw, _ = digits("all", scale="raw")
    assert torch.equal(raw, raw.round()) and raw.min() == 0 and raw.max() == 16
    torch.testing.assert_close(digits("all", scale="[0,1]")[0], raw / 16)
    pm1, _ = digits("all")
    torch.testing.assert_close(pm1, 2 * raw / 16 - 1)
    assert pm1.min() == -1 and pm1.max() == 1
    assert digits("test", dtype=torch.float64)[0].dtype == torch.float64


def test_binarize_thresholds_at_8():
    raw, _ = digits("all", scale="raw")
    b, _ = digits("all", binarize=True)
    assert set(b.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(b, (raw >= 8).float())


def test_digits_errors():
    with pytest.raises(ValueError, match=r"unknown split 'val'; valid choices: 'train', 'test', 'all'"):
        digits("val")
    with pytest.raises(ValueError, match=r"unknown scale '\[-1, 1\]'; valid choices: '\[-1,1\]', '\[0,1\]', 'raw'"):
        digits(scale="[-1, 1]")
    with pytest.raises(ValueError, match=r"scale does not apply when binarize=True"):
        digits(scale="[0,1]", binarize=True)
    with pytest.raises(TypeError, match=r"dtype must be torch.float32 or torch.float64"):
        digits(dtype=torch.float16)
    with pytest.raises(TypeError, match=r"binarize must be a bool"):
        digits(binarize=1)


# ---------------------------------------------------------------------------------------------- dequantize
def test_dequantize_lands_in_the_bin_of_each_level():
    levels = 17
    k = torch.arange(levels).repeat(2000)
    y = dequantize(k, levels, generator=torch.Generator().manual_seed(0))
    assert y.shape == k.shape and y.dtype == torch.get_default_dtype()
    assert (y >= 0).all() and (y < 1).all()
    assert torch.equal(torch.floor(y * levels).long(), k)
    # u = y L - k ~ U[0, 1): mean 1/2 within 4 standard errors (sd of U[0,1) is 1/sqrt(12))
    u = y.double() * levels - k
    assert abs(float(u.mean()) - 0.5) < 4 / math.sqrt(12 * len(u))


def test_dequantize_seeded_dtype_and_top_level_stays_below_one():
    k = torch.full((200_000,), 16.0, dtype=torch.float32)
    y1 = dequantize(k, 17, generator=torch.Generator().manual_seed(3))
    y2 = dequantize(k, 17, generator=torch.Generator().manual_seed(3))
    assert torch.equal(y1, y2) and y1.dtype == torch.float32
    assert (y1 < 1).all() and (y1 >= 16 / 17).all()
    k64 = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    assert dequantize(k64, 2).dtype == torch.float64


def test_dequantize_errors():
    with pytest.raises(ValueError, match=r"k must lie in \{0, \.\.\., 16\} for num_levels=17, got values in \[0, 17\]"):
        dequantize(torch.tensor([0, 17]), 17)
    with pytest.raises(ValueError, match=r"k must hold whole numbers"):
        dequantize(torch.tensor([0.5]), 17)
    with pytest.raises(ValueError, match=r"num_levels must be >= 2, got 1"):
        dequantize(torch.tensor([0]), 1)
    with pytest.raises(TypeError, match=r"k must hold integer levels"):
        dequantize(torch.tensor([True]), 2)


def test_to_levels_inverts_the_digits_scaling():
    raw, _ = digits("all", scale="raw")
    assert torch.equal(to_levels(digits("all")[0], num_levels=17), raw.long())
    assert torch.equal(to_levels(digits("all", scale="[0,1]")[0], num_levels=17, data_range=(0, 1)), raw.long())
    # dequantized levels fall in the bins [k/17, (k+1)/17)
    y = dequantize(to_levels(digits("test")[0], num_levels=17), 17)
    assert torch.equal(torch.floor(y * 17), digits("test", scale="raw")[0])


# -------------------------------------------------------------------------------------------- bits per dim
@pytest.mark.parametrize(("levels", "data_range"), [(17, (-1.0, 1.0)), (256, (0.0, 1.0)), (2, (-3.0, 5.0))])
def test_bits_per_dim_of_uniform_density_is_log2_levels(levels, data_range):
    dims = 64
    low, high = data_range
    lp = torch.full((5,), -dims * math.log(high - low), dtype=torch.float64)  # uniform on [low, high]^D
    bpd = bits_per_dim(lp, dims, num_levels=levels, data_range=data_range)
    assert bpd.shape == (5,) and bpd.dtype == torch.float64
    torch.testing.assert_close(bpd, torch.full((5,), math.log2(levels), dtype=torch.float64), rtol=0, atol=1e-12)


def test_bits_per_dim_is_exact_for_a_density_constant_on_the_bins():
    # a discrete P(k) on L levels, spread uniformly over each bin of width (high - low) / L of z:
    # p_z(z) = P(k) L / (high - low), so the bound is tight: bpd = -log2 P(k) (D = 1)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    low, high = -1.0, 1.0
    k = torch.arange(4)
    z = low + (high - low) * dequantize(k, 4, generator=torch.Generator().manual_seed(0)).double()
    bin_of_z = torch.floor((z - low) / (high - low) * 4).long()
    log_pz = torch.log(probs[bin_of_z] * 4 / (high - low))
    bpd = bits_per_dim(log_pz, 1, num_levels=4, data_range=(low, high))
    torch.testing.assert_close(bpd, -torch.log2(probs), rtol=0, atol=1e-12)


def test_bits_per_dim_errors():
    with pytest.raises(ValueError, match=r"data_range must be finite with high > low"):
        bits_per_dim(torch.zeros(2), 4, num_levels=17, data_range=(1.0, -1.0))
    with pytest.raises(ValueError, match=r"data_range must be a pair"):
        bits_per_dim(torch.zeros(2), 4, num_levels=17, data_range=(1.0,))
    with pytest.raises(ValueError, match=r"num_dims must be >= 1, got 0"):
        bits_per_dim(torch.zeros(2), 0, num_levels=17)
    with pytest.raises(TypeError, match=r"log_prob_nats must be a torch.Tensor"):
        bits_per_dim(0.0, 4, num_levels=17)


def test_dequantize_scaled_lands_in_each_levels_bin():
    from probgen.data import dequantize_scaled, digits

    x, _ = digits("test", dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    z = dequantize_scaled(x, num_levels=17, generator=g)
    k = torch.round((x + 1) / 2 * 16)  # the levels, from the documented scaling
    lo, hi = -1 + 2 * k / 17, -1 + 2 * (k + 1) / 17
    assert ((z >= lo) & (z < hi)).all()
    # u ~ U[0, 1): the mean offset inside a bin is half its width, within 4 standard errors (sd = w/sqrt(12))
    w = 2 / 17
    offset = (z - lo).mean().item()
    assert abs(offset - w / 2) < 4 * w / (12 * z.numel()) ** 0.5
