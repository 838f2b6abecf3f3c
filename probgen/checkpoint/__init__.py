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

**Layout.** :mod:`~probgen.checkpoint.format` (markers, errors, paths, plain-data check, digest),
:mod:`~probgen.checkpoint.writer` (:func:`atomic_write`, :class:`run_lock`),
:mod:`~probgen.checkpoint.safe_load` (:func:`safe_torch_load`), :mod:`~probgen.checkpoint.limits`
(:data:`LIMITS`, :func:`check_config`, the build-memory budget) and :mod:`~probgen.checkpoint.io`
(:func:`save`, :func:`load`, :func:`read_checkpoint`, :func:`write_checkpoint`, :data:`FAMILIES`); every
name is importable from ``probgen.checkpoint``.

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

import os  # noqa: F401  (tests patch probgen.checkpoint.os.replace / .torch.save: the modules themselves)

import torch  # noqa: F401

from probgen.checkpoint.format import (
    CHECKPOINT_NAME,
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    CheckpointWriteError,
    PathLike,
    _digest,  # noqa: F401  (tests compare digests)
    checkpoint_file,
)
from probgen.checkpoint.io import (
    FAMILIES,
    FamilySpec,
    load,
    load_weights,
    model_header,
    read_checkpoint,
    resolve_family,
    save,
    write_checkpoint,
)
from probgen.checkpoint.limits import LIMITS, check_config, limit
from probgen.checkpoint.safe_load import safe_torch_load
from probgen.checkpoint.writer import LOCK_NAME, RunLockedError, atomic_write, run_lock

# The public classes keep the address they had before the split (tracebacks, doctests, pickles).
for _cls in (CheckpointError, CheckpointWriteError, RunLockedError, run_lock):
    _cls.__module__ = __name__
del _cls

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
    "model_header",
    "load_weights",
]
