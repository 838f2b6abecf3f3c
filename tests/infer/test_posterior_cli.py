"""`probgen condition` and `probgen impute` on a small saved DDPM (exact mixture network not needed: an
untrained built-in net is enough to check files, shapes and errors)."""

from __future__ import annotations

import numpy as np
import pytest

from probgen.checkpoint import save
from probgen.cli import main
from probgen.diffusion import DDPM


@pytest.fixture()
def run_dir(tmp_path):
    model = DDPM((2,), num_steps=100, net_options={"hidden": [16]})
    save(tmp_path / "checkpoint.pt", model)
    return tmp_path


def test_condition_writes_draws_mean_std_and_figure(run_dir, tmp_path):
    np.save(tmp_path / "y.npy", np.array([0.5, np.nan]))
    out = tmp_path / "cond"
    assert main(["condition", str(run_dir), "--observe", str(tmp_path / "y.npy"), "--operator", "inpaint",
                 "--noise-std", "0.1", "--method", "dps", "-n", "8", "--steps", "5", "--out", str(out)]) == 0
    draws = np.load(out / "draws.npy")
    assert draws.shape == (8, 2) and np.load(out / "std.npy").shape == (2,)
    assert (out / "figure.png").exists()


def test_impute_fills_the_nans(run_dir, tmp_path):
    data = np.array([[0.1, np.nan], [np.nan, -0.2], [0.3, 0.4]])
    np.save(tmp_path / "d.npy", data)
    out = tmp_path / "imp"
    assert main(["impute", str(run_dir), "--data", str(tmp_path / "d.npy"), "--method", "smc", "-n", "4",
                 "--steps", "5", "--out", str(out)]) == 0
    imps = np.load(out / "imputations.npy")
    assert imps.shape == (3, 4, 2) and np.isfinite(imps).all()
    np.testing.assert_allclose(imps[2], np.broadcast_to(data[2], (4, 2)), rtol=1e-6)


def test_condition_bad_input_exits_2(run_dir, tmp_path, capsys):
    np.save(tmp_path / "y.npy", np.array([0.5, 0.1, 0.2]))
    code = main(["condition", str(run_dir), "--observe", str(tmp_path / "y.npy"), "--operator", "noise"])
    assert code == 2
    assert "--observe for noise must hold 2 finite values" in capsys.readouterr().err
    assert main(["condition", str(run_dir), "--observe", "missing.npy", "--operator", "noise"]) == 2
