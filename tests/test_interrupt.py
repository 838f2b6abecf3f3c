"""Ctrl-C keeps the work: the first SIGINT/SIGTERM during `probgen.fit` finishes the step, writes the checkpoint
and stops (`TrainingInterrupted`, a KeyboardInterrupt; the CLI says how to continue and exits 130); `--resume`
then reproduces the uninterrupted run bit for bit. A second signal aborts at once and keeps the previous
checkpoint. Modelled on tests/test_crash_safety.py: the interrupted runs are child processes, the reference and
resumed runs call `probgen.cli.main` in this process (same CPU, one thread: bitwise equal)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from probgen import cli
from probgen.checkpoint import read_checkpoint
from probgen.training import TrainingInterrupted, fit

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12  # the CLI checkpoints every max(steps // 10, 1) = 1 step
ARGS = ["--data", "8gaussians", "--steps", str(STEPS), "--batch-size", "32", "--kind", "realnvp",
        "--num-samples", "50", "--no-progress", "--seed", "4"]

# the child signals itself from inside the checkpoint write number `at` (`count` signals: 2 = "press twice")
CHILD = r'''
import os, signal, sys, torch
at, signame, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
real_save, calls = torch.save, [0]

def save(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == at and hasattr(f, "write"):
        for _ in range(count):
            os.kill(os.getpid(), getattr(signal, signame))
    return real_save(obj, f, *args, **kwargs)

torch.save = save
from probgen.cli import main
sys.exit(main(sys.argv[4:]))
'''


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or ".tmp-" in p.name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The uninterrupted run (in this process)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert cli.main(["fit", "flow", *ARGS, "--out", str(out)]) == 0
    return read_checkpoint(out)["state_dict"]


def _resume_matches(out: Path, reference: dict[str, torch.Tensor]) -> None:
    assert cli.main(["fit", "flow", *ARGS, "--out", str(out), "--resume"]) == 0
    final = read_checkpoint(out)["state_dict"]
    assert final.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.equal(final[name], value), name  # bit for bit


def _child(out: Path, at: int, signame: str, count: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", CHILD, str(at), signame, str(count), "fit", "flow", *ARGS, "--out", str(out)]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("signame, at", [("SIGINT", 5), pytest.param("SIGTERM", 1, marks=pytest.mark.slow)])
def test_a_signal_during_a_checkpoint_write_finishes_it_stops_and_resume_is_exact(tmp_path, reference, signame, at):
    out = tmp_path / "run"
    done = _child(out, at, signame, count=1)
    assert done.returncode == 130, done.stderr[-2000:]
    expected = (f"probgen: interrupted at step {at} of {STEPS}; continue with: probgen fit flow "
                f"{' '.join(ARGS)} --out {out} --resume")
    assert done.stderr.strip().splitlines()[-1] == expected
    assert read_checkpoint(out)["training"]["step"] == at  # the write under way completed
    assert _temp_files(out) == []
    assert not (out / "summary.json").exists()  # stopped before the evaluation
    _resume_matches(out, reference)


def test_a_second_signal_aborts_at_once_and_keeps_the_previous_checkpoint(tmp_path, reference):
    out = tmp_path / "run"
    done = _child(out, 4, "SIGINT", count=2)  # both arrive inside the 4th write: it is abandoned
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == "probgen: interrupted"
    assert read_checkpoint(out)["training"]["step"] == 3  # the previous one, intact
    assert _temp_files(out) == []  # the abandoned write removed its temporary file
    _resume_matches(out, reference)


@pytest.mark.slow
def test_signals_at_random_moments(tmp_path, reference):
    """SIGINT/SIGTERM at random moments of the plain CLI (training, writes, evaluation): whatever the moment, a
    stopped run says at which step, holds that step's checkpoint, and resumes to the reference bit for bit."""
    rng = random.Random(17)
    stopped_at = []
    for trial in range(4):
        out = tmp_path / f"run{trial}"
        signum = (signal.SIGINT, signal.SIGTERM)[trial % 2]
        cmd = [sys.executable, "-m", "probgen.cli", "fit", "flow", *ARGS, "--out", str(out)]
        child = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        # the first trial signals as soon as step 1's checkpoint exists (11 steps, each with its checkpoint write,
        # remain: on a fast idle machine the whole training can take less than the random delays of the others)
        time.sleep(0.0 if trial == 0 else rng.uniform(0.0, 0.4))
        if child.poll() is None:
            os.kill(child.pid, signum)
        _, err = child.communicate(timeout=120)
        lines = err.strip().splitlines()
        if lines and lines[-1].startswith("probgen: interrupted at step"):
            assert child.returncode == 130
            step = int(lines[-1].split()[4])
            assert read_checkpoint(out)["training"]["step"] == step
            stopped_at.append(step)
        else:  # finished before the signal, or stopped during the evaluation (the final checkpoint is written);
            # a signal in the last moments of the process ends it by the signal itself (-SIGINT/-SIGTERM), as Python does
            assert child.returncode in (0, 130, -signal.SIGINT, -signal.SIGTERM), err[-2000:]
            assert read_checkpoint(out)["training"]["step"] == STEPS
        assert _temp_files(out) == []
        _resume_matches(out, reference)
    print("stopped at steps", stopped_at)
    assert stopped_at  # at least one signal arrived during training (the test is not vacuous)


# ----------------------------------------------------------------------------------------------- library


class _Noisy(torch.nn.Module):
    """A loss with model noise (global RNG), so that a resume is exact only if the RNG state is restored."""

    family = "toy-noisy"

    def __init__(self):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(2))

    def config(self) -> dict:
        return {}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 0.1 * torch.randn_like(x) - self.mu) ** 2).sum(-1).mean()


def _signal_at(step_to_stop: int, signum: int = signal.SIGINT):
    def callback(step, loss, metrics):
        if step == step_to_stop:
            os.kill(os.getpid(), signum)
    return callback


def test_library_fit_writes_the_checkpoint_at_the_interrupted_step_and_resumes_exactly(tmp_path):
    data = torch.randn(64, 2)
    kwargs = dict(steps=10, batch_size=16, lr=0.05, seed=0, progress=False, checkpoint_every=4)
    full = _Noisy()
    fit(full, data, checkpoint=tmp_path / "full.pt", **kwargs)

    before = signal.getsignal(signal.SIGINT)
    part = _Noisy()
    with pytest.raises(TrainingInterrupted, match=r"SIGTERM: fit stopped after step 7 of 10; checkpoint .*part.pt "
                                                  r"holds it") as info:
        fit(part, data, checkpoint=tmp_path / "part.pt", callback=_signal_at(7, signal.SIGTERM), **kwargs)
    assert isinstance(info.value, KeyboardInterrupt)
    assert info.value.step == 7 and info.value.signal_name == "SIGTERM" and info.value.history.steps_done == 7
    assert read_checkpoint(tmp_path / "part.pt")["training"]["step"] == 7  # not a multiple of checkpoint_every
    assert signal.getsignal(signal.SIGINT) is before  # the previous handlers are back
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    resumed = _Noisy()
    history = fit(resumed, data, checkpoint=tmp_path / "part.pt", resume=True, **kwargs)
    assert history.steps_done == 10
    assert torch.equal(resumed.mu, full.mu)


def test_library_fit_without_checkpoint_raises_keyboard_interrupt_after_the_step():
    model = _Noisy()
    with pytest.raises(KeyboardInterrupt, match=r"SIGINT: fit stopped after step 3 of 50; no checkpoint was "
                                                r"requested") as info:
        fit(model, torch.randn(32, 2), steps=50, batch_size=8, progress=False, callback=_signal_at(3))
    assert info.value.step == 3 and info.value.checkpoint_path is None and len(info.value.history.losses) == 3


def test_fit_outside_the_main_thread_leaves_signals_alone():
    result: dict = {}

    def work():
        try:
            result["history"] = fit(_Noisy(), torch.randn(16, 2), steps=3, batch_size=8, progress=False)
        except BaseException as error:  # noqa: BLE001 - reported below
            result["error"] = error

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert "error" not in result and result["history"].steps_done == 3
    assert signal.getsignal(signal.SIGINT) is before
