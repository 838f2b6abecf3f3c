"""Tests of probgen.distributed and of probgen.fit under torchrun (DDP, gloo, 2 CPU processes).

The multi-process test launches ``python -m torch.distributed.run --standalone --nproc_per_node=2``
once on a worker script (written to a temporary folder) that, on every rank:

1. fits a deterministic float64 least-squares model (global batch 15: uneven shards of 7 and 8 rows)
   and saves its loss history and final weights;
2. fits a model whose loss draws noise from the global RNG for 8 steps with checkpoints, counting
   which ranks called ``write_checkpoint``;
3. fits the same model for 4 steps, then a *fresh* model with ``resume=True`` to 8 steps (every rank
   loads the file) — the result must equal step 2 bit for bit (each rank's RNG streams are saved);
4. checks that a two-player model that does not average its own gradients is refused.

The test process then runs the same least-squares fit in a single process and compares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import probgen
from probgen import distributed
from probgen.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------ models
# (the same source is used by the worker: it is executed there from this string)
MODELS = '''
import torch
from torch import nn


class LeastSquares(nn.Module):
    """Linear regression with a deterministic mean-squared-error loss (a mean over rows)."""

    def __init__(self, dim=3):
        super().__init__()
        self.linear = nn.Linear(dim, 1).double()

    def loss(self, x, y):
        return (self.linear(x).squeeze(-1) - y).pow(2).mean()


class NoisyLeastSquares(LeastSquares):
    """The same, with input noise from the global RNG (like the noise of a diffusion loss)."""

    family = "toy-noisy-ls"

    def config(self):
        return {"dim": self.linear.in_features}

    def loss(self, x, y):
        return super().loss(x + 0.1 * torch.randn_like(x), y)


class TwoPlayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(3, dtype=torch.float64))

    def configure_optimizers(self, lr):
        return [torch.optim.SGD([self.a], lr=lr)]

    def training_step(self, batch, optimizers):
        return {"loss": 0.0}


def make_data(n=64, dim=3):
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.3 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y
'''
_ns: dict = {}
exec(compile(MODELS, "models", "exec"), _ns)
LeastSquares, make_data = _ns["LeastSquares"], _ns["make_data"]

WORKER = '''
import json, os, sys
import torch
import probgen
import probgen.training as training
from probgen import distributed

exec(open(os.path.join(os.path.dirname(__file__), "models.py")).read())
out = sys.argv[1]
rank = int(os.environ["RANK"])

# 1. deterministic trajectory, uneven shards
torch.manual_seed(0)
model = LeastSquares()
x, y = make_data()
hist = probgen.fit(model, (x, y), steps=12, batch_size=15, lr=0.05, seed=3, progress=False)
assert distributed.is_distributed() and distributed.rank_and_world_size() == (rank, 2)
torch.save({"losses": hist.losses, "state": model.state_dict()}, os.path.join(out, f"ls_rank{rank}.pt"))

# 2. checkpointed run, recording which ranks write
writers = []
original = training.write_checkpoint
def spy(path, payload):
    writers.append(rank)
    return original(path, payload)
training.write_checkpoint = spy
torch.manual_seed(1)
full = NoisyLeastSquares()
probgen.fit(full, (x, y), steps=8, batch_size=16, lr=0.05, seed=5, progress=False,
            checkpoint=os.path.join(out, "full.pt"), checkpoint_every=2)

# 3. stop at 4 steps, resume a fresh model to 8
torch.manual_seed(1)
part = NoisyLeastSquares()
probgen.fit(part, (x, y), steps=4, batch_size=16, lr=0.05, seed=5, progress=False,
            checkpoint=os.path.join(out, "part.pt"), checkpoint_every=2)
torch.manual_seed(99)  # a different initialisation: the checkpoint must override it
resumed = NoisyLeastSquares()
h = probgen.fit(resumed, (x, y), steps=8, batch_size=16, lr=0.05, seed=5, progress=False,
                checkpoint=os.path.join(out, "part.pt"), checkpoint_every=2, resume=True)
same = all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), resumed.state_dict().values()))

# 4. two-player models must average their own gradients
try:
    probgen.fit(TwoPlayer(), x, steps=1, batch_size=16, progress=False)
    refused = ""
except NotImplementedError as error:
    refused = str(error)

with open(os.path.join(out, f"report_rank{rank}.json"), "w") as fh:
    json.dump({"writers": writers, "resume_equal": same, "resumed_steps": h.steps_done, "refused": refused}, fh)
distributed.cleanup()
'''


def _launch(tmp_path: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
           f"--nproc_per_node={nproc}", str(tmp_path / "worker.py"), str(tmp_path)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def test_fit_under_torchrun_matches_single_process_and_resumes(tmp_path):
    proc = _launch(tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]

    # --- 1. the 2-rank trajectory equals the single-process one with the same global batch ---------
    torch.manual_seed(0)
    single = LeastSquares()
    x, y = make_data()
    hist = probgen.fit(single, (x, y), steps=12, batch_size=15, lr=0.05, seed=3, progress=False)
    ranks = [torch.load(tmp_path / f"ls_rank{r}.pt") for r in range(2)]
    # every rank reports the same global-batch loss and holds the same weights (DDP keeps them in sync)
    assert ranks[0]["losses"] == ranks[1]["losses"]
    for a, b in zip(ranks[0]["state"].values(), ranks[1]["state"].values()):
        assert torch.equal(a, b)
    # float64: the only differences are the summation order of the shards' means and of the gradient
    # all-reduce (a few ulp, ~1e-16 relative per step); 12 Adam steps on a smooth quadratic amplify them
    # by a modest factor, so 1e-10 relative leaves a margin of ~1e5, while any sharding or weighting
    # error (weighting the 7- and 8-row shards equally changes the gradient at the 1e-2 level) fails it.
    torch.testing.assert_close(torch.tensor(ranks[0]["losses"]), torch.tensor(hist.losses), rtol=1e-10, atol=0)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=1e-10, atol=1e-12)
    assert hist.losses[-1] < hist.losses[0]  # it did train

    reports = [json.loads((tmp_path / f"report_rank{r}.json").read_text()) for r in range(2)]
    # --- 2. only rank 0 wrote checkpoints (4 in the full run + 2 + 2 in the split run) --------------
    assert reports[0]["writers"] == [0] * 8
    assert reports[1]["writers"] == []
    record = read_checkpoint(tmp_path / "full.pt")
    assert record["training"]["step"] == 8 and record["training"]["fit_args"]["world_size"] == 2
    assert len(record["training"]["rng_per_rank"]) == 2
    # --- 3. resume under DDP reproduces the uninterrupted DDP run bit for bit on every rank ----------
    assert all(r["resume_equal"] and r["resumed_steps"] == 8 for r in reports)
    part = read_checkpoint(tmp_path / "part.pt")
    for a, b in zip(record["state_dict"].values(), part["state_dict"].values()):
        assert torch.equal(a, b)
    # --- 4. two-player models without their own gradient averaging are refused ----------------------
    for r in reports:
        assert "averages_gradients" in r["refused"] and "all_reduce_gradients" in r["refused"]


# ------------------------------------------------------------------------------------ single process


def test_single_process_helpers_are_no_ops():
    assert distributed.rank_and_world_size() == (0, 1)
    assert not distributed.is_distributed()
    assert distributed.init_from_env() is False
    assert distributed.all_reduce_metrics({"a": 2.0, "b": -1.0}) == {"a": 2.0, "b": -1.0}
    assert float(distributed.all_reduce_mean(torch.tensor(4.0), weight=1.0)) == 4.0
    assert distributed.any_rank(True) and not distributed.any_rank(False)
    assert distributed.broadcast_int(7) == 7
    assert distributed.all_gather_object({"x": 1}) == [{"x": 1}]
    distributed.barrier()
    p = nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    distributed.all_reduce_gradients([p])
    assert torch.equal(p.grad, torch.full((2,), 3.0))


@pytest.mark.parametrize("batch_size", [1, 2, 5, 15, 16, 257])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_shards_are_disjoint_balanced_and_cover_the_batch(batch_size, world_size):
    idx = torch.randperm(batch_size)
    parts = [distributed.shard(idx, rank=r, world_size=world_size) for r in range(world_size)]
    assert torch.equal(torch.cat(parts), idx)  # disjoint, in order, covering
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    # the loss weights W * n_r / B average to 1: the averaged gradient is the global mean's
    assert sum(world_size * n / batch_size for n in sizes) / world_size == pytest.approx(1.0)


def test_shard_bounds_validates_rank():
    with pytest.raises(ValueError, match=r"rank must be <= 1, got 2"):
        distributed.shard_bounds(10, rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"world_size must be >= 1, got 0"):
        distributed.shard_bounds(10, rank=0, world_size=0)


def test_init_from_env_names_missing_torchrun_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match=r"MASTER_ADDR, MASTER_PORT are not set; launch with torchrun"):
        distributed.init_from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match=r"WORLD_SIZE='two' must be an integer"):
        distributed.init_from_env()


def test_init_from_env_refuses_unknown_backend(monkeypatch):
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29999")):
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"unknown backend 'ucc'; valid choices: 'gloo', 'nccl', 'mpi'"):
        distributed.init_from_env(backend="ucc")


def test_default_backend():
    assert distributed.default_backend("cpu") == "gloo"
    assert distributed.default_backend(torch.device("cuda", 0)) == "nccl"
