"""Crash safety of `probgen fit` checkpoints: SIGKILL at any point leaves a complete checkpoint (the previous
one or the new one), leftover temporary files are ignored and then removed by the next run, `--resume`
reproduces the uninterrupted run bit for bit on CPU, and a failing write keeps the previous checkpoint.

The killed runs are child processes (`python -c` importing probgen and running `probgen.cli.main`); the
reference and resumed runs call `probgen.cli.main` in this process (same CPU, one thread: bitwise equal).
The child of the default test replaces `torch.save` so that the write of one chosen checkpoint stops
half-way (half the bytes flushed to the temporary file), signals the test and sleeps: the test then
kills it with SIGKILL — the worst moment for an interrupted write.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import probgen
from probgen import cli
from probgen.checkpoint import CheckpointWriteError, read_checkpoint
from probgen.training import fit

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12  # the CLI checkpoints every max(steps // 10, 1) = 1 step
ARGS = ["--data", "8gaussians", "--steps", str(STEPS), "--batch-size", "32", "--kind", "realnvp",
        "--num-samples", "50", "--no-progress", "--seed", "4"]

CHILD = r'''
import io, os, sys, time, torch
kill_at, mode, marker = int(sys.argv[1]), sys.argv[2], sys.argv[3]
real_save, real_replace = torch.save, os.replace
calls = {"save": 0, "replace": 0}

def save(obj, f, *args, **kwargs):
    calls["save"] += 1
    if mode == "mid-write" and calls["save"] == kill_at and hasattr(f, "write"):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2]); f.flush(); os.fsync(f.fileno())
        open(marker, "w").close()
        time.sleep(600)
    return real_save(obj, f, *args, **kwargs)

def replace(src, dst, *args, **kwargs):
    calls["replace"] += 1
    if mode == "before-rename" and calls["replace"] == kill_at:
        open(marker, "w").close()
        time.sleep(600)
    return real_replace(src, dst, *args, **kwargs)

torch.save, os.replace = save, replace
from probgen.cli import main
sys.exit(main(sys.argv[4:]))
'''


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _kill_child_at(out: Path, kill_at: int, mode: str, tmp_path: Path) -> None:
    """Run `probgen fit flow` in a child and SIGKILL it when it reaches write number `kill_at`."""
    marker = tmp_path / f"marker-{mode}-{kill_at}"
    cmd = [sys.executable, "-c", CHILD, str(kill_at), mode, str(marker), "fit", "flow", *ARGS, "--out", str(out)]
    child = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            if child.poll() is not None:
                raise AssertionError(f"the child exited ({child.returncode}) before the kill point: "
                                     f"{child.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the child did not reach the kill point within 180 s")
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or ".tmp-" in p.name)


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(out)["state_dict"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The uninterrupted run (in this process)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert cli.main(["fit", "flow", *ARGS, "--out", str(out)]) == 0
    return _final_weights(out)


def _assert_resume_matches(out: Path, reference: dict[str, torch.Tensor]) -> None:
    has_checkpoint = (out / "checkpoint.pt").exists()
    argv = ["fit", "flow", *ARGS, "--out", str(out)] + (["--resume"] if has_checkpoint else [])
    assert cli.main(argv) == 0
    assert _temp_files(out) == []  # leftovers of the killed writer were removed by the next run
    final = _final_weights(out)
    assert final.keys() == reference.keys()
    for name, value in reference.items():
        assert torch.equal(final[name], value), name  # bit for bit


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one_and_resume_is_exact(tmp_path, reference):
    out = tmp_path / "run"
    kill_at = 6  # the 6th checkpoint (step 6) is being written when the process dies
    _kill_child_at(out, kill_at, "mid-write", tmp_path)

    record = read_checkpoint(out)  # complete and verified (SHA-256), not the half-written one
    assert record["training"]["step"] == kill_at - 1
    leftovers = _temp_files(out)
    assert len(leftovers) == 1 and leftovers[0].startswith(".checkpoint.pt.")  # the half-written temp file
    assert (out / leftovers[0]).stat().st_size > 0
    _assert_resume_matches(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [1, 7, STEPS])
def test_sigkill_between_write_and_rename(tmp_path, reference, kill_at):
    out = tmp_path / "run"
    _kill_child_at(out, kill_at, "before-rename", tmp_path)
    if kill_at == 1:
        assert not (out / "checkpoint.pt").exists()  # nothing renamed yet: the run starts afresh
    else:
        assert read_checkpoint(out)["training"]["step"] == kill_at - 1
    assert len(_temp_files(out)) == 1  # complete but never renamed: ignored by readers
    _assert_resume_matches(out, reference)


@pytest.mark.slow
def test_sigkill_at_random_times(tmp_path, reference):
    """Kill the plain CLI at random moments (import, training, writes, evaluation) and check the invariant."""
    rng = random.Random(2024)
    for trial in range(4):
        out = tmp_path / f"run{trial}"
        cmd = [sys.executable, "-m", "probgen.cli", "fit", "flow", *ARGS, "--out", str(out)]
        child = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.pt").exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if (out / "checkpoint.pt").exists():
            step = read_checkpoint(out)["training"]["step"]  # never a partial file
            assert 1 <= step <= STEPS
        _assert_resume_matches(out, reference)


# ------------------------------------------------------------------------------------- failing writes


class _Mean(torch.nn.Module):
    family = "toy-mean"

    def __init__(self, dim: int = 2):
        super().__init__()
        self.dim = dim
        self.mu = torch.nn.Parameter(torch.zeros(dim))

    def config(self) -> dict:
        return {"dim": self.dim}

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mu) ** 2).sum(-1).mean()


def test_a_failing_write_keeps_the_previous_checkpoint_and_reports_it(tmp_path, monkeypatch):
    import probgen.checkpoint as ckpt

    target = tmp_path / "checkpoint.pt"
    real_replace = os.replace

    def full_disk_after_step_2(step, loss, metrics):
        if step == 3:
            def no_space(src, dst):
                raise OSError(28, "No space left on device")
            monkeypatch.setattr(ckpt.os, "replace", no_space)

    with pytest.raises(CheckpointWriteError, match=r"could not write checkpoint .*No space left on device.*previous "
                                                   r"file \(if any\) is intact"):
        fit(_Mean(), torch.randn(64, 2), steps=6, batch_size=16, seed=0, progress=False, checkpoint=target,
            checkpoint_every=2, callback=full_disk_after_step_2)
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert read_checkpoint(target)["training"]["step"] == 2  # the previous one, intact
    assert _temp_files(tmp_path) == []  # the writer removed its temporary file


def test_a_checkpoint_path_under_a_file_is_reported(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(CheckpointWriteError, match=r"could not write checkpoint .*not-a-folder/checkpoint.pt"):
        fit(_Mean(), torch.randn(32, 2), steps=2, batch_size=16, seed=0, progress=False,
            checkpoint=blocker / "checkpoint.pt")
    assert blocker.read_text() == "x"


def test_stale_temp_files_are_removed_but_others_are_kept(tmp_path):
    target = tmp_path / "checkpoint.pt"
    stale = tmp_path / f".checkpoint.pt.{'a' * 32}.tmp"
    stale.write_bytes(b"partial")
    unrelated = tmp_path / ".checkpoint.pt.notes.tmp"
    unrelated.write_text("mine")
    fit(_Mean(), torch.randn(32, 2), steps=2, batch_size=16, seed=0, progress=False, checkpoint=target)
    assert not stale.exists() and unrelated.exists()
    assert read_checkpoint(target)["training"]["step"] == 2


def test_fit_removes_temporary_outputs_a_killed_run_left(tmp_path, capsys):
    # a kill while samples.png or summary.json was being written leaves its temporary file; the next
    # run in the folder (--resume or --force) removes it and keeps everything else
    out = tmp_path / "run"
    out.mkdir()
    left = [out / ".samples.png.tmp-k3x9.png", out / ".summary.json.tmp-4242"]
    for path in left:
        path.write_bytes(b"partial")
    mine = out / "notes.txt"
    mine.write_text("keep")
    argv = ["fit", "flow", "--data", "8gaussians", "--steps", "2", "--out", str(out), "--no-progress",
            "--num-samples", "16"]
    assert cli.main(argv) == 0
    assert _temp_files(out) == [] and mine.read_text() == "keep"
