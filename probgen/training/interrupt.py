"""Ctrl-C keeps the work: the first SIGINT/SIGTERM during :func:`probgen.fit` stops it after the current step.

:class:`StopOnSignal` replaces the SIGINT and SIGTERM handlers while the steps run (in the main
thread only; signals can be handled nowhere else) and puts the previous handlers back afterwards. The
first signal only records itself; ``fit`` finishes the step under way, writes the checkpoint (when it
has a path) and raises :class:`TrainingInterrupted`. A second signal raises :class:`KeyboardInterrupt`
at once, wherever the program is (an interrupted checkpoint write removes its temporary file and
leaves the previous checkpoint intact). A signal whose handler was ``SIG_IGN`` stays ignored.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from probgen.training.history import History

__all__ = ["TrainingInterrupted"]

_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


class TrainingInterrupted(KeyboardInterrupt):
    """:func:`probgen.fit` stopped at SIGINT (Ctrl-C) or SIGTERM after finishing a step.

    A :class:`KeyboardInterrupt`, so code that does not know it still stops. ``fit(..., resume=True)``
    with the same arguments continues from ``checkpoint_path`` and reproduces the uninterrupted run.

    Attributes:
        step: the last step completed (``0 <= step <= steps``).
        steps: the steps the run was asked for.
        signal_name: ``"SIGINT"`` or ``"SIGTERM"``.
        checkpoint_path: the checkpoint holding ``step``, or ``None`` when ``fit`` had no checkpoint path.
        history: the :class:`History` up to ``step``.
    """

    def __init__(self, message: str, *, step: int, steps: int, signal_name: str, checkpoint_path: Path | None,
                 history: History):
        super().__init__(message)
        self.step = step
        self.steps = steps
        self.signal_name = signal_name
        self.checkpoint_path = checkpoint_path
        self.history = history


class StopOnSignal:
    """Context manager recording the first SIGINT/SIGTERM in :attr:`signal_name` (``None`` until one comes).

    Args:
        enabled: install the handlers (also requires the main thread); ``False`` leaves signals alone.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if not self.enabled or threading.current_thread() is not threading.main_thread():
            return self
        for signum in _SIGNALS:
            try:
                previous = signal.getsignal(signum)
                if previous is signal.SIG_IGN:
                    continue  # the user (nohup, a shell's background job) asked to ignore it
                signal.signal(signum, self._handle)
            except (ValueError, OSError):  # pragma: no cover - an embedding that forbids it
                continue
            self._previous[signum] = previous
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def restore(self) -> None:
        """Put the previous handlers back (idempotent)."""
        for signum, previous in self._previous.items():
            try:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            except (ValueError, OSError):  # pragma: no cover
                pass
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None:  # the second signal: abort now
            self.restore()
            raise KeyboardInterrupt(f"second {name}: aborted at once")
        self.signal_name = name
