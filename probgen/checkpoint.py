"""Save and load probgen models: safe, atomic, self-checking checkpoint files.

A checkpoint is a ``torch.save`` file holding one dictionary of plain data — tensors, ``dict``,
``list``, ``tuple``, ``str``, ``int``, ``float``, ``bool`` and ``None`` — and nothing else:

.. code-block:: text

    format          "probgen-checkpoint"      marker: refuses files that are not probgen checkpoints
    format_version  1                         a newer version is refused with a request to upgrade
    family          "flow" | "ddpm" | ... | None
    model_class     "probgen.flows.flow.Flow" informative only, never imported from the file
    config          model.config() or None    keyword arguments rebuilding the architecture
    config_error    str | None                why config() was unavailable, if it was
    state_dict      model.state_dict()
    versions        {"probgen", "torch", "pyro"}
    extra           user data (``save(..., extra=...)``) or None
    training        fit's resume state (optimizers, schedulers, RNGs, history, fit arguments) or None
    sha256          digest of everything above, tensor bytes included

**Safety.** Files are read with ``torch.load(..., weights_only=True)``: the restricted unpickler
builds tensors and plain containers only, so a crafted file cannot run code when loaded; anything
else is refused with :class:`CheckpointError`. The model class is never named by the file: the
family string is looked up in the explicit table :data:`FAMILIES` (import paths resolved lazily
with :mod:`importlib`), and the model is rebuilt as ``cls(**config)`` followed by
``load_state_dict(strict=True)``.

**Integrity.** ``torch.load`` does not verify the CRCs of its zip records, so a flipped byte in a
weight would load silently. Every checkpoint therefore carries a SHA-256 digest of its whole
content (keys, types, shapes, dtypes and tensor bytes); a truncated or corrupted file is refused with
:class:`CheckpointError`. The digest is unkeyed: it detects corruption, **not tampering** (whoever edits a
file can recompute it), so safety never depends on it.

**Hostile files.** Loading cannot be turned into a denial of service (:func:`safe_torch_load`): zip
records are checked against the file's size before unpickling, meta/quantized/nested/sparse and
expanded (stride-0) tensors are refused, and a config is held to :data:`LIMITS` and built under a
memory budget before the weights are checked against it (:func:`check_config`).

**Atomicity.** Files are written to a temporary file in the destination folder, flushed and
``fsync``-ed, then moved over the destination with :func:`os.replace`. A failed write (disk full,
read-only folder, interrupted process) leaves the previous checkpoint intact and removes the
temporary file.

Example:
    >>> import tempfile, os, torch
    >>> net = torch.nn.Linear(2, 1)
    >>> folder = tempfile.mkdtemp()
    >>> path = save(os.path.join(folder, "checkpoint.pt"), net)
    >>> other = torch.nn.Linear(2, 1)
    >>> _ = load(folder, model=other)   # a model without config() is filled in place
    >>> torch.equal(other.weight, net.weight)
    True
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import struct
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

from probgen.registry import checkpoint_families

__all__ = [
    "FAMILIES",
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "CheckpointWriteError",
    "save",
    "load",
    "read_checkpoint",
    "write_checkpoint",
    "resolve_family",
    "checkpoint_file",
    "atomic_write",
    "safe_torch_load",
    "run_lock",
    "RunLockedError",
    "LIMITS",
    "limit",
    "check_config",
]

PathLike = Union[str, os.PathLike]

#: The marker every probgen checkpoint carries under ``"format"``.
FORMAT = "probgen-checkpoint"
#: The newest layout this version of probgen writes and reads.
FORMAT_VERSION = 1
#: The file name used inside a folder (the CLI's ``--out DIR``).
CHECKPOINT_NAME = "checkpoint.pt"

#: Family name -> ``"module:QualifiedName"`` of the class that rebuilds it (resolved lazily): the rows of
#: the one family table, :data:`probgen.registry.FAMILIES`.
FAMILIES: dict[str, str] = checkpoint_families()

_SAFE_SCALARS = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A file that cannot be trusted or used as a probgen checkpoint.

    Raised for files that are not probgen checkpoints, were written by a newer probgen, are
    truncated or corrupted, hold objects other than plain data, name an unknown family, or whose
    config no longer matches the saved weights.
    """


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed; the previous file at that path (if any) is left intact."""


# ----------------------------------------------------------------------------------------------
# paths


def checkpoint_file(path: PathLike) -> Path:
    """The checkpoint file that ``path`` designates: ``path`` itself, or ``path/checkpoint.pt``
    when ``path`` is an existing folder or ends with a path separator (``"run/"``).

    Example:
        >>> import tempfile
        >>> checkpoint_file(tempfile.gettempdir()).name
        'checkpoint.pt'
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__} {path!r}")
    text = os.fspath(path)
    if text == "":
        raise ValueError("path must not be empty")
    p = Path(text)
    if p.is_dir() or text.endswith(("/", os.sep)):  # "run/" names a folder even before it exists
        return p / CHECKPOINT_NAME
    return p


# ----------------------------------------------------------------------------------------------
# plain-data check and digest


def _check_plain(obj: Any, where: str) -> None:
    """Raise :class:`CheckpointError` if ``obj`` holds anything but plain data and tensors."""
    if isinstance(obj, Tensor):
        if type(obj) is not Tensor and not isinstance(obj, nn.Parameter):
            raise CheckpointError(f"{where} is a tensor subclass {type(obj).__name__}; only plain tensors are allowed")
        return
    if type(obj) in _SAFE_SCALARS:  # exact types: subclasses (str-like versions, numpy floats) pickle as globals
        return
    if isinstance(obj, Mapping):
        if not isinstance(obj, dict):
            raise CheckpointError(f"{where} is a {type(obj).__name__}; only dict mappings are allowed")
        for key, value in obj.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise CheckpointError(
                    f"{where} has a key {key!r} of type {type(key).__name__}; keys must be str or int"
                )
            _check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple, torch.Size):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; a checkpoint holds only tensors, "
        "dict, list, tuple, str, int, float, bool and None"
    )


def _digest(obj: Any) -> str:
    """SHA-256 of ``obj``'s structure and values (tensor bytes included), independent of pickling."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, Tensor):
        t = obj.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"B1" if obj else b"B0")
    elif isinstance(obj, int):
        h.update(f"I{obj};".encode())
    elif isinstance(obj, float):
        h.update(b"F" + struct.pack("<d", obj))
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)}:".encode() + data)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for value in obj:
            _feed(h, value)
    else:  # pragma: no cover - _check_plain runs first
        raise CheckpointError(f"cannot digest {type(obj).__name__}")


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


def atomic_write(path: PathLike, write: Any, *, text: bool = False) -> Path:
    """Write a file atomically and safely: the one writer behind every file probgen writes.

    ``write(handle)`` fills a temporary file ``.<name>.<32 random hex>.tmp`` in the destination
    folder, created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a file or symlink planted at that name
    makes the open fail instead of redirecting the write); it is flushed, ``fsync``-ed and moved
    over ``path`` with :func:`os.replace`, which replaces a symlink at ``path`` itself rather than
    the file it points to. On any failure the temporary file is removed and ``path`` is untouched.

    Args:
        path: the destination file. Missing parent folders are created.
        write: ``write(handle)`` writes the content to an open binary (or, with ``text``, UTF-8
            text) file handle.
        text: open the handle in text mode.

    Returns:
        The path written.

    Raises:
        OSError: the file could not be written (the message names ``path``).

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "note.txt")
        >>> atomic_write(target, lambda f: f.write("hello"), text=True).read_text()
        'hello'
    """
    target = Path(path)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    created = False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
        created = True
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as error:
        if created:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(error, OSError):
            raise OSError(error.errno, f"could not write {target}: {error.strerror or error}") from error
        raise
    _fsync_dir(target.parent)
    return target


LOCK_NAME = ".probgen.lock"


class RunLockedError(ValueError):
    """Another live process holds the lock of a run folder."""


class run_lock:
    """An exclusive lock on a run folder, held while one process writes into it.

    The lock is the file ``.probgen.lock`` in ``folder``, created with ``O_CREAT | O_EXCL`` and
    holding the owner's pid and host name. A second writer finds it and is refused with
    :class:`RunLockedError`; a lock left by a process that no longer exists (same host) is detected
    and taken over. The file is removed on exit.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with run_lock(folder):
        ...     try:
        ...         run_lock(folder).__enter__()
        ...     except RunLockedError as error:
        ...         print("refused")
        refused
    """

    def __init__(self, folder: PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._held = False

    def __enter__(self) -> "run_lock":
        import socket

        self.folder.mkdir(parents=True, exist_ok=True)
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None:
                    raise RunLockedError(
                        f"{self.folder} is being written by another probgen process (pid {owner}; lock file "
                        f"{self.path}); wait for it to finish, or use another --out"
                    ) from None
                try:  # a stale lock: its process is gone
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(me)
            self._held = True
            return self
        raise RunLockedError(f"could not take the lock {self.path} (another process keeps taking it)")

    def _owner(self) -> int | None:
        """The pid of a live owner, or None for a stale (or unreadable, empty after a crash) lock."""
        import socket

        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        except OSError:
            return -1
        parts = text.split()
        if not parts:
            return None  # killed between create and write
        try:
            pid = int(parts[0])
        except ValueError:
            return None
        if len(parts) > 1 and parts[1] != socket.gethostname():
            return pid  # another machine's process: cannot tell, assume alive
        if pid == os.getpid():
            return pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        except OSError:
            return None
        return pid

    def __exit__(self, *exc: Any) -> None:
        if self._held:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self._held = False


def _fsync_dir(folder: Path) -> None:
    """Best effort: make the rename durable (POSIX); silently skipped where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def _scan_zip(target: Path) -> int:
    """Refuse a torch zip file whose records could expand beyond the file: compressed records, or
    records declaring more bytes than the file holds. Returns the file size."""
    import zipfile

    size = target.stat().st_size
    try:
        with zipfile.ZipFile(target) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise CheckpointError(
            f"refused to load {target}: it is truncated, corrupted or not a torch checkpoint (not a torch zip "
            f"file: {error}; legacy and raw pickle files are never unpickled)"
        ) from None
    if len(infos) > limit("PROBGEN_MAX_OBJECTS"):
        raise CheckpointError(f"{target} holds {len(infos):,} records (limit PROBGEN_MAX_OBJECTS)")
    declared = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(
                f"{target}: record {info.filename!r} is compressed; torch.save never compresses, so the file was "
                "crafted or re-packed (refused: a compressed record can expand beyond the file)"
            )
        declared += info.file_size
    if declared > size:
        raise CheckpointError(
            f"{target}: its records declare {declared:,} bytes but the file holds {size:,}; truncated or crafted"
        )
    return size


def _check_tensor(t: Tensor, where: str, target: Path) -> int:
    """Refuse tensors that are not plain dense CPU/GPU data; returns the bytes a contiguous copy needs."""
    if t.is_meta or t.device.type == "meta":
        raise CheckpointError(f"{target}: {where} is a meta tensor (no data); refused")
    if t.is_quantized:
        raise CheckpointError(f"{target}: {where} is a quantized tensor ({t.dtype}); refused")
    if t.is_nested:
        raise CheckpointError(f"{target}: {where} is a nested tensor; refused")
    if t.layout != torch.strided:
        raise CheckpointError(f"{target}: {where} is a {t.layout} tensor (sparse); only dense tensors are allowed")
    need = t.numel() * t.element_size()
    have = t.untyped_storage().nbytes()
    if t.numel() and need > have:
        raise CheckpointError(
            f"{target}: {where} has shape {tuple(t.shape)} ({need:,} bytes) over a storage of {have:,} bytes "
            f"(strides {tuple(t.stride())}: an expanded or overlapping tensor); refused"
        )
    return need


def safe_torch_load(path: PathLike, *, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` that a crafted file cannot turn into a denial of service.

    Before anything is unpickled, the zip records are checked against the file's actual size
    (compressed records are refused); torch then refuses storages whose declared size differs
    from their record, so storages never exceed the file. After loading, every tensor is checked:
    meta, quantized, nested and sparse tensors are refused, and so are tensors whose shape needs
    more bytes than their storage holds (stride-0 "expanded" or overlapping views, which would
    materialise to any size when copied). The plain-data walk visits at most
    ``PROBGEN_MAX_OBJECTS`` values, and all tensors together at most 4x the file size plus 1 MB.

    Args:
        path: the file.
        map_location: as in :func:`torch.load`.
        what: how errors call the file.

    Returns:
        The loaded object.

    Raises:
        CheckpointError: a refused file (the message names the file and the problem).

    Example:
        >>> import tempfile, os, torch
        >>> target = os.path.join(tempfile.mkdtemp(), "t.pt")
        >>> torch.save(torch.ones(1).expand(10**6), target)
        >>> safe_torch_load(target)
        Traceback (most recent call last):
        ...
        probgen.checkpoint.CheckpointError: ... an expanded or overlapping tensor); refused
    """
    target = Path(path)
    size = _scan_zip(target)
    try:
        obj = torch.load(target, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "weights_only" in text.lower() or "weights only" in text.lower():
            detail = next((line.strip() for line in text.splitlines() if "WeightsUnpickler error" in line),
                          text.splitlines()[0] if text else type(error).__name__)
            raise CheckpointError(
                f"refused to load {target}: it holds objects other than tensors and plain Python data, which "
                "could run code when unpickled, or it is corrupted; probgen never unpickles such objects "
                f"({detail})"
            ) from error
        raise CheckpointError(f"{target} is corrupted or not a {what} ({error})") from error
    except MemoryError:
        raise CheckpointError(f"{target}: loading it needs more memory than this machine has; refused") from None
    except Exception as error:  # torch raises RuntimeError/EOFError/ValueError/... on damaged zips
        raise CheckpointError(
            f"{target} is truncated, corrupted or not a torch checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''})"
        ) from error
    budget = 4 * size + (1 << 20)
    total = 0
    seen = 0
    max_objects = limit("PROBGEN_MAX_OBJECTS")
    stack: list[tuple[Any, str, int]] = [(obj, what, 0)]
    while stack:
        item, where, depth = stack.pop()
        seen += 1
        if seen > max_objects:
            raise CheckpointError(
                f"{target} holds more than {max_objects:,} values (limit PROBGEN_MAX_OBJECTS; raise it if the "
                "file is yours)"
            )
        if depth > 100:
            raise CheckpointError(f"{target}: {where} is nested more than 100 levels deep; refused")
        if isinstance(item, Tensor):
            total += _check_tensor(item, where, target)
            if total > budget:
                raise CheckpointError(
                    f"{target}: its tensors add up to more than {budget:,} bytes for a file of {size:,} bytes "
                    "(tensors sharing storage); refused"
                )
        elif isinstance(item, dict):
            stack.extend((v, f"{where}[{k!r}]", depth + 1) for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item))
    return obj


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


def _model_header(model: nn.Module) -> dict[str, Any]:
    """Family, class name, config (or why there is none) and library versions of ``model``."""
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
    payload = _model_header(model)
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


def _load_weights(model: nn.Module, state_dict: Mapping[str, Tensor], target: Path) -> None:
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
        _load_weights(model, record["state_dict"], target)
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
    _load_weights(built, record["state_dict"], target)
    _check_weights(built, record["state_dict"], target)
    if isinstance(map_location, (str, torch.device)):
        built = built.to(torch.device(map_location))
    return built.eval()

