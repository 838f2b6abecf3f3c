"""Hostile inputs: crafted files and arguments that must be refused in one line, cheaply.

Grown from the catalogue in ``tests/test_bad_inputs.py``: config bombs (layers, widths, event
shape, a build that would allocate gigabytes), ``.npy`` header bombs, stride-0 storages, zip records
that expand, meta / quantized / nested / sparse tensors, and the CLI cases of issue 17 (huge ``-n``,
``--out`` over an existing file or a checkpoint, constant columns, 1e30 values, two rows, seeds
>= 2**32, ``--resume --force``). Each exits 2 with one line naming the problem.

All cases run in ONE subprocess (cheap on a 2-core CI machine) that reports, per case, the exit
status, stderr, seconds, and the growth of the process's peak RSS (``ru_maxrss``) across the case:
a case that allocated more than ~200 MB while refusing would raise the peak by that much.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import probgen
from probgen.checkpoint import read_checkpoint, write_checkpoint
from probgen.flows import Flow
from probgen.training import fit

ROOT = Path(__file__).resolve().parents[1]
RSS_LIMIT_MB = 200
SECONDS_LIMIT = 20  # generous for a busy 2-core machine; typical cases take well under a second


def _edit(run: Path, dest: Path, change) -> None:
    """A copy of ``run``'s checkpoint with ``change(record)`` applied and a valid (unkeyed) digest: what an
    attacker can always produce, since the digest detects corruption, not tampering."""
    record = read_checkpoint(run)
    change(record)
    write_checkpoint(dest / "checkpoint.pt", record)


def _raw_checkpoint(dest: Path, state_dict: dict) -> None:
    """A checkpoint-shaped file holding ``state_dict``, saved without a digest (refused before it matters)."""
    dest.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "probgen-checkpoint", "format_version": 1, "family": "flow", "config": {"dim": 2},
                "state_dict": state_dict, "versions": {}, "sha256": "0" * 64}, dest / "checkpoint.pt")


def _npy_header_bomb(path: Path, shape: tuple[int, ...]) -> None:
    from numpy.lib import format as npy_format

    with open(path, "wb") as handle:
        npy_format.write_array_header_1_0(handle, {"descr": "<f8", "fortran_order": False, "shape": shape})
        handle.write(b"\0" * 64)


def _recompress(src: Path, dest: Path) -> None:
    """The same torch zip with deflate-compressed records (torch.save never compresses)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    run = root / "run"
    fit(Flow(2, "realnvp", num_layers=1), probgen.data.toy2d("8gaussians", 256, seed=0), steps=2, batch_size=64,
        seed=0, progress=False, checkpoint=str(run) + "/")
    (run / "summary.json").write_text("{}\n")  # what `probgen fit` writes beside the checkpoint
    (run / "samples.png").write_bytes(b"\x89PNG fit's figure")
    # config bombs, each with a valid digest
    _edit(run, root / "layers", lambda r: r["config"].update(num_layers=100_000))
    _edit(run, root / "width", lambda r: r["config"].update(hidden_dims=[10**7]))
    _edit(run, root / "event", lambda r: r["config"].update(dim=10**9))
    _edit(run, root / "deep", lambda r: r["config"].update(hidden_dims=[64] * 5000))
    # within every per-entry limit, but 60,000 x 60,000 weights (28 GB) for a file of a few KB
    _edit(run, root / "build", lambda r: r["config"].update(hidden_dims=[60_000, 60_000]))
    _edit(run, root / "nanweights",
          lambda r: r["state_dict"].__setitem__(next(k for k in r["state_dict"] if k.endswith("weight")),
                                                torch.full_like(r["state_dict"][next(k for k in r["state_dict"]
                                                                                     if k.endswith("weight"))],
                                                                float("nan"))))
    # tensors that are not plain dense data
    _raw_checkpoint(root / "stride0", {"w": torch.zeros(1).expand(2**30)})
    _raw_checkpoint(root / "meta", {"w": torch.zeros(3, device="meta")})
    _raw_checkpoint(root / "sparse", {"w": torch.zeros(3, 3).to_sparse()})
    with pytest.warns(UserWarning):
        _raw_checkpoint(root / "quantized", {"w": torch.quantize_per_tensor(torch.rand(3), 0.1, 0, torch.quint8)})
        _raw_checkpoint(root / "nested", {"w": torch.nested.nested_tensor([torch.rand(2), torch.rand(3)])})
    (root / "zipped").mkdir()
    _recompress(run / "checkpoint.pt", root / "zipped" / "checkpoint.pt")
    # data files
    torch.save(torch.zeros(1, 1).expand(2**28, 8), root / "stride0.pt")
    torch.save(torch.zeros(4, 2, device="meta"), root / "meta.pt")
    torch.save(torch.zeros(4, 2).to_sparse(), root / "sparse.pt")
    _npy_header_bomb(root / "header.npy", (1_000_000, 2_000_000))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    x[:, 2] = 5.0
    np.save(root / "constant.npy", x)
    y = rng.normal(size=(100, 2))
    y[7, 1] = 1e30
    np.save(root / "huge_values.npy", y)
    np.save(root / "two_rows.npy", rng.normal(size=(2, 2)))
    np.save(root / "existing.npy", np.zeros((3, 2)))
    return root


R = "{R}"
CASES = {
    # config bombs: refused before anything is built
    "config-layers": (["sample", f"{R}/layers"], r"config\['num_layers'\] = 100000 is above the limit of 1,000 "
                                                 r"layers.*PROBGEN_MAX_LAYERS"),
    "config-width": (["sample", f"{R}/width"], r"config\['hidden_dims'\]\[0\] = 10000000 is above.*PROBGEN_MAX_WIDTH"),
    "config-event": (["sample", f"{R}/event"], r"config\['dim'\] = 1000000000 .*PROBGEN_MAX_EVENT_SIZE"),
    "config-list": (["sample", f"{R}/deep"], r"<list of 5,000 entries>.*PROBGEN_MAX_LAYERS"),
    "config-build": (["sample", f"{R}/build"], r"config builds a model needing more than .* MB.*PROBGEN_MAX_BUILD_MB"),
    "nan-weights": (["sample", f"{R}/nanweights"], r"holds NaN or infinite values"),
    # storages and tensor kinds
    "stride0-checkpoint": (["sample", f"{R}/stride0"], r"expanded or overlapping tensor"),
    "meta-checkpoint": (["sample", f"{R}/meta"], r"meta tensor"),
    "sparse-checkpoint": (["sample", f"{R}/sparse"], r"sparse"),
    "quantized-checkpoint": (["sample", f"{R}/quantized"], r"quantized tensor"),
    "nested-checkpoint": (["sample", f"{R}/nested"], r"nested tensor"),
    "compressed-zip": (["sample", f"{R}/zipped"], r"is compressed"),
    "stride0-data": (["fit", "flow", "--data", f"{R}/stride0.pt", "--out", f"{R}/new"], r"expanded or overlapping"),
    "meta-data": (["fit", "flow", "--data", f"{R}/meta.pt", "--out", f"{R}/new"], r"meta tensor"),
    "sparse-data": (["fit", "flow", "--data", f"{R}/sparse.pt", "--out", f"{R}/new"], r"sparse"),
    "npy-header-bomb": (["fit", "flow", "--data", f"{R}/header.npy", "--out", f"{R}/new"],
                        r"header declares shape \(1000000, 2000000\) .*but the file holds 64 bytes"),
    # data that cannot be trained on
    "constant-column": (["fit", "flow", "--data", f"{R}/constant.npy", "--out", f"{R}/new"], r"column 2 is constant"),
    "huge-values": (["fit", "flow", "--data", f"{R}/huge_values.npy", "--out", f"{R}/new"],
                    r"values up to 1e\+30 \(data row \d+\).*standardize"),
    "two-rows": (["fit", "flow", "--data", f"{R}/two_rows.npy", "--out", f"{R}/new"], r"need at least 20"),
    # arguments
    "huge-n": (["sample", f"{R}/run", "-n", "1000000000000"], r"-n 1000000000000: .* MB, above the limit"),
    "seed-2**32": (["fit", "flow", "--data", "8gaussians", "--seed", str(2**32), "--out", f"{R}/new"],
                   r"argument --seed: expected an integer in \[0, 2\*\*32\)"),
    "resume-force": (["fit", "flow", "--data", "8gaussians", "--resume", "--force", "--out", f"{R}/run"],
                     r"--resume and --force contradict"),
    "out-existing": (["sample", f"{R}/run", "-n", "5", "--out", f"{R}/existing.npy"],
                     r"--out .*existing\.npy' already exists; pass --force"),
    "out-checkpoint": (["sample", f"{R}/run", "-n", "5", "--out", f"{R}/run/checkpoint.pt", "--force"],
                       r"is a probgen checkpoint; refusing to write over it"),
    "out-under-a-file": (["sample", f"{R}/run", "-n", "5", "--out", f"{R}/existing.npy/x.npy"], r"is a file"),
    "evaluate-out-summary": (["evaluate", f"{R}/run", "--data", "8gaussians", "--out", f"{R}/run/summary.json"],
                             r"already exists; pass --force"),
    "compare-out-existing": (["compare", f"{R}/run", "--data", "8gaussians", "--out", f"{R}/run/samples.png"],
                             r"already exists; pass --force"),
}

_SCRIPT = r"""
import contextlib, io, json, resource, sys, time, warnings
from probgen import cli
cases = json.loads(sys.argv[1])
warnings.simplefilter("ignore")
cli.main(["sample", cases["__warm__"], "-n", "5", "--out", cases["__warmout__"], "--no-progress"])  # imports, first use
results = {}
for name, argv in cases.items():
    if name.startswith("__"):
        continue
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(argv)
    results[name] = {"status": status, "stderr": err.getvalue(), "seconds": time.perf_counter() - start,
                     "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def outcomes(hostile) -> dict:
    cases = {name: [a.replace(R, str(hostile)) for a in argv] for name, (argv, _) in CASES.items()}
    cases["__warm__"] = str(hostile / "run")
    cases["__warmout__"] = str(hostile / "warm.npy")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(cases)], capture_output=True, text=True,
                          timeout=600, env=env, cwd=hostile)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_refused_in_one_line_cheaply(name, outcomes):
    import re

    result = outcomes[name]
    lines = result["stderr"].splitlines()
    assert result["status"] == 2, result["stderr"]
    assert len(lines) == 1 and lines[0].startswith("probgen: error: "), result["stderr"]
    assert re.search(CASES[name][1], lines[0]), lines[0]
    assert result["rss_growth_mb"] < RSS_LIMIT_MB, result
    assert result["seconds"] < SECONDS_LIMIT, result


def test_nothing_was_written_by_refused_commands(hostile, outcomes):
    assert not (hostile / "new").exists()
    assert np.load(hostile / "existing.npy").shape == (3, 2)
    assert read_checkpoint(hostile / "run")["family"] == "flow"
    assert (hostile / "run" / "summary.json").read_text() == "{}\n"
    assert (hostile / "run" / "samples.png").read_bytes() == b"\x89PNG fit's figure"


def test_limits_can_be_raised(hostile, monkeypatch):
    """The config limits are refusals by default, not hard walls: an environment variable raises each."""
    from probgen.checkpoint import CheckpointError, check_config

    config = {"dim": 2, "num_layers": 1500}
    with pytest.raises(CheckpointError, match="PROBGEN_MAX_LAYERS"):
        check_config(config, {})
    monkeypatch.setenv("PROBGEN_MAX_LAYERS", "2000")
    check_config(config, {})
    monkeypatch.setenv("PROBGEN_MAX_LAYERS", "zero")
    with pytest.raises(ValueError, match="PROBGEN_MAX_LAYERS='zero' is not an integer"):
        check_config(config, {})


def test_a_users_binary_npy_is_accepted_by_bernoulli_families(tmp_path, capsys):
    from probgen import cli

    x = (np.random.default_rng(0).random((60, 6)) < 0.4).astype(np.float32)
    np.save(tmp_path / "bits.npy", x)
    for family in ("rbm", "made"):
        status = cli.main(["fit", family, "--data", str(tmp_path / "bits.npy"), "--steps", "2", "--no-progress",
                           "--eval", "none", "--num-samples", "16", "--out", str(tmp_path / family)])
        assert status == 0, capsys.readouterr().err
        assert (tmp_path / family / "checkpoint.pt").is_file()
