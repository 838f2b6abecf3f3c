"""``probgen.fit``: the loop. Each step draws a minibatch, runs the default or the two-player step
(:mod:`probgen.training.steps`), records the history, shows progress, writes checkpoints
(:mod:`probgen.training.state`) and stops cleanly at Ctrl-C (:mod:`probgen.training.interrupt`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from probgen import distributed
from probgen.checkpoint import read_checkpoint
from probgen.training.guard import all_finite, describe, parameters_nonfinite
from probgen.training.history import History
from probgen.training.interrupt import StopOnSignal, TrainingInterrupted
from probgen.training.options import Data, PathLike, check_fit_args, lr_factor
from probgen.training.state import BatchSampler, Run, remove_stale_temp_files
from probgen.training.steps import default_step, make_optimizers, step_config, two_player_step
from probgen.training.validation import Validator, split_off

__all__ = ["fit"]

_EMA_DECAY = 0.98  # smoothing of the loss shown on the progress bar

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
    validation: float | Tensor | tuple[Tensor, ...] | None = None,
    eval_every: int | None = None,
    patience: int | None = None,
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

    Non-finite values: a NaN/inf loss, gradient norm (with ``grad_clip``), parameters after an
    update, or a validation error that a NaN/inf value raises inside the model stops ``fit`` with
    :class:`NonFiniteLossError` naming the step and the last good checkpoint (see
    :mod:`probgen.training.guard`); checkpoints are never written from non-finite parameters, so the
    file on disk is the last good one.

    Validation and early stopping: with ``validation=`` (a held-out tensor shaped like ``data``, or a
    fraction ``f`` in ``(0, 1)``: ``round(f N)`` rows split off the training data by a permutation drawn
    from ``seed``, never in a training batch) the held-out set is scored every ``eval_every`` steps and
    after the last one by the model's mean ``loss`` (for a flow the mean negative log-likelihood, in
    nats) in eval mode, without gradients, with the model's own random draws from a fixed seed in a
    forked RNG (the same noise at every evaluation; the training run is not perturbed). The parameters
    of the best evaluation are restored when the run ends; with ``patience=P`` it ends after ``P``
    evaluations in a row without improvement (early stopping; Papamakarios et al., 2017,
    arXiv:1705.07057). The history records every score, ``best_step``, ``best_validation_loss`` and
    ``stopped_early`` (see :mod:`probgen.training.validation`). A checkpoint holds the validation
    state (the best parameters included), so an interrupted run resumes exactly; the last checkpoint
    holds the restored best parameters and marks the run finished: resuming an early-stopped run
    returns at once, and a finished run cannot be continued to more ``steps``.

    Interrupts: the first SIGINT (Ctrl-C) or SIGTERM while the steps run lets the current step
    finish, writes its checkpoint (when ``checkpoint`` is set) and raises
    :class:`~probgen.training.TrainingInterrupted` (a :class:`KeyboardInterrupt`); ``resume=True``
    then continues exactly. A second signal aborts at once. Handlers are installed in the main
    thread of a single process only, and the previous ones are restored (see
    :mod:`probgen.training.interrupt`).

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
            Validation batches go through it too (with the validation's fixed noise).
        validation: ``None``, a fraction in ``(0, 1)`` of the data to hold out, or held-out rows (a
            tensor, or a tuple of tensors like ``data``); see above.
        eval_every: steps between validation scores; default one pass over the training rows
            (``max(N_train // batch_size, 1)`` steps). Only with ``validation``.
        patience: stop after this many evaluations in a row without a better validation score;
            ``None`` (default) trains all ``steps`` and restores the best. Only with ``validation``.

    Returns:
        The :class:`History` of the run (for a resumed run, including the steps before the resume).

    Raises:
        TypeError, ValueError: invalid arguments, with the argument named.
        NonFiniteLossError: the loss or the parameters became NaN/inf.
        TrainingInterrupted: SIGINT/SIGTERM; raised after the step under way (and its checkpoint).
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
    o = check_fit_args(model, data, steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                       checkpoint=checkpoint, resume=resume, checkpoint_every=checkpoint_every, progress=progress,
                       grad_clip=grad_clip, weight_decay=weight_decay, lr_schedule=lr_schedule, callback=callback,
                       log_every=log_every, batch_transform=batch_transform, validation=validation,
                       eval_every=eval_every, patience=patience)
    steps, dev, rank, world_size, target = o.steps, o.device, o.rank, o.world_size, o.target
    record = read_checkpoint(target) if resume and target is not None and target.is_file() else None

    # ---- set up -----------------------------------------------------------------------------
    model.to(dev)
    model.train()
    tensors = tuple(t.to(dev) for t in o.tensors)
    val_tensors, val_what, val_seed = None, None, None
    if isinstance(o.validation, float):
        val_seed = _validation_seed(o.seed, record)
        tensors, val_tensors = split_off(tensors, o.validation, val_seed)
        val_what = f"fraction {o.validation!r}"
    elif o.validation is not None:
        val_tensors = tuple(t.to(dev) for t in o.validation)
        val_what = f"{len(val_tensors[0])} held-out rows"
    if o.seed is not None:
        import pyro

        # torch (CPU and CUDA), Python and NumPy; ranks > 0 draw their model noise from other streams
        pyro.set_rng_seed(o.seed + rank)
    generator = torch.Generator(device="cpu")
    if o.seed is not None:
        generator.manual_seed(o.seed)  # the same minibatch permutations on every rank
    else:
        generator.seed()
    sampler = BatchSampler(tensors, o.batch_size, generator, rank=rank, world_size=world_size)
    optimizers, params = make_optimizers(model, two_player=o.two_player, lr=o.lr, weight_decay=o.weight_decay)
    factor = lr_factor(o.schedule, steps)
    schedulers = [LambdaLR(opt, factor) for opt in optimizers] if factor is not None else []
    fit_args: dict[str, Any] = {
        "steps": steps, "batch_size": o.batch_size, "lr": o.lr, "seed": o.seed, "weight_decay": o.weight_decay,
        "grad_clip": o.grad_clip, "lr_schedule": o.schedule if isinstance(o.schedule, str) else "callable",
        "checkpoint_every": o.checkpoint_every, "num_data": sampler.num_data, "two_player": o.two_player,
        "device": str(dev), "world_size": world_size, "validation": None, "eval_every": None,
    }
    validator = None
    if val_tensors is not None:
        every = o.eval_every or max(sampler.num_data // sampler.global_batch, 1)  # default: one pass over the data
        validator = Validator(model, val_tensors, eval_every=every, patience=o.patience, batch_size=o.batch_size,
                              batch_transform=batch_transform, device=dev)
        fit_args.update({"validation": val_what, "validation_seed": val_seed, "eval_every": every,
                         "patience": o.patience})
    run = Run(model, steps, target, optimizers, schedulers, sampler, fit_args, dev, rank, world_size,
              validator=validator)
    config = step_config(run, two_player=o.two_player, params=params, grad_clip=o.grad_clip)
    start = 0
    if record is not None:
        start = run.restore(record, o.seed)
        if validator is not None and validator.finished == "end" and steps > start:
            raise ValueError(
                f"cannot resume from {target} to steps={steps}: that run finished at step {start} and its checkpoint "
                f"holds the parameters of its best validation score (step {validator.best_step}), not those of step "
                f"{start}; start a new run (resume=False)"
            )
    last_step = start if validator is not None and validator.finished == "early" else steps  # early-stopped: done
    if target is not None and rank == 0:
        remove_stale_temp_files(target)

    # ---- loop -------------------------------------------------------------------------------
    take_step = two_player_step if o.two_player else default_step
    on_fit_step = getattr(model, "on_fit_step", None)
    on_fit_step = on_fit_step if callable(on_fit_step) else None
    ema, ema_weight = 0.0, 0.0
    wall_before = run.history.wall_time
    t0 = time.perf_counter()
    bar = _progress_bar(progress and rank == 0, steps, start, describe(model))
    # signals are caught in a single process only: ranks that stop at different steps would deadlock
    with StopOnSignal(enabled=world_size == 1) as stop:
        try:
            for step in range(start + 1, last_step + 1):
                batch = sampler.next()
                if batch_transform is not None:
                    batch = (batch_transform(batch[0]), *batch[1:])
                loss_value, metrics = take_step(run, config, batch, step)
                for sched in schedulers:
                    sched.step()
                if world_size > 1 and step == start + 1:
                    # data-dependent initialisation (e.g. ActNorm on the first batch) ran on each rank's own
                    # shard: make every rank start from rank 0's parameters (identical from then on)
                    distributed.broadcast_module(model)
                if on_fit_step is not None:
                    on_fit_step(step)
                run.history._append(loss_value, metrics)
                run.history.wall_time = wall_before + (time.perf_counter() - t0)
                if callback is not None:
                    callback(step, loss_value, dict(metrics))
                ema = _EMA_DECAY * ema + (1.0 - _EMA_DECAY) * loss_value
                ema_weight = _EMA_DECAY * ema_weight + (1.0 - _EMA_DECAY)
                bar.update(1)
                if step % log_every == 0 or step == steps:
                    bar.set_postfix(loss=f"{ema / ema_weight:.4g}", refresh=False)
                stop_early = False
                if validator is not None and (step % validator.eval_every == 0 or step == steps):
                    stop_early = validator.evaluate(step)
                    if stop_early or step == steps:
                        validator.restore_best(stopped_early=stop_early)  # the final checkpoint holds them
                    run.history._set_validation(validator.to_history())
                    bar.set_postfix(loss=f"{ema / ema_weight:.4g}", val=f"{validator.scores[-1]:.4g}", refresh=False)
                if target is not None and (step % o.checkpoint_every == 0 or step == steps or stop_early):
                    run.write(step)
                if stop_early:
                    break
                if stop.signal_name is not None:
                    raise _interrupted(run, step, stop.signal_name)
        finally:
            bar.close()
    if not all_finite(model):  # the last update (checked by the next step's loss or write otherwise)
        raise parameters_nonfinite(run, steps, before_update=False)
    run.history.wall_time = wall_before + (time.perf_counter() - t0)
    return run.history


def _validation_seed(seed: int | None, record: Any) -> int:
    """The seed of the validation split: the fit's seed, else the one a resumed checkpoint used, else a fresh one."""
    if seed is not None:
        return seed
    if record is not None:
        saved = (record.get("training") or {}).get("fit_args", {}).get("validation_seed")
        if saved is not None:
            return int(saved)
    return int(torch.Generator().seed() % 2**62)  # from the OS


def _interrupted(run: Run, step: int, signal_name: str) -> TrainingInterrupted:
    """Write the checkpoint of ``step`` (if not written yet) and describe the interruption."""
    if run.target is not None and run.saved_step != step:
        run.write(step)
    where = (f"; checkpoint {run.target} holds it: continue with fit(..., resume=True)" if run.target is not None
             else "; no checkpoint was requested, so the weights exist only in this process")
    return TrainingInterrupted(
        f"{signal_name}: fit stopped after step {step} of {run.steps}{where}", step=step, steps=run.steps,
        signal_name=signal_name, checkpoint_path=run.target, history=run.history,
    )


def _progress_bar(progress: bool, steps: int, start: int, name: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=steps, initial=start, desc=f"fit {name}", disable=not progress, file=sys.stderr,
                dynamic_ncols=True, leave=True)
