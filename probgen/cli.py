"""The ``probgen`` command.

::

    probgen fit <family> --data <name|file> [--steps N] [--out DIR] [--device cpu|cuda] [--seed S]
    probgen sample DIR [-n N] [--method M] [--steps K] [--out FILE]
    probgen nll DIR --data <name|file> [--trace exact|hutchinson] [--bound elbo|ode]
    probgen data list
    probgen data fetch NAME [--data-dir DIR] [--url URL]

Every bad argument exits with status 2 and one line on stderr (``probgen: error: ...``); an unexpected
failure exits with status 1 and one line (set ``PROBGEN_DEBUG=1`` for the traceback). Outputs are written
atomically, so an interrupted or refused command leaves no partial file behind.

What differs between families (how to build a model from a data set, training defaults, how to score it)
lives in the recipes (:mod:`probgen.registry`); this module only parses arguments and writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Sequence

from probgen.cli_condition import COMMANDS as _condition_commands
from probgen.cli_condition import add_parsers as _add_condition_parsers

__all__ = ["main", "build_parser", "UsageError"]


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


def build_parser() -> argparse.ArgumentParser:
    from probgen import registry

    parser = _Parser(prog="probgen", description="Deep generative models as Pyro programs.")
    parser.add_argument("--version", action="version", version=f"probgen {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    fit = sub.add_parser("fit", help="train a model on a data set and write a checkpoint, a plot and a summary",
                         epilog=_profile_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    fit.add_argument("family", metavar="FAMILY", help=f"one of: {', '.join(registry.names())}")
    fit.add_argument("--data", required=True, help="a built-in data set (see `probgen data list`) or a .npy/.csv/.pt file")
    _add_data_dir(fit)
    fit.add_argument("--steps", type=_positive_int, default=None, help="optimizer steps (default: the family's tuned value)")
    fit.add_argument("--batch-size", type=_positive_int, default=None)
    fit.add_argument("--lr", type=_positive_float, default=None, help="learning rate")
    fit.add_argument("--kind", default=None, help="family variant, e.g. flow kind spline|realnvp|maf|...")
    fit.add_argument("--objective", default=None, help="training objective, for families that have several")
    fit.add_argument("--out", default=None, help="output folder (default: runs/<family>-<data>)")
    fit.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    fit.add_argument("--seed", type=_seed, default=0)
    fit.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    fit.add_argument("--force", action="store_true",
                     help="replace the run in --out; the old run is kept until the new one is complete")
    fit.add_argument("--eval", default="quick", choices=("none", "quick", "full"),
                     help="evaluation after training: none, quick (a test subset sized to finish in about "
                          f"{_QUICK_EVAL_SECONDS:.0f} s, with its standard error; the default) or full")
    fit.add_argument("--num-samples", type=_positive_int, default=2000, help="samples drawn for the plot (at most 64 for images: the grid shows 64)")
    fit.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    fit.add_argument("--threads", type=_positive_int, default=None,
                     help="CPU threads for torch (default: 1 for low-dimensional data, where more threads only "
                          "spin-wait; torch's default otherwise; OMP_NUM_THREADS is respected)")

    sample = sub.add_parser("sample", help="draw samples from a trained model")
    sample.add_argument("dir", metavar="DIR", help="a folder written by `probgen fit` (or a checkpoint file)")
    sample.add_argument("-n", "--num-samples", type=_positive_int, default=1000)
    sample.add_argument("--method", default=None, help="sampler, for families that have several")
    sample.add_argument("--steps", type=_positive_int, default=None, help="sampler steps")
    sample.add_argument("--out", default=None,
                        help="output .pt (tensor) or .npy file (default: DIR/samples.pt); its figure is FILE.png")
    sample.add_argument("--force", action="store_true", help="overwrite an existing --out file (never a checkpoint)")
    sample.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sample.add_argument("--batch-size", type=_positive_int, default=1000,
                        help="draw at most this many samples at a time (bounds memory)")
    sample.add_argument("--device", default="cpu")
    sample.add_argument("--seed", type=_seed, default=0)

    nll = sub.add_parser("nll", help="negative log-likelihood of a trained model on a data set's test split")
    nll.add_argument("dir", metavar="DIR")
    nll.add_argument("--data", required=True)
    _add_data_dir(nll)
    nll.add_argument("--trace", default=None, help="exact or hutchinson (ODE likelihoods)")
    nll.add_argument("--bound", default=None, help="elbo or ode (families with both)")
    nll.add_argument("-n", "--num-points", type=_positive_int, default=None, help="evaluate on the first N test points")
    nll.add_argument("--device", default="cpu")
    nll.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    nll.add_argument("--seed", type=_seed, default=0)

    evaluate = sub.add_parser("evaluate", help="every metric that applies to a trained model, as a table and JSON")
    evaluate.add_argument("dir", metavar="DIR", help="a folder written by `probgen fit` (or a checkpoint file)")
    evaluate.add_argument("--data", required=True, help="the data set the model was trained on (its test split)")
    _add_data_dir(evaluate)
    evaluate.add_argument("-n", "--num-samples", type=_positive_int, default=2000, help="model draws for sample metrics")
    evaluate.add_argument("--no-likelihood", action="store_true", help="skip likelihood metrics (AIS can be slow)")
    evaluate.add_argument("--out", default=None, help="JSON file (default: DIR/evaluation.json)")
    evaluate.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    evaluate.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--seed", type=_seed, default=0)

    compare = sub.add_parser("compare", help="evaluate several trained models side by side, with one figure")
    compare.add_argument("dirs", metavar="DIR", nargs="+", help="folders written by `probgen fit`")
    compare.add_argument("--data", required=True)
    _add_data_dir(compare)
    compare.add_argument("-n", "--num-samples", type=_positive_int, default=2000)
    compare.add_argument("--no-likelihood", action="store_true")
    compare.add_argument("--out", default=_DEFAULT_COMPARISON, help="the figure (default: comparison.png)")
    compare.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    compare.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    compare.add_argument("--device", default="cpu")
    compare.add_argument("--seed", type=_seed, default=0)

    mcmc = sub.add_parser("mcmc", help="sample a potential with batched MALA/ULA/HMC or Pyro NUTS; ArviZ summary")
    mcmc.add_argument("--potential", required=True,
                      help="a built-in potential (gaussian, funnel, banana) or module:function / file.py:function "
                           "returning U(x) for x of shape (C, D) (this imports and runs that code)")
    mcmc.add_argument("--dim", type=_positive_int, default=10, help="dimension D")
    mcmc.add_argument("--kernel", default="mala", help="mala, ula, hmc or nuts")
    mcmc.add_argument("--chains", type=_positive_int, default=None, help="chains (default: 1000 batched, 4 for nuts)")
    mcmc.add_argument("--samples", type=_positive_int, default=1000, help="draws per chain after warmup")
    mcmc.add_argument("--warmup", type=_nonnegative_int, default=None, help="warmup iterations (default: --samples)")
    mcmc.add_argument("--step-size", type=_positive_float, default=None, help="initial (ULA: fixed) step size")
    mcmc.add_argument("--out", default=None, help="output folder (default: runs/mcmc-<potential>-<kernel>)")
    mcmc.add_argument("--device", default="cpu")
    mcmc.add_argument("--seed", type=_seed, default=0)

    data = sub.add_parser("data", help="built-in data sets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=_Parser)
    data_sub.required = True
    data_sub.add_parser("list", help="list the built-in data sets")
    fetch = data_sub.add_parser("fetch", help="download the files of mnist, fashion-mnist or cifar10 (checksums verified)")
    fetch.add_argument("name", metavar="NAME", help="mnist, fashion-mnist or cifar10")
    _add_data_dir(fetch)
    fetch.add_argument("--url", default=None, help="a mirror's base URL (CIFAR-10: the archive's URL)")
    _add_condition_parsers(sub, _positive_int, _positive_float, _nonnegative_int)  # condition, impute
    return parser


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


# ---------------------------------------------------------------------------------------------- commands


def _cmd_fit(args: argparse.Namespace) -> int:
    import torch

    import probgen
    from probgen import registry
    from probgen.data import load as load_data

    recipe = registry.recipe(args.family)
    recipe.check_options(args.kind, args.objective)  # the options and the data are checked once, here
    device = _check_device(args.device)
    if args.resume and args.force:
        raise UsageError("--resume and --force contradict each other: --resume continues the run in --out, --force "
                         "replaces it; pass one of them")
    out = Path(args.out or f"runs/{args.family}-{Path(args.data).stem}")
    _check_out_dir("--out", out)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists() and not (args.resume or args.force):
        raise UsageError(f"--out {str(out)!r} already holds a checkpoint; pass --resume to continue it or --force to overwrite it")
    if args.resume and not ckpt.exists():
        raise UsageError(f"--resume: no checkpoint in {str(out)!r} to continue")

    dataset = load_data(args.data, seed=args.seed, data_dir=args.data_dir)
    recipe.check_dataset(dataset)
    _check_fit_data(dataset, recipe)
    print(recipe.profile_line(dataset), flush=True)
    _pick_threads(args.threads, dataset)
    final_ckpt = ckpt
    ckpt = _lock_run(args, out, ckpt)
    torch.manual_seed(args.seed)
    model = recipe.build(dataset, kind=args.kind, objective=args.objective)
    if args.resume:
        model = _resumed_model(ckpt, model, args.kind)
    options = recipe.fit_options(dataset, steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"probgen {probgen.__version__}: fitting {recipe.describe(model)}, {n_params:,} parameters, on "
        f"{dataset.name} ({len(dataset.train):,} train / {len(dataset.test):,} test) for {options['steps']:,} steps, "
        f"batch {options['batch_size']}, lr {options['lr']:g}, device {device}"
        + _transform_note(dataset, options),
        flush=True,
    )
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    history = probgen.fit(
        model,
        recipe.training_data(dataset),
        seed=args.seed,
        device=device,
        checkpoint=str(ckpt),
        resume=args.resume,
        progress=not args.no_progress,
        **options,
    )
    train_seconds = time.perf_counter() - start

    model.eval()
    torch.manual_seed(args.seed + 1)
    report, how = _post_fit_evaluation(recipe, model, dataset, args.eval, progress=not args.no_progress)
    rows = [(name, _fmt(v.get("value"), v.get("stderr"), v.get("unit", "nats"))) for name, v in report.items()]
    print(f"trained in {train_seconds:.1f} s; {how}" + (":" if rows else ""))
    if rows:
        _print_table(rows)

    samples = recipe.sample(model, _figure_samples(args.num_samples, dataset))
    png = ckpt.parent / "samples.png"
    recipe.plot(samples, dataset, path=str(png))
    summary = {
        "family": args.family,
        "model": recipe.describe(model),
        "data": dataset.name,
        "seed": args.seed,
        "device": device,
        "fit": {k: v for k, v in options.items() if k != "batch_transform"},
        "train_seconds": round(train_seconds, 3),
        "final_loss": history.losses[-1] if history.losses else None,
        "evaluation": how,
        "metrics": report,
        "versions": {"probgen": probgen.__version__, "torch": torch.__version__},
    }
    _atomic_write_text(ckpt.parent / "summary.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
    if ckpt != final_ckpt:  # --force: the new run is complete; it replaces the old one now
        for name in ("summary.json", "samples.png", "checkpoint.pt"):
            os.replace(ckpt.parent / name, out / name)
        ckpt, png = final_ckpt, out / "samples.png"
    print(f"wrote {ckpt}, {png}, {out / 'summary.json'}")
    return 0


def _transform_note(dataset, options: dict) -> str:
    """What the per-batch transform of training does, for the one-line summary of `probgen fit`."""
    if "batch_transform" not in options:
        return ""
    if options["batch_transform"] is getattr(dataset, "batch_transform", None):
        return " (a fresh binarization of every batch)"
    return " (uniform dequantization of the levels)"


def _figure_samples(num_samples: int, dataset) -> int:
    """Samples drawn for fit's figure: an image grid shows 64, so no more are drawn for images."""
    return min(num_samples, 64) if len(dataset.event_shape) > 1 else num_samples


def _check_fit_data(dataset, recipe) -> None:
    """User files: enough rows for a test split, no constant column for a density model (before training)."""
    from probgen.data.files import check_fit_data

    check_fit_data(dataset, continuous=recipe.continuous)


def _lock_run(args: argparse.Namespace, out: Path, ckpt: Path) -> Path:
    """Take the run folder's lock (held until the command returns) and return where this run writes its
    checkpoint: ``ckpt`` itself, or with ``--force`` over an existing run a staging folder inside ``out``
    whose files replace the old run's only once the new run is complete (removed if the run fails)."""
    import shutil
    import uuid

    from probgen.checkpoint import RunLockedError, run_lock

    try:
        args.exit_stack.enter_context(run_lock(out))
    except RunLockedError as error:
        raise UsageError(f"--out {str(out)!r}: {error}") from None
    _remove_stale_outputs(out)
    if args.force and ckpt.exists():
        staging = out / f".force-{uuid.uuid4().hex[:12]}"
        args.exit_stack.callback(shutil.rmtree, staging, True)
        return staging / "checkpoint.pt"
    return ckpt


def _eval_points(recipe, dataset) -> int:
    """Test points the recipe scores by default (its full evaluation)."""
    return min(len(dataset.test), recipe.default_eval_points(dataset) or len(dataset.test))


def _measure_cost(recipe, model, dataset, options: dict) -> tuple[float, float]:
    """Seconds of ``recipe.evaluate`` as ``fixed + per_point * n``, measured on probes of 8 and 32 test points
    (a fixed part such as an AIS estimate of log Z is told apart from the per-point solves; a probe that
    fails, e.g. too few points for a metric, raises and the caller goes without an estimate). The global RNG
    is restored afterwards, so the probes change nothing that follows."""
    import torch

    state = torch.get_rng_state()
    costs = []
    try:
        for probe in _PROBES:
            start = time.perf_counter()
            recipe.evaluate(model, dataset, **{**options, "num_points": probe})
            costs.append(time.perf_counter() - start)
    finally:
        torch.set_rng_state(state)
    small, large = _PROBES
    per_point = max((costs[1] - costs[0]) / (large - small), costs[1] / large * 0.05, 1e-9)
    return max(costs[0] - small * per_point, 0.0), per_point


def _post_fit_evaluation(recipe, model, dataset, mode: str, *, progress: bool):
    """The evaluation after ``fit``: ``none``; ``full`` (the recipe's default test points); or ``quick``: the
    cost is measured on probes (:func:`_measure_cost`), and the evaluation is cut to the first test points
    that fit in ``_QUICK_EVAL_SECONDS`` (the full evaluation when it fits). Returns the table and a sentence
    saying which evaluation ran and how long it took."""
    from probgen import _progress

    if mode == "none":
        return {}, "evaluation skipped (--eval none; run `probgen nll` or `probgen evaluate` later)"
    full = _eval_points(recipe, dataset)
    n = None
    estimate = None
    start = time.perf_counter()
    if full > _PROBES[1] and (mode == "quick" or progress):
        try:
            fixed, per_point = _measure_cost(recipe, model, dataset, {})
        except (ValueError, RuntimeError):
            fixed = per_point = None
        if per_point is not None:
            estimate = fixed + per_point * full
            if mode == "quick" and estimate > _QUICK_EVAL_SECONDS:
                fit_points = max((_QUICK_EVAL_SECONDS - fixed) / per_point, _PROBES[1])
                n = min(full, max(_PROBES[1], 2 ** int(math.log2(fit_points))))
                estimate = fixed + per_point * n
    points = full if n is None else n
    with _progress.timed(f"evaluating on {points} test points", estimate or 0.1,
                         enabled=progress and estimate is not None):
        report = recipe.evaluate(model, dataset, num_points=n)
    seconds = time.perf_counter() - start
    if n is None or n >= full:
        what = (f"evaluation ({mode}) in {seconds:.1f} s: {full} test points"
                + (" (all)" if full == len(dataset.test) else ""))
    else:
        what = (f"evaluation (quick) in {seconds:.1f} s: the first {n} of {full} test points, sized from the measured "
                f"cost of one solve to about {_QUICK_EVAL_SECONDS:.0f} s; values are mean ± standard error "
                "(--eval full for all)")
    return report, what


def _resumed_model(ckpt: Path, built, kind: str | None):
    """The architecture a run was started with, rebuilt from its checkpoint (a recipe's defaults may have
    changed since); fit then restores the weights and the training state."""
    from probgen.checkpoint import load

    model = load(ckpt)
    if type(model) is not type(built):
        raise UsageError(f"--resume: {ckpt} holds a {type(model).__name__}, not the {type(built).__name__} this "
                         "family builds; pass --force to start a new run")
    if kind is not None and getattr(model, "kind", kind) != kind:
        raise UsageError(f"--resume: the checkpoint in {str(ckpt.parent)!r} was started with --kind "
                         f"{model.kind!r}, not {kind!r}")
    return model.train()


def _load_model(path: str, device: str):
    from probgen.checkpoint import load

    if not Path(path).exists():
        raise UsageError(f"DIR {path!r} does not exist")
    return load(path, map_location=device)


def _sample_chunks(num_samples: int, batch_size: int) -> list[int]:
    """Chunks of at most ``batch_size`` (and about a tenth of the draw, at least 100, so that the bar moves)."""
    from probgen.ops import chunk_sizes

    return chunk_sizes(num_samples, min(batch_size, max(100, math.ceil(num_samples / 10))))


def _check_sample_size(model, num_samples: int) -> None:
    """Refuse a draw that cannot be held in memory (PROBGEN_MAX_SAMPLE_MB, default 4096), before drawing."""
    shape = tuple(getattr(model, "event_shape", None) or (getattr(model, "dim", None) or 1,))
    numel = 1
    for s in shape:
        numel *= int(s)
    limit_mb = int(os.environ.get("PROBGEN_MAX_SAMPLE_MB") or _MAX_SAMPLE_MB)
    need_mb = num_samples * numel * 4 / 2**20
    if need_mb > limit_mb:
        raise UsageError(
            f"-n {num_samples}: {num_samples:,} samples of shape {shape} need {need_mb:,.0f} MB, above the limit of "
            f"{limit_mb:,} MB; draw fewer (several files) or raise PROBGEN_MAX_SAMPLE_MB"
        )


def _cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from probgen import _progress, recipes
    from probgen.checkpoint import atomic_write

    device = _check_device(args.device)
    if not Path(args.dir).exists():
        raise UsageError(f"DIR {args.dir!r} does not exist")
    base = Path(args.out) if args.out else Path(args.dir if Path(args.dir).is_dir() else Path(args.dir).parent) / "samples.pt"
    png = base.with_name(base.name + ".png")  # its own figure: never the samples.png that `fit` wrote
    own = args.force or args.out is None  # the default output is this command's own file: replaced
    _check_out_file("--out", base, suffixes=(".pt", ".npy"), force=own)
    if png.exists() and not own:
        raise UsageError(f"--out {str(base)!r}: its figure {str(png)!r} already exists; pass --force to overwrite it")
    model = _load_model(args.dir, device)
    recipe = recipes.for_model(model)
    opts = recipe.sample_options(method=args.method, steps=args.steps)
    _check_sample_size(model, args.num_samples)
    torch.manual_seed(args.seed)
    model.eval()
    start = time.perf_counter()
    chunks = []
    with _progress.bar(args.num_samples, "sampling", enabled=not args.no_progress, unit="sample") as bar:
        for n in _sample_chunks(args.num_samples, args.batch_size):
            chunks.append(recipe.sample(model, n, **opts).detach().cpu())
            bar.update(n)
    samples = torch.cat(chunks)
    seconds = time.perf_counter() - start
    if base.suffix == ".pt":
        atomic_write(base, lambda handle: torch.save(samples, handle))
    else:
        import numpy as np

        atomic_write(base, lambda handle: np.save(handle, samples.numpy()))
    recipe.plot(samples, None, path=str(png))
    how = ", ".join(f"{k}={v}" for k, v in opts.items()) or "default sampler"
    print(f"drew {len(samples):,} samples ({how}) in {seconds:.2f} s; wrote {base} and {png}")
    return 0


def _cmd_nll(args: argparse.Namespace) -> int:
    import torch

    from probgen import recipes
    from probgen.data import load as load_data

    device = _check_device(args.device)
    model = _load_model(args.dir, device)
    recipe = recipes.for_model(model)
    dataset = load_data(args.data, seed=args.seed, data_dir=args.data_dir)
    recipe.check_data(model, dataset)
    torch.manual_seed(args.seed)
    model.eval()
    report = _evaluate_with_progress(recipe, model, dataset, progress=not args.no_progress, trace=args.trace,
                                     bound=args.bound, num_points=args.num_points)
    print(f"{recipe.describe(model)} on {dataset.name} (test split):")
    _print_table([(name, _fmt(v.get("value"), v.get("stderr"), v.get("unit", "nats"))) for name, v in report.items()])
    return 0


def _evaluate_with_progress(recipe, model, dataset, *, progress: bool, **options) -> dict[str, dict]:
    """``recipe.evaluate`` under a bar whose ETA comes from measured probes (:func:`_measure_cost`)."""
    from probgen import _progress

    full = _eval_points(recipe, dataset) if options.get("num_points") is None else \
        min(options["num_points"], len(dataset.test))
    estimate = None
    if progress and full > _PROBES[1]:
        try:
            fixed, per_point = _measure_cost(recipe, model, dataset, options)
            estimate = fixed + per_point * full
        except (ValueError, RuntimeError):
            pass
    with _progress.timed("evaluating", estimate or 0.1, enabled=progress and estimate is not None):
        return recipe.evaluate(model, dataset, **options)


def _metric_rows(table: dict[str, dict]) -> list[tuple[str, str]]:
    return [(name, _fmt(v["value"], v.get("stderr"), v.get("unit", ""))) for name, v in table.items()]


def _evaluate_dir(path: str, args: argparse.Namespace, dataset, device: str):
    from probgen.evaluation import evaluate

    model = _load_model(path, device)
    from probgen import recipes

    recipes.for_model(model).check_data(model, dataset)
    table = evaluate(model, dataset, num_samples=args.num_samples, seed=args.seed,
                     likelihood=not args.no_likelihood)
    return model, table


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from probgen import _progress, recipes
    from probgen.data import load as load_data

    device = _check_device(args.device)
    if not Path(args.dir).exists():
        raise UsageError(f"DIR {args.dir!r} does not exist")
    out = Path(args.out) if args.out else (Path(args.dir) if Path(args.dir).is_dir() else Path(args.dir).parent) / "evaluation.json"
    _check_out_file("--out", out, suffixes=(".json",), force=args.force or args.out is None)
    dataset = load_data(args.data, seed=args.seed, data_dir=args.data_dir)
    with _progress.bar(1, f"evaluating {args.dir}", enabled=not args.no_progress, unit="run") as bar:
        model, table = _evaluate_dir(args.dir, args, dataset, device)
        bar.update(1)
    print(f"{recipes.for_model(model).describe(model)} on {dataset.name} (test split, {args.num_samples} samples):")
    _print_table(_metric_rows(table))
    payload = {"dir": str(args.dir), "data": dataset.name, "num_samples": args.num_samples, "seed": args.seed,
               "metrics": table}
    _atomic_write_text(out, json.dumps(payload, indent=2, default=_json_default) + "\n")
    print(f"wrote {out}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import torch

    from probgen import _progress, recipes
    from probgen.data import load as load_data
    from probgen.evaluation import compare_figure

    device = _check_device(args.device)
    _check_out_file("--out", Path(args.out), suffixes=(".png",),
                    force=args.force or args.out == _DEFAULT_COMPARISON)
    for d in args.dirs:
        if not Path(d).exists():
            raise UsageError(f"DIR {d!r} does not exist")
    dataset = load_data(args.data, seed=args.seed, data_dir=args.data_dir)
    names: list[str] = []
    tables: dict[str, dict] = {}
    samples: dict[str, torch.Tensor] = {}
    with _progress.bar(len(args.dirs), "comparing", enabled=not args.no_progress, unit="run") as bar:
        for d in args.dirs:
            name = Path(d).name or d
            if name in tables:
                name = d
            bar.set_postfix_str(name)
            model, table = _evaluate_dir(d, args, dataset, device)
            torch.manual_seed(args.seed)
            recipe = recipes.for_model(model)
            draws = recipe.sample(model, min(args.num_samples, 2000)).detach().cpu()
            samples[name] = draws.reshape(len(draws), *dataset.event_shape)
            names.append(name)
            tables[name] = table
            bar.update(1)
    metrics = list(dict.fromkeys(m for t in tables.values() for m in t))
    width = max(len(m) for m in metrics)
    col = max(24, *(len(n) + 2 for n in names))
    print(f"{'':<{width}}  " + "".join(f"{n:>{col}}" for n in names))
    for m in metrics:
        cells = []
        for n in names:
            v = tables[n].get(m)
            cells.append(f"{_fmt(v['value'], v.get('stderr'), '').strip():>{col}}" if v else f"{'—':>{col}}")
        print(f"{m:<{width}}  " + "".join(cells))
    ref = dataset.test[: min(args.num_samples, 2000)]
    if ref.dim() == 2 and ref.shape[1] != 2:
        ref = None
    compare_figure(samples, tables, reference=ref, path=args.out)
    print(f"wrote {args.out}")
    return 0


_MCMC_KERNELS = ("mala", "ula", "hmc", "nuts")


def _user_potential(spec: str):
    """Import ``module:function`` or ``path/to/file.py:function`` (user code, run on purpose)."""
    import importlib
    import importlib.util

    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise UsageError(f"--potential {spec!r}: expected a built-in name or module:function")
    if target.endswith(".py"):
        if not Path(target).is_file():
            raise UsageError(f"--potential {spec!r}: file {target!r} does not exist")
        module_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(f"--potential {spec!r}: cannot import {target!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UsageError(f"--potential {spec!r}: {target!r} has no callable {attr!r}")
    return fn


def _cmd_mcmc(args: argparse.Namespace) -> int:
    import torch

    from probgen import diagnostics
    from probgen._checks import check_choice
    from probgen.infer import run_chains
    from probgen.infer import targets as potentials

    device = _check_device(args.device)
    kernel = check_choice("--kernel", args.kernel, _MCMC_KERNELS)
    if ":" in args.potential:
        fn = _user_potential(args.potential)
        target = potentials.Potential(args.potential, args.dim, fn)
        label = Path(args.potential.rpartition(":")[2]).stem
    else:
        check_choice("--potential", args.potential, tuple(potentials.POTENTIALS))
        target = potentials.get_potential(args.potential, args.dim)
        label = args.potential
    chains = args.chains or (4 if kernel == "nuts" else 1000)
    if kernel == "nuts" and chains > 64:
        raise UsageError(f"--chains {chains}: NUTS runs one Pyro chain at a time; use at most 64, or a batched "
                         "kernel (mala, ula, hmc) for many chains")
    if kernel == "ula" and args.step_size is None:
        raise UsageError("--kernel ula needs --step-size (ULA is biased by O(step size); choose it)")
    warmup = args.samples if args.warmup is None else args.warmup
    out = Path(args.out or f"runs/mcmc-{label}-{kernel}")
    _check_out_dir("--out", out)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    torch.manual_seed(args.seed)
    init = torch.randn(chains, target.dim, generator=gen, device=device, dtype=torch.float64)
    probe = target(init[:2])
    if not isinstance(probe, torch.Tensor) or tuple(probe.shape) != (2,):
        raise UsageError(f"--potential {args.potential!r} must map x of shape (C, {target.dim}) to (C,), "
                         f"got {tuple(getattr(probe, 'shape', ()))}")
    print(f"sampling {label} (D = {target.dim}) with {kernel}: {chains} chains, {warmup} warmup + {args.samples} draws",
          flush=True)
    start = time.perf_counter()
    res = run_chains(target, init, kernel=kernel, num_samples=args.samples, warmup_steps=warmup,
                     step_size=args.step_size, generator=gen, progress_bar=kernel == "nuts")
    samples = res.samples
    stats = {"diverging": res.diverging, "acceptance_rate": res.accept_prob}
    seconds = time.perf_counter() - start
    idata = diagnostics.to_inference_data({"x": samples.detach().cpu()}, sample_stats=stats)
    table = diagnostics.summary(idata, warn=False)
    warning = diagnostics.convergence_warning(idata, table=table)
    # ESS/s from the worst of x and x² (x alone hides antithetic chains, whose x² mixes slowly)
    ess = diagnostics.ess({"x": samples.detach().cpu(), "x2": samples.detach().cpu() ** 2})
    min_ess = min(float(torch.as_tensor(v).min()) for v in ess.values())
    if target.mean is not None:
        table["true_mean"] = target.mean.numpy()
        table["true_sd"] = target.cov.diagonal().sqrt().numpy()
    import pandas as pd

    with pd.option_context("display.max_rows", 12, "display.width", 120):
        print(table.round(3).to_string(max_rows=12))
    n_div = int(stats["diverging"].sum())
    acc = float(stats["acceptance_rate"].double().mean()) if "acceptance_rate" in stats else float("nan")
    print(f"{seconds:.1f} s; min bulk ESS of x and x² {min_ess:,.0f} ({min_ess / seconds:,.0f}/s); "
          f"acceptance {acc:.3f}; divergences {n_div}")
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(out / "summary.csv", table.to_csv())
    # the trace plot shows what a person can read: 4 chains, the first 4 coordinates, one row each
    shown = diagnostics.to_inference_data(
        {f"x[{i}]": samples[:4, :, i].detach().cpu() for i in range(min(target.dim, 4))},
        sample_stats={k: v[:4] for k, v in stats.items()})
    diagnostics.plot_trace(shown, path=str(out / "trace.png"))
    from probgen.checkpoint import atomic_write

    atomic_write(out / "samples.pt", lambda handle: torch.save(samples.detach().cpu(), handle))
    print(f"wrote {out / 'summary.csv'}, {out / 'trace.png'}, {out / 'samples.pt'}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from probgen.data import list_datasets

    if args.data_command == "fetch":
        return _cmd_data_fetch(args)

    rows = list_datasets()
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from probgen.data import DataFetchError, fetch

    try:
        folder = fetch(args.name, data_dir=args.data_dir, url=args.url)
    except DataFetchError as exc:
        raise UsageError(str(exc)) from None
    print(f"{args.name}: files in {folder}")
    return 0


_COMMANDS = {"fit": _cmd_fit, "sample": _cmd_sample, "nll": _cmd_nll, "evaluate": _cmd_evaluate,
             "compare": _cmd_compare, "mcmc": _cmd_mcmc, "data": _cmd_data}
_COMMANDS.update(_condition_commands)  # condition, impute (probgen/cli_condition.py)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ") or type(exc).__name__
    return text


def _fit_interrupted(stop, argv: Sequence[str]) -> int:
    """Ctrl-C / SIGTERM during fit: the checkpoint of the finished step is written; say how to continue (exit 130)."""
    import shlex

    words = [w for w in argv if w != "--force"]  # continuing must not start over
    if "--resume" not in words:
        words.append("--resume")
    print(f"probgen: interrupted at step {stop.step} of {stop.steps}; continue with: probgen {shlex.join(words)}",
          file=sys.stderr)
    return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad arguments)."""
    debug = bool(os.environ.get("PROBGEN_DEBUG"))
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        with contextlib.ExitStack() as args.exit_stack:  # locks and staging folders, released on any exit
            return _COMMANDS[args.command](args)
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    except KeyboardInterrupt as exc:
        training = sys.modules.get("probgen.training")  # not imported yet: not an interrupted fit
        if training is not None and isinstance(exc, training.TrainingInterrupted):  # the checkpoint is written
            return _fit_interrupted(exc, sys.argv[1:] if argv is None else argv)
        print("probgen: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, TypeError, FileNotFoundError, NotImplementedError) as exc:
        if debug:
            raise
        print(f"probgen: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback unless asked to
        if debug:
            raise
        print(f"probgen: error: {type(exc).__name__}: {_one_line(exc)} (set PROBGEN_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
