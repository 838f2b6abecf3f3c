"""``History``: what :func:`probgen.fit` returns (and what a checkpoint keeps of the run so far)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["History"]


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
        validation_steps: with ``fit(..., validation=...)``, the steps after which the validation set was
            scored (every ``eval_every`` steps and the last one).
        validation_losses: the validation score at those steps (the model's mean loss over the set; for a
            flow the validation NLL in nats).
        best_step: the step of the best validation score, whose parameters ``fit`` restored at the end
            (``None`` without validation).
        best_validation_loss: that score.
        stopped_early: whether ``patience`` ended the run before ``steps``.

    Example:
        >>> h = History(losses=[2.0, 1.5], steps_done=2)
        >>> h.final_loss, History.from_dict(h.to_dict()) == h
        (1.5, True)
    """

    losses: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    wall_time: float = 0.0
    steps_done: int = 0
    validation_steps: list[int] = field(default_factory=list)
    validation_losses: list[float] = field(default_factory=list)
    best_step: int | None = None
    best_validation_loss: float | None = None
    stopped_early: bool = False

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
            "validation_steps": [int(v) for v in self.validation_steps],
            "validation_losses": [float(v) for v in self.validation_losses],
            "best_step": self.best_step,
            "best_validation_loss": self.best_validation_loss,
            "stopped_early": bool(self.stopped_early),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        """Inverse of :meth:`to_dict` (``final_loss`` is derived, so ignored)."""
        return cls(
            losses=[float(v) for v in d.get("losses", [])],
            metrics={str(k): [float(v) for v in vs] for k, vs in dict(d.get("metrics", {})).items()},
            wall_time=float(d.get("wall_time", 0.0)),
            steps_done=int(d.get("steps_done", len(d.get("losses", [])))),
            validation_steps=[int(v) for v in d.get("validation_steps", [])],
            validation_losses=[float(v) for v in d.get("validation_losses", [])],
            best_step=None if d.get("best_step") is None else int(d["best_step"]),
            best_validation_loss=None if d.get("best_validation_loss") is None else float(d["best_validation_loss"]),
            stopped_early=bool(d.get("stopped_early", False)),
        )

    def _set_validation(self, record: Mapping[str, Any]) -> None:
        """Copy the validation record of :class:`~probgen.training.validation.Validator` (``to_history``)."""
        for name, value in record.items():
            setattr(self, name, value)

    def _append(self, loss: float, metrics: Mapping[str, float]) -> None:
        self.losses.append(loss)
        for name, value in metrics.items():
            self.metrics.setdefault(name, []).append(value)
        self.steps_done += 1

