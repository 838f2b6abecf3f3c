"""Tests of probgen.data.files.load_file: round trips of .npy/.csv/.pt and every refusal, message included."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from probgen.data import load_file


class NotATensor:
    """A picklable object that must never be unpickled by load_file."""

    def __init__(self):
        self.value = 1


# ------------------------------------------------------------------------------------------------ round trips
def test_npy_round_trip(tmp_path):
    data = np.random.default_rng(0).normal(size=(20, 3))
    np.save(tmp_path / "x.npy", data)
    x = load_file(tmp_path / "x.npy")
    assert x.dtype == torch.float32 and x.shape == (20, 3)
    torch.testing.assert_close(x, torch.from_numpy(data).float())
    assert torch.equal(load_file(str(tmp_path / "x.npy")), x)  # str paths too


def test_npy_integer_bool_and_higher_rank(tmp_path):
    np.save(tmp_path / "i.npy", np.arange(12, dtype=np.int16).reshape(4, 3))
    assert load_file(tmp_path / "i.npy").tolist() == np.arange(12).reshape(4, 3).tolist()
    np.save(tmp_path / "b.npy", np.eye(3, dtype=bool))
    assert torch.equal(load_file(tmp_path / "b.npy"), torch.eye(3))
    np.save(tmp_path / "img.npy", np.zeros((5, 1, 4, 4), dtype=np.float32))
    assert load_file(tmp_path / "img.npy").shape == (5, 1, 4, 4)
    with open(tmp_path / "UPPER.NPY", "wb") as handle:  # np.save would append ".npy" to this name
        np.save(handle, np.ones((2, 2)))
    assert load_file(tmp_path / "UPPER.NPY").shape == (2, 2)  # extensions are case-insensitive


def test_csv_with_and_without_header(tmp_path):
    (tmp_path / "h.csv").write_text("a,b,c\n1,2,3\n4.5,-6e-1,7\n\n8,9,10\n")
    x = load_file(tmp_path / "h.csv")
    assert torch.equal(x, torch.tensor([[1, 2, 3], [4.5, -0.6, 7], [8, 9, 10]]))
    (tmp_path / "n.csv").write_text("1,2\n3,4\n")
    assert load_file(tmp_path / "n.csv").tolist() == [[1.0, 2.0], [3.0, 4.0]]
    (tmp_path / "col.csv").write_text("y\n1\n2\n3\n")
    assert load_file(tmp_path / "col.csv").shape == (3, 1)  # one column is (N, 1)


def test_pt_round_trip(tmp_path):
    data = torch.randn(7, 2, 3, dtype=torch.float64)
    torch.save(data, tmp_path / "x.pt")
    x = load_file(tmp_path / "x.pt")
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, data.float())


# --------------------------------------------------------------------------------------------------- refusals
def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.npy: no such file"):
        load_file(tmp_path / "nope.npy")
    (tmp_path / "x.txt").write_text("1,2\n")
    msg = r"x\.txt: unknown file extension '\.txt'; valid extensions: \.npy, \.csv, \.pt"
    with pytest.raises(ValueError, match=msg):
        load_file(tmp_path / "x.txt")
    with pytest.raises(ValueError, match=r"unknown file extension ''"):
        load_file(tmp_path / "noext")
    with pytest.raises(TypeError, match=r"path must be a str or os.PathLike, got int"):
        load_file(3)


def test_npy_with_pickled_objects_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([[NotATensor(), 1]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"obj\.npy: the \.npy file holds Python objects .*refusing to unpickle"):
        load_file(tmp_path / "obj.npy")


def test_npy_non_numeric_and_corrupt(tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a", "b"]]))
    with pytest.raises(ValueError, match=r"s\.npy: expected a numeric array, got dtype <U1"):
        load_file(tmp_path / "s.npy")
    (tmp_path / "bad.npy").write_bytes(b"not an npy file at all")
    with pytest.raises(ValueError, match=r"bad\.npy: not a \.npy file \(no NumPy header\)"):
        load_file(tmp_path / "bad.npy")
    np.savez(tmp_path / "z.npz", x=np.ones(2))
    (tmp_path / "z.npz").rename(tmp_path / "z.npy")
    with pytest.raises(ValueError, match=r"z\.npy: not a \.npy file \(a \.npz archive\)"):
        load_file(tmp_path / "z.npy")


@pytest.mark.parametrize("shape", [(5,), ()])
def test_wrong_rank(tmp_path, shape):
    np.save(tmp_path / "v.npy", np.zeros(shape))
    msg = re.escape(f"expected (N, D) or (N, *event) data of rank >= 2, got shape {shape}")
    with pytest.raises(ValueError, match=msg):
        load_file(tmp_path / "v.npy")


def test_empty_data(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"e\.npy: the data are empty \(shape \(0, 3\), no rows\)"):
        load_file(tmp_path / "e.npy")
    (tmp_path / "e.csv").write_text("\n\n")
    with pytest.raises(ValueError, match=r"e\.csv: the \.csv file is empty \(no rows\)"):
        load_file(tmp_path / "e.csv")
    (tmp_path / "h.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"h\.csv: the \.csv file has a header row but no data rows"):
        load_file(tmp_path / "h.csv")


def test_nan_and_inf_report_count_and_first_row(tmp_path):
    data = np.zeros((6, 2))
    data[2, 1] = np.nan
    data[4, 0] = np.inf
    data[4, 1] = -np.inf
    np.save(tmp_path / "n.npy", data)
    with pytest.raises(ValueError, match=r"n\.npy: 3 NaN or infinite values .* in 2 rows; the first is data row 2"):
        load_file(tmp_path / "n.npy")
    np.save(tmp_path / "big.npy", np.array([[1.0], [1e300]]))  # overflows float32
    with pytest.raises(ValueError, match=r"1 NaN or infinite values \(in float32\) in 1 rows; the first is data row 1"):
        load_file(tmp_path / "big.npy")
    (tmp_path / "n.csv").write_text("x,y\n1,2\n3,nan\n")
    with pytest.raises(ValueError, match=r"n\.csv: 1 NaN or infinite values .*the first is data row 1"):
        load_file(tmp_path / "n.csv")


def test_csv_non_numeric_and_ragged(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,abc\n")
    with pytest.raises(ValueError, match=r"t\.csv: line 3 holds a non-numeric value 'abc'; expected numbers only"):
        load_file(tmp_path / "t.csv")
    (tmp_path / "r.csv").write_text("1,2\n3\n")
    with pytest.raises(ValueError, match=r"r\.csv: line 2 has 1 columns, expected 2"):
        load_file(tmp_path / "r.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(ValueError, match=r"bin\.csv: not a text \.csv file"):
        load_file(tmp_path / "bin.csv")


def test_pt_that_is_not_a_tensor(tmp_path):
    torch.save({"x": torch.zeros(3, 2)}, tmp_path / "d.pt")
    msg = r"d\.pt: expected a tensor saved with torch\.save\(tensor, path\), got a dict"
    with pytest.raises(ValueError, match=msg):
        load_file(tmp_path / "d.pt")
    torch.save(NotATensor(), tmp_path / "o.pt")
    with pytest.raises(ValueError, match=r"o\.pt: the \.pt file holds objects that are not plain tensors; refusing"):
        load_file(tmp_path / "o.pt")
    torch.save(torch.zeros(4), tmp_path / "v.pt")
    with pytest.raises(ValueError, match=r"v\.pt: expected \(N, D\)"):
        load_file(tmp_path / "v.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.pt: not a readable \.pt file"):
        load_file(tmp_path / "junk.pt")
