"""``probgen.fit``: the one training loop for every probgen model.

``fit`` draws minibatches, takes optimizer steps, shows a progress bar, stops on a non-finite value,
writes atomic checkpoints, resumes a run exactly where it stopped, stops cleanly on Ctrl-C, and
scores a held-out split to keep the best parameters and stop early (``validation=``). It
knows nothing about the families: a model only has to follow the training contract of
``CONTRIBUTING.md``:

* ``model.loss(*batch) -> Tensor[]`` — a scalar to minimize; ``fit`` runs Adam on it (the default
  step), or
* ``model.configure_optimizers(lr) -> list[Optimizer]`` and ``model.training_step(batch,
  optimizers) -> dict`` with a ``"loss"`` entry — models with several players (GANs) run their
  own updates; extra entries (``"d_loss"``, ``"grad_norm"``, ...) are recorded as metrics;
* optionally ``model.on_fit_step(step)`` — called after each optimizer step (EMA, buffers).

Under ``torchrun`` the same call trains with DistributedDataParallel (see :mod:`probgen.distributed`
and ``docs/distributed.md``).

The package, one module per concern:

========================  ==================================================================
``loop``                  :func:`fit`: the loop
``options``               argument checks (once, at entry), data, device, learning-rate schedule
``steps``                 the default step (``loss`` + Adam) and the two-player step
``guard``                 the NaN guard, :class:`NonFiniteLossError`
``state``                 the resumable state: minibatch sampler, RNG states, checkpoint payload
``interrupt``             Ctrl-C / SIGTERM: finish the step, checkpoint, :class:`TrainingInterrupted`
``validation``            ``validation=``: held-out scores, the best parameters, early stopping
``history``               :class:`History`
========================  ==================================================================

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

# write_checkpoint is looked up here at each write (Run.write), so a test or a tool can wrap it by
# patching ``probgen.training.write_checkpoint``
from probgen.checkpoint import write_checkpoint  # noqa: F401
from probgen.training.guard import NonFiniteLossError
from probgen.training.history import History
from probgen.training.interrupt import TrainingInterrupted
from probgen.training.loop import fit
from probgen.training.options import rank_and_world_size as _rank_and_world_size  # noqa: F401 - the distributed hook

__all__ = ["fit", "History", "NonFiniteLossError", "TrainingInterrupted"]
