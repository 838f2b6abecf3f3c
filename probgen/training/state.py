"""The resumable state of a :func:`probgen.fit` run: minibatch sampler, RNG states and the checkpoint payload.

A checkpoint written by ``fit`` holds the model (family, config, weights) and, under ``"training"``,
everything needed to continue exactly: the step, the fit arguments, the optimizer and scheduler
states, every RNG state (torch CPU/CUDA, Python, NumPy; one per rank under torchrun), the epoch
permutation and position of the minibatch sampler, and the history. :class:`Run` holds this state
while ``fit`` runs, builds the payload (:meth:`Run.payload`), restores it (:meth:`Run.restore`) and
writes it atomically (:meth:`Run.write`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from probgen import distributed
from probgen.checkpoint import CheckpointError, CheckpointWriteError, load_weights, model_header
from probgen.training.guard import all_finite, parameters_nonfinite
from probgen.training.history import History

__all__: list[str] = []  # internal to probgen.training

# fit arguments that must agree between a checkpoint and the run resuming it
_RESUME_ARGS = ("batch_size", "seed", "lr", "weight_decay", "grad_clip", "lr_schedule", "validation", "eval_every",
                "num_data", "two_player")


class BatchSampler:
    """Random-permutation epochs over ``N`` rows with a dedicated CPU generator.

    Each step takes the next ``batch_size`` indices of the current permutation; when fewer remain,
    a new permutation is drawn (the ``N mod batch_size`` leftover rows of an epoch are skipped, so
    every batch has the same size and every row the same chance). With ``N <= batch_size`` every
    batch is the whole data.

    Distributed: every rank draws the same permutation (the generator is seeded alike on every
    rank) and keeps its contiguous shard of each global batch (:func:`probgen.distributed.shard`),
    so the shards of one step are disjoint and together form the single-process batch.
    """

    def __init__(self, tensors: tuple[Tensor, ...], batch_size: int, generator: torch.Generator, *,
                 rank: int = 0, world_size: int = 1):
        self.tensors = tensors
        self.num_data = int(tensors[0].shape[0])
        self.batch_size = batch_size
        self.generator = generator
        self.permutation: Tensor | None = None
        self.position = 0
        self.rank, self.world_size = rank, world_size
        self.global_batch = min(self.num_data, batch_size)
        start, stop = distributed.shard_bounds(self.global_batch, rank=rank, world_size=world_size)
        #: this rank's share of the global batch, ``n_r / B`` (1 in a single process)
        self.weight = (stop - start) / self.global_batch

    def next(self) -> tuple[Tensor, ...]:
        if self.num_data <= self.batch_size:
            if self.world_size == 1:
                return self.tensors
            start, stop = distributed.shard_bounds(self.num_data, rank=self.rank, world_size=self.world_size)
            return tuple(t[start:stop] for t in self.tensors)
        if self.permutation is None or self.position + self.batch_size > self.num_data:
            self.permutation = torch.randperm(self.num_data, generator=self.generator)
            self.position = 0
        idx = self.permutation[self.position: self.position + self.batch_size]
        self.position += self.batch_size
        if self.world_size > 1:
            idx = distributed.shard(idx, rank=self.rank, world_size=self.world_size)
        device = self.tensors[0].device
        if device.type != "cpu":
            idx = idx.to(device, non_blocking=True)
        return tuple(t.index_select(0, idx) for t in self.tensors)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "permutation": None if self.permutation is None else self.permutation.clone(),
            "position": self.position,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        perm = state["permutation"]
        self.permutation = None if perm is None else perm.to(torch.long).cpu()
        self.position = int(state["position"])


# ----------------------------------------------------------------------------------------------
# RNG state


def rng_state(device: torch.device) -> dict[str, Any]:
    py_version, py_internal, py_gauss = random.getstate()
    np_key, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": {
            "key": str(np_key),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    np.random.set_state((npst["key"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))


# ----------------------------------------------------------------------------------------------
# the run: state, payload, restore, write


@dataclass
class Run:
    """The mutable state of one ``fit`` call (what a checkpoint saves), plus where it is written."""

    model: nn.Module
    steps: int
    target: Path | None
    optimizers: list[Optimizer]
    schedulers: list[LambdaLR]
    sampler: BatchSampler
    fit_args: dict[str, Any]
    device: torch.device
    rank: int = 0
    world_size: int = 1
    history: History = field(default_factory=History)
    #: the step held by the checkpoint on disk (``None`` before the first write of this run)
    saved_step: int | None = None
    #: validation and early stopping (:mod:`probgen.training.validation`), when ``fit`` got ``validation=``
    validator: Any = None

    def payload(self, step: int, rng: dict[str, Any], rng_per_rank: list[Any] | None) -> dict[str, Any]:
        """The checkpoint record at ``step``: the model header and weights, and the training state."""
        payload = model_header(self.model)
        payload["state_dict"] = self.model.state_dict()
        payload["extra"] = None
        payload["training"] = {
            "step": step,
            "fit_args": self.fit_args,
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [_scheduler_state(s) for s in self.schedulers],
            "rng": rng,
            "sampler": self.sampler.state_dict(),
            "history": self.history.to_dict(),
        }
        if rng_per_rank is not None:
            payload["training"]["rng_per_rank"] = rng_per_rank
        if self.validator is not None:
            payload["training"]["validation"] = self.validator.state_dict()
        return payload

    def write(self, step: int) -> None:
        """Write the checkpoint of ``step`` atomically (rank 0; every rank takes part), never from NaN weights."""
        if not all_finite(self.model):  # the same parameters on every rank: every rank stops together
            raise parameters_nonfinite(self, step, before_update=False)
        rng = rng_state(self.device)
        rng_per_rank = distributed.all_gather_object(rng) if self.world_size > 1 else None
        failure: BaseException | None = None
        if self.rank == 0:
            try:
                _write_checkpoint()(self.target, self.payload(step, rng, rng_per_rank))
            except Exception as error:  # noqa: BLE001 - re-raised below, after telling the other ranks
                failure = error
        if self.world_size > 1 and distributed.any_rank(failure is not None):  # also the barrier after the write
            if failure is not None:
                raise failure
            raise CheckpointWriteError(
                f"rank 0 could not write checkpoint {self.target} at step {step}; the previous file (if any) is intact"
            )
        if failure is not None:
            raise failure
        self.saved_step = step

    def restore(self, record: Mapping[str, Any], seed: int | None) -> int:
        """Load a checkpoint record written by :meth:`write` into this run; returns its step."""
        target, steps = self.target, self.steps
        training = record.get("training")
        if not isinstance(training, dict):
            raise CheckpointError(f"{target} was written by save(), not by fit; it holds no training state to resume")
        _check_resume(record, self.model, self.fit_args, target)
        start = int(training.get("step", -1))
        if start > steps:
            raise ValueError(f"cannot resume from {target}: it is at step {start}, beyond steps={steps}")
        optimizers, schedulers = self.optimizers, self.schedulers
        try:
            if len(training["optimizers"]) != len(optimizers) or len(training["schedulers"]) != len(schedulers):
                raise CheckpointError(
                    f"{target} holds {len(training['optimizers'])} optimizer state(s) and "
                    f"{len(training['schedulers'])} scheduler state(s); this run has {len(optimizers)} and "
                    f"{len(schedulers)}"
                )
            load_weights(self.model, record["state_dict"], target)
            for opt, state in zip(optimizers, training["optimizers"]):
                opt.load_state_dict(state)
            for sched, state in zip(schedulers, training["schedulers"]):
                sched.load_state_dict(state)
            rank_states = training.get("rng_per_rank")
            if self.world_size > 1 and isinstance(rank_states, list) and len(rank_states) == self.world_size:
                set_rng_state(rank_states[self.rank])  # each rank continues its own noise streams
            else:
                set_rng_state(training["rng"])
                if self.rank > 0:  # a different world size: decorrelate the ranks' noise (not bit-for-bit)
                    import pyro

                    pyro.set_rng_seed((seed or 0) + self.rank + 7919 * int(training.get("step", 0)))
            self.sampler.load_state_dict(training["sampler"])
            self.history = History.from_dict(training["history"])
            if self.validator is not None:
                self.validator.load_state_dict(training["validation"])
        except (KeyError, TypeError, IndexError, AttributeError, RuntimeError) as error:
            raise CheckpointError(
                f"{target} holds a malformed training state ({type(error).__name__}: {error})"
            ) from error
        if start < 0 or self.history.steps_done != start:
            raise CheckpointError(f"{target} holds a malformed training state (step {start}, "
                                  f"{self.history.steps_done} steps of history)")
        self.saved_step = start
        return start


def _write_checkpoint() -> Any:
    """``probgen.training.write_checkpoint``, looked up at each write so that it can be patched there."""
    import probgen.training

    return probgen.training.write_checkpoint


def _check_resume(record: Mapping[str, Any], model: nn.Module, fit_args: Mapping[str, Any], target: Path) -> None:
    """Refuse a checkpoint that belongs to another model or another run configuration."""
    header = model_header(model)
    if record.get("family") != header["family"]:
        raise CheckpointError(
            f"checkpoint {target} holds a {record.get('family')!r} model; the model passed to fit is a "
            f"{header['family']!r} model ({type(model).__name__})"
        )
    saved_config, config = record.get("config"), header["config"]
    if saved_config is not None and config is not None and _normalise(saved_config) != _normalise(config):
        raise CheckpointError(
            f"checkpoint {target} holds a model with config {saved_config}; the model passed to fit has config {config}"
        )
    saved_args = record["training"].get("fit_args", {})
    names = list(_RESUME_ARGS)
    if fit_args["lr_schedule"] == "cosine":
        names.append("steps")  # the cosine schedule depends on the total number of steps
    for name in names:
        if saved_args.get(name) != fit_args[name]:
            raise ValueError(
                f"cannot resume from {target}: {name}={fit_args[name]!r} but the checkpoint was trained with "
                f"{name}={saved_args.get(name)!r}; pass the same {name} or start a new run (resume=False)"
            )


def _normalise(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _normalise(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_normalise(v) for v in obj]
    return obj



def remove_stale_temp_files(target: Path) -> list[Path]:
    """Delete temporary files a killed writer left beside ``target`` (``.<name>.<32 hex>.tmp``).

    :func:`probgen.checkpoint.write_checkpoint` removes its temporary file on any error, but a
    process killed with SIGKILL (or a power cut) cannot; such a file is never read (readers open
    ``target`` only) and is removed here when the next run on the same checkpoint starts.
    """
    removed: list[Path] = []
    prefix = f".{target.name}."
    try:
        candidates = list(target.parent.iterdir()) if target.parent.is_dir() else []
    except OSError:
        return removed
    for path in candidates:
        name = path.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        token = name[len(prefix): -len(".tmp")]
        if len(token) == 32 and all(c in "0123456789abcdef" for c in token) and path.is_file():
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


def _scheduler_state(scheduler: LambdaLR) -> dict[str, Any]:
    """LambdaLR's state without its ``lr_lambdas`` (functions or their ``__dict__``: not plain data)."""
    state = scheduler.state_dict()
    state["lr_lambdas"] = [None] * len(state.get("lr_lambdas", []))
    return state

