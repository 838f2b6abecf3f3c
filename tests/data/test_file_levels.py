"""User files of integer values are quantized data: 8-bit image stacks become images in [-1, 1] with 256 levels
(dequantized by continuous models, scored in bits/dim), 0/1 files are binary, small integers are L levels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probgen import registry
from probgen.data import load_dataset
from probgen.data.files import file_levels
from probgen.data.profile import data_profile


def _pixels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape).astype(np.uint8)


def _all_rows(ds):
    return torch.cat([ds.train, ds.test])


def test_grayscale_stack_gets_a_channel_axis_and_256_levels(tmp_path):
    pixels = _pixels((30, 6, 6))
    pixels[0, 0, 0], pixels[0, 0, 1] = 0, 255
    np.save(tmp_path / "gray.npy", pixels)
    ds = load_dataset(tmp_path / "gray.npy", n_test=10)
    assert ds.event_shape == (1, 6, 6) and ds.num_levels == 256 and ds.data_range == (-1.0, 1.0)
    rows = _all_rows(ds)
    assert float(rows.min()) == -1.0 and float(rows.max()) == 1.0
    k = (rows + 1) * 255 / 2  # the levels come back exactly
    assert torch.equal(k.round(), k.round().clamp(0, 255)) and float((k - k.round()).abs().max()) < 1e-4
    assert sorted(k.round().reshape(-1).tolist()) == sorted(pixels.reshape(-1).astype(float).tolist())
    prof = data_profile(ds)
    assert (prof.row, prof.value_type, prof.event_shape) == ("grayscale", "quantized", (1, 6, 6))


@pytest.mark.parametrize("layout", ["last", "first"])
def test_colour_channels_last_or_first(tmp_path, layout):
    pixels = _pixels((20, 3, 4, 5), seed=1)  # (N, C, H, W)
    stored = pixels.transpose(0, 2, 3, 1) if layout == "last" else pixels
    np.save(tmp_path / "rgb.npy", stored)
    x, levels, data_range = file_levels(torch.from_numpy(stored.astype(np.float32)))
    assert tuple(x.shape) == (20, 3, 4, 5) and levels == 256 and data_range == (-1.0, 1.0)
    torch.testing.assert_close(x, torch.from_numpy(pixels).float() * 2 / 255 - 1)  # each pixel in its channel
    ds = load_dataset(tmp_path / "rgb.npy")
    assert ds.event_shape == (3, 4, 5) and data_profile(ds).row == "colour"


def test_binary_and_small_integer_vectors_and_floats():
    binary = torch.randint(0, 2, (40, 7)).float()
    binary[0, 0], binary[0, 1] = 0.0, 1.0
    assert file_levels(binary)[1:] == (2, (0.0, 1.0))
    counts = torch.randint(0, 5, (40, 3)).float()
    counts[0, 0] = 4.0
    x, levels, data_range = file_levels(counts)
    assert x is counts and (levels, data_range) == (5, (0.0, 4.0))
    for continuous in (torch.randn(40, 3), counts + 0.5, counts - 1.0, counts * 100):  # not integers in 0..255
        assert file_levels(continuous)[1] is None
    assert file_levels(torch.zeros(5, 2))[1] is None  # no level structure to speak of (check_fit_data refuses it)
    binary_images, levels, _ = file_levels(torch.randint(0, 2, (10, 4, 4)).float())
    assert binary_images.shape == (10, 1, 4, 4) and levels == 2


def test_image_file_is_dequantized_and_scored_in_bits_per_dim(tmp_path):
    np.save(tmp_path / "img.npy", _pixels((24, 4, 4), seed=2))
    ds = load_dataset(tmp_path / "img.npy", n_test=4)
    recipe = registry.recipe("flow")
    transform = recipe.fit_options(ds)["batch_transform"]  # uniform dequantization of the 256 levels
    noisy = transform(ds.train)
    step = 2 / 256  # each level's bin: low + (high - low)(k + u)/L, u in [0, 1)
    k = ((ds.train + 1) * 255 / 2).round()
    assert bool(((noisy - (-1 + k * step)) >= -1e-6).all() and ((noisy - (-1 + k * step)) < step + 1e-6).all())
    torch.manual_seed(0)
    model = recipe.build(ds)
    report = recipe.evaluate(model.eval(), ds)
    bpd, nll = report["test NLL bits/dim"], report["test NLL"]
    # bits/dim of a density over dequantized values: (NLL - D log Δ) / (D ln 2), Δ = 2/256 the bin width
    d = 16
    assert bpd["value"] == pytest.approx((nll["value"] - d * np.log(step)) / (d * np.log(2)), rel=1e-6)


def test_channels_last_uint8_32x32x3_file_is_the_colour_row(tmp_path):
    """A user's (N, 32, 32, 3) uint8 file (CIFAR-style patches, channels-last) goes through the user-file path
    as benchmarks/bench_colour.py uses it: (N, 3, 32, 32), every RGB triple kept in its pixel, 256 levels in
    [-1, 1], the ``colour`` row of every image family, the image flow on dequantized pixels."""
    pixels = _pixels((24, 32, 32, 3), seed=3)
    pixels[0, 0, 0] = (0, 128, 255)
    np.save(tmp_path / "patches.npy", pixels)
    ds = load_dataset(tmp_path / "patches.npy", n_test=4)
    assert ds.event_shape == (3, 32, 32) and ds.num_levels == 256 and ds.data_range == (-1.0, 1.0)
    k = ((_all_rows(ds) + 1) * 255 / 2).round().to(torch.uint8).permute(0, 2, 3, 1)  # back to channels-last
    rows = {bytes(r) for r in k.numpy().reshape(len(k), -1)}
    assert rows == {bytes(r) for r in pixels.reshape(len(pixels), -1)}  # the same patches, shuffled into splits
    assert (0, 128, 255) in {tuple(p) for p in k.numpy().reshape(-1, 3)[::1024]}  # a triple stays one pixel
    prof = data_profile(ds)
    assert (prof.row, prof.value_type, prof.event_shape, prof.size) == ("colour", "quantized", (3, 32, 32), 20)
    for family in ("flow", "vae", "ddpm", "score-sde", "gan"):
        recipe = registry.recipe(family)
        assert recipe.profile(ds).row == "colour" and "colour" in recipe.settings, family
    flow = registry.recipe("flow")
    torch.manual_seed(0)
    model = flow.build(ds).eval()
    assert type(model).__name__ == "ImageFlow" and model.num_scales == 2 and tuple(model.event_shape) == (3, 32, 32)
    with torch.no_grad():
        lp = model.log_prob(flow.fit_options(ds)["batch_transform"](ds.test[:2]))
    assert lp.shape == (2,) and bool(torch.isfinite(lp).all())
