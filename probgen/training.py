"""``probgen.fit``: the one training loop for every probgen model.

``fit`` draws minibatches, takes optimizer steps, shows a progress bar, stops on a non-finite loss,
writes atomic checkpoints and resumes a run exactly where it stopped. It knows nothing about the
families: a model only has to follow the training contract of ``CONTRIBUTING.md``:

* ``model.loss(*batch) -> Tensor[]`` — a scalar to minimize; ``fit`` runs Adam on it (the default
  step), or
* ``model.configure_optimizers(lr) -> list[Optimizer]`` and ``model.training_step(batch,
  optimizers) -> dict`` with a ``"loss"`` entry — models with several players (GANs) run their
  own updates; extra entries (``"d_loss"``, ``"grad_norm"``, ...) are recorded as metrics;
* optionally ``model.on_fit_step(step)`` — called after each optimizer step (EMA, buffers).

Under ``torchrun`` the same call trains with DistributedDataParallel (see :mod:`probgen.distributed`
and ``docs/distributed.md``).

Example:
    >>> import torch
    >>> class Mean(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.mu = torch.nn.Parameter(torch.zeros(2))
    ...     def loss(self, x):
    ...         return ((x - self.mu) ** 2).sum(-1).mean()
    >>> data = torch.randn(512, 2) + 3.0
    >>> history = fit(Mean(), data, steps=300, batch_size=64, lr=0.1, seed=0, progress=False)
    >>> history.steps_done, history.final_loss < 3.0
    (300, True)
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from probgen import distributed
from probgen._checks import (
    check_choice_or_callable,
    check_int,
    check_nonnegative,
    check_positive,
    check_tensor,
)
from probgen.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    _load_weights,
    _model_header,
    checkpoint_file,
    read_checkpoint,
    write_checkpoint,
)

__all__ = ["fit", "History", "NonFiniteLossError"]

PathLike = Union[str, os.PathLike]
Data = Union[Tensor, Sequence[Tensor], Any]

_SCHEDULES = ("constant", "cosine")
_EMA_DECAY = 0.98  # smoothing of the loss shown on the progress bar
# fit arguments that must agree between a checkpoint and the run resuming it
_RESUME_ARGS = ("batch_size", "seed", "lr", "weight_decay", "grad_clip", "lr_schedule", "num_data", "two_player")


class NonFiniteLossError(FloatingPointError):
    """The loss (or the parameters) became NaN or infinite during :func:`fit`.

    Attributes:
        step: the (1-based) step at which it was detected.
        checkpoint_path: the checkpoint file kept on disk (the last good one), or ``None``.
        checkpoint_step: the step that checkpoint holds, or ``None`` if none was written.
        history: the :class:`History` up to the last good step.
    """

    def __init__(self, message: str, *, step: int, checkpoint_path: Path | None, checkpoint_step: int | None,
                 history: History):
        super().__init__(message)
        self.step = step
        self.checkpoint_path = checkpoint_path
        self.checkpoint_step = checkpoint_step
        self.history = history


@dataclass
class History:
    """What :func:`fit` returns: the loss at every step and any extra metrics.

    Attributes:
        losses: ``losses[i]`` is the training loss of step ``i + 1`` (on that step's minibatch,
            before its update).
        metrics: extra per-step values by name — ``"grad_norm"`` (the norm before clipping, when
            ``grad_clip`` is set) and whatever a ``training_step`` returns besides ``"loss"``; a
            list grows at each step that reports the name.
        wall_time: seconds spent in the loop, summed over resumed sessions.
        steps_done: steps taken so far (``len(losses)``).

    Example:
        >>> h = History(losses=[2.0, 1.5], steps_done=2)
        >>> h.final_loss, History.from_dict(h.to_dict()) == h
        (1.5, True)
    """

    losses: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    wall_time: float = 0.0
    steps_done: int = 0

    @property
    def final_loss(self) -> float | None:
        """The loss of the last step, or ``None`` before any step."""
        return self.losses[-1] if self.losses else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (plain floats, ints and lists)."""
        return {
            "losses": [float(v) for v in self.losses],
            "metrics": {k: [float(v) for v in vs] for k, vs in self.metrics.items()},
            "wall_time": float(self.wall_time),
            "steps_done": int(self.steps_done),
            "final_loss": self.final_loss,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        """Inverse of :meth:`to_dict` (``final_loss`` is derived, so ignored)."""
        return cls(
            losses=[float(v) for v in d.get("losses", [])],
            metrics={str(k): [float(v) for v in vs] for k, vs in dict(d.get("metrics", {})).items()},
            wall_time=float(d.get("wall_time", 0.0)),
            steps_done=int(d.get("steps_done", len(d.get("losses", [])))),
        )

    def _append(self, loss: float, metrics: Mapping[str, float]) -> None:
        self.losses.append(loss)
        for name, value in metrics.items():
            self.metrics.setdefault(name, []).append(value)
        self.steps_done += 1


# ----------------------------------------------------------------------------------------------
# distributed hook


def _rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: the process group's when one is initialised, else ``(0, 1)``."""
    return distributed.rank_and_world_size()


class _LossForward(nn.Module):
    """``forward(*batch) = model.loss(*batch)``: what :class:`DistributedDataParallel` wraps.

    DDP synchronises the gradients of the parameters used in ``forward``; probgen models expose
    ``loss`` rather than ``forward``, so this module routes one to the other.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *batch: Tensor) -> Tensor:
        return self.model.loss(*batch)


# ----------------------------------------------------------------------------------------------
# data and minibatches


def _prepare_data(data: Data) -> tuple[Tensor, ...]:
    """Validate ``data`` and return it as a tuple of tensors sharing dimension 0."""
    if isinstance(data, Tensor):
        tensors: tuple[Any, ...] = (data,)
        names = ["data"]
    elif isinstance(data, (tuple, list)):
        if len(data) == 0:
            raise ValueError("data is an empty tuple; expected a Tensor (N, *event) or a tuple of tensors")
        tensors = tuple(data)
        names = [f"data[{i}]" for i in range(len(tensors))]
    elif hasattr(data, "train"):
        tensors = (data.train,)
        names = ["data.train"]
    else:
        raise TypeError(
            "data must be a Tensor (N, *event), a tuple of tensors sharing dimension 0, or a data set with a "
            f".train tensor; got {type(data).__name__}"
        )
    for i, (name, t) in enumerate(zip(names, tensors)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.is_meta:
            raise ValueError(
                f"{name} is on the 'meta' device (a shape without values); pass real data on 'cpu' or 'cuda'"
            )
        # the first tensor holds the observations: floating; later ones may be labels (integers)
        check_tensor(name, t, min_ndim=1, floating=(i == 0 or t.is_floating_point()))
    n = tensors[0].shape[0]
    for name, t in zip(names[1:], tensors[1:]):
        if t.shape[0] != n:
            raise ValueError(
                f"{name} has {t.shape[0]} rows but {names[0]} has {n}; tensors in data must share dimension 0"
            )
    return tensors


class _BatchSampler:
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


def _rng_state(device: torch.device) -> dict[str, Any]:
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


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    np.random.set_state((npst["key"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))


# ----------------------------------------------------------------------------------------------
# argument helpers


def _resolve_device(device: Any, model: nn.Module) -> torch.device:
    if device is None:
        first = next(chain(model.parameters(), model.buffers()), None)
        dev = first.device if first is not None else torch.device("cpu")
    elif isinstance(device, str):
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(
                f"device {device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:0' or a torch.device"
            ) from None
    elif isinstance(device, torch.device):
        dev = device
    else:
        raise TypeError(f"device must be None, a str or a torch.device, got {type(device).__name__} {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(dev)!r} was requested but CUDA is not available (torch {torch.__version__}); "
                "use device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(dev)!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    if dev.type == "meta":
        what = f"device {str(dev)!r} holds" if device is not None else "the model's parameters are on the 'meta' " \
            "device, which holds"
        raise ValueError(
            f"{what} shapes without values and cannot train; valid devices: 'cpu', 'cuda', 'cuda:N', 'mps' "
            "(materialise a meta model with model.to_empty(device='cpu') and initialise it)"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was requested but MPS is not available; use device='cpu'")
    return dev


def _lr_factor(schedule: str | Callable[[int], float], steps: int) -> Callable[[int], float] | None:
    """Multiplier of the base learning rate at 0-based step ``k``; ``None`` for a constant rate."""
    if schedule == "constant":
        return None
    if schedule == "cosine":
        return lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, steps) / steps))

    def user_factor(k: int) -> float:
        value = schedule(k)  # type: ignore[operator]
        if isinstance(value, Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"lr_schedule({k}) must return a finite number >= 0 (a factor on lr), got {value!r}")
        return float(value)

    return user_factor


def _as_metric(name: str, value: Any) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"training_step returned {name!r} with shape {tuple(value.shape)}; expected a scalar")
        return float(value.detach().item())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"training_step returned {name!r} = {value!r}; expected a float or a scalar tensor")
    return float(value)


def _check_loss(model: nn.Module, loss: Any) -> Tensor:
    name = f"{type(model).__name__}.loss"
    if not isinstance(loss, Tensor):
        raise TypeError(f"{name} must return a scalar torch.Tensor, got {type(loss).__name__}")
    if loss.dim() != 0:
        raise ValueError(
            f"{name} returned shape {tuple(loss.shape)}; expected a scalar (reduce the batch, e.g. .mean())"
        )
    return loss


def _describe(model: nn.Module) -> str:
    family = getattr(type(model), "family", None)
    return str(family) if isinstance(family, str) else type(model).__name__


def _check_resume(record: Mapping[str, Any], model: nn.Module, fit_args: Mapping[str, Any], target: Path) -> None:
    """Refuse a checkpoint that belongs to another model or another run configuration."""
    header = _model_header(model)
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


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point())


# ----------------------------------------------------------------------------------------------
# fit


def fit(
    model: nn.Module,
    data: Data,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int | None = None,
    device: str | torch.device | None = None,
    checkpoint: PathLike | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
    progress: bool = True,
    grad_clip: float | None = None,
    weight_decay: float = 0.0,
    lr_schedule: str | Callable[[int], float] | None = None,
    callback: Callable[[int, float, dict[str, float]], Any] | None = None,
    log_every: int = 10,
    batch_transform: Callable[[Tensor], Tensor] | None = None,
) -> History:
    r"""Train ``model`` on ``data`` for ``steps`` minibatch steps.

    The default step minimizes the model's loss with Adam (Kingma & Ba, 2014, arXiv:1412.6980):

    .. math::

        \theta_{k+1} = \mathrm{Adam}\big(\theta_k,\ \nabla_\theta\, \mathcal{L}(\theta_k; x_{B_k}),\
        \eta\, \rho(k)\big),

    where :math:`x_{B_k}` is minibatch ``k`` (``batch_size`` rows of a random permutation,
    reshuffled each epoch), :math:`\eta` is ``lr`` and :math:`\rho` the ``lr_schedule`` factor
    (``"cosine"``: :math:`\rho(k) = \tfrac12(1 + \cos(\pi k / \text{steps}))`, Loshchilov & Hutter,
    2016, arXiv:1608.03983).

    Data: ``data: (N, *event)`` (a batch is passed as ``model.loss(batch)``), a tuple of tensors
    sharing dimension 0 (``model.loss(*batch)``), or a data set object with a ``.train`` tensor.
    The whole data set is moved to ``device`` once (the built-in sets are small); minibatch indices
    are drawn on the CPU by a dedicated generator. The model is put in train mode.

    Reproducibility: ``seed`` seeds a dedicated minibatch generator and the global torch, Python
    and NumPy RNGs (through ``pyro.set_rng_seed``, since models draw their noise from them), so
    the same seed gives the same weights on the same machine. ``seed=None`` leaves the global RNGs
    alone and seeds the minibatch generator from the OS.

    Checkpoints: with ``checkpoint=path`` a checkpoint is written atomically every
    ``checkpoint_every`` steps and after the last one; it holds the model (family, config, weights),
    the optimizer and scheduler states, every RNG state, the epoch permutation, the history and the
    fit arguments. ``resume=True`` continues from it to ``steps`` and reproduces the uninterrupted
    run exactly on CPU; without a file at ``path`` it starts a fresh run. A run resumes only with
    the same model family and config and the same ``batch_size``, ``seed``, ``lr``,
    ``weight_decay``, ``grad_clip``, ``lr_schedule`` (and ``steps`` for ``"cosine"``) and data size.

    Distributed training: launched with ``torchrun --nproc_per_node=N script.py`` (or any launcher
    setting ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), ``fit`` initialises the
    process group itself if it is not initialised yet (NCCL for CUDA, gloo for CPU; see
    :mod:`probgen.distributed`), moves each rank to ``cuda:LOCAL_RANK`` when ``device="cuda"``, and
    trains with :class:`~torch.nn.parallel.DistributedDataParallel` around ``model.loss``.
    ``batch_size`` is the **global** batch: every rank draws the same permutation from ``seed`` and
    takes its contiguous shard of each batch, and rank ``r``'s loss is weighted by
    :math:`W n_r / B` so that the averaged gradient is that of the mean loss over the global batch
    — for a loss that is a mean over rows, ``N`` processes follow the single-process trajectory up
    to floating-point rounding. Pass the full data on every rank. ``history`` holds the
    global-batch loss on every rank. Model noise (``torch.randn`` inside ``loss``) is seeded with
    ``seed + rank``. Checkpoints are written by rank 0 while the others wait, and hold every rank's
    RNG state, so a resumed run with the same world size continues exactly; every rank reads the
    checkpoint on resume (put it on a file system all ranks see). The progress bar shows on rank 0
    only; ``callback`` runs on every rank. Two-player models (``training_step``) are supported only
    if they average their own gradients (:func:`probgen.distributed.all_reduce_gradients`) and set
    ``averages_gradients = True``; otherwise ``fit`` raises :class:`NotImplementedError`. ``fit``
    leaves the process group initialised; call :func:`probgen.distributed.cleanup` at the end.

    Non-finite values: when the loss of a step is NaN or infinite, ``fit`` stops with
    :class:`NonFiniteLossError` before that step updates the weights; checkpoints are never written
    from non-finite parameters, so the file on disk is the last good one.

    Args:
        model: an ``nn.Module`` with ``loss(*batch) -> Tensor[]``, or with
            ``configure_optimizers(lr)`` and ``training_step(batch, optimizers) -> dict`` (two-player
            models; ``fit`` then neither clips gradients nor applies ``weight_decay``), and
            optionally ``on_fit_step(step)``.
        data: the training data (see above); float32/float64, finite, non-empty.
        steps: total number of optimizer steps (>= 1), counting steps of a resumed run.
        batch_size: rows per minibatch (the global batch, summed over ranks under torchrun); the
            whole data when ``N <= batch_size``.
        lr: Adam learning rate (> 0); passed to ``configure_optimizers`` for two-player models.
        seed: integer seed (>= 0), or ``None``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``; default: the model's device.
        checkpoint: checkpoint file (e.g. ``"run/checkpoint.pt"``) or existing folder
            (``checkpoint.pt`` inside).
        resume: continue from ``checkpoint`` if it exists.
        checkpoint_every: steps between checkpoints; default ``max(steps // 10, 1)``.
        progress: show a tqdm bar on stderr with the smoothed loss; ``False`` prints nothing.
        grad_clip: clip the global gradient norm to this value (``clip_grad_norm_``); the norm
            before clipping is recorded as ``history.metrics["grad_norm"]``.
        weight_decay: Adam's L2 penalty (>= 0).
        lr_schedule: ``"constant"`` (default, also ``None``), ``"cosine"``, or a callable mapping the
            0-based step ``k`` to a factor on ``lr``.
        callback: called as ``callback(step, loss, metrics)`` after each step (1-based ``step``).
        log_every: steps between progress-bar refreshes of the shown loss.
        batch_transform: applied to the first tensor of every minibatch before the step, e.g.
            fresh uniform dequantization noise for discrete data
            (``lambda k: probgen.data.dequantize(k, 17) * 2 - 1``); it may draw from the global RNG,
            whose state checkpoints keep, so a resumed run still reproduces an uninterrupted one.

    Returns:
        The :class:`History` of the run (for a resumed run, including the steps before the resume).

    Raises:
        TypeError, ValueError: invalid arguments, with the argument named.
        NonFiniteLossError: the loss or the parameters became NaN/inf.
        NotImplementedError: a two-player model under torchrun that does not average its gradients.
        CheckpointError: the checkpoint to resume from is unusable or belongs to another model.
        CheckpointWriteError: a checkpoint could not be written (the previous one is intact).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(1, 1)
        >>> model.loss = lambda xy: ((model(xy[:, :1]) - xy[:, 1:]) ** 2).mean()
        >>> x = torch.linspace(-1, 1, 64)[:, None]
        >>> h = fit(model, torch.cat([x, 2 * x], 1), steps=200, lr=0.05, seed=0, progress=False)
        >>> round(model.weight.item(), 1)
        2.0
    """
    # ---- validate ---------------------------------------------------------------------------
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    two_player = callable(getattr(model, "training_step", None))
    if two_player and not callable(getattr(model, "configure_optimizers", None)):
        raise TypeError(
            f"{type(model).__name__} defines training_step but not configure_optimizers(lr) -> list[Optimizer]; "
            "define both, or only loss(*batch)"
        )
    if not two_player and not callable(getattr(model, "loss", None)):
        raise TypeError(
            f"{type(model).__name__} has no loss(*batch) method (nor training_step/configure_optimizers); "
            "fit needs one of them"
        )
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    lr = check_positive("lr", lr)
    if seed is not None:
        seed = check_int("seed", seed, minimum=0)
    weight_decay = check_nonnegative("weight_decay", weight_decay)
    if grad_clip is not None:
        grad_clip = check_positive("grad_clip", grad_clip)
    schedule = check_choice_or_callable("lr_schedule", "constant" if lr_schedule is None else lr_schedule, _SCHEDULES)
    log_every = check_int("log_every", log_every, minimum=1)
    for flag_name, flag in (("progress", progress), ("resume", resume)):
        if not isinstance(flag, bool):
            raise TypeError(f"{flag_name} must be True or False, got {type(flag).__name__} {flag!r}")
    if batch_transform is not None and not callable(batch_transform):
        raise TypeError(f"batch_transform must be callable or None, got {type(batch_transform).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if checkpoint is None:
        if resume:
            raise ValueError("resume=True needs checkpoint=<path> to resume from")
        if checkpoint_every is not None:
            raise ValueError("checkpoint_every is set but checkpoint is None; pass checkpoint=<path>")
        target = None
    else:
        target = checkpoint_file(checkpoint)
        checkpoint_every = max(steps // 10, 1) if checkpoint_every is None else check_int(
            "checkpoint_every", checkpoint_every, minimum=1)
    if two_player and grad_clip is not None:
        raise ValueError(
            "grad_clip applies to the default step only; a model with training_step clips its own gradients"
        )
    if two_player and weight_decay != 0.0:
        raise ValueError(
            "weight_decay applies to the default Adam step only; a model with training_step sets it in "
            "configure_optimizers"
        )
    tensors = _prepare_data(data)
    dev = _resolve_device(device, model)
    # ---- distributed (torchrun) -----------------------------------------------------------------
    distributed.init_from_env(device=dev)
    rank, world_size = _rank_and_world_size()
    if world_size > 1:
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", distributed.local_rank())  # one GPU per process
        if two_player and not getattr(model, "averages_gradients", False):
            raise NotImplementedError(
                f"{type(model).__name__} trains with its own training_step, which fit cannot wrap in "
                f"DistributedDataParallel (world size {world_size}); average the gradients inside training_step "
                "with probgen.distributed.all_reduce_gradients(params) and set the class attribute "
                "averages_gradients = True, or train it in a single process"
            )
        sizes = distributed.all_gather_object(int(tensors[0].shape[0]))
        if len(set(sizes)) != 1:
            raise ValueError(
                f"data must be the same on every rank under torchrun; ranks hold {sizes} rows (pass the full "
                "data set to fit on every rank: fit shards each global batch itself)"
            )
        if min(sizes[0], batch_size) < world_size:
            raise ValueError(
                f"batch_size={batch_size} (or the data size {sizes[0]}) is smaller than the world size {world_size}; "
                "every rank needs at least one row of each global batch"
            )
        if seed is None:  # every rank must draw the same permutations
            seed = distributed.broadcast_int(int(torch.randint(0, 2**62, ()).item()) if rank == 0 else 0)
    param_dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(param_dtypes) == 1 and tensors[0].dtype not in param_dtypes:
        (param_dtype,) = param_dtypes
        raise ValueError(
            f"data has dtype {tensors[0].dtype} but the model's parameters are {param_dtype}; convert one of "
            f"them (e.g. data.to({param_dtype}))"
        )

    # ---- set up -----------------------------------------------------------------------------
    model.to(dev)
    model.train()
    tensors = tuple(t.to(dev) for t in tensors)
    if seed is not None:
        import pyro

        # torch (CPU and CUDA), Python and NumPy; ranks > 0 draw their model noise from other streams
        pyro.set_rng_seed(seed + rank)
    generator = torch.Generator(device="cpu")
    if seed is not None:
        generator.manual_seed(seed)  # the same minibatch permutations on every rank
    else:
        generator.seed()
    sampler = _BatchSampler(tensors, batch_size, generator, rank=rank, world_size=world_size)

    if two_player:
        optimizers = model.configure_optimizers(lr)
        if isinstance(optimizers, Optimizer):
            optimizers = [optimizers]
        if not isinstance(optimizers, (list, tuple)) or not optimizers or not all(
                isinstance(o, Optimizer) for o in optimizers):
            raise TypeError(
                f"{type(model).__name__}.configure_optimizers(lr) must return a non-empty list of "
                f"torch.optim.Optimizer, got {optimizers!r}"
            )
        optimizers = list(optimizers)
        params: list[Tensor] = []
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(model).__name__} has no trainable parameters")
        # foreach: one fused loop over all tensors (torch's default only on CUDA); on a CPU it saves ~0.3 ms a
        # step for a small flow's two dozen parameter tensors, the same update up to floating-point rounding
        optimizers = [torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)]
    # the loss goes through DDP's forward so that backward averages the gradients over ranks
    loss_forward: Callable[..., Tensor] = model.training_step if two_player else model.loss
    if world_size > 1 and not two_player:
        loss_forward = DistributedDataParallel(
            _LossForward(model), device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=False,
        )  # also broadcasts rank 0's parameters and buffers, and rank 0's buffers before each forward
    elif world_size > 1:
        distributed.broadcast_module(model)
    loss_scale = world_size * sampler.weight  # n_r / B relative to an equal share: exact global mean
    factor = _lr_factor(schedule, steps)
    schedulers = [LambdaLR(o, factor) for o in optimizers] if factor is not None else []

    fit_args: dict[str, Any] = {
        "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "weight_decay": weight_decay,
        "grad_clip": grad_clip, "lr_schedule": schedule if isinstance(schedule, str) else "callable",
        "checkpoint_every": checkpoint_every, "num_data": sampler.num_data, "two_player": two_player,
        "device": str(dev), "world_size": world_size,
    }

    history = History()
    start = 0
    saved_step: int | None = None
    if resume and target is not None and target.is_file():
        record = read_checkpoint(target)
        training = record.get("training")
        if not isinstance(training, dict):
            raise CheckpointError(f"{target} was written by save(), not by fit; it holds no training state to resume")
        _check_resume(record, model, fit_args, target)
        start = int(training.get("step", -1))
        if start > steps:
            raise ValueError(f"cannot resume from {target}: it is at step {start}, beyond steps={steps}")
        try:
            if len(training["optimizers"]) != len(optimizers) or len(training["schedulers"]) != len(schedulers):
                raise CheckpointError(
                    f"{target} holds {len(training['optimizers'])} optimizer state(s) and "
                    f"{len(training['schedulers'])} scheduler state(s); this run has {len(optimizers)} and "
                    f"{len(schedulers)}"
                )
            _load_weights(model, record["state_dict"], target)
            for opt, state in zip(optimizers, training["optimizers"]):
                opt.load_state_dict(state)
            for sched, state in zip(schedulers, training["schedulers"]):
                sched.load_state_dict(state)
            rank_states = training.get("rng_per_rank")
            if world_size > 1 and isinstance(rank_states, list) and len(rank_states) == world_size:
                _set_rng_state(rank_states[rank])  # each rank continues its own noise streams
            else:
                _set_rng_state(training["rng"])
                if rank > 0:  # a different world size: decorrelate the ranks' noise (not bit-for-bit)
                    import pyro

                    pyro.set_rng_seed((seed or 0) + rank + 7919 * int(training.get("step", 0)))
            sampler.load_state_dict(training["sampler"])
            history = History.from_dict(training["history"])
        except (KeyError, TypeError, IndexError, AttributeError, RuntimeError) as error:
            raise CheckpointError(
                f"{target} holds a malformed training state ({type(error).__name__}: {error})"
            ) from error
        if start < 0 or history.steps_done != start:
            raise CheckpointError(f"{target} holds a malformed training state (step {start}, "
                                  f"{history.steps_done} steps of history)")
        saved_step = start

    writes_checkpoints = target is not None  # every rank takes part; rank 0 alone writes the file
    if target is not None and rank == 0:
        _remove_stale_temp_files(target)

    def write(step: int) -> None:
        nonlocal saved_step
        if not _all_finite(model):  # the same parameters on every rank: every rank stops together
            raise NonFiniteLossError(
                f"parameters of {_describe(model)} are NaN/inf after step {step}; the checkpoint was not "
                f"written{_kept(target, saved_step)}",
                step=step, checkpoint_path=target if saved_step is not None else None,
                checkpoint_step=saved_step, history=history,
            )
        rng = _rng_state(dev)
        rng_per_rank = distributed.all_gather_object(rng) if world_size > 1 else None
        failure: BaseException | None = None
        if rank == 0:
            payload = _model_header(model)
            payload["state_dict"] = model.state_dict()
            payload["extra"] = None
            payload["training"] = {
                "step": step,
                "fit_args": fit_args,
                "optimizers": [o.state_dict() for o in optimizers],
                "schedulers": [_scheduler_state(s) for s in schedulers],
                "rng": rng,
                "sampler": sampler.state_dict(),
                "history": history.to_dict(),
            }
            if rng_per_rank is not None:
                payload["training"]["rng_per_rank"] = rng_per_rank
            try:
                write_checkpoint(target, payload)
            except Exception as error:  # noqa: BLE001 - re-raised below, after telling the other ranks
                failure = error
        if world_size > 1 and distributed.any_rank(failure is not None):  # also the barrier after the write
            if failure is not None:
                raise failure
            raise CheckpointWriteError(
                f"rank 0 could not write checkpoint {target} at step {step}; the previous file (if any) is intact"
            )
        if failure is not None:
            raise failure
        saved_step = step

    # ---- loop -------------------------------------------------------------------------------
    on_fit_step = getattr(model, "on_fit_step", None)
    on_fit_step = on_fit_step if callable(on_fit_step) else None
    ema, ema_weight = 0.0, 0.0
    wall_before = history.wall_time
    t0 = time.perf_counter()
    bar = _progress_bar(progress and rank == 0, steps, start, _describe(model))
    try:
        for step in range(start + 1, steps + 1):
            batch = sampler.next()
            if batch_transform is not None:
                batch = (batch_transform(batch[0]), *batch[1:])
            metrics: dict[str, float] = {}
            if two_player:
                try:
                    out = model.training_step(batch, optimizers)
                except Exception as error:  # noqa: BLE001 - re-raised as is unless the parameters are NaN
                    raise _poisoned(model, "training_step", error, step, steps, target, saved_step, history)
                if not isinstance(out, Mapping) or "loss" not in out:
                    raise TypeError(
                        f"{type(model).__name__}.training_step must return a dict with a 'loss' entry, got {out!r}"
                    )
                metrics = {str(k): _as_metric(str(k), v) for k, v in out.items()}
                if world_size > 1:
                    metrics = distributed.all_reduce_metrics(metrics, weight=sampler.weight)
                loss_value = metrics.pop("loss")
                if not math.isfinite(loss_value):
                    raise _nonfinite("training_step reported a loss of", loss_value, step, steps, target,
                                     saved_step, history, updated=True)
            else:
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                try:
                    loss = _check_loss(model, loss_forward(*batch))
                except Exception as error:  # noqa: BLE001 - re-raised as is unless the parameters are NaN
                    raise _poisoned(model, "loss", error, step, steps, target, saved_step, history)
                if world_size > 1:  # the global-batch mean, identical on every rank
                    loss_value = float(distributed.all_reduce_mean(loss, weight=sampler.weight).item())
                    loss = loss * loss_scale if loss_scale != 1.0 else loss
                else:
                    loss_value = float(loss.detach().item())
                if not math.isfinite(loss_value):
                    raise _nonfinite("the loss is", loss_value, step, steps, target, saved_step, history, updated=False)
                if not loss.requires_grad:
                    raise ValueError(
                        f"{type(model).__name__}.loss returned a tensor that does not require grad; it must depend "
                        "on the model's parameters"
                    )
                loss.backward()
                if grad_clip is not None:
                    norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
                    if not math.isfinite(norm):
                        raise _nonfinite("the gradient norm is", norm, step, steps, target, saved_step, history,
                                         updated=False)
                    metrics["grad_norm"] = norm
                for opt in optimizers:
                    opt.step()
            for sched in schedulers:
                sched.step()
            if world_size > 1 and step == start + 1:
                # data-dependent initialisation (e.g. ActNorm on the first batch) ran on each rank's own
                # shard: make every rank start from rank 0's parameters (identical from then on)
                distributed.broadcast_module(model)
            if on_fit_step is not None:
                on_fit_step(step)
            history._append(loss_value, metrics)
            history.wall_time = wall_before + (time.perf_counter() - t0)
            if callback is not None:
                callback(step, loss_value, dict(metrics))
            ema = _EMA_DECAY * ema + (1.0 - _EMA_DECAY) * loss_value
            ema_weight = _EMA_DECAY * ema_weight + (1.0 - _EMA_DECAY)
            bar.update(1)
            if step % log_every == 0 or step == steps:
                bar.set_postfix(loss=f"{ema / ema_weight:.4g}", refresh=False)
            if writes_checkpoints and (step % checkpoint_every == 0 or step == steps):
                write(step)
    finally:
        bar.close()
    history.wall_time = wall_before + (time.perf_counter() - t0)
    return history


def _remove_stale_temp_files(target: Path) -> list[Path]:
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


def _kept(target: Path | None, saved_step: int | None) -> str:
    if target is None:
        return "; no checkpoint was requested (pass checkpoint=<path> to keep one)"
    if saved_step is None:
        return f"; no checkpoint had been written yet to {target}"
    return f"; the last good checkpoint (step {saved_step}) is kept at {target}"


def _nonfinite(what: str, value: float, step: int, steps: int, target: Path | None, saved_step: int | None,
               history: History, *, updated: bool) -> NonFiniteLossError:
    when = "after its own update" if updated else "before this step updated the weights"
    return NonFiniteLossError(
        f"{what} {value} at step {step} of {steps}; training stopped {when}{_kept(target, saved_step)}. "
        "Try a smaller lr, grad_clip, or check the data and the model",
        step=step, checkpoint_path=target if saved_step is not None else None, checkpoint_step=saved_step,
        history=history,
    )


def _poisoned(model: nn.Module, method: str, error: BaseException, step: int, steps: int, target: Path | None,
              saved_step: int | None, history: History) -> BaseException:
    """The exception to raise when ``model.<method>`` failed: a :class:`NonFiniteLossError` if the
    parameters are NaN/inf (a model's own input checks or distributions often refuse NaN before a
    NaN loss could appear), else ``error`` itself."""
    if isinstance(error, NonFiniteLossError) or _all_finite(model):
        return error
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    nonfinite = NonFiniteLossError(
        f"the parameters of {_describe(model)} are NaN/inf at step {step} of {steps}: {type(model).__name__}."
        f"{method} failed with {type(error).__name__}: {first}; training stopped before this step updated the "
        f"weights{_kept(target, saved_step)}. Try a smaller lr, grad_clip, or check the data and the model",
        step=step, checkpoint_path=target if saved_step is not None else None, checkpoint_step=saved_step,
        history=history,
    )
    nonfinite.__cause__ = error
    return nonfinite


def _progress_bar(progress: bool, steps: int, start: int, name: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=steps, initial=start, desc=f"fit {name}", disable=not progress, file=sys.stderr,
                dynamic_ncols=True, leave=True)
