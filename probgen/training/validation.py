r"""Validation and early stopping for :func:`probgen.fit`.

With ``validation=`` a held-out set is scored every ``eval_every`` steps by the model's own training
objective, averaged over the whole set,

.. math::

    V_k = \frac{1}{|\mathcal V|} \sum_{b} |x_b|\, \mathcal L(\theta_k; x_b),

(for a flow :math:`\mathcal L` is the mean negative log-likelihood, so :math:`V_k` is the validation NLL in
nats), under ``torch.no_grad`` in eval mode and with the model's random draws (a diffusion model's times and
noise, a VAE's latents) taken from a fixed seed in a forked RNG: every evaluation sees the same noise (common
random numbers, so two evaluations differ by the parameters only) and the training RNG stream is untouched.
The parameters of the best evaluation are kept and restored when the run ends; with ``patience=P`` the run
ends after ``P`` evaluations in a row without improvement (early stopping as in Papamakarios et al., 2017,
arXiv:1705.07057, §4). A non-finite score never counts as an improvement.

``validation=f`` (a float in ``(0, 1)``) splits ``round(f N)`` rows off the training data by a permutation
drawn from the fit's seed (its own stream, so the minibatch order is not shifted); they are never in a
training batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__: list[str] = []  # internal to probgen.training

#: seed of the validation's own noise (forked RNG): the same draws at every evaluation
VALIDATION_NOISE_SEED = 20_171_705
#: offset of the generator of the validation split from the fit's seed (a stream of its own)
_SPLIT_STREAM = 0x5EED


def split_off(tensors: tuple[Tensor, ...], fraction: float, seed: int) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """``(train, validation)``: ``round(fraction N)`` rows of a seeded permutation held out, the rest kept.

    Example:
        >>> x = torch.arange(10.0)[:, None]
        >>> train, val = split_off((x,), 0.2, seed=0)
        >>> len(train[0]), len(val[0]), sorted(torch.cat([train[0], val[0]]).flatten().tolist()) == x.flatten().tolist()
        (8, 2, True)
    """
    n = int(tensors[0].shape[0])
    n_val = int(round(fraction * n))
    if n_val < 1 or n - n_val < 1:
        raise ValueError(
            f"validation={fraction!r} of {n} rows leaves {n_val} validation and {n - n_val} training rows; "
            "both need at least one (pass a larger fraction, or a held-out tensor)"
        )
    g = torch.Generator().manual_seed(int(seed) + _SPLIT_STREAM)
    perm = torch.randperm(n, generator=g)
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return (tuple(t.index_select(0, train_idx.to(t.device)) for t in tensors),
            tuple(t.index_select(0, val_idx.to(t.device)) for t in tensors))


class Validator:
    """Scores the held-out set, remembers the best parameters and decides when to stop (see the module doc)."""

    def __init__(self, model: nn.Module, tensors: tuple[Tensor, ...], *, eval_every: int, patience: int | None,
                 batch_size: int, batch_transform: Callable[[Tensor], Tensor] | None, device: torch.device):
        self.model = model
        self.tensors = tensors
        self.eval_every = eval_every
        self.patience = patience
        self.batch_size = batch_size
        self.batch_transform = batch_transform
        self.device = device
        self.steps: list[int] = []
        self.scores: list[float] = []
        self.best_step: int | None = None
        self.best_score = math.inf
        self.best_state: dict[str, Tensor] | None = None
        self.bad_evaluations = 0
        #: ``"early"`` after early stopping, ``"end"`` once the best parameters were restored at the last step
        self.finished: str | None = None

    @property
    def num_rows(self) -> int:
        return int(self.tensors[0].shape[0])

    def score(self) -> float:
        """The mean loss over the validation rows (chunks of ``batch_size``, weighted by their sizes)."""
        model = self.model
        was_training = model.training
        devices = [self.device.index if self.device.index is not None else torch.cuda.current_device()] \
            if self.device.type == "cuda" else []
        model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                torch.manual_seed(VALIDATION_NOISE_SEED)
                total = 0.0
                for chunk in zip(*(t.split(self.batch_size) for t in self.tensors)):
                    if self.batch_transform is not None:
                        chunk = (self.batch_transform(chunk[0]), *chunk[1:])
                    total += float(model.loss(*chunk)) * int(chunk[0].shape[0])
        finally:
            model.train(was_training)
        return total / self.num_rows

    def evaluate(self, step: int) -> bool:
        """Score the set after ``step``; keep the parameters if best. Returns whether to stop early."""
        value = self.score()
        self.steps.append(step)
        self.scores.append(value)
        if math.isfinite(value) and value < self.best_score:
            self.best_step, self.best_score, self.bad_evaluations = step, value, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.bad_evaluations += 1
        return self.patience is not None and self.bad_evaluations >= self.patience

    def restore_best(self, stopped_early: bool) -> None:
        """Load the best parameters into the model (if any evaluation was finite) and mark the run finished."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.finished = "early" if stopped_early else "end"

    def state_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "scores": list(self.scores), "best_step": self.best_step,
                "best_score": self.best_score, "best_state": self.best_state,
                "bad_evaluations": self.bad_evaluations, "finished": self.finished}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = [int(s) for s in state["steps"]]
        self.scores = [float(v) for v in state["scores"]]
        self.best_step = None if state["best_step"] is None else int(state["best_step"])
        self.best_score = float(state["best_score"])
        best = state["best_state"]
        self.best_state = None if best is None else {k: v.to(self.device) for k, v in best.items()}
        self.bad_evaluations = int(state["bad_evaluations"])
        self.finished = state.get("finished")

    def to_history(self) -> dict[str, Any]:
        """What :class:`~probgen.training.History` records of the validation."""
        return {"validation_steps": list(self.steps), "validation_losses": list(self.scores),
                "best_step": self.best_step, "best_validation_loss": None if self.best_step is None else self.best_score,
                "stopped_early": self.finished == "early"}
