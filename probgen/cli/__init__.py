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
lives in the recipes (:mod:`probgen.registry`); this package only parses arguments and writes files.

Layout: this module builds the parser and dispatches (:func:`main`); one module per command group —
:mod:`~probgen.cli.fit`, :mod:`~probgen.cli.sample_eval` (sample, nll, evaluate, compare),
:mod:`~probgen.cli.mcmc`, :mod:`~probgen.cli.data`, :mod:`~probgen.cli.condition` (condition, impute) —
and the shared helpers in :mod:`~probgen.cli._common`. ``python -m probgen.cli`` runs :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Sequence

from probgen.cli._common import (
    _DEFAULT_COMPARISON,
    _QUICK_EVAL_SECONDS,
    UsageError,
    _add_data_dir,
    _nonnegative_int,
    _Parser,
    _positive_float,
    _positive_int,
    _profile_help,
    _seed,
    _version,
)
from probgen.cli.condition import COMMANDS as _condition_commands
from probgen.cli.condition import add_parsers as _add_condition_parsers
from probgen.cli.data import _cmd_data
from probgen.cli.fit import _cmd_fit, _fraction
from probgen.cli.mcmc import _cmd_mcmc
from probgen.cli.sample_eval import _cmd_compare, _cmd_evaluate, _cmd_nll, _cmd_sample

__all__ = ["main", "build_parser", "UsageError"]

UsageError.__module__ = __name__  # its address before the split (tracebacks, doctests)


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
    fit.add_argument("--val-fraction", type=_fraction, default=None, metavar="F",
                     help="hold out this fraction of the training rows, score them during training and keep the "
                          "best parameters (0: none; default: the profile row's setting)")
    fit.add_argument("--patience", type=_positive_int, default=None, metavar="P",
                     help="early stopping: stop after P validation scores without improvement (needs a validation "
                          "fraction, from --val-fraction or the row)")
    fit.add_argument("--kind", default=None, help="family variant, e.g. flow kind spline|realnvp|maf|...")
    fit.add_argument("--objective", default=None, help="training objective, for families that have several")
    fit.add_argument("--reflow", type=_positive_int, default=None, metavar="N",
                     help="flow matching (fm, cnf): N rounds of reflow after training (rectified flow, straighter "
                          "paths: fewer solver steps); each round trains as long as the first")
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
    evaluate.add_argument("-n", "--num-samples", type=_positive_int, default=None,
                          help="model draws for sample metrics (default: as many as take about 2 minutes, 200 to 2000)")
    evaluate.add_argument("--method", default=None,
                          help="sampler for the sample metrics (default: the family's fast one, e.g. dpm-solver)")
    evaluate.add_argument("--steps", type=_positive_int, default=None, help="sampler steps")
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


_COMMANDS = {"fit": _cmd_fit, "sample": _cmd_sample, "nll": _cmd_nll, "evaluate": _cmd_evaluate,
             "compare": _cmd_compare, "mcmc": _cmd_mcmc, "data": _cmd_data}
_COMMANDS.update(_condition_commands)  # condition, impute (probgen/cli/condition.py)


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
