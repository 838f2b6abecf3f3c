"""The bad-input catalogue: malformed inputs across the public API and the command line.

Every library case asserts the exception type and a regex on the message that names the argument and
says what is valid; every CLI case asserts exit status 2, exactly one line on stderr (``probgen: error:
...``) and that the working folder is unchanged (no partial output left behind). Categories (see
docs/reliability.md): non-finite data, wrong rank or event shape, unsupported dtypes, empty data,
non-binary data for Bernoulli models, non-positive step sizes / learning rates / noise levels, times
outside ``[eps, T]``, unknown names, intractable exact computations, unusable devices, foreign /
truncated / malicious checkpoints, data that does not fit a checkpoint.

A new family is one more entry in the lists below.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import probgen
from probgen import cli
from probgen.checkpoint import CheckpointError, load
from probgen.diffusion import ScoreSDE, ode_log_prob
from probgen.ebm import EBM, BernoulliRBM
from probgen.flows import MADE, Flow
from probgen.infer import MALA
from probgen.metrics import frechet_distance, mmd
from probgen.samplers import annealed_langevin, langevin, sample_ode, sample_pc, sample_sde
from probgen.sde import VESDE, VPSDE
from probgen.training import fit
from probgen.vae import VAE


def _score(x, t):
    return -x


def _x(n: int = 8, d: int = 2) -> torch.Tensor:
    return torch.randn(n, d)


def _with(value: float, *, n: int = 8, d: int = 2) -> torch.Tensor:
    x = torch.randn(n, d)
    x[1, 1] = value
    return x


def _least_squares() -> torch.nn.Module:
    model = torch.nn.Linear(2, 1)
    model.loss = lambda x: model(x).pow(2).mean()
    return model


def _fit(data=None, **kw):
    return fit(_least_squares(), _x() if data is None else data, **{"steps": 1, "progress": False, **kw})


def _flow() -> Flow:
    return Flow(2, "realnvp", num_layers=1)


def _meta_model():
    model = _least_squares().to("meta")
    return fit(model, _x(), steps=1, progress=False)


# (thunk, exception type, regex on the message)
LIBRARY_CASES = [
    # ---- data sets ------------------------------------------------------------------------------
    pytest.param(lambda: probgen.data.toy2d("nope", 10), ValueError,
                 r"unknown name 'nope'; valid choices: '8gaussians'", id="toy2d-unknown-name"),
    pytest.param(lambda: probgen.data.toy2d("8gaussians", 0), ValueError, r"n must be >= 1, got 0",
                 id="toy2d-zero-points"),
    pytest.param(lambda: probgen.data.toy2d_log_prob("8gaussians", torch.randn(5, 3)), ValueError,
                 r"x must have shape \(batch, 2\), got \(5, 3\)", id="toy2d-log-prob-event-shape"),
    pytest.param(lambda: probgen.data.toy2d_log_prob("8gaussians", _with(float("nan"))), ValueError,
                 r"x contains 1 NaN", id="toy2d-log-prob-nan"),
    pytest.param(lambda: probgen.data.load_dataset("svhn"), ValueError,
                 r"unknown data set 'svhn'; valid names: .*'digits'.*'mnist'.*a path to a \.npy/\.csv/\.pt file, or a folder of PNG images",
                 id="data-unknown-name"),
    pytest.param(lambda: probgen.data.load_dataset("/nonexistent/file.npy"), FileNotFoundError,
                 r"/nonexistent/file\.npy: no such file", id="data-missing-file"),
    # ---- fit: data ------------------------------------------------------------------------------
    pytest.param(lambda: _fit(_with(float("nan"))), ValueError, r"data contains 1 NaN or infinite values",
                 id="fit-nan-data"),
    pytest.param(lambda: _fit(_with(float("inf"))), ValueError, r"data contains 1 NaN or infinite values",
                 id="fit-inf-data"),
    pytest.param(lambda: _fit(torch.ones(8, 2, dtype=torch.long)), TypeError,
                 r"data must be float32 or float64, got torch.int64", id="fit-integer-data"),
    pytest.param(lambda: _fit(_x().half()), TypeError,
                 r"data must be float32 or float64, got torch.float16 \(half precision is not supported\)",
                 id="fit-float16-data"),
    pytest.param(lambda: _fit(torch.empty(0, 2)), ValueError, r"data is empty \(shape \(0, 2\)\)",
                 id="fit-empty-data"),
    pytest.param(lambda: _fit(torch.tensor(1.0)), ValueError, r"data must have at least 1 dimensions, got shape \(\)",
                 id="fit-scalar-data"),
    pytest.param(lambda: _fit((_x(), torch.randn(5))), ValueError,
                 r"data\[1\] has 5 rows but data\[0\] has 8; tensors in data must share dimension 0",
                 id="fit-tuple-rows-mismatch"),
    pytest.param(lambda: _fit([[1.0, 2.0]]), TypeError, r"data\[0\] must be a torch.Tensor, got list",
                 id="fit-nested-list"),
    pytest.param(lambda: _fit(_x().double()), ValueError,
                 r"data has dtype torch.float64 but the model's parameters are torch.float32", id="fit-dtype-mismatch"),
    pytest.param(lambda: _fit(_x().to("meta")), ValueError,
                 r"data is on the 'meta' device \(a shape without values\); pass real data on 'cpu' or 'cuda'",
                 id="fit-meta-data"),
    pytest.param(_meta_model, ValueError,
                 r"the model's parameters are on the 'meta' device.*valid devices: 'cpu', 'cuda'", id="fit-meta-model"),
    # ---- fit: options ---------------------------------------------------------------------------
    pytest.param(lambda: _fit(lr=0), ValueError, r"lr must be > 0, got 0", id="fit-zero-lr"),
    pytest.param(lambda: _fit(lr=-1e-3), ValueError, r"lr must be > 0, got -0.001", id="fit-negative-lr"),
    pytest.param(lambda: _fit(lr=float("nan")), ValueError, r"lr must be finite, got nan", id="fit-nan-lr"),
    pytest.param(lambda: _fit(grad_clip=0), ValueError, r"grad_clip must be > 0, got 0", id="fit-zero-grad-clip"),
    pytest.param(lambda: _fit(grad_clip=-1.0), ValueError, r"grad_clip must be > 0, got -1.0",
                 id="fit-negative-grad-clip"),
    pytest.param(lambda: _fit(steps=0), ValueError, r"steps must be >= 1, got 0", id="fit-zero-steps"),
    pytest.param(lambda: _fit(batch_size=0), ValueError, r"batch_size must be >= 1, got 0", id="fit-zero-batch"),
    pytest.param(lambda: _fit(weight_decay=-1), ValueError, r"weight_decay must be >= 0, got -1",
                 id="fit-negative-weight-decay"),
    pytest.param(lambda: _fit(lr_schedule="linear"), ValueError,
                 r"unknown lr_schedule 'linear'; valid choices: 'constant', 'cosine', or a callable",
                 id="fit-unknown-schedule"),
    pytest.param(lambda: _fit(resume=True), ValueError, r"resume=True needs checkpoint=<path>",
                 id="fit-resume-without-checkpoint"),
    pytest.param(lambda: _fit(device="gpu0"), ValueError,
                 r"device 'gpu0' is not a torch device; use 'cpu', 'cuda', 'cuda:0'", id="fit-bad-device-name"),
    pytest.param(lambda: fit(torch.nn.Linear(2, 1), _x(), steps=1, progress=False), TypeError,
                 r"Linear has no loss\(\*batch\) method", id="fit-model-without-loss"),
    # ---- flows ----------------------------------------------------------------------------------
    pytest.param(lambda: Flow(2, "nope"), ValueError, r"unknown kind 'nope'; valid choices: 'planar', .*'spline'",
                 id="flow-unknown-kind"),
    pytest.param(lambda: Flow(1, "realnvp"), ValueError, r"dim must be >= 2 for the coupling kind 'realnvp', got 1",
                 id="flow-dim-too-small"),
    pytest.param(lambda: Flow(2, "spline", foo=1), TypeError,
                 r"unknown option\(s\) 'foo' for Flow kind 'spline'; valid options: 'actnorm'", id="flow-unknown-option"),
    pytest.param(lambda: Flow(2, "maf", num_layers=0), ValueError, r"num_layers must be >= 1, got 0",
                 id="flow-zero-layers"),
    pytest.param(lambda: _flow().log_prob(torch.randn(5, 3)), ValueError,
                 r"x must have shape \(batch, 2\), got \(5, 3\)", id="flow-log-prob-event-shape"),
    pytest.param(lambda: _flow().log_prob(torch.randn(2)), ValueError,
                 r"x must have shape \(batch, 2\), got \(2,\)", id="flow-log-prob-missing-batch-dim"),
    pytest.param(lambda: _flow().log_prob(_with(float("nan"))), ValueError, r"x contains 1 NaN or infinite values",
                 id="flow-log-prob-nan"),
    pytest.param(lambda: _flow().log_prob(torch.ones(5, 2, dtype=torch.long)), TypeError,
                 r"x must be float32 or float64, got torch.int64", id="flow-log-prob-integer"),
    pytest.param(lambda: _flow().sample(0), ValueError, r"num_samples must be >= 1, got 0", id="flow-zero-samples"),
    # ---- Bernoulli models: binary data only -----------------------------------------------------
    pytest.param(lambda: MADE(4).loss(torch.rand(8, 4)), ValueError,
                 r"x must be binary \(0/1\) for a MADE", id="made-non-binary"),
    pytest.param(lambda: MADE(4).loss(torch.randint(0, 2, (8, 5)).float()), ValueError,
                 r"x must have shape \(batch, 4\), got \(8, 5\)", id="made-event-shape"),
    pytest.param(lambda: BernoulliRBM(4, 3).loss(torch.rand(8, 4)), ValueError,
                 r"v must be binary \(0/1\) for a BernoulliRBM", id="rbm-non-binary"),
    pytest.param(lambda: BernoulliRBM(40, 40).log_partition("exact"), ValueError,
                 r"exact log_partition enumerates .*m=40 > max_units=20; use method='ais'", id="rbm-exact-too-large"),
    pytest.param(lambda: BernoulliRBM(4, 3, objective="nope"), ValueError,
                 r"unknown objective 'nope'; valid choices: 'cd', 'pcd'", id="rbm-unknown-objective"),
    pytest.param(lambda: BernoulliRBM(4, 3).log_partition("nope"), ValueError,
                 r"unknown method 'nope'; valid choices: 'exact', 'ais'", id="rbm-unknown-log-z-method"),
    pytest.param(lambda: BernoulliRBM(4, 3, k=0), ValueError, r"k must be >= 1, got 0", id="rbm-zero-gibbs-steps"),
    pytest.param(lambda: VAE(torch.nn.Linear(2, 4), torch.nn.Linear(2, 2), 2, likelihood="poisson"), ValueError,
                 r"unknown likelihood 'poisson'; valid choices: 'gaussian', 'bernoulli'", id="vae-unknown-likelihood"),
    pytest.param(lambda: EBM(dim=2, objective="nope"), ValueError, r"unknown objective 'nope'; valid choices:",
                 id="ebm-unknown-objective"),
    # ---- SDEs: noise levels and times ---------------------------------------------------------------
    pytest.param(lambda: VPSDE(beta_min=-1.0), ValueError, r"beta_min must be >= 0, got -1.0", id="vp-negative-beta"),
    pytest.param(lambda: VPSDE(beta_min=5.0, beta_max=1.0), ValueError,
                 r"beta_max must be > beta_min, got beta_min=5, beta_max=1", id="vp-beta-order"),
    pytest.param(lambda: VESDE(sigma_min=0.0), ValueError, r"sigma_min must be > 0, got 0.0", id="ve-zero-sigma"),
    pytest.param(lambda: VESDE(sigma_min=5.0, sigma_max=1.0), ValueError, r"sigma_max must be > sigma_min",
                 id="ve-sigma-order"),
    pytest.param(lambda: VPSDE().marginal(_x(), torch.full((8,), 1.5)), ValueError,
                 r"t must lie in \[0, 1\], got values in \[1.5, 1.5\]", id="sde-time-after-T"),
    pytest.param(lambda: VPSDE().marginal(_x(), torch.full((8,), -0.1)), ValueError,
                 r"t must lie in \[0, 1\], got values in \[-0.1, -0.1\]", id="sde-negative-time"),
    pytest.param(lambda: VPSDE().marginal(_x(), torch.full((3,), 0.5)), ValueError,
                 r"t must have shape \(8,\), got \(3,\)", id="sde-time-shape"),
    # ---- samplers -------------------------------------------------------------------------------
    pytest.param(lambda: sample_ode(_score, VPSDE(), (4, 2), method="nope"), ValueError,
                 r"unknown method 'nope'; valid choices: 'dopri5'", id="ode-unknown-method"),
    pytest.param(lambda: sample_ode(_score, VPSDE(), (4, 2), method="euler"), ValueError,
                 r"steps is required for the fixed-step method 'euler'", id="ode-fixed-step-without-steps"),
    pytest.param(lambda: sample_ode(_score, VPSDE(), (4, 2), rtol=0), ValueError, r"rtol must be > 0, got 0",
                 id="ode-zero-rtol"),
    pytest.param(lambda: sample_ode(_score, VPSDE(), (4, 2), eps=2.0), ValueError,
                 r"eps must lie in \(0, 1\) \(the final time of the reverse process\), got 2.0", id="ode-eps-after-T"),
    pytest.param(lambda: sample_ode(_score, VPSDE(), (4, 2), eps=-1e-3), ValueError, r"eps must lie in \(0, 1\)",
                 id="ode-negative-eps"),
    pytest.param(lambda: sample_sde(_score, VPSDE(), (4, 2), steps=0), ValueError, r"steps must be >= 1, got 0",
                 id="sde-sampler-zero-steps"),
    pytest.param(lambda: sample_sde(_score, VPSDE(), (4, 2), steps=5, method="nope"), ValueError,
                 r"unknown method 'nope'; valid choices: 'euler', 'milstein'", id="sde-sampler-unknown-method"),
    pytest.param(lambda: sample_pc(_score, VPSDE(), (4, 2), steps=5, predictor="nope"), ValueError,
                 r"unknown predictor 'nope'; valid choices: 'reverse_diffusion', 'euler_maruyama'",
                 id="pc-unknown-predictor"),
    pytest.param(lambda: sample_pc(_score, VPSDE(), (4, 2), steps=5, snr=-1), ValueError, r"snr must be > 0, got -1",
                 id="pc-negative-snr"),
    pytest.param(lambda: langevin(lambda x: -x, _x(), steps=5, step_size=0), ValueError,
                 r"step_size must be > 0, got 0", id="langevin-zero-step"),
    pytest.param(lambda: langevin(lambda x: -x, _x(), steps=5, step_size=-0.1), ValueError,
                 r"step_size must be > 0, got -0.1", id="langevin-negative-step"),
    pytest.param(lambda: langevin(lambda x: -x, _with(float("nan")), steps=5, step_size=0.1), ValueError,
                 r"x_init contains 1 NaN or infinite values", id="langevin-nan-init"),
    pytest.param(lambda: annealed_langevin(_score, [1.0, -0.1], (4, 2), steps_per_level=2), ValueError,
                 r"sigmas must be positive and strictly decreasing", id="annealed-negative-sigma"),
    pytest.param(lambda: annealed_langevin(_score, [1.0, 0.1], (4, 2), steps_per_level=2, step_lr=0), ValueError,
                 r"step_lr must be > 0, got 0", id="annealed-zero-lr"),
    pytest.param(lambda: MALA(potential_fn=lambda p: (p["x"] ** 2).sum(), step_size=-0.1), ValueError,
                 r"step_size must be > 0, got -0.1", id="mala-negative-step"),
    pytest.param(lambda: MALA(), ValueError, r"MALA takes exactly one of model or potential_fn, got neither",
                 id="mala-no-target"),
    # ---- likelihood -----------------------------------------------------------------------------
    pytest.param(lambda: ode_log_prob(_score, VPSDE(), _x(), trace="nope"), ValueError,
                 r"unknown trace 'nope'; valid choices: 'exact', 'hutchinson'", id="ode-log-prob-unknown-trace"),
    pytest.param(lambda: ode_log_prob(_score, VPSDE(), _with(float("nan"))), ValueError,
                 r"x contains 1 NaN or infinite values", id="ode-log-prob-nan"),
    pytest.param(lambda: ode_log_prob(_score, VPSDE(), _x(), eps=2.0), ValueError,
                 r"eps must lie in \(0, 1\)", id="ode-log-prob-eps-after-T"),
    pytest.param(lambda: ode_log_prob(_score, VPSDE(), _x(), eps=0.0), ValueError, r"eps must lie in \(0, 1\)",
                 id="ode-log-prob-zero-eps"),
    pytest.param(lambda: ode_log_prob(_score, VPSDE(), _x().half()), TypeError,
                 r"x must be float32 or float64, got torch.float16", id="ode-log-prob-float16"),
    pytest.param(lambda: ode_log_prob(_score, VPSDE(), _x(), batch_size=0), ValueError,
                 r"batch_size must be >= 1, got 0", id="ode-log-prob-zero-batch"),
    pytest.param(lambda: ode_log_prob(_score, VPSDE(), _x(), trace="hutchinson", num_probes=0), ValueError,
                 r"num_probes must be >= 1, got 0", id="ode-log-prob-zero-probes"),
    pytest.param(lambda: ode_log_prob(lambda x, t: x[:, :1], VPSDE(), _x()), ValueError,
                 r"score_fn returned shape \(8, 1\); expected \(8, 2\)", id="ode-log-prob-bad-score"),
    pytest.param(lambda: ode_log_prob(_score, VPSDE(), _x().to("meta")), ValueError, r"x .*'meta' device",
                 id="ode-log-prob-meta-device"),
    # ---- score models ---------------------------------------------------------------------------
    pytest.param(lambda: ScoreSDE((2,), parameterization="nope"), ValueError,
                 r"unknown parameterization 'nope'; valid choices: 'noise', 'score'", id="score-sde-parameterization"),
    pytest.param(lambda: ScoreSDE((2,), loss_weighting="nope"), ValueError,
                 r"unknown loss_weighting 'nope'; valid choices: 'sigma2', 'likelihood', or a callable",
                 id="score-sde-weighting"),
    pytest.param(lambda: ScoreSDE((2,), eps=0.0), ValueError, r"eps must be > 0, got 0.0", id="score-sde-zero-eps"),
    pytest.param(lambda: ScoreSDE((2,)).loss(torch.randn(4, 3)), ValueError,
                 r"x must have shape \(batch, 2\), got \(4, 3\)", id="score-sde-event-shape"),
    pytest.param(lambda: ScoreSDE((2,)).sample(4, method="nope"), ValueError,
                 r"unknown method 'nope'; valid choices: 'sde', 'pc', 'ode', 'annealed-langevin'",
                 id="score-sde-unknown-sampler"),
    # ---- metrics --------------------------------------------------------------------------------
    pytest.param(lambda: mmd(_x(), _x(), kernel="nope"), ValueError,
                 r"unknown kernel 'nope'; valid choices: 'gaussian', 'imq', 'polynomial', or a callable",
                 id="mmd-unknown-kernel"),
    pytest.param(lambda: mmd(_x(), torch.randn(8, 3)), ValueError,
                 r"x and y must have the same number of features \(columns\), got \(8, 2\) and \(8, 3\)",
                 id="mmd-feature-mismatch"),
    pytest.param(lambda: mmd(_with(float("nan")), _x()), ValueError, r"x contains 1 NaN or infinite values",
                 id="mmd-nan"),
    pytest.param(lambda: frechet_distance(torch.randn(1, 4), torch.randn(10, 4)), ValueError,
                 r"x_feats must have at least 2 samples \(rows\), got shape \(1, 4\)", id="fid-one-row"),
]

if not torch.cuda.is_available():
    LIBRARY_CASES.append(pytest.param(
        lambda: _fit(device="cuda"), ValueError, r"device 'cuda' was requested but CUDA is not available.*use "
        r"device='cpu'", id="fit-cuda-unavailable"))
    LIBRARY_CASES.append(pytest.param(
        lambda: probgen.load("/nonexistent", map_location="cuda"), ValueError,
        r"map_location 'cuda' needs CUDA, which is not available; use map_location='cpu'", id="load-cuda-unavailable"))


@pytest.mark.parametrize("thunk, exc_type, pattern", LIBRARY_CASES)
def test_library_refuses_bad_input(thunk, exc_type, pattern):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc_type, match=pattern) as info:
            thunk()
    assert "\n" not in str(info.value)  # one line, so the CLI can show it as is


def test_catalogue_is_large_enough():
    assert len(LIBRARY_CASES) + len(CLI_CASES) >= 40


# -------------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder with a trained 2-D flow run, data files and damaged / foreign / malicious checkpoints."""
    root = tmp_path_factory.mktemp("catalogue")
    torch.manual_seed(0)
    fit(Flow(2, "realnvp", num_layers=1), probgen.data.toy2d("8gaussians", 256, seed=0), steps=2, batch_size=64,
        seed=0, progress=False, checkpoint=str(root / "run") + "/")
    np.save(root / "bad3.npy", np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32))
    with_nan = np.random.default_rng(1).normal(size=(20, 2))
    with_nan[3, 1] = np.nan
    np.save(root / "nan.npy", with_nan)
    (root / "bad.csv").write_text("1,2\n3,x\n")
    (root / "note.txt").write_text("not a folder")
    data = (root / "run" / "checkpoint.pt").read_bytes()
    (root / "trunc").mkdir()
    (root / "trunc" / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    (root / "evil").mkdir()
    torch.save({"format": "probgen-checkpoint", "format_version": 1, "payload": _Evil(str(root / "pwned"))},
               root / "evil" / "checkpoint.pt")
    probgen.save(str(root / "plain") + "/", torch.nn.Linear(2, 1))
    return root


class _Evil:
    """Unpickling this object would create a file: the marker of code execution."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_load_refuses_another_family(workspace):
    with pytest.raises(CheckpointError, match=r"holds a 'flow' model; expected 'ddpm'"):
        load(workspace / "run", expected_family="ddpm")


def test_load_refuses_a_truncated_file(workspace):
    with pytest.raises(CheckpointError, match=r"is truncated, corrupted or not a torch checkpoint"):
        load(workspace / "trunc")


def test_load_refuses_a_malicious_file_and_runs_nothing(workspace):
    with pytest.raises(CheckpointError, match=r"refused to load .*objects other than tensors and plain Python data"):
        load(workspace / "evil")
    assert not (workspace / "pwned").exists()


# ------------------------------------------------------------------------------------------------ CLI

W = "{W}"  # replaced by the workspace copy of each test

CLI_CASES = [
    pytest.param(["fit", "gizmo", "--data", "8gaussians", "--out", f"{W}/new"],
                 r"unknown family 'gizmo'; valid choices: .*'flow'.*'wgan-gp'", id="cli-fit-unknown-family"),
    pytest.param(["fit", "flow", "--data", "nope", "--out", f"{W}/new"],
                 r"unknown data set 'nope'; valid names: '8gaussians'", id="cli-fit-unknown-data"),
    pytest.param(["fit", "flow", "--data", "8gaussians", "--steps", "0", "--out", f"{W}/new"],
                 r"argument --steps: expected a positive integer, got '0'", id="cli-fit-zero-steps"),
    pytest.param(["fit", "flow", "--data", "8gaussians", "--lr", "-1", "--out", f"{W}/new"],
                 r"argument --lr: expected a positive number, got '-1'", id="cli-fit-negative-lr"),
    pytest.param(["fit", "flow", "--data", "8gaussians", "--device", "tpu", "--out", f"{W}/new"],
                 r"--device 'tpu' is not valid; valid choices: 'cpu', 'cuda', 'cuda:N'", id="cli-fit-bad-device"),
    pytest.param(["fit", "flow", "--data", "8gaussians", "--kind", "nope", "--out", f"{W}/new"],
                 r"unknown --kind 'nope'; valid choices: 'spline'", id="cli-fit-unknown-kind"),
    pytest.param(["fit", "flow", "--data", "8gaussians", "--objective", "cd", "--out", f"{W}/new"],
                 r"--objective is not used by family 'flow'", id="cli-fit-objective-not-used"),
    pytest.param(["fit", "flow", "--data", "8gaussians", "--out", f"{W}/run"],
                 r"already holds a checkpoint; pass --resume to continue it or --force", id="cli-fit-existing-run"),
    pytest.param(["fit", "flow", "--data", "8gaussians", "--resume", "--out", f"{W}/new"],
                 r"--resume: no checkpoint in .* to continue", id="cli-fit-resume-nothing"),
    pytest.param(["fit", "flow", "--data", f"{W}/nan.npy", "--steps", "1", "--out", f"{W}/new"],
                 r"nan\.npy: 1 NaN or infinite values .*row 3", id="cli-fit-nan-file"),
    pytest.param(["fit", "flow", "--data", f"{W}/bad.csv", "--steps", "1", "--out", f"{W}/new"],
                 r"bad\.csv", id="cli-fit-malformed-csv"),
    pytest.param(["fit", "flow", "--data", f"{W}/missing.npy", "--steps", "1", "--out", f"{W}/new"],
                 r"missing\.npy", id="cli-fit-missing-file"),
    pytest.param(["fit", "flow", "--data", "8gaussians", "--steps", "1", "--out", f"{W}/note.txt/run"],
                 r"--out .*note\.txt.* is a file", id="cli-fit-out-under-a-file"),
    pytest.param(["sample", f"{W}/evil"], r"refused to load .*could run code when unpickled",
                 id="cli-sample-malicious-checkpoint"),
    pytest.param(["sample", f"{W}/trunc"], r"is truncated, corrupted or not a torch checkpoint",
                 id="cli-sample-truncated-checkpoint"),
    pytest.param(["sample", f"{W}/nothere"], r"DIR '.*nothere' does not exist", id="cli-sample-missing-dir"),
    pytest.param(["sample", f"{W}/plain"], r"without a family attribute; build the model yourself",
                 id="cli-sample-no-family"),
    pytest.param(["sample", f"{W}/run", "--out", f"{W}/samples.txt"], r"expected a \.pt or \.npy file name",
                 id="cli-sample-bad-suffix"),
    pytest.param(["sample", f"{W}/run", "--method", "ode"], r"--method is not used by family 'flow'",
                 id="cli-sample-method-not-used"),
    pytest.param(["sample", f"{W}/run", "-n", "0"], r"argument -n/--num-samples: expected a positive integer",
                 id="cli-sample-zero-samples"),
    pytest.param(["nll", f"{W}/run", "--data", "digits"],
                 r"--data 'digits' has events of shape \(1, 8, 8\), but the checkpoint's model expects \(2,\)",
                 id="cli-nll-other-data-set"),
    pytest.param(["nll", f"{W}/run", "--data", f"{W}/bad3.npy"],
                 r"bad3\.npy' has events of shape \(3,\), but the checkpoint's model expects \(2,\)",
                 id="cli-nll-file-wrong-shape"),
    pytest.param(["nll", f"{W}/run", "--data", "8gaussians", "--trace", "exact"],
                 r"--trace is not used by family 'flow'", id="cli-nll-trace-not-used"),
    pytest.param(["nll", f"{W}/run", "--data", "8gaussians", "--bound", "elbo"],
                 r"--bound is not used by family 'flow'", id="cli-nll-bound-not-used"),
    pytest.param(["nll", f"{W}/evil", "--data", "8gaussians"], r"refused to load", id="cli-nll-malicious-checkpoint"),
    pytest.param(["frobnicate"], r"invalid choice: 'frobnicate' \(choose from 'fit', 'sample', 'nll'",
                 id="cli-unknown-command"),
    pytest.param(["fit", "flow"], r"the following arguments are required: --data", id="cli-fit-missing-data"),
]


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv, pattern", CLI_CASES)
def test_cli_refuses_bad_input(argv, pattern, workspace, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(workspace, root)
    argv = [a.replace(W, str(root)) for a in argv]
    before = _listing(root)
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = cli.main(argv)
    lines = err.getvalue().splitlines()
    assert status == 2, err.getvalue()
    assert len(lines) == 1 and lines[0].startswith("probgen: error: ")
    assert __import__("re").search(pattern, lines[0]), lines[0]
    assert _listing(root) == before  # nothing written, nothing changed, no partial file
    assert not (root / "pwned").exists()  # the malicious payload never ran
