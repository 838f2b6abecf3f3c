"""The `probgen` command: bad arguments exit 2 with one line; fit/sample/nll work end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from probgen.cli import main


@pytest.fixture(autouse=True)
def _in_a_fresh_folder(tmp_path, monkeypatch):
    """Default outputs (runs/...) go to a scratch folder, never into the checkout a user ran the main job in."""
    monkeypatch.chdir(tmp_path)


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, pattern",
    [
        ([], r"required|COMMAND"),
        (["fit", "nosuchfamily", "--data", "8gaussians"], r"unknown family 'nosuchfamily'; valid choices: .*'flow'"),
        (["fit", "flow", "--data", "nosuchset"], r"nosuchset"),
        (["fit", "flow", "--data", "8gaussians", "--steps", "0"], r"--steps.*positive integer"),
        (["fit", "flow", "--data", "8gaussians", "--steps", "ten"], r"--steps.*positive integer"),
        (["fit", "flow", "--data", "8gaussians", "--lr", "-1"], r"--lr.*positive number"),
        (["fit", "flow", "--data", "8gaussians", "--lr", "nan"], r"--lr.*positive number"),
        (["fit", "flow", "--data", "8gaussians", "--kind", "bogus"], r"unknown --kind 'bogus'; valid choices: .*'spline'"),
        (["fit", "flow", "--data", "8gaussians", "--objective", "cd"], r"--objective is not used by family 'flow'"),
        (["fit", "flow", "--data", "8gaussians", "--device", "tpu"], r"--device 'tpu' is not valid"),
        (["fit", "flow"], r"--data"),
        (["sample", "/nonexistent/run"], r"does not exist"),
        (["nll", "/nonexistent/run", "--data", "8gaussians"], r"does not exist"),
        (["data", "frobnicate"], r"invalid choice"),
        (["fit", "flow", "--data", "8gaussians", "--bogus-flag"], r"unrecognized arguments"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, pattern):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("probgen: error: ")
    assert pytest.importorskip("re").search(pattern, lines[0]), lines[0]


def test_cuda_refused_when_unavailable(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = _run(capsys, "fit", "flow", "--data", "8gaussians", "--device", "cuda")
    assert code == 2 and "CUDA is not available" in err


def test_data_list(capsys):
    code, out, _ = _run(capsys, "data", "list")
    assert code == 0
    for name in ("8gaussians", "checkerboard", "rings", "digits"):
        assert name in out


def test_console_script_exit_status_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "probgen.cli", "fit", "flow", "--data", "8gaussians", "--steps", "-3"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_fit_sample_nll_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    code, text, err = _run(capsys, "fit", "flow", "--data", "8gaussians", "--steps", "30", "--out", str(out),
                           "--no-progress", "--num-samples", "200")
    assert code == 0, err
    assert "test NLL" in text and "true entropy" in text and "KL gap" in text
    for name in ("checkpoint.pt", "samples.png", "summary.json"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["family"] == "flow" and summary["data"] == "8gaussians"
    nll = summary["metrics"]["test NLL"]["value"]
    assert nll > summary["metrics"]["true entropy"]["value"] - 0.05  # a model cannot beat the entropy by much

    # a second fit into the same folder is refused and leaves the checkpoint untouched
    before = (out / "checkpoint.pt").read_bytes()
    code, _, err = _run(capsys, "fit", "flow", "--data", "8gaussians", "--steps", "30", "--out", str(out))
    assert code == 2 and "--resume" in err
    assert (out / "checkpoint.pt").read_bytes() == before

    code, text, err = _run(capsys, "sample", str(out), "-n", "50")
    assert code == 0, err
    samples = torch.load(out / "samples.pt", weights_only=True)
    assert samples.shape == (50, 2) and torch.isfinite(samples).all()

    code, text, err = _run(capsys, "nll", str(out), "--data", "8gaussians", "-n", "500")
    assert code == 0, err
    reported = float(text.split("test NLL")[1].split()[0])
    assert abs(reported - nll) < 0.5  # 500 points vs the full test split: same model, same data

    code, _, err = _run(capsys, "nll", str(out), "--data", "digits")
    assert code == 2 and "shape" in err


def test_mcmc_builtin_potential_prints_summary_and_writes_files(tmp_path, capsys):
    out = tmp_path / "mc"
    code, text, err = _run(capsys, "mcmc", "--potential", "gaussian", "--dim", "3", "--kernel", "mala",
                           "--chains", "64", "--samples", "100", "--warmup", "100", "--out", str(out))
    assert code == 0, err
    assert "r_hat" in text and "ess_bulk" in text and "true_mean" in text and "divergences" in text
    for name in ("summary.csv", "trace.png", "samples.pt"):
        assert (out / name).stat().st_size > 0
    samples = torch.load(out / "samples.pt", weights_only=True)
    assert samples.shape == (64, 100, 3)
    # 6400 draws of a unit-variance target with ESS in the thousands: the mean is within 0.2 of 0
    assert samples.mean((0, 1)).abs().max() < 0.2


def test_mcmc_user_potential_from_a_file(tmp_path, capsys):
    src = tmp_path / "mypot.py"
    src.write_text("def U(x):\n    return 0.5 * ((x - 3.0) ** 2).sum(-1)\n")
    code, text, err = _run(capsys, "mcmc", "--potential", f"{src}:U", "--dim", "2", "--kernel", "hmc",
                           "--chains", "32", "--samples", "100", "--warmup", "100", "--out", str(tmp_path / "o"))
    assert code == 0, err
    samples = torch.load(tmp_path / "o" / "samples.pt", weights_only=True)
    assert (samples.mean((0, 1)) - 3.0).abs().max() < 0.25


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["mcmc", "--potential", "nope"], r"unknown --potential 'nope'; valid choices: 'gaussian'"),
        (["mcmc", "--potential", "gaussian", "--kernel", "gibbs"], r"unknown --kernel 'gibbs'; valid choices: 'mala', 'ula', 'hmc', 'nuts'"),
        (["mcmc", "--potential", "gaussian", "--kernel", "ula"], r"--kernel ula needs --step-size"),
        (["mcmc", "--potential", "gaussian", "--kernel", "nuts", "--chains", "1000"], r"at most 64"),
        (["mcmc", "--potential", "no_such_module_xyz:U"], r"cannot import 'no_such_module_xyz'"),
        (["mcmc", "--potential", "math:nothing_here"], r"has no callable 'nothing_here'"),
        (["mcmc", "--potential", "gaussian", "--step-size", "0"], r"--step-size.*positive number"),
    ],
)
def test_mcmc_bad_arguments(capsys, argv, pattern):
    import re

    code, _, err = _run(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(pattern, err), err


@pytest.mark.parametrize(
    "family, data, expect",
    [
        ("vae", "digits", ["test -ELBO", "NLL (IWAE, K=1000) bits/dim"]),
        ("rbm", "digits-binary", ["NLL (AIS log Z)", "bits/dim"]),
        ("made", "digits-binary", ["test NLL", "bits/dim"]),
        ("ebm", "8gaussians", ["NLL (AIS log Z)", "KL gap"]),
        ("score-sde", "8gaussians", ["test NLL", "KL gap"]),
        ("ddpm", "8gaussians", ["test -ELBO", "test NLL (ODE", "KL gap"]),
        ("cnf", "8gaussians", ["test NLL", "KL gap"]),
        ("gan", "8gaussians", ["MMD²", "precision", "recall"]),
        ("wgan-gp", "8gaussians", ["MMD²", "sliced Wasserstein"]),
    ],
)
def test_fit_each_family_end_to_end(tmp_path, capsys, family, data, expect):
    out = tmp_path / family
    code, text, err = _run(capsys, "fit", family, "--data", data, "--steps", "3", "--out", str(out),
                           "--no-progress", "--num-samples", "16")
    assert code == 0, err
    for phrase in expect:
        assert phrase in text
    summary = json.loads((out / "summary.json").read_text())
    assert all(math.isfinite(v["value"]) for v in summary["metrics"].values())
    code, _, err = _run(capsys, "sample", str(out), "-n", "8")
    assert code == 0, err


@pytest.mark.parametrize("family", ["rbm", "made"])
def test_binary_families_refuse_real_valued_data(capsys, tmp_path, family):
    code, _, err = _run(capsys, "fit", family, "--data", "8gaussians", "--out", str(tmp_path / "x"))
    assert code == 2 and "binary" in err and "digits-binary" in err
    assert not (tmp_path / "x").exists()


def test_evaluate_and_compare(tmp_path, capsys):
    runs = []
    for family in ("flow", "vae"):
        out = tmp_path / family
        code, _, err = _run(capsys, "fit", family, "--data", "8gaussians", "--steps", "20", "--out", str(out),
                            "--no-progress", "--num-samples", "50")
        assert code == 0, err
        runs.append(str(out))
    code, text, err = _run(capsys, "evaluate", runs[0], "--data", "8gaussians", "-n", "300")
    assert code == 0, err
    table = json.loads((tmp_path / "flow" / "evaluation.json").read_text())["metrics"]
    for name in ("test NLL", "KL gap (NLL - entropy)", "MMD² (unbiased)", "sliced Wasserstein", "precision",
                 "recall", "KDE NLL of test data"):
        assert name in table and math.isfinite(table[name]["value"]), name
    assert 0.0 <= table["precision"]["value"] <= 1.0 and 0.0 <= table["recall"]["value"] <= 1.0

    fig = tmp_path / "cmp.png"
    code, text, err = _run(capsys, "compare", *runs, "--data", "8gaussians", "-n", "300", "--out", str(fig),
                           "--no-likelihood")
    assert code == 0, err
    header = text.splitlines()[0]
    assert "flow" in header and "vae" in header
    assert fig.stat().st_size > 0

    # a data set of another shape is refused before anything is computed
    code, _, err = _run(capsys, "evaluate", runs[0], "--data", "digits")
    assert code == 2 and "shape" in err
    code, _, err = _run(capsys, "compare", runs[0], "/nonexistent", "--data", "8gaussians")
    assert code == 2 and "does not exist" in err


def test_sampler_and_bound_options_reach_the_family(tmp_path, capsys):
    out = tmp_path / "ddpm"
    code, _, err = _run(capsys, "fit", "ddpm", "--data", "8gaussians", "--steps", "3", "--out", str(out),
                        "--no-progress", "--num-samples", "16")
    assert code == 0, err
    code, text, err = _run(capsys, "sample", str(out), "-n", "8", "--method", "dpm-solver", "--steps", "10")
    assert code == 0 and "method=dpm-solver" in text, err
    code, _, err = _run(capsys, "sample", str(out), "-n", "8", "--method", "sde")
    assert code == 2 and "unknown --method 'sde'; valid choices: 'ancestral', 'ddim', 'dpm-solver'" in err
    code, text, err = _run(capsys, "nll", str(out), "--data", "8gaussians", "--bound", "elbo", "-n", "50")
    assert code == 0 and "-ELBO" in text and "ODE" not in text, err
    code, _, err = _run(capsys, "nll", str(out), "--data", "8gaussians", "--bound", "iwae")
    assert code == 2 and "unknown --bound 'iwae'; valid choices: 'elbo', 'ode'" in err


def test_flow_recipe_picks_autoregressive_splines_on_2d_toy_data():
    from probgen.data import load_dataset
    from probgen.flows.recipe import TOY2D_FLOW, FlowRecipe

    recipe = FlowRecipe()
    flow = recipe.build(load_dataset("8gaussians"))
    assert (flow.kind, flow.num_layers) == ("spline-ar", TOY2D_FLOW["num_layers"])
    assert recipe.build(load_dataset("8gaussians"), kind="spline").kind == "spline"  # an explicit --kind wins
    assert type(recipe.build(load_dataset("digits"))).__name__ == "ImageFlow"  # images: the multi-scale flow
    assert recipe.build(load_dataset("digits"), kind="spline").kind == "spline"  # --kind: a vector flow over the pixels


def test_cnf_is_scored_at_the_evaluation_tolerance_and_keeps_its_training_tolerance():
    from probgen.flows import Flow
    from probgen.flows.recipe import CNF_EVAL_TOL, FlowRecipe

    torch.manual_seed(0)
    flow = Flow(2, "cnf", rtol=1e-3, atol=1e-3, hidden_dims=(16,))
    x = torch.randn(32, 2, dtype=torch.float64)
    flow.double()
    seen = []
    block = flow.cnf_transforms[0]
    solve = block.solve

    def spy(*args, **kwargs):
        seen.append((block.rtol, block.atol))
        return solve(*args, **kwargs)

    block.solve = spy
    (lp, _), = FlowRecipe().log_likelihoods(flow, x).values()
    assert seen and all(tol == (CNF_EVAL_TOL, CNF_EVAL_TOL) for tol in seen)
    assert (block.rtol, block.atol) == (1e-3, 1e-3)
    block.solve = solve
    block.rtol = block.atol = CNF_EVAL_TOL
    torch.testing.assert_close(lp, flow.log_prob(x))


def test_resume_continues_the_checkpoints_architecture(tmp_path, capsys):
    # a run started with another kind than today's default resumes as it was started, without --kind
    out = tmp_path / "run"
    code, _, err = _run(capsys, "fit", "flow", "--data", "8gaussians", "--kind", "realnvp", "--steps", "4",
                        "--out", str(out), "--no-progress", "--num-samples", "16")
    assert code == 0, err
    code, text, err = _run(capsys, "fit", "flow", "--data", "8gaussians", "--steps", "4", "--out", str(out),
                           "--resume", "--no-progress", "--num-samples", "16")
    assert code == 0, err
    assert "flow (realnvp, 4 layers)" in text
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    # continuous data: the flow is saved inside its standardizing wrapper (probgen.ops.standardize)
    assert state["family"] == "standardized" and state["config"]["model"]["config"]["kind"] == "realnvp"

    code, _, err = _run(capsys, "fit", "flow", "--data", "8gaussians", "--kind", "spline", "--steps", "4",
                        "--out", str(out), "--resume")
    assert code == 2 and "started with --kind 'realnvp', not 'spline'" in err


# ------------------------------------------------------------------------- outputs never destroy a run


def _small_run(path, capsys, *extra):
    code, _, err = _run(capsys, "fit", "flow", "--data", "8gaussians", "--kind", "realnvp", "--steps", "3",
                        "--out", str(path), "--no-progress", "--eval", "none", "--num-samples", "16", *extra)
    assert code == 0, err
    return {name: (path / name).read_bytes() for name in ("checkpoint.pt", "samples.png", "summary.json")}


def test_a_failed_force_run_leaves_the_old_run_intact(tmp_path, capsys):
    run = tmp_path / "run"
    before = _small_run(run, capsys)
    # diverges at once: the new run fails, and the old checkpoint, figure and summary are all still there
    code, _, err = _run(capsys, "fit", "flow", "--data", "8gaussians", "--kind", "realnvp", "--steps", "5",
                        "--lr", "1e9", "--out", str(run), "--force", "--no-progress", "--eval", "none")
    assert code != 0
    assert {name: (run / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "samples.png", "summary.json"]
    # a forced run that completes replaces all three
    after = _small_run(run, capsys, "--force", "--seed", "1")
    assert all(after[name] != before[name] for name in before)


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
    from probgen.checkpoint import LOCK_NAME, run_lock

    run = tmp_path / "run"
    with run_lock(run):  # a live writer (this process) holds the folder
        code, _, err = _run(capsys, "fit", "flow", "--data", "8gaussians", "--steps", "2", "--out", str(run),
                            "--no-progress")
        assert code == 2 and "is being written by another probgen process" in err and len(err.splitlines()) == 1
    assert not (run / "checkpoint.pt").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (run / LOCK_NAME).write_text(f"{int(dead.stdout)} {socket.gethostname()}\n")  # its owner has exited
    _small_run(run, capsys)
    assert not (run / LOCK_NAME).exists()


def test_writers_do_not_follow_symlinks(tmp_path, capsys, monkeypatch):
    import uuid

    from probgen.checkpoint import atomic_write

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    # a symlink planted at the (guessed) temporary name makes the write fail instead of writing through it
    token = uuid.UUID(int=7)
    monkeypatch.setattr(uuid, "uuid4", lambda: token)
    (tmp_path / f".out.json.{token.hex}.tmp").symlink_to(victim)
    with pytest.raises(OSError, match="out.json"):
        atomic_write(tmp_path / "out.json", lambda f: f.write(b"{}"))
    assert victim.read_text() == "precious"
    monkeypatch.undo()
    # a symlink at the destination is replaced, not written through (with --force; without it, refused)
    run = tmp_path / "run"
    _small_run(run, capsys)
    link = tmp_path / "s.npy"
    link.symlink_to(victim)
    code, _, err = _run(capsys, "sample", str(run), "-n", "5", "--out", str(link), "--no-progress")
    assert code == 2 and "already exists" in err
    code, _, err = _run(capsys, "sample", str(run), "-n", "5", "--out", str(link), "--force", "--no-progress")
    assert code == 0, err
    assert victim.read_text() == "precious" and not link.is_symlink()


@pytest.mark.parametrize("argv, stage", [
    (["sample", "{run}", "-n", "5", "--out", "{run}/summary.json"], "_load_model"),
    (["sample", "{run}", "-n", "5", "--out", "{tmp}/taken.npy"], "_load_model"),
    (["sample", "{run}", "-n", "5", "--out", "{run}/checkpoint.pt", "--force"], "_load_model"),
    (["evaluate", "{run}", "--data", "8gaussians", "--out", "{run}/summary.json"], "_evaluate_dir"),
    (["compare", "{run}", "--data", "8gaussians", "--out", "{run}/samples.png"], "_evaluate_dir"),
])
def test_a_bad_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch, argv, stage):
    from probgen.cli import sample_eval

    run = tmp_path / "run"
    before = _small_run(run, capsys)
    (tmp_path / "taken.npy").write_bytes(b"mine")

    def no_work(*a, **k):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(sample_eval, stage, no_work)
    code, _, err = _run(capsys, *[a.format(run=run, tmp=tmp_path) for a in argv])
    assert code == 2 and "--out" in err and len(err.splitlines()) == 1, err
    assert {name: (run / name).read_bytes() for name in before} == before
    assert (tmp_path / "taken.npy").read_bytes() == b"mine"


def test_sample_names_its_own_figure(tmp_path, capsys):
    run = tmp_path / "run"
    before = _small_run(run, capsys)
    code, text, err = _run(capsys, "sample", str(run), "-n", "20", "--no-progress")
    assert code == 0, err
    assert (run / "samples.png").read_bytes() == before["samples.png"]
    assert (run / "samples.pt.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------ progress


def test_long_commands_show_a_progress_bar_on_stderr(tmp_path, capsys):
    runs = {}
    for family in ("score-sde", "ddpm"):
        runs[family] = tmp_path / family
        code, _, err = _run(capsys, "fit", family, "--data", "8gaussians", "--steps", "2", "--out",
                            str(runs[family]), "--no-progress", "--eval", "none", "--num-samples", "16")
        assert code == 0, err
    code, _, err = _run(capsys, "sample", str(runs["score-sde"]), "-n", "200", "--method", "ode")
    assert code == 0 and "sampling" in err and "200/200" in err, err
    code, _, err = _run(capsys, "sample", str(runs["score-sde"]), "-n", "200", "--method", "ode", "--force",
                        "--no-progress")
    assert code == 0 and err == "", err
    code, _, err = _run(capsys, "nll", str(runs["ddpm"]), "--data", "8gaussians", "--bound", "ode", "-n", "40")
    assert code == 0 and "evaluating" in err and "ETA" in err, err
    code, _, err = _run(capsys, "compare", str(runs["score-sde"]), str(runs["ddpm"]), "--data", "8gaussians",
                        "-n", "50", "--no-likelihood", "--out", str(tmp_path / "c.png"))
    assert code == 0 and "comparing" in err and "2/2" in err, err


def test_an_unwritable_out_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    from probgen import cli

    run = tmp_path / "run"
    _small_run(run, capsys)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(cli.os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    monkeypatch.setattr(cli.sample_eval, "_load_model", lambda *a, **k: pytest.fail("work started before --out was checked"))
    code, _, err = _run(capsys, "sample", str(run), "-n", "5", "--out", str(locked / "s.npy"))
    assert code == 2 and "--out" in err and "is not writable" in err, err


class _TimedRecipe:
    """A recipe whose evaluation sleeps ``fixed`` seconds (once, when ``cached_fixed_cost``; else every call) plus
    ``per_point`` per test point, recording the points asked for."""

    def __init__(self, *, fixed: float, per_point: float, cached: bool):
        self.fixed, self.per_point, self.cached_fixed_cost = fixed, per_point, cached
        self.calls: list[int | None] = []

    def default_eval_points(self, dataset):
        return None

    def evaluate(self, model, dataset, *, num_points=None):
        import time

        if not (self.cached_fixed_cost and self.calls):
            time.sleep(self.fixed)
        self.calls.append(num_points)
        time.sleep(self.per_point * (num_points or len(dataset.test)))
        return {"n": num_points}


def _quick_evaluation(monkeypatch, recipe, seconds):
    from types import SimpleNamespace

    import probgen.cli.fit as fit_cmd

    monkeypatch.setattr(fit_cmd, "_QUICK_EVAL_SECONDS", seconds)
    return fit_cmd._post_fit_evaluation(recipe, None, SimpleNamespace(test=list(range(100))), "quick", progress=False)


def test_quick_evaluation_reuses_its_probe_and_skips_a_probe_that_cannot_fit(monkeypatch):
    """--eval quick: when 8 points already say 32 would not fit in the budget, the 32-point probe is skipped and
    the 8-point probe's table is the evaluation (no point is scored twice)."""
    recipe = _TimedRecipe(fixed=0.0, per_point=0.01, cached=False)
    report, what = _quick_evaluation(monkeypatch, recipe, 0.1)
    assert recipe.calls == [8] and report == {"n": 8}
    assert "the first 8 of 100 test points" in what


def test_quick_evaluation_scores_every_point_when_a_cached_fixed_cost_is_paid(monkeypatch):
    """--eval quick with a recipe whose fixed part is cached (the RBM's log Z bracket): the first probe pays it,
    the second costs only its points, and then every test point is scored — not the first 8 — because the
    points are cheap (the MNIST RBM's quick evaluation had scored 8 images after a 200 s bracket)."""
    recipe = _TimedRecipe(fixed=0.3, per_point=0.0005, cached=True)  # the fixed part alone is over the budget
    report, what = _quick_evaluation(monkeypatch, recipe, 0.2)
    assert recipe.calls == [8, 32, None] and report == {"n": None}
    assert "100 test points (all)" in what
