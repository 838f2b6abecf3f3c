"""The grayscale and colour rows of the recipes build the image models (ImageFlow, conv VAE, conv GANs,
U-Net DDPM), and ``probgen fit flow|vae`` on a tiny MNIST in the real IDX format runs end to end; an
image-flow checkpoint reads back through ``probgen nll`` and ``probgen sample``. No downloads."""

from __future__ import annotations

import dataclasses
import json
import math
import struct

import pytest
import torch

from probgen import registry
from probgen.cli import main
from probgen.data.dataset import DataSet


def _images(shape, n=40, levels=256, seed=0, data_range=(-1.0, 1.0)) -> DataSet:
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, levels, (n, *shape), generator=g).float()
    low, high = data_range
    x = low + (high - low) * k / (levels - 1)
    return DataSet(name="tiny", train=x[: n // 2], test=x[n // 2:], event_shape=tuple(shape), log_prob=None,
                   entropy=None, num_levels=levels, data_range=data_range, labels_train=None, labels_test=None,
                   kind="image")


@pytest.mark.parametrize("shape, row, scales", [((1, 8, 8), "grayscale", 2), ((1, 28, 28), "grayscale", 2),
                                                ((3, 32, 32), "colour", 2), ((1, 6, 6), "grayscale", 1)])
def test_image_rows_build_a_multiscale_flow_on_the_data_range(shape, row, scales):
    from probgen.flows import Flow, ImageFlow

    data = _images(shape)
    recipe = registry.recipe("flow")
    assert recipe.profile(data).row == row
    flow = recipe.build(data)
    assert isinstance(flow, ImageFlow) and flow.event_shape == shape and flow.num_scales == scales
    assert flow.logit == (-1.0, 1.0)  # dequantized values low + (high - low)(k + u)/L lie in [low, high)
    assert recipe.training_data(data).shape == data.train.shape  # images stay (C, H, W)
    # --kind on images: that vector flow over the flattened pixels
    vec = registry.recipe("flow").build(data, kind="realnvp")
    assert isinstance(vec, Flow) and vec.kind == "realnvp"


def test_image_rows_build_conv_vae_and_conv_gans():
    for shape, channels in (((1, 28, 28), [32, 64]), ((3, 32, 32), [32, 64])):
        data = _images(shape)
        vae = registry.recipe("vae").build(data)
        assert vae.conv_channels is not None and tuple(vae.event_shape) == shape
        for family in ("gan", "wgan-gp"):
            gan = registry.recipe(family).build(data)
            assert list(gan.conv_channels) == channels
            assert gan.sample(2).shape == (2, *shape)
    binary = _images((1, 28, 28), levels=2, data_range=(0.0, 1.0))
    vae = registry.recipe("vae").build(binary)
    assert vae.likelihood == "bernoulli" and vae.conv_channels is not None


def test_ddpm_image_rows_use_the_unet():
    from probgen.nn import UNet

    model = registry.recipe("ddpm").build(_images((1, 28, 28)))
    assert any(isinstance(m, UNet) for m in model.modules())


def test_ddpm_recipe_samples_quantized_data_inside_its_range():
    # an untrained ε-network: without clamping x̂_0 to data_range, ancestral/DDIM samples leave [-1, 1]
    recipe, data = registry.recipe("ddpm"), _images((1, 8, 8), data_range=(-1.0, 1.0))
    torch.manual_seed(0)
    model = recipe.build(data)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    for opts in ({"method": "ddim", "steps": 5}, {"method": "ddim", "steps": 3, "eta": 1.0}):
        x = recipe.sample(model, 4, **opts)
        assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    unclipped = model.sample(4, method="ddim", steps=5)
    assert float(unclipped.abs().max()) > 1.0  # the check above could fail


def test_image_flow_rows_report_bits_per_dim_by_the_one_convention():
    """The image flow's bits/dim is probgen.data.bits_per_dim of its log-density at the dequantized points."""
    from probgen.data import bits_per_dim, dequantize_scaled

    torch.manual_seed(0)
    data = _images((1, 8, 8))
    recipe = registry.recipe("flow")
    flow = recipe.build(data)
    report = recipe.evaluate(flow, data)
    g = torch.Generator().manual_seed(0)
    z = dequantize_scaled(data.test, num_levels=256, data_range=(-1, 1), generator=g)
    with torch.no_grad():
        want = bits_per_dim(flow.log_prob(z).double(), 64, num_levels=256, data_range=(-1, 1)).mean()
    assert report["test NLL bits/dim"]["value"] == pytest.approx(float(want), rel=1e-6)


def test_image_flow_family_is_read_back_but_not_fitted_by_name():
    from probgen.flows import ImageFlow
    from probgen.flows.recipe import ImageFlowRecipe

    assert "image-flow" not in registry.names()
    recipe = registry.recipe_for(ImageFlow((1, 4, 4), num_scales=1, num_couplings=1, hidden=4, num_blocks=0))
    assert isinstance(recipe, ImageFlowRecipe) and not recipe.flatten


def _write_idx(path, array: torch.Tensor) -> None:
    dims = list(array.shape)
    magic = (0x08 << 8) | len(dims)
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        f.write(struct.pack(f">{len(dims)}I", *dims))
        f.write(array.to(torch.uint8).numpy().tobytes())


@pytest.fixture()
def tiny_mnist(tmp_path):
    g = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 48), ("t10k", 16)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), generator=g))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", torch.randint(0, 10, (n,), generator=g))
    return tmp_path


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("family, data, model_name, expect",
                         [("flow", "mnist", "multi-scale image flow", "test NLL bits/dim"),
                          ("vae", "mnist-binary", "conv", "NLL (IWAE, K=100) bits/dim")])
def test_fit_images_end_to_end_and_read_back(tmp_path, capsys, tiny_mnist, family, data, model_name, expect):
    out = tmp_path / family
    code, text, err = _run(capsys, "fit", family, "--data", data, "--data-dir", str(tiny_mnist), "--steps", "2",
                           "--batch-size", "8", "--out", str(out), "--no-progress", "--num-samples", "4")
    assert code == 0, err
    assert model_name in text and expect in text
    summary = json.loads((out / "summary.json").read_text())
    assert all(math.isfinite(v["value"]) for v in summary["metrics"].values())
    assert (out / "checkpoint.pt").exists() and (out / "samples.png").exists()
    code, text, err = _run(capsys, "nll", str(out), "--data", data, "--data-dir", str(tiny_mnist))
    assert code == 0 and expect in text, err
    code, _, err = _run(capsys, "sample", str(out), "-n", "4")
    assert code == 0, err


def test_fit_rbm_on_grey_mnist_binarizes_it_dynamically(tmp_path, capsys, tiny_mnist):
    out = tmp_path / "rbm"
    code, text, err = _run(capsys, "fit", "rbm", "--data", "mnist", "--data-dir", str(tiny_mnist), "--steps", "2",
                           "--batch-size", "8", "--out", str(out), "--no-progress", "--eval", "none")
    assert code == 0, err
    assert "rbm models binary data: 'mnist' (256 levels) is dynamically binarized" in text
    assert (out / "checkpoint.pt").exists()
    # still refused: real-valued data have no levels to read as probabilities
    code, _, err = _run(capsys, "fit", "made", "--data", "8gaussians", "--out", str(tmp_path / "x"))
    assert code == 2 and "binary" in err


def test_binarized_reads_levels_as_probabilities():
    from probgen.data import binarized

    data = _images((1, 8, 8), n=400, levels=5, data_range=(-1.0, 1.0))
    b = binarized(data)
    assert b.num_levels == 2 and b.data_range == (0.0, 1.0) and b.batch_transform is not None
    assert torch.allclose(b.train, (data.train + 1) / 2)  # grey level -> P(1)
    assert set(b.test.unique().tolist()) <= {0.0, 1.0}
    # the test split is one Bernoulli draw of those probabilities: its mean within 4 standard errors
    p = (data.test + 1) / 2
    se = float((p * (1 - p)).sum().sqrt() / p.numel())
    assert abs(float(b.test.mean() - p.mean())) < 4 * se
    assert binarized(b) is b


def test_score_sde_recipe_samples_quantized_data_inside_its_range():
    # the score SDE carries data_range for quantized data and its recipe clamps x̂_0 there with every method;
    # an untrained (perturbed) network without the clamp throws samples far outside [-1, 1]
    from probgen.diffusion import ScoreSDE

    recipe, data = registry.recipe("score-sde"), _images((1, 8, 8), data_range=(-1.0, 1.0))
    torch.manual_seed(0)
    model = recipe.build(data)
    assert model.data_range == (-1.0, 1.0)
    assert ScoreSDE(**model.config()).data_range == (-1.0, 1.0)  # saved with the model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    for opts in ({"method": "dpm++2m", "steps": 5}, {"method": "heun", "steps": 4}, {"method": "sde", "steps": 5},
                 {"method": "ode", "solver": "euler", "steps": 5, "denoise": True}, {"method": "pc", "steps": 3}):
        x = recipe.sample(model, 4, **opts)
        assert float(x.abs().max()) <= 1.0 + 1e-5, opts  # float32 rounding of the last step x + (0 - σ)(x - D)/σ
    unclipped = model.sample(4, method="dpm++2m", steps=5)
    assert float(unclipped.abs().max()) > 1.0  # the check above could fail
    # continuous data: no range, no clamp
    continuous = dataclasses.replace(_images((1, 8, 8)), num_levels=None)
    assert registry.recipe("score-sde").build(continuous).data_range is None


def test_score_sde_recipe_samples_large_images_with_its_metric_sampler():
    # 28x28: the default draw is DPM-Solver++(2M) at 30 network passes, not the 1000-step reverse SDE
    recipe = registry.recipe("score-sde")
    model = recipe.build(_images((1, 28, 28), n=4))
    x, nfe = recipe.sample(model, 1, return_nfe=True)
    assert x.shape == (1, 1, 28, 28) and nfe == recipe.metric_sampler["steps"] == 30
    assert float(x.abs().max()) <= 1.0 + 1e-5
    # what `probgen sample` prints: the options the recipe passes (the user's own win)
    assert recipe.sampler_options(model, {}) == {"method": "dpm++2m", "steps": 30, "clip_x0": (-1.0, 1.0)}
    assert recipe.sampler_options(model, {"method": "sde", "clip_x0": (0, 1)}) == {"method": "sde", "clip_x0": (0, 1)}
    ddpm = registry.recipe("ddpm")
    assert ddpm.sampler_options(ddpm.build(_images((1, 28, 28), n=4)), {}) == {
        "method": "ddim", "steps": 50, "clip_x0": (-1.0, 1.0)}
