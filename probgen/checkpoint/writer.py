"""The one safe writer behind every file probgen writes (:func:`atomic_write`) and the run-folder lock
(:class:`run_lock`) that keeps two processes from writing into one run."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from probgen.checkpoint.format import PathLike

__all__ = ["atomic_write", "run_lock", "RunLockedError", "LOCK_NAME"]


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
