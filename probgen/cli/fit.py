"""``probgen fit``: build a model from a data set through its recipe, train it (resumable, under the run
lock), then write the run folder (checkpoint, summary, figure) and the evaluation after fit."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from probgen.cli._common import (
    _PROBES,
    _QUICK_EVAL_SECONDS,
    UsageError,
    _atomic_write_text,
    _check_device,
    _check_out_dir,
    _eval_points,
    _fmt,
    _json_default,
    _measure_cost,
    _pick_threads,
    _print_table,
    _remove_stale_outputs,
)


def _cmd_fit(args: argparse.Namespace) -> int:
    import torch

    import probgen
    from probgen import registry
    from probgen.data import load_dataset as load_data

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
    reflow_rounds = getattr(args, "reflow", None)
    if reflow_rounds and args.resume:
        raise UsageError("--reflow cannot be combined with --resume (a reflowed run is saved without its training "
                         "state); rerun with --force")

    dataset = load_data(args.data, seed=args.seed, data_dir=args.data_dir)
    dataset, note = recipe.prepare_dataset(dataset)
    if note:
        print(note, flush=True)
    recipe.check_dataset(dataset)
    _check_fit_data(dataset, recipe)
    print(recipe.profile_line(dataset), flush=True)
    _pick_threads(args.threads, dataset)
    final_ckpt = ckpt
    ckpt = _lock_run(args, out, ckpt)
    torch.manual_seed(args.seed)
    model = recipe.build(dataset, kind=args.kind, objective=args.objective)
    if reflow_rounds and not (hasattr(recipe, "reflows") and recipe.reflows(model)):
        raise UsageError(f"--reflow is used by flow matching (fm, cnf --objective fm), not by family {args.family!r}"
                         + (f" with --objective {args.objective}" if args.objective else ""))
    if args.resume:
        model = _resumed_model(ckpt, model, args.kind)
    options = recipe.fit_options(dataset, steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    _validation_options(options, args)
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
    if reflow_rounds:
        print(f"reflow: {reflow_rounds} round(s) on pairs of the trained flow's ODE (rectified flow)", flush=True)
        model = recipe.reflow(model, dataset, rounds=reflow_rounds, options=options, seed=args.seed, device=device,
                              progress=not args.no_progress)
        from probgen.checkpoint import save as save_checkpoint

        save_checkpoint(ckpt, model, extra={"reflow_rounds": reflow_rounds})
    train_seconds = time.perf_counter() - start
    if history.best_step is not None:
        print(f"validation: best mean loss {history.best_validation_loss:.4g} at step {history.best_step} of "
              f"{history.steps_done}" + (" (stopped early)" if history.stopped_early else "")
              + "; the model keeps those parameters", flush=True)

    model.eval()
    torch.manual_seed(args.seed + 1)
    report, how = _post_fit_evaluation(recipe, model, dataset, args.eval, progress=not args.no_progress)
    rows = [(name, _fmt(v.get("value"), v.get("stderr"), v.get("unit", "nats"))) for name, v in report.items()]
    print(f"trained in {train_seconds:.1f} s; {how}" + (":" if rows else ""))
    if rows:
        _print_table(rows)
    drawn, sampling = _post_fit_sample_metrics(model, dataset, report, args.eval, train_seconds=train_seconds,
                                               seed=args.seed, progress=not args.no_progress)

    samples = drawn[:64] if drawn is not None else recipe.sample(model, _figure_samples(args.num_samples, dataset))
    png = ckpt.parent / "samples.png"
    recipe.plot(samples, dataset, path=str(png))
    summary = {
        "family": args.family,
        "model": recipe.describe(model),
        "data": dataset.name,
        "seed": args.seed,
        "device": device,
        "fit": {k: v for k, v in options.items() if k != "batch_transform"},
        **({"reflow_rounds": reflow_rounds} if reflow_rounds else {}),
        "train_seconds": round(train_seconds, 3),
        "final_loss": history.losses[-1] if history.losses else None,
        **({"validation": {"best_step": history.best_step, "best_loss": history.best_validation_loss,
                           "steps_done": history.steps_done, "stopped_early": history.stopped_early}}
           if history.best_step is not None else {}),
        "evaluation": how,
        "metrics": report,
        **({"sample_metrics": sampling} if sampling else {}),
        "versions": {"probgen": probgen.__version__, "torch": torch.__version__},
    }
    _atomic_write_text(ckpt.parent / "summary.json", json.dumps(summary, indent=2, default=_json_default) + "\n")
    if ckpt != final_ckpt:  # --force: the new run is complete; it replaces the old one now
        for name in ("summary.json", "samples.png", "checkpoint.pt"):
            os.replace(ckpt.parent / name, out / name)
        ckpt, png = final_ckpt, out / "samples.png"
    print(f"wrote {ckpt}, {png}, {out / 'summary.json'}")
    return 0


def _fraction(text: str) -> float:
    """``--val-fraction``: a number in ``[0, 1)``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}") from None
    if not (0.0 <= value < 1.0):
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def _validation_options(options: dict, args: argparse.Namespace) -> None:
    """Lay ``--val-fraction`` and ``--patience`` over the row's fit options (``--val-fraction 0``: no validation)."""
    fraction, patience = getattr(args, "val_fraction", None), getattr(args, "patience", None)
    if fraction == 0.0:
        for key in ("validation", "patience", "eval_every"):
            options.pop(key, None)
    elif fraction is not None:
        options["validation"] = fraction
    if patience is not None:
        if options.get("validation") is None:
            raise UsageError("--patience needs a validation split: pass --val-fraction F (e.g. 0.1)")
        options["patience"] = patience


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
    probes: dict = {}
    start = time.perf_counter()
    if full > _PROBES[1] and (mode == "quick" or progress):
        try:
            fixed, per_point, probes = _measure_cost(
                recipe, model, dataset, {}, budget=_QUICK_EVAL_SECONDS if mode == "quick" else None)
        except (ValueError, RuntimeError):
            fixed = per_point = None
        if per_point is not None:
            # a cached fixed part (the RBM's log Z bracket) was paid by the probes: only the points remain
            fixed = 0.0 if getattr(recipe, "cached_fixed_cost", False) else fixed
            estimate = fixed + per_point * full
            if mode == "quick" and estimate > _QUICK_EVAL_SECONDS:
                fit_points = max((_QUICK_EVAL_SECONDS - fixed) / per_point, _PROBES[0])
                n = min(full, max(_PROBES[0], 2 ** int(math.log2(fit_points))))
                estimate = fixed + per_point * n
    points = full if n is None else n
    if n is not None and n in probes:  # the probe already scored exactly these points
        report = probes[n]
    else:
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


#: ``--eval quick``: draws for FID/KID after ``fit``, sized from the measured cost of a probe draw to at most
#: ``_QUICK_SAMPLE_FRACTION`` of the training time and ``_QUICK_EVAL_SECONDS``, within ``_QUICK_SAMPLES``
#: (fewest, most); ``--eval full`` draws ``_FULL_SAMPLES`` (as ``probgen evaluate -n 2000``)
_QUICK_SAMPLES = (100, 500)
_QUICK_SAMPLE_FRACTION = 0.25
_FULL_SAMPLES = 2000


def _post_fit_sample_metrics(model, dataset, report: dict, mode: str, *, train_seconds: float, seed: int,
                             progress: bool):
    """FID and KID (with its standard error) on the shipped classifier's features (8×8 digits, 28×28 MNIST-like
    images: :data:`probgen.evaluation.FEATURE_MAPS`) of draws by the family's fast metric sampler against as
    many test images, printed and returned as ``(draws, summary)``; ``(None, {})`` with ``--eval none``, for
    other data, or when the evaluation already has them (GANs). ``quick`` sizes the draw to a fraction of
    the training time (:data:`_QUICK_SAMPLES`); FID is biased upward at small ``n``, KID is not."""
    from probgen.cli.sample_eval import _metric_samples
    from probgen.evaluation import has_image_features, metric_sampler_options, sample_metrics

    if mode == "none" or not has_image_features(dataset.event_shape) or any(k.startswith("FID") for k in report):
        return None, {}
    full = min(_FULL_SAMPLES, len(dataset.test))
    quick = mode == "quick"
    budget = min(_QUICK_EVAL_SECONDS, _QUICK_SAMPLE_FRACTION * train_seconds)
    bounds = (min(_QUICK_SAMPLES[0], full), min(_QUICK_SAMPLES[1], full)) if quick else (full, full)
    opts = metric_sampler_options(model)
    samples, info = _metric_samples(model, num_samples=None if quick else full, budget=budget, bounds=bounds,
                                    sample_opts=opts, seed=seed + 2, progress=progress)
    samples = samples.reshape(len(samples), *dataset.event_shape)
    low, high = (-1.0, 1.0) if getattr(dataset, "data_range", None) is None else dataset.data_range
    table = sample_metrics(samples, dataset.test, image_features=True, data_range=(float(low), float(high)), seed=seed)
    picked = {k: v for k, v in table.items() if k.startswith(("FID", "KID"))}
    n = info["num_samples"]
    sized = (f"sized to about {budget:.0f} s ({_QUICK_SAMPLE_FRACTION:.0%} of training, at most "
             f"{_QUICK_EVAL_SECONDS:.0f} s) within {bounds[0]}-{bounds[1]}; --eval full for {full}; " if quick else "")
    print(f"sample metrics ({mode}) in {info['seconds']:.1f} s of sampling: {n} samples by {info['sampler']} against "
          f"the first {n} test images ({sized}FID is biased upward at small n, KID is unbiased):")
    _print_table([(name, _fmt(v["value"], v.get("stderr"), "")) for name, v in picked.items()])
    return samples, {**info, "metrics": picked}


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
