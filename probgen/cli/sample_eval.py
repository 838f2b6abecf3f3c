"""``probgen sample``, ``probgen nll``, ``probgen evaluate`` and ``probgen compare``: commands that read
trained run folders and write draws, scores or figures."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

from probgen.cli._common import (
    _DEFAULT_COMPARISON,
    _MAX_SAMPLE_MB,
    _PROBES,
    UsageError,
    _atomic_write_text,
    _check_device,
    _check_out_file,
    _eval_points,
    _fmt,
    _json_default,
    _measure_cost,
    _print_table,
)


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
    how = ", ".join(f"{k}={v}" for k, v in recipe.sampler_options(model, opts).items()) or "default sampler"
    print(f"drew {len(samples):,} samples ({how}) in {seconds:.2f} s; wrote {base} and {png}")
    return 0


def _cmd_nll(args: argparse.Namespace) -> int:
    import torch

    from probgen import recipes
    from probgen.data import load_dataset as load_data

    device = _check_device(args.device)
    model = _load_model(args.dir, device)
    recipe = recipes.for_model(model)
    dataset, note = recipe.prepare_dataset(load_data(args.data, seed=args.seed, data_dir=args.data_dir))
    if note:
        print(note, flush=True)
    recipe.check_data(model, dataset)
    torch.manual_seed(args.seed)
    model.eval()
    report = _evaluate_with_progress(recipe, model, dataset, progress=not args.no_progress, trace=args.trace,
                                     bound=args.bound, num_points=args.num_points)
    print(f"{recipe.describe(model)} on {dataset.name} (test split):")
    _print_table([(name, _fmt(v.get("value"), v.get("stderr"), v.get("unit", "nats"))) for name, v in report.items()])
    _print_log_z_bracket(getattr(recipe, "log_z_bracket", None))
    return 0


def _print_log_z_bracket(br) -> None:
    """The RBM's bracket on log Z (forward AIS, reverse AIS) and, when it is not to be trusted, why."""
    if br is None:
        return
    width = float(br.log_z_upper - br.log_z_lower)
    print(f"  log Z in [{float(br.log_z_lower):.3f} ± {float(br.lower_stderr):.3f}, {float(br.log_z_upper):.3f} ± "
          f"{float(br.upper_stderr):.3f}] (width {width:.2f} nats, {br.num_steps} temperatures); the test NLL lies "
          f"between the two NLL rows above")
    if br.warning is not None:
        print(f"  WARNING: {br.warning}")


def _evaluate_with_progress(recipe, model, dataset, *, progress: bool, **options) -> dict[str, dict]:
    """``recipe.evaluate`` under a bar whose ETA comes from measured probes (:func:`_measure_cost`)."""
    from probgen import _progress

    full = _eval_points(recipe, dataset) if options.get("num_points") is None else \
        min(options["num_points"], len(dataset.test))
    estimate = None
    if progress and full > _PROBES[1]:
        try:
            fixed, per_point, _ = _measure_cost(recipe, model, dataset, options)
            estimate = fixed + per_point * full
        except (ValueError, RuntimeError):
            pass
    with _progress.timed("evaluating", estimate or 0.1, enabled=progress and estimate is not None):
        return recipe.evaluate(model, dataset, **options)


#: ``probgen evaluate`` without ``-n``: model draws for the sample metrics, sized from the measured cost of a
#: probe draw to about ``_EVALUATE_SAMPLE_SECONDS`` and kept within ``_EVALUATE_SAMPLES`` (fewest, most)
_EVALUATE_SAMPLE_SECONDS = 120.0
_EVALUATE_SAMPLES = (200, 2000)
#: the probe draw that measures the sampler's cost (its draws are kept)
_SAMPLE_PROBE = 16


def _metric_samples(model, *, num_samples: int | None, budget: float, bounds: tuple[int, int], sample_opts: dict,
                    seed: int, progress: bool, desc: str = "sampling for metrics") -> tuple[object, dict]:
    """Draws for the sample metrics (FID/KID) with ``sample_opts`` (:func:`probgen.evaluation.draw_samples`).

    ``num_samples=None`` sizes the draw: a probe of ``_SAMPLE_PROBE`` draws is timed, and as many draws as
    fit in ``budget`` seconds at that cost are made, at least ``bounds[0]`` and at most ``bounds[1]`` (rounded
    down to a multiple of 50). Returns the samples and ``{"num_samples", "sampler", "nfe", "seconds",
    "sample_opts"}``; the global RNG is seeded with ``seed`` first, so the draws are reproducible."""
    import torch

    from probgen import _progress
    from probgen.evaluation import describe_sampler, draw_samples

    torch.manual_seed(seed)
    start = time.perf_counter()
    parts, nfe = [], None
    if num_samples is None:
        probe, nfe = draw_samples(model, _SAMPLE_PROBE, sample_opts=sample_opts)
        parts.append(probe)
        per_sample = (time.perf_counter() - start) / _SAMPLE_PROBE
        fits = int(budget / max(per_sample, 1e-9)) // 50 * 50
        num_samples = min(max(fits, bounds[0]), bounds[1])
    rest = num_samples - sum(len(p) for p in parts)
    if rest > 0:
        with _progress.bar(rest, desc, enabled=progress, unit="sample") as bar:
            more, more_nfe = draw_samples(model, rest, sample_opts=sample_opts, callback=bar.update)
        parts.append(more)
        nfe = more_nfe if more_nfe is not None else nfe
    samples = torch.cat(parts)[:num_samples]
    seconds = time.perf_counter() - start
    return samples, {"num_samples": len(samples), "sampler": describe_sampler(sample_opts, nfe), "nfe": nfe,
                     "seconds": round(seconds, 3), "sample_opts": dict(sample_opts)}


def _metric_rows(table: dict[str, dict]) -> list[tuple[str, str]]:
    return [(name, _fmt(v["value"], v.get("stderr"), v.get("unit", ""))) for name, v in table.items()]


def _evaluate_dir(path: str, args: argparse.Namespace, dataset, device: str):
    """Load the run in ``path`` and evaluate it: draws for the sample metrics (``-n``, or sized to a budget
    when ``-n`` is not given; the family's fast metric sampler unless ``--method``/``--steps``), then
    :func:`probgen.evaluation.evaluate` on them. Returns the model, the table, the draws and how they were made."""
    from probgen import recipes
    from probgen.evaluation import evaluate, metric_sampler_options

    model = _load_model(path, device)
    recipe = recipes.for_model(model)
    dataset, _ = recipe.prepare_dataset(dataset)  # e.g. grey images, dynamically binarized for an RBM
    recipe.check_data(model, dataset)
    opts = metric_sampler_options(model, method=getattr(args, "method", None), steps=getattr(args, "steps", None))
    model.eval()
    most = len(dataset.test)  # the metrics compare as many test points as draws
    samples, info = _metric_samples(model, num_samples=args.num_samples, budget=_EVALUATE_SAMPLE_SECONDS,
                                    bounds=tuple(min(b, most) for b in _EVALUATE_SAMPLES), sample_opts=opts,
                                    seed=args.seed,
                                    progress=not args.no_progress)
    samples = samples.reshape(len(samples), *dataset.event_shape)
    table = evaluate(model, dataset, seed=args.seed, likelihood=not args.no_likelihood, samples=samples)
    return model, table, samples, info


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from probgen import recipes
    from probgen.data import load_dataset as load_data

    device = _check_device(args.device)
    if not Path(args.dir).exists():
        raise UsageError(f"DIR {args.dir!r} does not exist")
    out = Path(args.out) if args.out else (Path(args.dir) if Path(args.dir).is_dir() else Path(args.dir).parent) / "evaluation.json"
    _check_out_file("--out", out, suffixes=(".json",), force=args.force or args.out is None)
    dataset = load_data(args.data, seed=args.seed, data_dir=args.data_dir)
    start = time.perf_counter()
    model, table, _, info = _evaluate_dir(args.dir, args, dataset, device)
    seconds = time.perf_counter() - start
    sized = "" if args.num_samples is not None else \
        f", sized to about {_EVALUATE_SAMPLE_SECONDS:.0f} s of sampling (-n to choose)"
    print(f"{recipes.for_model(model).describe(model)} on {dataset.name} (test split; {info['num_samples']} samples by "
          f"{info['sampler']} in {info['seconds']:.1f} s{sized}; {seconds:.1f} s in all):")
    _print_table(_metric_rows(table))
    payload = {"dir": str(args.dir), "data": dataset.name, "num_samples": info["num_samples"], "seed": args.seed,
               "sampling": info, "seconds": round(seconds, 3), "metrics": table}
    _atomic_write_text(out, json.dumps(payload, indent=2, default=_json_default) + "\n")
    print(f"wrote {out}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import torch

    from probgen import _progress
    from probgen.data import load_dataset as load_data
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
            _, table, draws, _ = _evaluate_dir(d, args, dataset, device)
            samples[name] = draws[:2000]  # the figure shows the draws the metrics scored
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
