"""The NaN guard of :func:`probgen.fit`: every non-finite value of a step becomes one :class:`NonFiniteLossError`.

A step can go non-finite in four places, and each is reported the same way (naming the step and the
last good checkpoint):

* the loss (or a two-player ``training_step``'s reported loss) is NaN/inf;
* the gradient norm is NaN/inf (checked when ``grad_clip`` is set, before the update);
* the parameters are NaN/inf after an update: found before the next step's loss is trusted, before
  every checkpoint write and after the last step — a checkpoint is never written from them;
* the model itself refuses a non-finite value: a validation inside ``loss`` (a Pyro/torch
  distribution's ``validate_args``, a model's own input check) raises before a NaN loss can appear.
  Such an error is recognised when the parameters are non-finite, when its message reports NaN/inf
  invalid values, or when the same loss with validation turned off is NaN/inf; any other exception
  propagates unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from probgen.training.history import History
    from probgen.training.state import Run

__all__ = ["NonFiniteLossError"]

_ADVICE = "Try a smaller lr, grad_clip, or check the data and the model"
_MAX_QUOTE = 120  # characters of a model's own error quoted in the one-line message
_NONFINITE_TEXT = re.compile(r"\b(nan|inf|-inf)\b")


class NonFiniteLossError(FloatingPointError):
    """A value of a :func:`fit` step became NaN or infinite: the loss, the gradient norm, the parameters, or a
    value that a validation inside the model refused (see the module docstring).

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


def all_finite(model: nn.Module) -> bool:
    """Whether every floating-point parameter of ``model`` is finite (one host sync per parameter)."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point())


def describe(model: nn.Module) -> str:
    """The model's family name (``"flow"``, ...) or its class name."""
    family = getattr(type(model), "family", None)
    return str(family) if isinstance(family, str) else type(model).__name__


def kept(target: Path | None, saved_step: int | None) -> str:
    """The clause saying which checkpoint (if any) survives."""
    if target is None:
        return "; no checkpoint was requested (pass checkpoint=<path> to keep one)"
    if saved_step is None:
        return f"; no checkpoint had been written yet to {target}"
    return f"; the last good checkpoint (step {saved_step}) is kept at {target}"


def _error(run: Run, message: str, step: int) -> NonFiniteLossError:
    return NonFiniteLossError(
        message, step=step, checkpoint_path=run.target if run.saved_step is not None else None,
        checkpoint_step=run.saved_step, history=run.history,
    )


def nonfinite(run: Run, what: str, value: float, step: int, *, updated: bool) -> NonFiniteLossError:
    """``what value`` (a loss, a gradient norm) is NaN/inf at ``step``; if the parameters already are, say so."""
    if not updated and not all_finite(run.model):
        return parameters_nonfinite(run, step, before_update=True)
    when = "after its own update" if updated else "before this step updated the weights"
    return _error(run, f"{what} {value} at step {step} of {run.steps}; training stopped {when}"
                       f"{kept(run.target, run.saved_step)}. {_ADVICE}", step)


def parameters_nonfinite(run: Run, step: int, *, before_update: bool) -> NonFiniteLossError:
    """The parameters are NaN/inf: found at the start of ``step`` (an earlier update made them so) or after it."""
    if before_update:
        where = (f"at step {step} of {run.steps}" + (f" (the update of step {step - 1} made them so)" if step > 1
                                                     else "") + "; training stopped before this step updated them")
    else:
        where = f"after step {step} of {run.steps}; the checkpoint was not written"
    return _error(run, f"the parameters of {describe(run.model)} are NaN/inf {where}"
                       f"{kept(run.target, run.saved_step)}. {_ADVICE}", step)


def failed_call(run: Run, method: str, error: BaseException, step: int,
                retry: Callable[[], Any] | None = None) -> BaseException:
    """The exception to raise when ``model.<method>`` raised ``error`` at ``step``.

    A :class:`NonFiniteLossError` when the failure comes from a non-finite value (see the module
    docstring); ``error`` itself otherwise. ``retry`` re-evaluates the loss (validation is turned off
    for it): given for the default step, where re-running the loss has no side effect that matters.
    """
    if isinstance(error, NonFiniteLossError) or not isinstance(error, Exception):
        return error
    if not all_finite(run.model):
        cause = f"the parameters of {describe(run.model)} are NaN/inf"
    elif _reports_nonfinite(error) or (retry is not None and _nonfinite_without_validation(retry)):
        cause = f"a value inside {describe(run.model)} is NaN/inf"
    else:
        return error
    first = str(error).strip().splitlines()[0].strip() if str(error).strip() else ""
    if len(first) > _MAX_QUOTE:
        first = first[: _MAX_QUOTE - 3].rstrip() + "..."
    nonfinite_error = _error(
        run,
        f"{cause} at step {step} of {run.steps}: {type(run.model).__name__}.{method} failed with "
        f"{type(error).__name__}: {first}; training stopped before this step updated the weights"
        f"{kept(run.target, run.saved_step)}. {_ADVICE}",
        step,
    )
    nonfinite_error.__cause__ = error
    return nonfinite_error


def _reports_nonfinite(error: BaseException) -> bool:
    """A validation error about NaN/inf values (torch/Pyro: "... but found invalid values: tensor([nan, ...")."""
    if not isinstance(error, (ValueError, RuntimeError, AssertionError)):
        return False
    text = str(error)
    return "invalid value" in text and _NONFINITE_TEXT.search(text) is not None


def _nonfinite_without_validation(retry: Callable[[], Any]) -> bool:
    """Whether ``retry()`` gives a NaN/inf loss once distribution validation is off (the failure was NaN's)."""
    import pyro

    try:
        with pyro.validation_enabled(False):
            value = retry()
    except Exception:  # noqa: BLE001 - the model fails for another reason too: not a NaN problem
        return False
    if isinstance(value, Tensor):
        return value.numel() > 0 and not bool(torch.isfinite(value.detach()).all())
    return isinstance(value, float) and not math.isfinite(value)
