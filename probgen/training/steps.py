"""The two kinds of :func:`probgen.fit` step, each behind the NaN guard of :mod:`probgen.training.guard`.

* :func:`default_step`: ``model.loss(*batch)``, backward, optional gradient clipping, Adam (or the
  optimizers of the run) — the step of every one-player model;
* :func:`two_player_step`: ``model.training_step(batch, optimizers)``, for models that run their own
  updates (GANs: ``k`` discriminator updates and one generator update).

Both return ``(loss, metrics)`` of the step and raise :class:`~probgen.training.NonFiniteLossError`
for any non-finite value they meet.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer

from probgen import distributed
from probgen.training.guard import failed_call, nonfinite
from probgen.training.state import Run

__all__: list[str] = []  # internal to probgen.training


class LossForward(nn.Module):
    """``forward(*batch) = model.loss(*batch)``: what :class:`DistributedDataParallel` wraps.

    DDP synchronises the gradients of the parameters used in ``forward``; probgen models expose
    ``loss`` rather than ``forward``, so this module routes one to the other.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *batch: Tensor) -> Tensor:
        return self.model.loss(*batch)


@dataclass
class StepConfig:
    """What a step needs besides the run's state."""

    two_player: bool
    params: list[Tensor]
    loss_forward: Callable[..., Any]
    grad_clip: float | None = None
    loss_scale: float = 1.0


def make_optimizers(model: nn.Module, *, two_player: bool, lr: float, weight_decay: float
                    ) -> tuple[list[Optimizer], list[Tensor]]:
    """The optimizers of the run (the model's own for two players, else Adam) and the trained parameters."""
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
        return list(optimizers), []
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    # foreach: one fused loop over all tensors (torch's default only on CUDA); on a CPU it saves ~0.3 ms a
    # step for a small flow's two dozen parameter tensors, the same update up to floating-point rounding
    return [torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)], params


def step_config(run: Run, *, two_player: bool, params: list[Tensor], grad_clip: float | None) -> StepConfig:
    """How this run's steps compute the loss (through DDP under torchrun, so that backward averages)."""
    model, dev, world_size = run.model, run.device, run.world_size
    loss_forward: Callable[..., Any] = model.training_step if two_player else model.loss
    if world_size > 1 and not two_player:
        loss_forward = DistributedDataParallel(
            LossForward(model), device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=False,
        )  # also broadcasts rank 0's parameters and buffers, and rank 0's buffers before each forward
    elif world_size > 1:
        distributed.broadcast_module(model)
    loss_scale = world_size * run.sampler.weight  # n_r / B relative to an equal share: exact global mean
    return StepConfig(two_player, params, loss_forward, grad_clip, loss_scale)


def default_step(run: Run, config: StepConfig, batch: tuple[Tensor, ...], step: int) -> tuple[float, dict[str, float]]:
    """One Adam step on ``model.loss(*batch)``; non-finite loss or gradient norm stop before the update."""
    model, metrics = run.model, {}
    for opt in run.optimizers:
        opt.zero_grad(set_to_none=True)
    try:
        loss = check_loss(model, config.loss_forward(*batch))
    except Exception as error:  # noqa: BLE001 - re-raised as is unless a non-finite value caused it
        retry = (lambda: model.loss(*batch)) if run.world_size == 1 else None
        raise failed_call(run, "loss", error, step, retry)
    if run.world_size > 1:  # the global-batch mean, identical on every rank
        loss_value = float(distributed.all_reduce_mean(loss, weight=run.sampler.weight).item())
        loss = loss * config.loss_scale if config.loss_scale != 1.0 else loss
    else:
        loss_value = float(loss.detach().item())
    if not math.isfinite(loss_value):
        raise nonfinite(run, "the loss is", loss_value, step, updated=False)
    if not loss.requires_grad:
        raise ValueError(
            f"{type(model).__name__}.loss returned a tensor that does not require grad; it must depend "
            "on the model's parameters"
        )
    loss.backward()
    if config.grad_clip is not None:
        norm = float(torch.nn.utils.clip_grad_norm_(config.params, config.grad_clip))
        if not math.isfinite(norm):
            raise nonfinite(run, "the gradient norm is", norm, step, updated=False)
        metrics["grad_norm"] = norm
    for opt in run.optimizers:
        opt.step()
    return loss_value, metrics


def two_player_step(run: Run, config: StepConfig, batch: tuple[Tensor, ...], step: int
                    ) -> tuple[float, dict[str, float]]:
    """``model.training_step(batch, optimizers)``; its extra entries become metrics."""
    model = run.model
    try:
        out = config.loss_forward(batch, run.optimizers)
    except Exception as error:  # noqa: BLE001 - re-raised as is unless a non-finite value caused it
        raise failed_call(run, "training_step", error, step)
    if not isinstance(out, Mapping) or "loss" not in out:
        raise TypeError(
            f"{type(model).__name__}.training_step must return a dict with a 'loss' entry, got {out!r}"
        )
    metrics = {str(k): as_metric(str(k), v) for k, v in out.items()}
    if run.world_size > 1:
        metrics = distributed.all_reduce_metrics(metrics, weight=run.sampler.weight)
    loss_value = metrics.pop("loss")
    if not math.isfinite(loss_value):
        raise nonfinite(run, "training_step reported a loss of", loss_value, step, updated=True)
    return loss_value, metrics


def as_metric(name: str, value: Any) -> float:
    """A ``training_step`` entry as a float (a scalar tensor or a number)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"training_step returned {name!r} with shape {tuple(value.shape)}; expected a scalar")
        return float(value.detach().item())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"training_step returned {name!r} = {value!r}; expected a float or a scalar tensor")
    return float(value)


def check_loss(model: nn.Module, loss: Any) -> Tensor:
    """``loss`` if it is a scalar tensor, else a TypeError/ValueError naming ``model.loss``."""
    name = f"{type(model).__name__}.loss"
    if not isinstance(loss, Tensor):
        raise TypeError(f"{name} must return a scalar torch.Tensor, got {type(loss).__name__}")
    if loss.dim() != 0:
        raise ValueError(
            f"{name} returned shape {tuple(loss.shape)}; expected a scalar (reduce the batch, e.g. .mean())"
        )
    return loss
