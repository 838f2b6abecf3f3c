"""Small helpers over :mod:`torch.distributed` for data-parallel training with ``torchrun``.

:func:`probgen.fit` uses these to train one model on several processes (one per GPU, or several CPU
processes with the gloo backend) with :class:`torch.nn.parallel.DistributedDataParallel`. The
scheme is synchronous data parallelism (Li et al., 2020, arXiv:2006.15704): every rank holds a
full copy of the model, computes the loss on its own shard of the global minibatch, and the
gradients are averaged across ranks before each optimizer step, so every rank takes the same step.

Launching: ``torchrun --nproc_per_node=N script.py`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env` (called by ``fit``) turns them into an
initialised process group — NCCL when training on CUDA, gloo on CPU. Without those variables (a
plain ``python script.py``) everything here is a no-op for a single process of rank 0.

Sharding: the global minibatch ``B`` is cut into ``W`` contiguous shards whose sizes differ by at
most one (:func:`shard_bounds`); rank ``r`` weights its mean loss by :math:`W n_r / B` so that the
averaged gradient is exactly the gradient of the mean loss over the whole global batch:

.. math::

    \\frac{1}{W} \\sum_{r=0}^{W-1} \\nabla \\Big(\\frac{W n_r}{B} \\bar\\ell_r\\Big)
    = \\nabla \\frac{1}{B} \\sum_{i \\in \\text{batch}} \\ell_i .

Example:
    >>> rank_and_world_size()          # a plain process: rank 0 of 1
    (0, 1)
    >>> shard_bounds(10, rank=1, world_size=3)
    (3, 6)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from probgen._checks import check_int

__all__ = [
    "init_from_env",
    "is_distributed",
    "rank_and_world_size",
    "local_rank",
    "default_backend",
    "shard_bounds",
    "shard",
    "all_reduce_sum",
    "all_reduce_mean",
    "all_reduce_metrics",
    "broadcast_int",
    "broadcast_module",
    "all_reduce_gradients",
    "all_gather_object",
    "any_rank",
    "barrier",
    "cleanup",
]

_ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} must be an integer (as set by torchrun)") from None


def is_distributed() -> bool:
    """``True`` when a process group with more than one process is initialised."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: from the process group when one is initialised, else ``(0, 1)``.

    Example:
        >>> rank_and_world_size()
        (0, 1)
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def local_rank() -> int:
    """The rank of this process on its machine (``LOCAL_RANK``, set by torchrun); ``0`` otherwise."""
    return _env_int("LOCAL_RANK", 0)


def default_backend(device: str | torch.device) -> str:
    """``"nccl"`` for a CUDA device, ``"gloo"`` otherwise.

    Example:
        >>> default_backend("cpu")
        'gloo'
    """
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init_from_env(*, device: str | torch.device = "cpu", backend: str | None = None) -> bool:
    """Initialise the default process group from torchrun's environment variables, if needed.

    Does nothing (and returns whether a multi-process group is active) when a group is already
    initialised — by the user or by an earlier call — or when ``WORLD_SIZE`` is unset or 1.

    Args:
        device: the training device; picks the backend when ``backend`` is ``None``.
        backend: ``"gloo"``, ``"nccl"`` or ``"mpi"``; default :func:`default_backend` of ``device``.

    Returns:
        ``True`` when this process is one of several (a group of world size > 1 is active).

    Raises:
        ValueError: ``WORLD_SIZE > 1`` but a variable torchrun sets is missing, or an unknown backend.
        RuntimeError: torch was built without distributed support.

    Example:
        >>> init_from_env()   # a plain process: nothing to do
        False
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return is_distributed()
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return False
    if not torch.distributed.is_available():
        raise RuntimeError(f"WORLD_SIZE={world_size} but this torch build ({torch.__version__}) has no "
                           "torch.distributed support")
    missing = [name for name in _ENV_VARS if not os.environ.get(name)]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} asks for distributed training but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set; launch with torchrun --nproc_per_node=N "
            "(which sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)"
        )
    backend = default_backend(device) if backend is None else backend
    valid = ("gloo", "nccl", "mpi")
    if backend not in valid:
        raise ValueError(f"unknown backend {backend!r}; valid choices: {', '.join(repr(b) for b in valid)}")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    torch.distributed.init_process_group(backend=backend, init_method="env://",
                                         rank=_env_int("RANK", 0), world_size=world_size)
    return True


def cleanup() -> None:
    """Destroy the default process group, if one is initialised (call once at the end of a script)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def shard_bounds(batch_size: int, *, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of a global batch of ``batch_size`` rows that ``rank`` takes.

    Contiguous shards, sizes ``floor`` or ``ceil`` of ``batch_size / world_size``; the shards of
    all ranks are disjoint and cover the batch.

    Example:
        >>> [shard_bounds(5, rank=r, world_size=2) for r in range(2)]
        [(0, 2), (2, 5)]
    """
    batch_size = check_int("batch_size", batch_size, minimum=0)
    world_size = check_int("world_size", world_size, minimum=1)
    rank = check_int("rank", rank, minimum=0, maximum=world_size - 1)
    return rank * batch_size // world_size, (rank + 1) * batch_size // world_size


def shard(indices: Tensor, *, rank: int | None = None, world_size: int | None = None) -> Tensor:
    """This rank's contiguous shard of a global batch of ``indices: (B,)`` (see :func:`shard_bounds`).

    Every rank must pass the same ``indices`` (e.g. the same permutation drawn from a shared seed);
    ``rank``/``world_size`` default to the current process group's.

    Example:
        >>> shard(torch.arange(6), rank=1, world_size=2)
        tensor([3, 4, 5])
    """
    if rank is None or world_size is None:
        cur_rank, cur_world = rank_and_world_size()
        rank = cur_rank if rank is None else rank
        world_size = cur_world if world_size is None else world_size
    start, stop = shard_bounds(indices.shape[0], rank=rank, world_size=world_size)
    return indices[start:stop]


def _collective_device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Tensor | float) -> Tensor:
    """Sum of ``values`` over all ranks (float64 on the CPU; the value itself in a single process).

    Example:
        >>> all_reduce_sum(2.5)
        tensor(2.5000, dtype=torch.float64)
    """
    t = torch.as_tensor(values.detach() if isinstance(values, Tensor) else values, dtype=torch.float64)
    if not is_distributed():
        return t.clone()
    buf = t.to(_collective_device()).clone()
    torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM)
    return buf.cpu()


def all_reduce_mean(values: Tensor | float, *, weight: float | None = None) -> Tensor:
    """Mean of ``values`` over ranks; with ``weight`` (this rank's share, summing to 1 over ranks),
    the weighted sum ``sum_r weight_r * values_r``.

    Example:
        >>> all_reduce_mean(3.0)
        tensor(3., dtype=torch.float64)
    """
    _, world_size = rank_and_world_size()
    t = torch.as_tensor(values.detach() if isinstance(values, Tensor) else values, dtype=torch.float64)
    if weight is None:
        return all_reduce_sum(t) / world_size
    return all_reduce_sum(t * float(weight))


def all_reduce_metrics(metrics: Mapping[str, float], *, weight: float | None = None) -> dict[str, float]:
    """Average a dict of scalar metrics over ranks (every rank must pass the same keys in the same order).

    Example:
        >>> all_reduce_metrics({"loss": 1.5})
        {'loss': 1.5}
    """
    if not metrics or not is_distributed():
        return {k: float(v) for k, v in metrics.items()}
    names = list(metrics)
    values = all_reduce_mean(torch.tensor([float(metrics[k]) for k in names], dtype=torch.float64), weight=weight)
    return {k: float(v) for k, v in zip(names, values.tolist())}


def any_rank(flag: bool) -> bool:
    """``True`` if ``flag`` is true on at least one rank (a collective: every rank must call it)."""
    if not is_distributed():
        return bool(flag)
    return bool(all_reduce_sum(1.0 if flag else 0.0).item() > 0)


def broadcast_int(value: int, *, src: int = 0) -> int:
    """Rank ``src``'s ``value`` on every rank (e.g. a seed drawn on rank 0)."""
    if not is_distributed():
        return int(value)
    buf = torch.tensor([int(value)], dtype=torch.int64, device=_collective_device())
    torch.distributed.broadcast(buf, src=src)
    return int(buf.item())


def broadcast_module(module: nn.Module, *, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into ``module`` on every rank, in place."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.device.type == "cpu" and torch.distributed.get_backend() == "nccl":
                buf = t.detach().to(_collective_device())
                torch.distributed.broadcast(buf, src=src)
                t.copy_(buf.cpu())
            else:
                torch.distributed.broadcast(t.data, src=src)


def all_reduce_gradients(parameters: Iterable[Tensor]) -> None:
    """Average the ``.grad`` of ``parameters`` over ranks, in place (for custom ``training_step``\\ s).

    Parameters without a gradient on this rank contribute zeros (every rank must pass the same
    list). Use it between ``backward()`` and ``optimizer.step()``.
    """
    if not is_distributed():
        return
    params = [p for p in parameters if p.requires_grad]
    _, world_size = rank_and_world_size()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset: offset + n].view_as(p).clone()
        offset += n


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj_rank0, obj_rank1, ...]`` on every rank; ``[obj]`` in a single process (pickles ``obj``)."""
    if not is_distributed():
        return [obj]
    _, world_size = rank_and_world_size()
    out: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait until every rank reaches this point (no-op in a single process)."""
    if is_distributed():
        if torch.distributed.get_backend() == "nccl":
            torch.distributed.barrier(device_ids=[torch.cuda.current_device()])
        else:
            torch.distributed.barrier()
