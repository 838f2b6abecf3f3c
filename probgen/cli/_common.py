"""What every ``probgen`` command shares: the one-line-error parser, argument types, device and thread
choices, ``--out`` checks, the atomic text writer, printing, and the cost model of an evaluation."""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any, NoReturn, Sequence


class UsageError(ValueError):
    """A bad command-line argument: reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2 (argparse prints the usage too)."""

    def error(self, message: str) -> NoReturn:  # noqa: D401
        raise UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _profile_help() -> str:
    from probgen.recipes import settings_table

    return settings_table(markdown=False)


def _seed(text: str) -> int:
    """A seed: an integer in [0, 2**32) (NumPy's and the data shuffles' range)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32), got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**32), got {text!r}")
    return value


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="folder of the mnist / fashion-mnist / cifar10 files (default: $PROBGEN_DATA_DIR, "
                             "else ~/.cache/probgen/data)")


def _version() -> str:
    from probgen import __version__

    return __version__


# ----------------------------------------------------------------------------------------------- helpers


def _check_device(name: str) -> str:
    import torch

    if name == "cpu":
        return name
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name!r}: CUDA is not available on this machine; valid choices here: 'cpu'")
        return name
    raise UsageError(f"--device {name!r} is not valid; valid choices: 'cpu', 'cuda', 'cuda:N'")


def _pick_threads(threads: int | None, dataset) -> None:
    """Intra-op threads: a 2-D model's matrices are too small to split, and idle threads spin-wait."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    elif "OMP_NUM_THREADS" not in os.environ and len(dataset.train[0].reshape(-1)) <= 16:
        torch.set_num_threads(1)


def _check_out_dir(flag: str, out: Path) -> None:
    """Refuse an output folder that cannot be created, before any work is done."""
    for parent in (out, *out.parents):
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag} {str(out)!r}: {str(parent)!r} is a file, not a folder")
            if not os.access(parent, os.W_OK):
                raise UsageError(f"{flag} {str(out)!r}: folder {str(parent)!r} is not writable")
            return


#: the files the command line writes into a run folder (each through a temporary ``.<name>.<hex>.tmp`` file)
_RUN_OUTPUTS = ("samples.png", "summary.json", "samples.pt", "samples.pt.png", "evaluation.json")

_DEFAULT_COMPARISON = "comparison.png"

#: seconds the default (``--eval quick``) evaluation after ``probgen fit`` aims at
_QUICK_EVAL_SECONDS = 45.0

#: test points of the two probes that measure an evaluation's cost
_PROBES = (8, 32)

#: the largest sample set ``probgen sample`` holds (MB of float32); raise with PROBGEN_MAX_SAMPLE_MB
_MAX_SAMPLE_MB = 4096


def _remove_stale_outputs(out: Path) -> None:
    """Remove the temporary files and staging folders a killed earlier run left in ``out``.

    They are never read (readers open the final names only); the checkpoint's own leftovers are
    removed by :func:`probgen.fit`. The caller holds the run folder's lock, so no other writer owns them.
    """
    import shutil

    for name in _RUN_OUTPUTS:  # the current pattern, and the .<name>.tmp-* files of earlier versions
        for path in [*out.glob(f".{name}.*.tmp"), *out.glob(f".{name}.tmp-*")]:
            try:
                path.unlink()
            except OSError:
                pass
    for path in out.glob(".force-*"):
        shutil.rmtree(path, ignore_errors=True)


def _atomic_write_text(path: Path, text: str) -> None:
    from probgen.checkpoint import atomic_write

    atomic_write(path, lambda handle: handle.write(text), text=True)


def _is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a probgen checkpoint (by name, or a torch zip whose pickle carries the marker)."""
    import zipfile

    if path.name == "checkpoint.pt":
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.endswith("data.pkl") and info.file_size < (64 << 20):
                    return b"probgen-checkpoint" in archive.read(info)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False
    return False


def _check_out_file(flag: str, path: Path, *, suffixes: tuple[str, ...], force: bool) -> None:
    """Refuse an output file before any work: wrong suffix, a folder, a checkpoint (never replaced by
    `sample`/`evaluate`/`compare`), an existing file without ``--force``, or a folder that cannot be written."""
    if path.suffix not in suffixes:
        raise UsageError(f"{flag} {str(path)!r}: expected a {' or '.join(suffixes)} file name")
    if path.is_symlink() or path.exists():
        if path.is_dir():
            raise UsageError(f"{flag} {str(path)!r} is a folder; name a file")
        if path.exists() and _is_checkpoint(path):
            raise UsageError(f"{flag} {str(path)!r} is a probgen checkpoint; refusing to write over it (name another file)")
        if not force:
            raise UsageError(f"{flag} {str(path)!r} already exists; pass --force to overwrite it or name another file")
    _check_out_dir(flag, path.parent)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _fmt(value: float | None, err: float | None = None, unit: str = "nats") -> str:
    if value is None:
        return "n/a"
    if err is None:
        return f"{value:.4f} {unit}"
    return f"{value:.4f} ± {err:.4f} {unit}"


def _print_table(rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def _eval_points(recipe, dataset) -> int:
    """Test points the recipe scores by default (its full evaluation)."""
    return min(len(dataset.test), recipe.default_eval_points(dataset) or len(dataset.test))


def _measure_cost(recipe, model, dataset, options: dict, *, budget: float | None = None):
    """Seconds of ``recipe.evaluate`` as ``fixed + per_point * n``, measured on probes of 8 and 32 test points
    (a fixed part such as an AIS estimate of log Z is told apart from the per-point solves; a probe that
    fails, e.g. too few points for a metric, raises and the caller goes without an estimate). When the small
    probe alone says the large one would not fit in ``budget`` seconds, the large probe is skipped (unless the
    recipe caches its fixed part, ``Recipe.cached_fixed_cost``: then the large probe costs only its points and
    ``fixed`` is what the first probe paid beyond them). Returns ``(fixed, per_point, reports)`` with
    ``reports[n]`` the table of the probe of ``n`` points, so that a caller that settles on a probe's size reuses
    it instead of scoring the same points again. The global RNG is restored afterwards, so the probes change
    nothing that follows."""
    import torch

    state = torch.get_rng_state()
    costs, reports = [], {}
    small, large = _PROBES
    cached = bool(getattr(recipe, "cached_fixed_cost", False))
    try:
        for probe in _PROBES:
            start = time.perf_counter()
            reports[probe] = recipe.evaluate(model, dataset, **{**options, "num_points": probe})
            costs.append(time.perf_counter() - start)
            if budget is not None and probe == small and costs[0] * large / small > budget and not cached:
                return 0.0, costs[0] / small, reports
    finally:
        torch.set_rng_state(state)
    if cached:  # the second probe paid no fixed part
        per_point = max(costs[1] / large, 1e-9)
        return max(costs[0] - small * per_point, 0.0), per_point, reports
    per_point = max((costs[1] - costs[0]) / (large - small), costs[1] / large * 0.05, 1e-9)
    return max(costs[0] - small * per_point, 0.0), per_point, reports
