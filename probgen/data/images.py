"""MNIST, Fashion-MNIST and CIFAR-10 from their standard distribution files, and folders of PNG images.

* MNIST (LeCun et al., 1998) and Fashion-MNIST (Xiao et al., 2017, arXiv:1708.07747) in IDX format, raw or
  ``.gz``, under their standard names (``train-images-idx3-ubyte[.gz]``) or the dotted variant some mirrors use
  (``train-images.idx3-ubyte[.gz]``);
* CIFAR-10 (Krizhevsky, 2009) in its *binary* version (``cifar-10-batches-bin/data_batch_{1..5}.bin``,
  ``test_batch.bin``): records of 1 label byte and 3,072 pixel bytes. The Python version is a pickle and is
  never read;
* a folder of PNG images, all of one size (needs Pillow: ``pip install "probgen[images]"``).

Files are found in a *data folder*: ``data_dir=`` (``--data-dir``), else the environment variable
``PROBGEN_DATA_DIR``, else ``~/.cache/probgen/data``. Set ``NAME`` is looked up in ``<data folder>/NAME/`` and then
in ``<data folder>/`` itself. Nothing is downloaded here; see :func:`probgen.data.fetch`.

Every read is bounded: the header's counts are checked against the file's size before anything is
allocated, and ``.gz`` members are decompressed in chunks up to the size the header announces. Every error is
one line naming the file and the problem.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "DATA_DIR_ENV",
    "IMAGE_SET_NAMES",
    "ImageSetSpec",
    "IMAGE_SETS",
    "resolve_data_dir",
    "read_idx",
    "read_cifar10_batch",
    "read_image_set",
    "read_png_folder",
]

DATA_DIR_ENV = "PROBGEN_DATA_DIR"
"""Environment variable naming the data folder (used when ``data_dir`` / ``--data-dir`` is not given)."""

_DEFAULT_DATA_DIR = Path("~/.cache/probgen/data")
_IDX_UBYTE = 0x08
_CIFAR_RECORD = 1 + 3 * 32 * 32
_GZ_CHUNK = 1 << 20
_MAX_GZ_RATIO = 1100  # deflate cannot compress by more than ~1032:1


@dataclass(frozen=True)
class ImageSetSpec:
    """What a standard image set's files are called and where they come from."""

    name: str
    description: str
    train: tuple[str, ...]  # file stems (IDX: images then labels; CIFAR: the batches)
    test: tuple[str, ...]
    url: str  # where the files are published (``probgen data fetch`` downloads from here)
    md5: dict[str, str]  # published MD5 of each downloaded file
    fmt: str  # "idx" or "cifar10"


_MNIST_FILES = (
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)

IMAGE_SETS: dict[str, ImageSetSpec] = {
    "mnist": ImageSetSpec(
        "mnist",
        "MNIST handwritten digits, 28x28, 256 levels scaled to [-1,1] (60,000 train / 10,000 test; files needed)",
        *_MNIST_FILES,
        url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        fmt="idx",
    ),
    "fashion-mnist": ImageSetSpec(
        "fashion-mnist",
        "Zalando's Fashion-MNIST, 28x28, 256 levels scaled to [-1,1] (60,000 / 10,000; files needed)",
        *_MNIST_FILES,
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        fmt="idx",
    ),
    "cifar10": ImageSetSpec(
        "cifar10",
        "CIFAR-10 (binary version), 3x32x32, 256 levels scaled to [-1,1] (50,000 / 10,000; files needed)",
        tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
        ("test_batch.bin",),
        url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        md5={"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
        fmt="cifar10",
    ),
}
"""The standard image sets :func:`read_image_set` reads, by name."""

IMAGE_SET_NAMES: tuple[str, ...] = tuple(IMAGE_SETS)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: ``data_dir`` if given, else ``$PROBGEN_DATA_DIR``, else ``~/.cache/probgen/data``.

    Example:
        >>> resolve_data_dir("/tmp/my-data")
        PosixPath('/tmp/my-data')
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or _DEFAULT_DATA_DIR
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a folder path, got {type(data_dir).__name__}")
    return Path(data_dir).expanduser()


# ------------------------------------------------------------------------------------------------ IDX files
def _idx_candidates(stem: str) -> list[str]:
    """``train-images-idx3-ubyte`` -> the standard and dotted names, raw and gzipped."""
    dotted = stem.replace("-idx", ".idx")
    return [stem, stem + ".gz", dotted, dotted + ".gz"]


def _open_payload(path: Path) -> tuple[object, int | None]:
    """An open binary stream of the file's payload and its size if known without decompressing (raw files)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb"), None
    return open(path, "rb"), path.stat().st_size


def _read_exact(stream, n: int, path: Path, what: str, *, known_size: bool = False) -> bytearray:
    """Read exactly ``n`` bytes: into one buffer when the file's size is known to hold them, else in chunks, so
    that a lying header cannot make us allocate more than the file holds."""
    if known_size:
        buf = bytearray(n)
        got = stream.readinto(buf)
        if got != n:
            raise ValueError(f"{path}: truncated file: {what} needs {n:,} bytes, only {got:,} present")
        return buf
    buf = bytearray()
    try:
        while len(buf) < n:
            chunk = stream.read(min(_GZ_CHUNK, n - len(buf)))
            if not chunk:
                break
            buf += chunk
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{path}: truncated or corrupt gzip data while reading {what} ({exc})") from None
    if len(buf) < n:
        raise ValueError(f"{path}: truncated file: {what} needs {n:,} bytes, only {len(buf):,} present")
    return buf


def read_idx(path: str | os.PathLike, *, expect_ndim: int | None = None) -> Tensor:
    """Read an IDX file of unsigned bytes (raw or ``.gz``) as a ``uint8`` tensor of the shape in its header.

    Format (LeCun et al.): 2 zero bytes, the element type (``0x08`` = unsigned byte), the number of dimensions
    ``n``, then ``n`` big-endian 32-bit sizes and the data in row-major order. MNIST's images are
    ``(N, 28, 28)`` (magic ``0x00000803``), its labels ``(N,)`` (magic ``0x00000801``).

    Args:
        path: the file; names ending in ``.gz`` are decompressed.
        expect_ndim: the number of dimensions the caller needs (3 for images, 1 for labels), or ``None``.

    Returns:
        ``uint8`` tensor of the header's shape.

    Raises:
        ValueError: wrong magic number, an element type other than unsigned byte, a truncated file, or
            trailing bytes after the data the header announces.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = f.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
        >>> read_idx(f).tolist()
        [7, 2, 1]
    """
    path = Path(path)
    stream, raw_size = _open_payload(path)
    with stream:
        head = _read_exact(stream, 4, path, "the IDX magic number")
        if head[0] != 0 or head[1] != 0 or not 1 <= head[3] <= 4:
            expected = f"0x0000080{expect_ndim}" if expect_ndim else "0x000008nn with 1 <= nn <= 4"
            raise ValueError(f"{path}: wrong magic number 0x{head.hex()}, expected {expected}: not an IDX file")
        if head[2] != _IDX_UBYTE:
            raise ValueError(f"{path}: IDX element type 0x{head[2]:02x} is not supported (only 0x08, unsigned byte)")
        ndim = head[3]
        if expect_ndim is not None and ndim != expect_ndim:
            raise ValueError(f"{path}: wrong magic number 0x{head.hex()}: {ndim}-D data, expected "
                             f"0x0000080{expect_ndim} ({expect_ndim}-D)")
        dims = [int.from_bytes(_read_exact(stream, 4, path, "the IDX sizes")[:4], "big") for _ in range(ndim)]
        payload = 1
        for d in dims:
            payload *= d
        header = 4 + 4 * ndim
        if raw_size is not None and raw_size != header + payload:
            state = "truncated file" if raw_size < header + payload else "trailing bytes"
            raise ValueError(f"{path}: {state}: the header announces {'x'.join(map(str, dims))} bytes of data "
                             f"({header + payload:,} bytes with the header), the file has {raw_size:,}")
        if raw_size is None and payload > _MAX_GZ_RATIO * path.stat().st_size + _GZ_CHUNK:
            raise ValueError(f"{path}: the header announces {'x'.join(map(str, dims))} bytes, more than a "
                             f"{path.stat().st_size:,}-byte gzip file can hold (truncated or corrupt)")
        data = _read_exact(stream, payload, path, f"the {'x'.join(map(str, dims))} data bytes",
                           known_size=raw_size is not None)
        if raw_size is None:
            try:
                extra = stream.read(1)
            except (EOFError, OSError, zlib.error) as exc:
                raise ValueError(f"{path}: truncated or corrupt gzip data after the images ({exc})") from None
            if extra:
                raise ValueError(f"{path}: trailing bytes after the {'x'.join(map(str, dims))} data bytes "
                                 "the header announces")
    return torch.frombuffer(data, dtype=torch.uint8).reshape(dims) if payload else torch.zeros(dims, dtype=torch.uint8)


# ------------------------------------------------------------------------------------------------ CIFAR-10
def read_cifar10_batch(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """Read one batch file of CIFAR-10's binary version.

    Each record is 1 label byte (0-9) and 3,072 pixel bytes: the 1,024 red, then green, then blue values of a
    32x32 image in row-major order (Krizhevsky, 2009, "Learning Multiple Layers of Features from Tiny Images").

    Returns:
        ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``.

    Raises:
        ValueError: a size that is not a whole number of 3,073-byte records, or a label byte above 9.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or size % _CIFAR_RECORD:
        raise ValueError(f"{path}: truncated or not a CIFAR-10 binary batch: {size:,} bytes is not a whole number "
                         f"of {_CIFAR_RECORD:,}-byte records (1 label byte + 3x32x32 pixels)")
    records = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].to(torch.int64)
    if bool((labels > 9).any()):
        bad = int(torch.nonzero(labels > 9)[0, 0])
        raise ValueError(f"{path}: record {bad} has label byte {int(labels[bad])}, expected 0-9 (is this CIFAR-100?)")
    return records[:, 1:].reshape(-1, 3, 32, 32).clone(), labels


# ------------------------------------------------------------------------------------------------ finding files
def _where_from(spec: ImageSetSpec) -> str:
    return f"{spec.url} (or run `probgen data fetch {spec.name}`)"


def _expected_names(spec: ImageSetSpec) -> str:
    if spec.fmt == "idx":
        return ", ".join(s + "[.gz]" for s in spec.train + spec.test) + " (the dotted '.idx3-ubyte' names also work)"
    return "cifar-10-batches-bin/" + ", ".join(spec.train + spec.test)


def _find_files(spec: ImageSetSpec, root: Path) -> dict[str, Path]:
    """Map every needed stem to an existing file, looking in ``root/NAME`` then ``root`` (CIFAR: also their
    ``cifar-10-batches-bin`` subfolders); one-line FileNotFoundError naming what is missing."""
    folders = [root / spec.name, root]
    if spec.fmt == "cifar10":
        folders = [f / "cifar-10-batches-bin" for f in folders] + folders
    best: tuple[int, Path, list[str]] | None = None
    for folder in folders:
        found: dict[str, Path] = {}
        for stem in spec.train + spec.test:
            names = _idx_candidates(stem) if spec.fmt == "idx" else [stem]
            hit = next((folder / n for n in names if (folder / n).is_file()), None)
            if hit is not None:
                found[stem] = hit
        if len(found) == len(spec.train + spec.test):
            return found
        missing = [s for s in spec.train + spec.test if s not in found]
        if found and (best is None or len(found) > best[0]):
            best = (len(found), folder, missing)
    if best is not None:
        raise FileNotFoundError(f"{spec.name}: {best[1]} lacks {', '.join(best[2])}; expected {_expected_names(spec)} "
                                f"from {_where_from(spec)}")
    looked = " or ".join(str(f) for f in (root / spec.name, root))
    state = "" if root.is_dir() else " (the folder does not exist)"
    raise FileNotFoundError(f"{spec.name}: no data files in {looked}{state}; expected {_expected_names(spec)} from "
                            f"{_where_from(spec)}; set --data-dir or ${DATA_DIR_ENV}")


def read_image_set(name: str, *, data_dir: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """Read a standard image set's train and test splits as ``uint8`` images and ``int64`` labels.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.
        data_dir: the data folder (see the module docstring for the default).

    Returns:
        ``{"train": (N, C, H, W) uint8, "train_labels": (N,) int64, "test": ..., "test_labels": ...}``.

    Raises:
        FileNotFoundError: a missing file (one line: the folder, the expected names, where they come from).
        ValueError: a corrupt file, or image and label files of different lengths.
    """
    if name not in IMAGE_SETS:
        raise ValueError(f"unknown image set {name!r}; valid names: {', '.join(map(repr, IMAGE_SET_NAMES))}")
    spec = IMAGE_SETS[name]
    files = _find_files(spec, resolve_data_dir(data_dir))
    out: dict[str, Tensor] = {}
    for split, stems in (("train", spec.train), ("test", spec.test)):
        if spec.fmt == "idx":
            images = read_idx(files[stems[0]], expect_ndim=3)
            labels = read_idx(files[stems[1]], expect_ndim=1)
            if len(images) != len(labels):
                raise ValueError(f"{name}: {files[stems[0]]} holds {len(images):,} images but {files[stems[1]]} "
                                 f"holds {len(labels):,} labels")
            images, labels = images.unsqueeze(1), labels.to(torch.int64)
        else:
            parts = [read_cifar10_batch(files[s]) for s in stems]
            images = torch.cat([p[0] for p in parts])
            labels = torch.cat([p[1] for p in parts])
        out[split], out[f"{split}_labels"] = images, labels
    if out["train"].shape[1:] != out["test"].shape[1:]:
        raise ValueError(f"{name}: train images are {tuple(out['train'].shape[1:])} but test images are "
                         f"{tuple(out['test'].shape[1:])}")
    return out


# ------------------------------------------------------------------------------------------------ PNG folders
def read_png_folder(folder: str | os.PathLike) -> Tensor:
    """Every ``*.png`` directly in ``folder`` (sorted by name) as one ``uint8`` tensor ``(N, C, H, W)``.

    Greyscale images give ``C = 1``; if any image has colour, all are converted to RGB (``C = 3``; an alpha
    channel is dropped). All images must have the same width and height. Needs Pillow
    (``pip install "probgen[images]"``).

    Raises:
        ImportError: Pillow is not installed.
        ValueError: no PNG in the folder, images of different sizes, an unreadable file, or a 16-bit image.
    """
    folder = Path(folder)
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"reading the PNG folder {folder} needs Pillow: pip install \"probgen[images]\" "
                          "(or pip install pillow)") from None
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise ValueError(f"{folder}: no .png files in this folder (a folder of images must hold PNGs directly)")
    modes, size = [], None
    for f in files:  # headers only: sizes and modes are checked before any pixel is decoded
        try:
            with Image.open(f) as im:
                if im.format != "PNG":
                    raise ValueError(f"{f}: not a PNG file (Pillow reads it as {im.format})")
                if size is None:
                    size = im.size
                elif im.size != size:
                    raise ValueError(f"{f}: image is {im.size[0]}x{im.size[1]} but {files[0].name} is "
                                     f"{size[0]}x{size[1]}; all images in the folder must have one size")
                if im.mode in ("I", "I;16", "I;16B", "F"):
                    raise ValueError(f"{f}: {im.mode} images (16-bit or float) are not supported; save 8-bit PNGs")
                modes.append(im.mode)
        except (OSError, SyntaxError) as exc:
            raise ValueError(f"{f}: unreadable PNG ({exc})") from None
    colour = any(m not in ("L", "LA", "1") for m in modes)  # palette images count as colour
    mode = "RGB" if colour else "L"
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                data = im.convert(mode).tobytes()
        except (OSError, SyntaxError) as exc:
            raise ValueError(f"{f}: unreadable PNG ({exc})") from None
        arrays.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    width, height = size
    channels = 3 if colour else 1
    return torch.stack(arrays).reshape(len(files), height, width, channels).permute(0, 3, 1, 2).contiguous()
