"""FID/KID after `probgen fit` on images (bounded by --eval) and the bounded sampling of `probgen evaluate`."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from probgen.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_on_digits_prints_fid_and_kid_with_quick_eval_and_none_without(tmp_path, capsys):
    out = tmp_path / "flow"
    code, text, err = _run(capsys, "fit", "flow", "--data", "digits", "--steps", "5", "--out", str(out),
                           "--no-progress")
    assert code == 0, err
    line = next(ln for ln in text.splitlines() if ln.startswith("sample metrics (quick)"))
    n = int(re.search(r": (\d+) samples by ", line).group(1))
    assert 100 <= n <= 364 and f"against the first {n} test images" in line and "biased upward" in line
    assert re.search(r"FID \(digits features\)\s+\d", text)
    kid = re.search(r"KID \(digits features\)\s+(-?[\d.]+) ± ([\d.]+)", text)
    assert kid and float(kid.group(2)) > 0  # KID is printed with its standard error
    summary = json.loads((out / "summary.json").read_text())
    sm = summary["sample_metrics"]
    assert sm["num_samples"] == n and sm["nfe"] is None and sm["seconds"] >= 0
    assert set(sm["metrics"]) == {"FID (digits features)", "KID (digits features)"}
    assert all(math.isfinite(v["value"]) for v in sm["metrics"].values())
    assert sm["metrics"]["KID (digits features)"]["value"] == pytest.approx(float(kid.group(1)), abs=1e-3)

    none = tmp_path / "none"
    code, text, err = _run(capsys, "fit", "flow", "--data", "digits", "--steps", "5", "--out", str(none),
                           "--no-progress", "--eval", "none")
    assert code == 0, err
    assert "FID" not in text and "KID" not in text and "sample metrics" not in text
    assert "sample_metrics" not in json.loads((none / "summary.json").read_text())
    assert (none / "samples.png").stat().st_size > 0


def test_fit_on_vectors_draws_no_feature_metrics(tmp_path, capsys):
    code, text, err = _run(capsys, "fit", "flow", "--data", "8gaussians", "--steps", "5", "--out",
                           str(tmp_path / "f"), "--no-progress", "--num-samples", "16")
    assert code == 0, err
    assert "sample metrics" not in text
    assert "sample_metrics" not in json.loads((tmp_path / "f" / "summary.json").read_text())


def test_evaluate_samples_a_ddpm_with_the_fast_sampler_and_names_it(tmp_path, capsys):
    out = tmp_path / "ddpm"
    code, _, err = _run(capsys, "fit", "ddpm", "--data", "8gaussians", "--steps", "3", "--out", str(out),
                        "--no-progress", "--num-samples", "16", "--eval", "none")
    assert code == 0, err
    code, text, err = _run(capsys, "evaluate", str(out), "--data", "8gaussians", "-n", "50", "--no-likelihood",
                           "--no-progress")
    assert code == 0, err
    assert "50 samples by sampler dpm-solver, 20 steps, NFE 20" in text.splitlines()[0]
    payload = json.loads((out / "evaluation.json").read_text())
    assert payload["num_samples"] == 50 and payload["sampling"]["nfe"] == 20
    assert payload["sampling"]["sample_opts"] == {"method": "dpm-solver", "steps": 20}
    code, text, err = _run(capsys, "evaluate", str(out), "--data", "8gaussians", "-n", "50", "--no-likelihood",
                           "--no-progress", "--method", "ddim", "--steps", "5", "--force")
    assert code == 0 and "sampler ddim, 5 steps, NFE 5" in text, err
    code, _, err = _run(capsys, "evaluate", str(out), "--data", "8gaussians", "--method", "sde", "--force")
    assert code == 2 and "unknown --method 'sde'; valid choices: 'ancestral', 'ddim', 'dpm-solver'" in err
    # without -n the draw is sized from the measured cost of a probe, within 200..2000 and the test split
    code, text, err = _run(capsys, "evaluate", str(out), "--data", "8gaussians", "--no-likelihood",
                           "--no-progress", "--force")
    assert code == 0 and "sized to about 120 s of sampling (-n to choose)" in text, err
    n = json.loads((out / "evaluation.json").read_text())["num_samples"]
    assert 200 <= n <= 2000 and n % 50 == 0 or n == 2000


def test_metric_sampler_options_and_draw_samples_count_network_passes():
    import probgen as pg
    from probgen.evaluation import describe_sampler, draw_samples, metric_sampler_options

    torch.manual_seed(0)
    ddpm = pg.diffusion.DDPM((2,), num_steps=50)
    opts = metric_sampler_options(ddpm)
    assert opts == {"method": "dpm-solver", "steps": 20}
    assert metric_sampler_options(ddpm, method="ddim", steps=7) == {"method": "ddim", "steps": 7}
    samples, nfe = draw_samples(ddpm, 30, sample_opts=opts, batch_size=8)
    assert samples.shape == (30, 2) and nfe == 20 and samples.device.type == "cpu"
    assert describe_sampler(opts, nfe) == "sampler dpm-solver, 20 steps, NFE 20"
    sde = pg.diffusion.ScoreSDE((2,))
    assert metric_sampler_options(sde) == {"method": "dpm++2m", "steps": 30}
    _, nfe = draw_samples(sde, 4, sample_opts=metric_sampler_options(sde))
    assert nfe == 30
    vae = pg.vae.VAE(latent_dim=2, event_shape=(3,), hidden=(8,))
    assert metric_sampler_options(vae) == {}
    samples, nfe = draw_samples(vae, 5)
    assert samples.shape == (5, 3) and nfe is None
    with pytest.raises(ValueError, match="--method is not used by family 'vae'"):
        metric_sampler_options(vae, method="ddim")
