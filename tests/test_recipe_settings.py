"""Defaults come from what the data is (its profile), never its name: a user's 2-D file with the points of a
built-in set gets exactly the settings of the built-in set; the table in docs/cli.md is the code's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from probgen import registry
from probgen.data import load_dataset
from probgen.recipes import settings_table


@pytest.fixture(scope="module")
def same_points(tmp_path_factory):
    builtin = load_dataset("8gaussians", n_train=2000, n_test=200)
    path = tmp_path_factory.mktemp("user") / "points.npy"
    np.save(path, np.concatenate([builtin.train.numpy(), builtin.test.numpy()]))
    user = load_dataset(path)
    assert user.kind == "file" and user.name != builtin.name  # nothing in the name or kind is shared
    return builtin, user


@pytest.mark.parametrize("family", ["flow", "score-sde", "cnf", "ddpm", "vae"])
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


def test_docs_show_the_table_of_the_code():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert settings_table() in docs, "regenerate with: python -c 'from probgen.recipes import settings_table; " \
                                     "print(settings_table())'"


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
