"""Argument validators shared by every public entry point.

Each validator raises ``ValueError`` or ``TypeError`` whose text names the argument, says what was
expected and what came in, and lists the valid choices where there are any. Public functions call
these once at entry (the torchsde habit) instead of failing deep inside a solver.

The CLI turns these exceptions into one line and exit status 2, so messages are single-line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "check_real",
    "check_choice",
    "check_choice_or_callable",
    "check_positive",
    "check_nonnegative",
    "check_int",
    "check_probability",
    "check_tensor",
    "check_event_shape",
    "check_events",
    "check_shape_arg",
    "check_widths",
    "check_binary",
    "check_bool",
    "check_time",
    "check_interval",
    "check_output_shape",
]


def _fmt_choices(choices: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in choices)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``; else raise naming ``name`` and the choices.

    Example:
        >>> check_choice("trace", "exact", ("exact", "hutchinson"))
        'exact'
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {_fmt_choices(choices)}")
    return value


def check_choice_or_callable(name: str, value: Any, choices: Sequence[str]) -> str | Callable:
    """Like :func:`check_choice`, but a callable is also accepted (STYLE.md convention 5)."""
    if callable(value):
        return value
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"unknown {name} {value!r}; valid choices: {_fmt_choices(choices)}, or a callable"
        )
    return value


def check_real(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite real number (a Python number or a one-element tensor).

    Args:
        name: the argument's name, used in the error message.
        value: the value to check; ``bool`` is refused.

    Returns:
        ``float(value)``.

    Raises:
        TypeError: if ``value`` is not a number or a one-element tensor.
        ValueError: if ``value`` is not finite.

    Example:
        >>> check_real("eps", torch.tensor(1e-3))
        0.0010000000474974513
        >>> check_real("eps", float("nan"))
        Traceback (most recent call last):
        ...
        ValueError: eps must be finite, got nan
    """
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name} must be a number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_positive(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite number > 0."""
    v = check_real(name, value)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return v


def check_nonnegative(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite number >= 0."""
    v = check_real(name, value)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return v


def check_probability(name: str, value: Any, *, open_low: bool = False, open_high: bool = False) -> float:
    """Return ``value`` if it lies in [0, 1] (ends excluded on request)."""
    v = check_real(name, value)
    lo_ok = v > 0 if open_low else v >= 0
    hi_ok = v < 1 if open_high else v <= 1
    if not (lo_ok and hi_ok):
        lo = "(0" if open_low else "[0"
        hi = "1)" if open_high else "1]"
        raise ValueError(f"{name} must lie in {lo}, {hi}, got {value}")
    return v


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` if it is an integer within [minimum, maximum]."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_tensor(
    name: str,
    x: Any,
    *,
    ndim: int | None = None,
    min_ndim: int | None = None,
    floating: bool = True,
    finite: bool = True,
    nonempty: bool = True,
) -> Tensor:
    """Check that ``x`` is a tensor of the expected rank, dtype kind and values.

    float16/bfloat16 are refused where ``floating`` is asked for: the solvers and log-determinants
    of this library are not accurate in half precision.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_meta:
        raise ValueError(f"{name} is on the 'meta' device (no data); move it to 'cpu' or 'cuda' first")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if floating:
        if not x.is_floating_point():
            raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
        if x.dtype in (torch.float16, torch.bfloat16):
            raise TypeError(f"{name} must be float32 or float64, got {x.dtype} (half precision is not supported)")
    if finite and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite values")
    return x


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is a bool (not 0/1, not a tensor)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_events(
    name: str,
    x: Any,
    event_shape: Sequence[int],
    *,
    dtype: torch.dtype | None = None,
    finite: bool = True,
) -> Tensor:
    """The one check of a model's input batch: a float tensor of shape ``(B, *event_shape)``.

    ``dtype``, when given, is the model's parameter dtype: a mismatch is refused with the two ways to fix it
    rather than failing inside a matrix product. ``finite=False`` admits NaN/inf (energies that must see them).
    """
    check_tensor(name, x, min_ndim=1, finite=finite)
    check_event_shape(name, x, event_shape)
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} is {x.dtype} but the model is {dtype}; convert one of them "
                        f"({name}.to({dtype}) or model.to({x.dtype}))")
    return x


def check_event_shape(name: str, x: Tensor, event_shape: Sequence[int]) -> Tensor:
    """Check that ``x`` has shape ``(B, *event_shape)``."""
    event_shape = tuple(event_shape)
    if x.dim() != len(event_shape) + 1 or tuple(x.shape[1:]) != event_shape:
        raise ValueError(
            f"{name} must have shape (batch, {', '.join(map(str, event_shape))}), got {tuple(x.shape)}"
        )
    return x


def check_shape_arg(name: str, value: Any) -> tuple[int, ...]:
    """A shape argument (``event_shape=``) as a tuple of positive ints; an int ``n`` means ``(n,)``.

    Example:
        >>> check_shape_arg("event_shape", 64), check_shape_arg("event_shape", [1, 8, 8])
        ((64,), (1, 8, 8))
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, torch.Size):
        value = tuple(value)
    if not isinstance(value, (tuple, list)) or len(value) == 0:
        raise TypeError(f"{name} must be a dimension (int >= 1) or a non-empty sequence of positive ints such as "
                        f"(2,) or (1, 8, 8), got {value!r}")
    return tuple(check_int(f"{name}[{i}]", s, minimum=1) for i, s in enumerate(value))


def check_widths(name: str, value: Any, *, min_len: int = 0) -> tuple[int, ...]:
    """Layer widths or channel counts (``hidden=``, ``channels=``) as a tuple of positive ints; an int ``n`` means
    ``(n,)``; at least ``min_len`` of them.

    Example:
        >>> check_widths("hidden", (128, 128)), check_widths("hidden", 64)
        ((128, 128), (64,))
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(f"{name} must be a sequence of positive ints (layer widths or channel counts) such as "
                        f"(128, 128), got {value!r}")
    if len(value) < min_len:
        raise ValueError(f"{name} must hold at least {min_len} width(s), e.g. (256, 256), got {value!r}")
    return tuple(check_int(f"{name}[{i}]", w, minimum=1) for i, w in enumerate(value))


def check_binary(name: str, x: Tensor, *, model: str = "", hint: str = "") -> Tensor:
    """``x`` itself when every entry is exactly 0 or 1; otherwise a ``ValueError`` naming ``name``, the model that
    needs binary data, how many entries are not 0/1, a few of them, and ``hint`` (what to do instead).

    Example:
        >>> check_binary("v", torch.tensor([[0.0, 1.0]]), model="a BernoulliRBM").tolist()
        [[0.0, 1.0]]
    """
    bad = (x != 0) & (x != 1)
    if bool(bad.any()):
        count = int(bad.sum())
        examples = ", ".join(f"{v:g}" for v in torch.unique(x[bad])[:3].tolist())
        raise ValueError(f"{name} must be binary (0/1){' for ' + model if model else ''}; got {count} "
                         f"{'entry' if count == 1 else 'entries'} not in {{0, 1}}, e.g. {examples}"
                         f"{'; ' + hint if hint else ''}")
    return x


def check_interval(name: str, value: Any, low: float, high: float) -> float:
    """Return ``value`` if it is a finite number in [low, high]."""
    v = check_real(name, value)
    if not (low <= v <= high):
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got {value}")
    return v


def check_time(name: str, t: Tensor, low: float, high: float, *, batch_size: int | None = None) -> Tensor:
    """Check a time tensor ``t: (B,)`` with every entry in [low, high]."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch,), got {type(t).__name__}")
    if t.dim() != 1 or (batch_size is not None and t.shape[0] != batch_size):
        want = f"({batch_size},)" if batch_size is not None else "(batch,)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    if t.numel() and (bool((t < low).any()) or bool((t > high).any())):
        raise ValueError(
            f"{name} must lie in [{low:g}, {high:g}], got values in [{t.min().item():g}, {t.max().item():g}]"
        )
    return t


def check_output_shape(name: str, out: Any, expected: Sequence[int]) -> Tensor:
    """Check what a user-supplied function (a score, energy or noise network) returned."""
    if not isinstance(out, Tensor):
        raise TypeError(f"{name} must return a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(expected):
        raise ValueError(f"{name} returned shape {tuple(out.shape)}; expected {tuple(expected)}")
    return out
