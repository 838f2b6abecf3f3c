"""``probgen data fetch NAME``: download a standard image set's files, only when the user asks.

Files are streamed to a temporary file beside their final place, their published MD5 is checked, and they are
then renamed into place, so an interrupted or failed download never leaves a partial file under the real name.
CIFAR-10's binary archive is checked, and only its seven expected regular files are extracted (no other
member, no path from the archive is trusted); the archive is then deleted.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from probgen.data.images import IMAGE_SET_NAMES, IMAGE_SETS, ImageSetSpec, resolve_data_dir

__all__ = ["DataFetchError", "fetch"]

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0
_CIFAR_MEMBERS = (*IMAGE_SETS["cifar10"].train, *IMAGE_SETS["cifar10"].test, "batches.meta.txt")


class DataFetchError(OSError):
    """A download failed (offline, HTTP error) or its checksum did not match: one line saying which."""


def _download(url: str, dest: Path, md5: str | None, opener: Callable) -> None:
    """Stream ``url`` into a temporary file in ``dest``'s folder, check its MD5, rename it to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with opener(url, timeout=_TIMEOUT_S) as response:
                    while chunk := response.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DataFetchError(f"could not download {url}: {reason} (offline? copy the files into "
                                     f"{dest.parent} by hand)") from None
        if md5 is not None and digest.hexdigest() != md5:
            raise DataFetchError(f"{url}: checksum mismatch (MD5 {digest.hexdigest()}, published {md5}); "
                                 "the download is corrupt or the mirror serves other files; nothing was written")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _extract_cifar(archive: Path, folder: Path) -> None:
    """Copy the expected regular files of ``cifar-10-batches-bin/`` out of the archive, each atomically."""
    target = folder / "cifar-10-batches-bin"
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for name in _CIFAR_MEMBERS:
                try:
                    member = tar.getmember(f"cifar-10-batches-bin/{name}")
                except KeyError:
                    raise DataFetchError(f"{archive}: no cifar-10-batches-bin/{name} in the archive") from None
                if not member.isfile():
                    raise DataFetchError(f"{archive}: cifar-10-batches-bin/{name} is not a regular file")
                source = tar.extractfile(member)
                fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=target)
                try:
                    with os.fdopen(fd, "wb") as out, source:
                        while chunk := source.read(_CHUNK):
                            out.write(chunk)
                    os.replace(tmp, target / name)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
    except (tarfile.TarError, EOFError) as exc:
        raise DataFetchError(f"{archive}: corrupt archive ({exc})") from None


def fetch(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    url: str | None = None,
    opener: Callable | None = None,
) -> Path:
    """Download the files of ``mnist``, ``fashion-mnist`` or ``cifar10`` into ``<data folder>/NAME/``.

    MNIST and Fashion-MNIST: the four ``*-ubyte.gz`` files (kept gzipped; the reader decompresses them).
    CIFAR-10: ``cifar-10-binary.tar.gz``, whose seven files are extracted to ``NAME/cifar-10-batches-bin/``.
    Every file's published MD5 is checked before it takes its final name; files already present with the
    right checksum are not downloaded again. Never called implicitly: :func:`probgen.data.load_dataset` only reads.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.
        data_dir: the data folder (default ``$PROBGEN_DATA_DIR``, else ``~/.cache/probgen/data``).
        url: another base URL (a mirror; for CIFAR-10 the archive's URL) instead of the published one.
        opener: ``opener(url, timeout=...) -> response`` with ``read(n)`` and a context manager
            (default :func:`urllib.request.urlopen`).

    Returns:
        The folder the files are in.

    Raises:
        DataFetchError: no network, an HTTP error, or a checksum mismatch (one line).
    """
    if name not in IMAGE_SETS:
        raise ValueError(f"unknown data set {name!r} for fetch; valid names: {', '.join(map(repr, IMAGE_SET_NAMES))}")
    spec: ImageSetSpec = IMAGE_SETS[name]
    folder = resolve_data_dir(data_dir) / name
    opener = urllib.request.urlopen if opener is None else opener
    if spec.fmt == "idx":
        base = spec.url if url is None else url
        base = base if base.endswith("/") else base + "/"
        for file_name, md5 in spec.md5.items():
            dest = folder / file_name
            if dest.is_file() and _md5(dest) == md5:
                continue
            _download(base + file_name, dest, md5, opener)
        return folder
    (archive_name, md5), = spec.md5.items()
    if all((folder / "cifar-10-batches-bin" / m).is_file() for m in _CIFAR_MEMBERS):
        return folder / "cifar-10-batches-bin"
    archive = folder / archive_name
    _download(spec.url if url is None else url, archive, md5, opener)
    try:
        _extract_cifar(archive, folder)
    finally:
        archive.unlink(missing_ok=True)
    return folder / "cifar-10-batches-bin"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
