"""MNIST / Fashion-MNIST (IDX) and CIFAR-10 (binary) readers, PNG folders and ``fetch``, on tiny files built here
in the exact distribution formats. Nothing is downloaded: ``fetch`` runs against an in-memory opener."""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import tarfile
import urllib.error
from pathlib import Path

import pytest
import torch

import probgen as pg
from probgen.cli import main
from probgen.data import DataFetchError, fetch, read_idx
from probgen.data.images import IMAGE_SETS, ImageSetSpec

N_TRAIN, N_TEST, SIDE = 6, 4, 28


def _idx_bytes(data: torch.Tensor) -> bytes:
    """An IDX file of unsigned bytes: 0, 0, 0x08, ndim, big-endian sizes, row-major data."""
    head = bytes([0, 0, 0x08, data.dim()]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    return head + data.to(torch.uint8).numpy().tobytes()


def _mnist_arrays(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "train-images-idx3-ubyte": torch.randint(0, 256, (N_TRAIN, SIDE, SIDE), generator=g),
        "train-labels-idx1-ubyte": torch.randint(0, 10, (N_TRAIN,), generator=g),
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (N_TEST, SIDE, SIDE), generator=g),
        "t10k-labels-idx1-ubyte": torch.randint(0, 10, (N_TEST,), generator=g),
    }


def _write_mnist(folder: Path, *, gz: bool = False, dotted: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = _mnist_arrays(seed)
    for stem, data in arrays.items():
        name = stem.replace("-idx", ".idx") if dotted else stem
        raw = _idx_bytes(data)
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dotted", [False, True], ids=["dashed", "dotted"])
def test_mnist_reads_raw_and_gz_under_both_names(tmp_path, gz, dotted):
    arrays = _write_mnist(tmp_path / "mnist", gz=gz, dotted=dotted)
    ds = pg.data.load_dataset("mnist", data_dir=tmp_path)
    assert ds.kind == "image" and ds.event_shape == (1, 28, 28) and ds.num_levels == 256
    assert ds.data_range == (-1.0, 1.0) and ds.train.dtype == torch.float32 and ds.batch_transform is None
    k = arrays["train-images-idx3-ubyte"].float()
    torch.testing.assert_close(ds.train, (2 * k / 255 - 1).unsqueeze(1))  # x = 2k/255 - 1, row-major pixels
    assert torch.equal(ds.labels_train, arrays["train-labels-idx1-ubyte"])
    assert torch.equal(ds.labels_test, arrays["t10k-labels-idx1-ubyte"])
    assert torch.equal(pg.data.to_levels(ds.test, num_levels=256).squeeze(1), arrays["t10k-images-idx3-ubyte"])


def test_data_folder_from_argument_env_var_or_the_folder_itself(tmp_path, monkeypatch):
    arrays = _write_mnist(tmp_path / "files")  # the files directly in the folder given
    first = pg.data.load_dataset("mnist", data_dir=tmp_path / "files", n_train=2, n_test=1)
    assert first.train.shape == (2, 1, 28, 28) and first.test.shape == (1, 1, 28, 28)
    monkeypatch.setenv(pg.data.DATA_DIR_ENV, str(tmp_path / "files"))
    assert torch.equal(pg.data.load_dataset("mnist").labels_train, arrays["train-labels-idx1-ubyte"])
    monkeypatch.delenv(pg.data.DATA_DIR_ENV)
    assert pg.data.resolve_data_dir() == Path("~/.cache/probgen/data").expanduser()


def test_fashion_mnist_reads_its_own_subfolder_first(tmp_path):
    _write_mnist(tmp_path, seed=1)  # MNIST-like files at the root...
    fashion = _write_mnist(tmp_path / "fashion-mnist", gz=True, seed=2)  # ... and Fashion-MNIST's in its folder
    ds = pg.data.load_dataset("fashion-mnist", data_dir=tmp_path)
    assert torch.equal(ds.labels_train, fashion["train-labels-idx1-ubyte"])


def test_mnist_binary_dynamic_binarization(tmp_path):
    folder = tmp_path / "mnist"
    arrays = _write_mnist(folder)
    ds = pg.data.load_dataset("mnist-binary", data_dir=tmp_path)
    assert ds.num_levels == 2 and ds.data_range == (0.0, 1.0)
    torch.testing.assert_close(ds.train, arrays["train-images-idx3-ubyte"].float().unsqueeze(1) / 255)
    assert set(ds.test.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(ds.test, pg.data.load_dataset("mnist-binary", data_dir=tmp_path, seed=5).test)  # one fixed draw
    # a fresh draw per call, with mean x: pixels of grey 0.3 over 200 batches
    x = torch.full((200, 784), 0.3)
    torch.manual_seed(0)
    a, b = ds.batch_transform(x), ds.batch_transform(x)
    assert not torch.equal(a, b)
    se = math.sqrt(0.3 * 0.7 / x.numel())
    assert abs(float(a.mean()) - 0.3) < 4 * se
    with pytest.raises(ValueError, match=r"x must hold probabilities in \[0, 1\]"):
        pg.data.dynamic_binarize(torch.tensor([1.5]))


def _write_cifar(folder: Path, sizes=(3, 2, 2, 2, 2, 3), *, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    batches = []
    for name, n in zip(names, sizes):
        labels = torch.randint(0, 10, (n,), generator=g)
        images = torch.randint(0, 256, (n, 3, 32, 32), generator=g)
        records = torch.cat([labels[:, None], images.reshape(n, -1)], dim=1).to(torch.uint8)
        (folder / name).write_bytes(records.numpy().tobytes())
        batches.append((images, labels))
    return batches


def test_cifar10_binary_records(tmp_path):
    batches = _write_cifar(tmp_path / "cifar10" / "cifar-10-batches-bin")
    ds = pg.data.load_dataset("cifar10", data_dir=tmp_path)
    assert ds.event_shape == (3, 32, 32) and len(ds.train) == 11 and len(ds.test) == 3
    train_k = torch.cat([b[0] for b in batches[:5]])
    # record = label byte, then the 1024 red, 1024 green, 1024 blue bytes of a row-major 32x32 image
    torch.testing.assert_close(ds.train, 2 * train_k.float() / 255 - 1)
    assert torch.equal(ds.labels_test, batches[5][1])


def test_cifar10_errors(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    _write_cifar(folder)
    (folder / "data_batch_2.bin").write_bytes((folder / "data_batch_2.bin").read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"data_batch_2.bin: truncated .* not a whole number of 3,073-byte records"):
        pg.data.load_dataset("cifar10", data_dir=tmp_path)
    record = bytes([12]) + bytes(3072)  # CIFAR-100 has 2 label bytes and 100 classes
    (folder / "data_batch_2.bin").write_bytes(record)
    with pytest.raises(ValueError, match=r"record 0 has label byte 12, expected 0-9"):
        pg.data.load_dataset("cifar10", data_dir=tmp_path)


def test_missing_folder_and_missing_file_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        pg.data.load_dataset("mnist", data_dir=tmp_path / "nowhere")
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "nowhere") in message and "does not exist" in message
    assert "train-images-idx3-ubyte[.gz]" in message and "https://ossci-datasets.s3.amazonaws.com/mnist/" in message
    assert "probgen data fetch mnist" in message
    _write_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"mnist: .*mnist lacks t10k-labels-idx1-ubyte; expected"):
        pg.data.load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_truncated_idx(tmp_path, gz):
    raw = _idx_bytes(torch.zeros(3, 28, 28))[:-100]
    path = tmp_path / ("x-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path, expect_ndim=3)
    if gz:  # a gzip stream cut short
        path.write_bytes(gzip.compress(_idx_bytes(torch.zeros(3, 28, 28)))[:-30])
        with pytest.raises(ValueError, match="truncated"):
            read_idx(path, expect_ndim=3)


def test_idx_trailing_bytes_wrong_magic_and_lying_header(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(_idx_bytes(torch.arange(5)) + b"\x00")
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x08\x03" + bytes(12))  # an image file where labels are expected
    with pytest.raises(ValueError, match=r"wrong magic number 0x00000803: 3-D data, expected 0x00000801"):
        read_idx(path, expect_ndim=1)
    path.write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(ValueError, match=r"wrong magic number 0x504b0304, expected 0x00000801: not an IDX file"):
        read_idx(path, expect_ndim=1)
    path.write_bytes(b"\x00\x00\x0d\x01" + bytes(8))
    with pytest.raises(ValueError, match=r"element type 0x0d is not supported"):
        read_idx(path)
    # a header announcing 4e9 bytes in a tiny file: refused from the sizes alone, before any allocation
    lying = b"\x00\x00\x08\x03" + (1000).to_bytes(4, "big") + (2000).to_bytes(4, "big") * 2 + bytes(10)
    path.write_bytes(lying)
    with pytest.raises(ValueError, match=r"truncated file: the header announces 1000x2000x2000 bytes"):
        read_idx(path)
    gz = tmp_path / "y-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(lying))
    with pytest.raises(ValueError, match="more than a .*-byte gzip file can hold"):
        read_idx(gz)


def test_image_and_label_counts_must_match(tmp_path):
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(torch.zeros(N_TEST + 1)))
    expected = rf"t10k-images-idx3-ubyte holds {N_TEST} images but .* holds {N_TEST + 1} labels"
    with pytest.raises(ValueError, match=expected):
        pg.data.load_dataset("mnist", data_dir=tmp_path)


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("damage", ["missing", "truncated", "magic", "counts"])
def test_cli_exits_2_with_one_line(tmp_path, capsys, damage):
    folder = tmp_path / "data"
    if damage != "missing":
        _write_mnist(folder / "mnist")
    target = folder / "mnist" / "train-images-idx3-ubyte"
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:-1])
    elif damage == "magic":
        target.write_bytes(b"\x00\x00\x08\x02" + target.read_bytes()[4:])
    elif damage == "counts":
        (folder / "mnist" / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(torch.zeros(2)))
    code, out, err = _cli(capsys, "fit", "vae", "--data", "mnist", "--data-dir", str(folder), "--out",
                          str(tmp_path / "run"), "--no-progress")
    expected = {"missing": "no data files in", "truncated": "truncated file", "magic": "wrong magic number",
                "counts": "images but"}[damage]
    assert code == 2 and err.count("\n") == 1 and err.startswith("probgen: error: ") and expected in err, err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# ------------------------------------------------------------------------------------------------ PNG folders
def test_png_folder(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (10, 5, 7), generator=g, dtype=torch.uint8)  # 10 images, 5 high, 7 wide
    for i, img in enumerate(grey):
        pil.fromarray(img.numpy(), mode="L").save(tmp_path / f"img{i:02d}.png")
    ds = pg.data.load_dataset(tmp_path, seed=0)
    assert ds.kind == "image" and ds.event_shape == (1, 5, 7) and ds.num_levels == 256
    assert len(ds.train) == 9 and len(ds.test) == 1
    levels = pg.data.to_levels(torch.cat([ds.test, ds.train]), num_levels=256).squeeze(1).to(torch.uint8)
    assert sorted(map(bytes, levels.numpy())) == sorted(map(bytes, grey.numpy()))
    pil.fromarray(torch.zeros(5, 7, 3, dtype=torch.uint8).numpy(), mode="RGB").save(tmp_path / "rgb.png")
    assert pg.data.read_png_folder(tmp_path).shape == (11, 3, 5, 7)  # one colour image: all become RGB
    pil.fromarray(torch.zeros(6, 7, dtype=torch.uint8).numpy(), mode="L").save(tmp_path / "zz.png")
    with pytest.raises(ValueError, match=r"zz.png: image is 7x6 but img00.png is 7x5"):
        pg.data.load_dataset(tmp_path)


def test_png_folder_errors(tmp_path, capsys, monkeypatch):
    code, _, err = _cli(capsys, "fit", "vae", "--data", str(tmp_path), "--out", str(tmp_path / "run"))
    assert code == 2 and "no .png files in this folder" in err and err.count("\n") == 1
    monkeypatch.setitem(__import__("sys").modules, "PIL", None)  # as if Pillow were not installed
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(ImportError, match=r'needs Pillow: pip install "probgen\[images\]"'):
        pg.data.read_png_folder(tmp_path)


# ------------------------------------------------------------------------------------------------ fetch
class _Opener:
    """``urlopen`` stand-in serving bytes by URL; records the URLs asked for."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.urls = files, []

    def __call__(self, url, timeout):
        self.urls.append(url)
        if url not in self.files:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return io.BytesIO(self.files[url])


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_fetch_idx_verifies_checksums_and_writes_atomically(tmp_path, monkeypatch):
    gz = {stem + ".gz": gzip.compress(_idx_bytes(a)) for stem, a in _mnist_arrays().items()}
    spec = IMAGE_SETS["mnist"]
    md5 = {n: _md5(b) for n, b in gz.items()}
    monkeypatch.setitem(IMAGE_SETS, "mnist", ImageSetSpec(**{**spec.__dict__, "md5": md5}))
    opener = _Opener({"https://mirror.test/mnist/" + n: b for n, b in gz.items()})
    folder = fetch("mnist", data_dir=tmp_path, url="https://mirror.test/mnist", opener=opener)
    assert folder == tmp_path / "mnist" and sorted(p.name for p in folder.iterdir()) == sorted(gz)
    assert pg.data.load_dataset("mnist", data_dir=tmp_path).train.shape == (N_TRAIN, 1, 28, 28)
    fetch("mnist", data_dir=tmp_path, url="https://mirror.test/mnist", opener=opener)
    assert len(opener.urls) == 4  # files already present with the right checksum are not downloaded again
    # a corrupt download: checksum mismatch, nothing left under the real name nor as a temporary file
    bad = _Opener({"https://mirror.test/mnist/" + n: b + b"x" for n, b in gz.items()})
    with pytest.raises(DataFetchError, match="checksum mismatch"):
        fetch("mnist", data_dir=tmp_path / "other", url="https://mirror.test/mnist", opener=bad)
    assert list((tmp_path / "other" / "mnist").iterdir()) == []


def test_fetch_offline_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    with pytest.raises(DataFetchError, match=r"could not download .*train-images-idx3-ubyte.gz: .*offline\?"):
        fetch("fashion-mnist", data_dir=tmp_path, opener=_Opener({}))
    monkeypatch.setattr("urllib.request.urlopen", _Opener({}))
    code, out, err = _cli(capsys, "data", "fetch", "cifar10", "--data-dir", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "could not download https://www.cs.toronto.edu/" in err
    code, _, err = _cli(capsys, "data", "fetch", "imagenet")
    assert code == 2 and "valid names: 'mnist', 'fashion-mnist', 'cifar10'" in err


def test_fetch_cifar_extracts_only_the_expected_files(tmp_path, monkeypatch):
    src = tmp_path / "src" / "cifar-10-batches-bin"
    _write_cifar(src)
    (src / "batches.meta.txt").write_text("airplane\n")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-bin")
        evil = tarfile.TarInfo("../evil.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    archive = buffer.getvalue()
    spec = IMAGE_SETS["cifar10"]
    md5 = {"cifar-10-binary.tar.gz": _md5(archive)}
    monkeypatch.setitem(IMAGE_SETS, "cifar10", ImageSetSpec(**{**spec.__dict__, "md5": md5}))
    out = fetch("cifar10", data_dir=tmp_path / "data", opener=_Opener({spec.url: archive}))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir())
    assert not (tmp_path / "data" / "evil.txt").exists() and not (tmp_path / "data" / "cifar10" / "evil.txt").exists()
    assert not (tmp_path / "data" / "cifar10" / "cifar-10-binary.tar.gz").exists()
    assert len(pg.data.load_dataset("cifar10", data_dir=tmp_path / "data").test) == 3


# ------------------------------------------------------------------------------------------------ bits/dim
def test_bits_per_dim_convention():
    d, lp = 784, torch.tensor([-1000.0, -2000.0])
    # 8-bit data in [-1, 1]: bpd = -log p / (D ln 2) + 7 (Song et al. 2021's offset), in [0, 1]: + 8
    torch.testing.assert_close(pg.data.bits_per_dim(lp, d, num_levels=256), -lp / (d * math.log(2)) + 7)
    in_unit = pg.data.bits_per_dim(lp, d, num_levels=256, data_range=(0, 1))
    torch.testing.assert_close(in_unit, -lp / (d * math.log(2)) + 8)
    torch.testing.assert_close(pg.data.bits_per_dim(lp, d, num_levels=None), -lp / (d * math.log(2)))
    with pytest.raises(TypeError, match="num_levels"):
        pg.data.bits_per_dim(lp, d)  # no default: a density is never scored as a probability by accident
