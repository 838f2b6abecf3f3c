"""Checkpoint records and models: :func:`write_checkpoint` / :func:`read_checkpoint` (raw, verified
dicts), :func:`save` / :func:`load` (models), and the family table :data:`FAMILIES` read from
:mod:`probgen.registry`."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

from probgen.checkpoint.format import (
    CHECKPOINT_NAME,
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    CheckpointWriteError,
    PathLike,
    _check_plain,
    _digest,
    checkpoint_file,
)
from probgen.checkpoint.limits import _build_within_budget, check_config
from probgen.checkpoint.safe_load import safe_torch_load
from probgen.checkpoint.writer import atomic_write
from probgen.registry import checkpoint_families

__all__ = ["FAMILIES", "save", "load", "read_checkpoint", "write_checkpoint", "resolve_family",
           "model_header", "load_weights"]

#: Family name -> ``"module:QualifiedName"`` of the class that rebuilds it (resolved lazily): the rows of
#: the one family table, :data:`probgen.registry.FAMILIES`.
FAMILIES: dict[str, str] = checkpoint_families()


# ----------------------------------------------------------------------------------------------
# low-level read / write


def write_checkpoint(path: PathLike, payload: Mapping[str, Any]) -> Path:
    """Atomically write ``payload`` (plain data and tensors) as a probgen checkpoint file.

    The format marker, format version and SHA-256 digest are added here. The file is first
    written to a temporary file in the same folder, flushed and fsync-ed, then renamed over
    ``path`` with :func:`os.replace`, so ``path`` always holds either the previous complete
    checkpoint or the new one. This is the one writer used by :func:`save` and
    :func:`probgen.fit`.

    Args:
        path: destination file, or an existing folder (then ``checkpoint.pt`` inside it). Missing
            parent folders are created.
        payload: a dict of plain data (see the module docstring).

    Returns:
        The path written.

    Raises:
        CheckpointError: ``payload`` holds something other than plain data.
        CheckpointWriteError: the file could not be written (the previous file stays intact and
            no temporary file is left behind).
    """
    target = checkpoint_file(path)
    if not isinstance(payload, Mapping):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    body = {k: v for k, v in payload.items() if k not in ("format", "format_version", "sha256")}
    record: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, **body}
    _check_plain(record, "checkpoint")
    record["sha256"] = _digest(record)

    def _save(handle) -> None:
        torch.save(record, handle)

    try:
        atomic_write(target, _save)
    except Exception as error:  # OSError, or torch's RuntimeError on a full disk
        detail = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise CheckpointWriteError(
            f"could not write checkpoint {target}: {detail}; the previous file (if any) is intact"
        ) from error
    return target


def read_checkpoint(path: PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint file without building a model: the raw dict.

    Used by :func:`load`, by :func:`probgen.fit` to resume and by the CLI for summaries. The file
    is read with ``torch.load(..., weights_only=True)`` (no arbitrary unpickling), its format
    marker, version, content types and SHA-256 digest are checked.

    Args:
        path: a checkpoint file, or a folder holding ``checkpoint.pt``.
        map_location: where tensors are placed, as in :func:`torch.load` (default ``"cpu"``).

    Returns:
        The checkpoint dict (keys listed in the module docstring).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: not a probgen checkpoint, newer format, truncated/corrupted/edited
            content, or objects other than plain data.

    Example:
        >>> import tempfile, torch
        >>> folder = tempfile.mkdtemp()
        >>> _ = save(folder, torch.nn.Linear(2, 1), extra={"note": "demo"})
        >>> read_checkpoint(folder)["extra"]
        {'note': 'demo'}
    """
    target = checkpoint_file(path)
    _check_map_location(map_location)
    if not target.is_file():
        where = f"{target} (folder {target.parent} has no {CHECKPOINT_NAME})" if Path(path).is_dir() else f"{target}"
        raise FileNotFoundError(f"no checkpoint at {where}")
    record = safe_torch_load(target, map_location=map_location)

    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{target} is not a probgen checkpoint (no {FORMAT!r} format marker)")
    version = record.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{target} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{target} was written by a newer probgen (checkpoint format {version}; this version reads up to "
            f"{FORMAT_VERSION}); upgrade probgen to load it"
        )
    _check_plain(record, f"checkpoint {target}")
    stored = record.pop("sha256", None)
    if not isinstance(stored, str) or stored != _digest(record):
        raise CheckpointError(f"{target} is corrupted or was edited: its content does not match its SHA-256 digest")
    for key, kind in (("state_dict", dict), ("versions", dict)):
        if not isinstance(record.get(key), kind):
            raise CheckpointError(f"{target} is malformed: {key!r} is missing or not a {kind.__name__}")
    return record


def _check_map_location(map_location: Any) -> None:
    """Refuse an unusable device up front (torch would report it as a damaged file)."""
    if not isinstance(map_location, (str, torch.device)):
        return  # a dict or callable, passed through to torch.load
    try:
        device = torch.device(map_location)
    except RuntimeError:
        raise ValueError(
            f"map_location {map_location!r} is not a torch device; use 'cpu', 'cuda', 'cuda:0' or a torch.device"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"map_location {str(device)!r} needs CUDA, which is not available; use map_location='cpu'")


# ----------------------------------------------------------------------------------------------
# model-level save / load


def model_header(model: nn.Module) -> dict[str, Any]:
    """The header a checkpoint stores for ``model``: family, class name, config (or why there is
    none) and library versions; :func:`save` and fit's resumable state both write it.

    Args:
        model: the module to describe; its ``config()``, if any, must return JSON-safe keyword arguments.

    Returns:
        ``{"family", "model_class", "config", "config_error", "versions"}``.

    Example:
        >>> import torch
        >>> model_header(torch.nn.Linear(2, 1))["config_error"]
        'Linear has no config() method'
    """
    family = getattr(type(model), "family", None)
    if family is not None and not isinstance(family, str):
        raise TypeError(f"model.family must be a str, got {type(family).__name__} {family!r}")
    config: Any = None
    config_error: str | None = None
    config_fn = getattr(model, "config", None)
    if callable(config_fn):
        try:
            config = config_fn()
        except (ValueError, TypeError, NotImplementedError) as error:
            config_error = f"{type(error).__name__}: {error}"
        else:
            if not isinstance(config, dict):
                raise TypeError(f"{type(model).__name__}.config() must return a dict, got {type(config).__name__}")
            try:
                _check_plain(config, f"{type(model).__name__}.config()")
            except CheckpointError as error:
                raise CheckpointError(f"{error}; config() must return JSON-safe keyword arguments") from None
    else:
        config_error = f"{type(model).__name__} has no config() method"
    return {
        "family": family,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": config,
        "config_error": config_error,
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import pyro

    from probgen import __version__

    return {"probgen": str(__version__), "torch": str(torch.__version__), "pyro": str(pyro.__version__)}


def save(path: PathLike, model: nn.Module, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (family, config, weights) to a checkpoint file, atomically.

    Args:
        path: destination file (e.g. ``"run/checkpoint.pt"``), or an existing folder (then
            ``checkpoint.pt`` inside it).
        model: an ``nn.Module``. With a class attribute ``family`` and a ``config()`` method it can
            be rebuilt by :func:`load` alone; otherwise ``load(path, model=...)`` fills an
            instance you build.
        extra: optional plain data stored alongside (a dict of tensors/str/int/float/bool/None,
            lists and dicts of those), returned by :func:`read_checkpoint` under ``"extra"``.

    Returns:
        The path written.

    Raises:
        CheckpointError: ``config()`` or ``extra`` holds something other than plain data.
        CheckpointWriteError: the file could not be written (a previous file stays intact).

    Example:
        >>> import tempfile, torch
        >>> path = save(tempfile.mkdtemp() + "/model.pt", torch.nn.Linear(3, 1))
        >>> path.name
        'model.pt'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
    payload = model_header(model)
    payload["state_dict"] = model.state_dict()
    payload["extra"] = dict(extra) if extra is not None else None
    payload["training"] = None
    return write_checkpoint(path, payload)


FamilySpec = Union[str, type]


def resolve_family(family: str, families: Mapping[str, FamilySpec] | None = None) -> type:
    """The class registered for ``family``: ``families`` (if given) first, then :data:`FAMILIES`.

    A registry value is a class or an import path ``"package.module:QualifiedName"``, imported only
    now (families can land after this module).

    Raises:
        CheckpointError: unknown family, or its class cannot be imported.

    Example:
        >>> resolve_family("toy", {"toy": dict}) is dict
        True
    """
    registry: dict[str, FamilySpec] = dict(FAMILIES)
    if families is not None:
        if not isinstance(families, Mapping):
            raise TypeError(
                f"families must be a dict of family name -> class or 'module:Class', got {type(families).__name__}"
            )
        registry.update(families)
    if family not in registry:
        raise CheckpointError(
            f"unknown model family {family!r}; known families: {', '.join(repr(k) for k in sorted(registry))} "
            "(pass families={name: cls} to load a model of your own)"
        )
    spec = registry[family]
    if isinstance(spec, type):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise TypeError(f"the registry entry for family {family!r} must be a class or 'module:Class', got {spec!r}")
    module_name, _, qualname = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as error:
        raise CheckpointError(
            f"model family {family!r} is registered as {spec} but it cannot be imported in this version of "
            f"probgen ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(obj, type):
        raise CheckpointError(f"model family {family!r} resolves to {spec}, which is not a class")
    return obj


def load_weights(model: nn.Module, state_dict: Mapping[str, Tensor], target: Path) -> None:
    """Copy ``state_dict`` into ``model`` with ``load_state_dict(strict=True)``; a mismatch raises
    :class:`CheckpointError` naming ``target`` and the first three problems, on one line.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 1)
        >>> load_weights(net, torch.nn.Linear(2, 1).state_dict(), "run/checkpoint.pt")
    """
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        problems = [p.strip() for p in detail.split(". ") if p.strip()]
        if len(problems) > 3:  # one readable line: the first problems and how many more
            detail = ". ".join(problems[:3]) + f". ... and {len(problems) - 3} more"
        raise CheckpointError(
            f"the weights in {target} do not match the {type(model).__name__} model: {detail}"
        ) from error


def _check_weights(built: nn.Module, state_dict: Mapping[str, Any], target: Path) -> None:
    """Parameters must be finite: the digest detects corruption, not edits (names, shapes and so the
    parameter count are held to the stored tensors by ``load_state_dict(strict=True)``)."""
    params = dict(built.named_parameters())
    for name, value in state_dict.items():
        if name in params and isinstance(value, Tensor) and value.is_floating_point() \
                and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"checkpoint {target}: parameter {name!r} holds NaN or infinite values; refused")


def load(
    path: PathLike,
    *,
    map_location: Any = "cpu",
    model: nn.Module | None = None,
    expected_family: str | None = None,
    families: Mapping[str, FamilySpec] | None = None,
) -> nn.Module:
    """Rebuild a model from a checkpoint written by :func:`save`, :func:`probgen.fit` or the CLI.

    The model is rebuilt as ``cls(**config)`` with ``cls`` looked up by family name in
    :data:`FAMILIES` (or ``families``), then its weights are restored with
    ``load_state_dict(strict=True)``. Files are never unpickled beyond plain data
    (``weights_only=True``) and are checked against their SHA-256 digest.

    Args:
        path: a checkpoint file, or a folder holding ``checkpoint.pt`` (the CLI's ``--out DIR``).
        map_location: device the weights (and the rebuilt model) go to; default ``"cpu"``.
        model: an instance to fill instead of rebuilding one — needed for models without
            ``config()`` (e.g. custom networks). Its architecture must match the saved weights;
            the weights are copied into it and it keeps its device.
        expected_family: refuse a checkpoint of another family.
        families: extra or overriding registry entries ``{family: class or "module:Class"}``,
            e.g. for your own model classes.

    Returns:
        The model, in eval mode (call ``.train()`` to continue training by hand; use
        ``probgen.fit(..., resume=True)`` to resume a run exactly).

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        CheckpointError: unsafe, corrupted, foreign or newer-format file; family mismatch;
            unknown family; config or weights that no longer match.

    Example:
        >>> import tempfile, torch
        >>> folder = tempfile.mkdtemp()
        >>> _ = save(folder, torch.nn.Linear(2, 2))
        >>> load(folder, model=torch.nn.Linear(2, 2)).weight.shape
        torch.Size([2, 2])
    """
    if expected_family is not None and not isinstance(expected_family, str):
        raise TypeError(f"expected_family must be a str or None, got {type(expected_family).__name__}")
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
    target = checkpoint_file(path)
    record = read_checkpoint(path, map_location=map_location)
    family = record.get("family")
    if expected_family is not None and family != expected_family:
        raise CheckpointError(f"checkpoint {target} holds a {family!r} model; expected {expected_family!r}")

    if model is not None:
        own = getattr(type(model), "family", None)
        if own is not None and family is not None and own != family:
            raise CheckpointError(
                f"checkpoint {target} holds a {family!r} model; the model passed is a {own!r} model "
                f"({type(model).__name__})"
            )
        load_weights(model, record["state_dict"], target)
        return model.eval()

    if family is None:
        raise CheckpointError(
            f"checkpoint {target} holds a {record.get('model_class')} without a family attribute; build the model "
            "yourself and pass load(path, model=your_model)"
        )
    config = record.get("config")
    if config is None:
        why = record.get("config_error") or "no config was saved"
        raise CheckpointError(
            f"checkpoint {target} holds a {family!r} model without a config ({why}); build the model yourself "
            "and pass load(path, model=your_model)"
        )
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {target} is malformed: config is a {type(config).__name__}, not a dict")
    check_config(config, record["state_dict"], where=f"checkpoint {target}")
    cls = resolve_family(family, families)
    stored_bytes = sum(v.numel() * v.element_size() for v in record["state_dict"].values() if isinstance(v, Tensor))
    try:
        built = _build_within_budget(cls, config, stored_bytes, target)
    except CheckpointError:
        raise
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {target}: the saved config no longer builds a {cls.__name__} ({error}); config: {config}"
        ) from error
    if not isinstance(built, nn.Module):
        raise CheckpointError(f"family {family!r} built a {type(built).__name__}, not a torch.nn.Module")
    load_weights(built, record["state_dict"], target)
    _check_weights(built, record["state_dict"], target)
    if isinstance(map_location, (str, torch.device)):
        built = built.to(torch.device(map_location))
    return built.eval()
