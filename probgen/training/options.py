"""Argument checks of :func:`probgen.fit`: every option validated once, at entry, with the argument named.

:func:`check_fit_args` returns the checked options (:class:`Options`), including the data as a tuple of
tensors, the device and, under ``torchrun``, this process's rank and the world size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

from probgen import distributed
from probgen._checks import (
    check_bool,
    check_choice_or_callable,
    check_int,
    check_nonnegative,
    check_positive,
    check_probability,
    check_tensor,
)
from probgen.checkpoint import checkpoint_file

__all__: list[str] = []  # internal to probgen.training

PathLike = Union[str, os.PathLike]
Data = Union[Tensor, Sequence[Tensor], Any]

_SCHEDULES = ("constant", "cosine")


@dataclass
class Options:
    """The checked arguments of one ``fit`` call."""

    two_player: bool
    steps: int
    batch_size: int
    lr: float
    seed: int | None
    weight_decay: float
    grad_clip: float | None
    schedule: str | Callable[[int], float]
    log_every: int
    target: Path | None
    checkpoint_every: int | None
    tensors: tuple[Tensor, ...]
    device: torch.device
    rank: int = 0
    world_size: int = 1
    #: ``validation=``: ``None``, a fraction of the training rows to hold out, or held-out tensors
    validation: float | tuple[Tensor, ...] | None = None
    eval_every: int | None = None
    patience: int | None = None


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: the process group's when one is initialised, else ``(0, 1)``."""
    return distributed.rank_and_world_size()


def check_fit_args(model: Any, data: Data, *, steps: Any, batch_size: Any, lr: Any, seed: Any, device: Any,
                   checkpoint: Any, resume: Any, checkpoint_every: Any, progress: Any, grad_clip: Any,
                   weight_decay: Any, lr_schedule: Any, callback: Any, log_every: Any, batch_transform: Any,
                   validation: Any = None, eval_every: Any = None, patience: Any = None) -> Options:
    """Validate the arguments of :func:`probgen.fit` (and join the process group under torchrun)."""
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
        check_bool(flag_name, flag)
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
    tensors = prepare_data(data)
    validation, eval_every, patience = check_validation_args(model, tensors, validation, eval_every, patience,
                                                             two_player=two_player)
    dev = resolve_device(device, model)
    # ---- distributed (torchrun) -----------------------------------------------------------------
    distributed.init_from_env(device=dev)
    rank, world_size = rank_and_world_size()
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

    return Options(two_player, steps, batch_size, lr, seed, weight_decay, grad_clip, schedule, log_every, target,
                   checkpoint_every, tensors, dev, rank, world_size, validation, eval_every, patience)


def check_validation_args(model: Any, tensors: tuple[Tensor, ...], validation: Any, eval_every: Any, patience: Any,
                          *, two_player: bool) -> tuple[float | tuple[Tensor, ...] | None, int | None, int | None]:
    """Check ``validation`` (a fraction in ``(0, 1)`` or held-out tensors shaped like ``data``), ``eval_every``
    and ``patience`` (integers >= 1, only with ``validation``)."""
    if validation is None:
        for name, value in (("patience", patience), ("eval_every", eval_every)):
            if value is not None:
                raise ValueError(f"{name}={value!r} needs validation= (a fraction of the data to hold out, e.g. 0.1, "
                                 "or a held-out tensor)")
        return None, None, None
    if not callable(getattr(model, "loss", None)):
        raise TypeError(f"validation= scores the model's loss(*batch), which {type(model).__name__} does not have "
                        "(a two-player model); train it without validation")
    if isinstance(validation, (float, int)) and not isinstance(validation, bool):
        held: float | tuple[Tensor, ...] = check_probability("validation", validation, open_low=True, open_high=True)
    elif isinstance(validation, (Tensor, tuple, list)):
        try:
            held = prepare_data(validation)
        except (TypeError, ValueError) as error:
            raise type(error)(f"validation: {error}") from None
        if len(held) != len(tensors):
            raise ValueError(f"validation has {len(held)} tensor(s) but data has {len(tensors)}; pass the held-out "
                             "rows in the same form as data")
        for i, (v, t) in enumerate(zip(held, tensors)):
            if tuple(v.shape[1:]) != tuple(t.shape[1:]) or v.dtype != t.dtype:
                what = "validation" if len(held) == 1 else f"validation[{i}]"
                raise ValueError(f"{what} has rows of shape {tuple(v.shape[1:])} and dtype {v.dtype}; the data's "
                                 f"are {tuple(t.shape[1:])} and {t.dtype}")
    else:
        raise TypeError("validation must be None, a fraction in (0, 1) of the data to hold out, or a held-out Tensor "
                        f"(or tuple of tensors, like data); got {type(validation).__name__}")
    if eval_every is not None:
        eval_every = check_int("eval_every", eval_every, minimum=1)
    if patience is not None:
        patience = check_int("patience", patience, minimum=1)
    return held, eval_every, patience


def prepare_data(data: Data) -> tuple[Tensor, ...]:
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



def resolve_device(device: Any, model: nn.Module) -> torch.device:
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


def lr_factor(schedule: str | Callable[[int], float], steps: int) -> Callable[[int], float] | None:
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


