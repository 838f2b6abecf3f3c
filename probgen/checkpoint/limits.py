"""What a checkpoint may ask for: the :data:`LIMITS` on a config (each raised by its environment variable),
:func:`check_config`, and the memory budget a config is built under before its weights are checked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from probgen.checkpoint.format import CheckpointError

__all__ = ["LIMITS", "limit", "check_config"]


#: Limits on what a file may ask for, each raised by the environment variable of the same name
#: (``PROBGEN_MAX_LAYERS=5000 probgen sample RUN``); see docs/reliability.md.
LIMITS: dict[str, int] = {
    "PROBGEN_MAX_LAYERS": 1000,  # layer/block counts in a config, and the length of any list of widths
    "PROBGEN_MAX_WIDTH": 65536,  # any other integer in a config: widths, channels, time steps, buffer sizes
    "PROBGEN_MAX_EVENT_SIZE": 1 << 24,  # elements in one event (event_shape, dim, n_visible)
    "PROBGEN_MAX_OBJECTS": 1_000_000,  # containers and values in one checkpoint's plain data
    "PROBGEN_MAX_BUILD_MB": 4096,  # memory a config may allocate while the model is built
}


def limit(name: str) -> int:
    """The current value of :data:`LIMITS` ``[name]`` (its environment variable wins).

    Example:
        >>> limit("PROBGEN_MAX_LAYERS") >= 1
        True
    """
    default = LIMITS[name]
    text = os.environ.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer (default {default})") from None
    if value < 1:
        raise ValueError(f"environment variable {name}={text!r} must be >= 1 (default {default})")
    return value


_LAYER_KEYS = ("layers", "blocks", "depth", "num_flows")
_EVENT_KEYS = ("event_shape", "dim", "n_visible")


def check_config(config: Mapping[str, Any], state_dict: Mapping[str, Tensor], where: str = "checkpoint") -> None:
    """Refuse a config that asks for an absurd model before anything is built.

    Every integer in ``config`` (nested dicts and lists included; seeds excepted) is held to a
    limit of :data:`LIMITS`: layer and block counts (keys containing ``layers``, ``blocks``,
    ``depth``, ``num_flows``) and the length of any list to ``PROBGEN_MAX_LAYERS``; the event size
    (``event_shape``, ``dim``, ``n_visible``) to ``PROBGEN_MAX_EVENT_SIZE`` elements; every other
    integer (widths, channels, time steps, buffer sizes) to ``PROBGEN_MAX_WIDTH``. The stored
    weights must be finite-sized: the model later built from the config must carry exactly them.

    Raises:
        CheckpointError: naming the config entry, its value, the limit and the variable raising it.

    Example:
        >>> check_config({"dim": 2, "num_layers": 10**6}, {})
        Traceback (most recent call last):
        ...
        probgen.checkpoint.CheckpointError: checkpoint: config['num_layers'] = 1000000 is above the limit ...
    """
    layers, width, event = limit("PROBGEN_MAX_LAYERS"), limit("PROBGEN_MAX_WIDTH"), limit("PROBGEN_MAX_EVENT_SIZE")

    def refuse(path: str, value: Any, cap: int, name: str, what: str) -> None:
        raise CheckpointError(
            f"{where}: config{path} = {value!r} is above the limit of {cap:,} {what}; refused before building the "
            f"model (if the file is yours and the size is intended, raise the limit with {name}=N)"
        )

    def walk(obj: Any, path: str, key: str) -> None:
        low = key.lower()
        if "seed" in low:
            return
        if isinstance(obj, bool) or obj is None or isinstance(obj, (float, str)):
            return
        if isinstance(obj, int):
            if any(k in low for k in _LAYER_KEYS):
                if obj > layers:
                    refuse(path, obj, layers, "PROBGEN_MAX_LAYERS", "layers")
            elif low in _EVENT_KEYS:
                if obj > event:
                    refuse(path, obj, event, "PROBGEN_MAX_EVENT_SIZE", "elements per event")
            elif obj > width:
                refuse(path, obj, width, "PROBGEN_MAX_WIDTH", "(widths and other sizes)")
            return
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{path}[{k!r}]", str(k))
            return
        if isinstance(obj, (list, tuple)):
            if len(obj) > layers:
                refuse(path, f"<list of {len(obj):,} entries>", layers, "PROBGEN_MAX_LAYERS", "entries (layers)")
            if low == "event_shape" and all(isinstance(v, int) and not isinstance(v, bool) for v in obj):
                numel = 1
                for v in obj:
                    numel *= max(int(v), 0)
                    if numel > event:
                        refuse(path, list(obj), event, "PROBGEN_MAX_EVENT_SIZE", "elements per event")
                return
            for i, v in enumerate(obj):
                walk(v, f"{path}[{i}]", key)

    if not isinstance(config, Mapping):
        raise CheckpointError(f"{where} is malformed: config is a {type(config).__name__}, not a dict")
    walk(dict(config), "", "")


def _build_within_budget(cls: type, config: Mapping[str, Any], stored_bytes: int, target: Path) -> Any:
    """``cls(**config)``, refusing (before the allocation) a build that allocates far more than the
    weights the file carries: ``8 x`` their size plus 256 MB, at most ``PROBGEN_MAX_BUILD_MB``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    budget = min(8 * stored_bytes + (256 << 20), limit("PROBGEN_MAX_BUILD_MB") << 20)

    class _Budget(TorchDispatchMode):
        used = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            size = None
            if args and isinstance(args[0], (list, tuple)) and all(isinstance(v, int) for v in args[0]):
                size = args[0]
            elif len(args) > 1 and isinstance(args[0], Tensor) and isinstance(args[1], (list, tuple)) \
                    and func.overloadpacket.__name__.startswith(("new_", "repeat")):
                size = list(args[1]) + (list(args[0].shape) if "repeat" in func.overloadpacket.__name__ else [])
            elif args and isinstance(args[0], int) and func.overloadpacket.__name__ in ("randperm", "arange"):
                size = [args[0]]
            if size is not None:
                numel = 1
                for v in size:
                    numel *= max(int(v), 0)
                self.used += numel * 8
                if self.used > budget:
                    raise CheckpointError(
                        f"checkpoint {target}: its config builds a model needing more than {budget >> 20:,} MB "
                        f"while the file carries {stored_bytes:,} bytes of tensors; refused before allocating "
                        "(raise PROBGEN_MAX_BUILD_MB if the file is yours)"
                    )
            return func(*args, **kwargs)

    with _Budget():
        return cls(**config)
