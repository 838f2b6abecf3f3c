"""Defaults come from what the data is (its profile), never its name: a user's 2-D file with the points of a
built-in set gets exactly the settings of the built-in set; the table in docs/cli.md is the code's."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from probgen import registry
from probgen.data import load_dataset
from probgen.recipes import settings_table, steps_for_epochs


@pytest.fixture(scope="module")
def same_points(tmp_path_factory):
    builtin = load_dataset("8gaussians", n_train=2000, n_test=200)
    path = tmp_path_factory.mktemp("user") / "points.npy"
    np.save(path, np.concatenate([builtin.train.numpy(), builtin.test.numpy()]))
    user = load_dataset(path)
    assert user.kind == "file" and user.name != builtin.name  # nothing in the name or kind is shared
    return builtin, user


@pytest.mark.parametrize("family", ["flow", "score-sde", "cnf", "ddpm", "vae", "fm"])
def test_a_user_2d_file_gets_the_settings_of_the_built_in_set(family, same_points):
    builtin, user = same_points
    recipe = registry.recipe(family)
    assert recipe.profile(user).row == recipe.profile(builtin).row == "2d"
    assert recipe.settings_for(user) == recipe.settings_for(builtin) == {
        part: {**recipe.settings["default"].get(part, {}), **recipe.settings["2d"].get(part, {})}
        for part in ("model", "fit")}
    assert recipe.fit_options(user) == recipe.fit_options(builtin)
    a, b = recipe.build(builtin), recipe.build(user)
    assert type(a) is type(b) and a.config() == b.config()


def test_the_flow_and_score_sde_2d_rows_are_the_tuned_ones(same_points):
    _, user = same_points
    flow = registry.recipe("flow").build(user)
    assert (flow.kind, flow.num_layers) == ("spline-ar", 3)  # Flow(2, "spline-ar", **TOY2D_FLOW)
    assert registry.recipe("flow").fit_options(user)["lr"] == 3e-3
    assert registry.recipe("score-sde").fit_options(user)["steps"] == 8000


def _tabular(n, dim=10):
    from probgen.data import DataSet

    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(0)) * 40 + 3
    return DataSet("tab.npy", x, x[:20], (dim,), None, None, None, (float(x.min()), float(x.max())), None, None,
                   "file")


@pytest.mark.parametrize("family", ["flow", "score-sde", "fm", "cnf", "vae", "ddpm"])
def test_the_tabular_row_is_tuned_and_sized_by_the_number_of_points(family):
    recipe = registry.recipe(family)
    small, large = _tabular(512), _tabular(200_000)
    assert recipe.profile(small).row == "tabular" and "tabular" in recipe.settings
    # `fit cnf` trains by flow matching by default (CNF_DEFAULT_OBJECTIVE), with the fm recipe's rows
    fit = (registry.recipe("fm") if family == "cnf" else recipe).settings["tabular"]["fit"]
    epochs, batch = fit["epochs"], fit["batch_size"]
    assert recipe.fit_options(small)["steps"] == steps_for_epochs(epochs, 512, batch) == math.ceil(epochs * 512 / batch)
    assert recipe.fit_options(large)["steps"] == fit["max_steps"]  # capped for large N
    assert recipe.fit_options(small, steps=7)["steps"] == 7  # --steps wins
    model = recipe.build(small)
    # continuous vectors are standardized inside (the flow whitens them: full covariance)
    assert model.family == {"flow": "whitened"}.get(family, "standardized")


def test_the_tabular_flow_is_maf_with_small_conditioners():
    flow = registry.recipe("flow").build(_tabular(512, dim=30))
    assert (flow.kind, flow.config()["model"]["config"]["hidden_dims"]) == ("maf", [64, 64])
    # the tail guard: the whitened MAF mixed with the fitted full-covariance Gaussian
    assert flow.family == "whitened" and flow.gaussian_weight == 0.05
    assert registry.recipe("flow").describe(flow) == "flow (maf, 4 layers; mixed with the fitted Gaussian, weight 0.05)"


def test_steps_for_epochs():
    assert steps_for_epochs(75, 512, 256) == 150
    assert steps_for_epochs(75, 100, 256) == 75  # the whole data in one batch: one step per pass
    assert steps_for_epochs(0.001, 10, 256) == 1
    assert steps_for_epochs(750, 10**6, 256, max_steps=4000) == 4000


def test_docs_show_the_table_of_the_code():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert settings_table() in docs, "regenerate with: python -c 'from probgen.recipes import settings_table; " \
                                     "print(settings_table())'"


def test_fit_help_shows_the_short_table(capsys):
    from probgen.cli import main

    try:
        code = main(["fit", "--help"])
    except SystemExit as exc:  # argparse's exit, or the CLI's own return code
        code = exc.code
    assert code in (0, None)
    out = capsys.readouterr().out
    assert settings_table(markdown=False) in out
    assert "tabular    continuous or quantized vectors of 3 <= D <= 64    tuned: cnf, ddpm, flow, fm, score-sde, vae" in out
    assert "binary     vectors with values in {0, 1}                      tuned: made, rbm, vae" in out


def test_fit_prints_the_profile_it_chose(tmp_path, capsys):
    from probgen.cli import main

    rng = np.random.default_rng(0)
    np.save(tmp_path / "tab.npy", rng.normal(size=(60, 4)) * 30 + 7)
    code = main(["fit", "flow", "--data", str(tmp_path / "tab.npy"), "--steps", "1", "--out", str(tmp_path / "run"),
                 "--no-progress", "--num-samples", "10"])
    out = capsys.readouterr().out
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("data profile"))
    assert "tabular: continuous, vector D = 4, N = 54" in line and "row 'tabular'" in line
    assert "its tuned settings; whitened (full covariance) inside the model" in line


def test_fit_val_fraction_and_patience_hold_out_rows_and_report_the_best_step(tmp_path, capsys):
    import json

    from probgen.cli import main

    rng = np.random.default_rng(0)
    np.save(tmp_path / "tab.npy", rng.normal(size=(120, 4)) * 30 + 7)
    out_dir = tmp_path / "run"
    code = main(["fit", "flow", "--data", str(tmp_path / "tab.npy"), "--steps", "60", "--val-fraction", "0.25",
                 "--patience", "3", "--out", str(out_dir), "--no-progress", "--num-samples", "10", "--eval", "none"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads((out_dir / "summary.json").read_text())
    val = summary["validation"]
    assert summary["fit"]["validation"] == 0.25 and summary["fit"]["patience"] == 3
    assert 1 <= val["best_step"] <= val["steps_done"] <= 60
    assert f"validation: best mean loss {val['best_loss']:.4g} at step {val['best_step']} of {val['steps_done']}" in out


@pytest.mark.parametrize("argv, message", [
    (["--val-fraction", "1.5"], "--val-fraction: expected a fraction in [0, 1), got '1.5'"),
    (["--patience", "0"], "--patience"),
    (["--val-fraction", "0", "--patience", "3"], "--patience needs a validation split: pass --val-fraction F"),
])
def test_fit_validation_flags_are_checked(tmp_path, capsys, argv, message):
    from probgen.cli import main

    np.save(tmp_path / "tab.npy", np.random.default_rng(0).normal(size=(60, 4)))
    try:
        code = main(["fit", "flow", "--data", str(tmp_path / "tab.npy"), "--steps", "1", "--out",
                     str(tmp_path / "run"), "--no-progress", *argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("family", ["flow", "vae"])
def test_the_tabular_rows_validation_is_dropped_when_it_would_hold_too_few_rows(family):
    from probgen.recipes import MIN_VALIDATION_ROWS

    recipe = registry.recipe(family)
    fraction = recipe.settings["tabular"]["fit"]["validation"]
    enough, few = _tabular(512), _tabular(int(MIN_VALIDATION_ROWS / fraction) - 10)
    assert recipe.fit_options(enough)["validation"] == fraction and "patience" in recipe.fit_options(enough)
    assert not {"validation", "patience", "eval_every"} & set(recipe.fit_options(few))
