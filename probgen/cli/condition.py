"""``probgen condition`` and ``probgen impute``: posterior draws of a trained model given observations.

* ``probgen condition DIR --observe y.npy --operator inpaint|blur|subsample|noise --noise-std s --method M -n K``:
  ``y.npy`` holds one observation — for ``inpaint`` an array shaped like one data point with NaN where
  ``x`` is not observed; for ``blur``, ``subsample`` and ``noise`` the operator's output (any shape with
  ``m`` entries). Writes ``draws.npy`` ``(K, *event)``, ``mean.npy``, ``std.npy`` (the pointwise
  posterior std, an uncertainty map for images) and ``condition.png`` into ``--out`` (default ``DIR/condition``).
* ``probgen impute DIR --data file_with_nans.npy --method smc -n 20``: multiple imputation of every row
  of a data set (NaN = missing) with the mask operator; writes ``imputations.npy`` ``(rows, K, *event)``,
  ``mean.npy``, ``std.npy`` and ``impute.png`` into ``--out`` (default ``DIR/impute``).

Both build the Pyro model ``x ~ model.as_distribution(); y ~ LinearGaussian(op, σ)(x)`` and call
:func:`probgen.infer.posterior_sample` (with ``clip_x0=model.data_range`` for a model of quantized data,
such as a DDPM or a score SDE trained on images). Registered in :mod:`probgen.cli` by :func:`add_parsers`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

__all__ = ["add_parsers", "COMMANDS"]

_METHODS = ("dps", "pigdm", "ddrm", "annealed-langevin", "smc", "mcmc")


def add_parsers(sub: Any, positive_int: Any, positive_float: Any, nonnegative_int: Any) -> None:
    """Add the ``condition`` and ``impute`` sub-commands to ``sub`` (argparse sub-parsers)."""
    from probgen.infer.posterior.operators import OPERATORS

    cond = sub.add_parser("condition", help="posterior draws of a trained model given an observation y (inverse problems)")
    cond.add_argument("dir", metavar="DIR", help="a folder written by `probgen fit` (or a checkpoint file)")
    cond.add_argument("--observe", required=True, help="the observation, a .npy file (NaN = missing for inpaint)")
    cond.add_argument("--operator", required=True, choices=OPERATORS)
    cond.add_argument("--noise-std", type=positive_float, default=0.05, help="observation noise σ_y")
    cond.add_argument("--blur-size", type=positive_int, default=5, help="kernel size of --operator blur")
    cond.add_argument("--blur-width", type=positive_float, default=1.0, help="Gaussian width of --operator blur")
    cond.add_argument("--factor", type=positive_int, default=2, help="block size of --operator subsample")
    _common(cond, positive_int, nonnegative_int)
    imp = sub.add_parser("impute", help="multiple imputation of the NaN entries of a data set")
    imp.add_argument("dir", metavar="DIR")
    imp.add_argument("--data", required=True, help="a .npy file of rows shaped like the model's data, NaN = missing")
    imp.add_argument("--noise-std", type=positive_float, default=0.01, help="noise on the observed entries")
    _common(imp, positive_int, nonnegative_int)


def _common(p: argparse.ArgumentParser, positive_int: Any, nonnegative_int: Any) -> None:
    p.add_argument("--method", default="smc", choices=_METHODS)
    p.add_argument("-n", "--num-samples", type=positive_int, default=20)
    p.add_argument("--steps", type=positive_int, default=None, help="reverse steps of the method")
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=nonnegative_int, default=0)


def _load(args: argparse.Namespace) -> Any:
    from probgen.checkpoint import load

    if not Path(args.dir).exists():
        raise ValueError(f"DIR {args.dir!r} does not exist")
    model = load(args.dir, map_location=args.device)
    if not hasattr(model, "event_shape"):
        raise ValueError(f"the model in {args.dir!r} ({type(model).__name__}) has no event_shape to condition on")
    return model.eval()


def _read(path: str, flag: str) -> Any:
    import numpy as np
    import torch

    if not path.endswith(".npy") or not Path(path).is_file():
        raise ValueError(f"{flag} {path!r}: expected an existing .npy file")
    return torch.as_tensor(np.load(path, allow_pickle=False)).to(torch.get_default_dtype())


def _sample(model: Any, op: Any, y: Any, args: argparse.Namespace) -> Any:
    import pyro
    import torch

    from probgen.diffusion.base import clamp_range
    from probgen.infer import LinearGaussian, posterior_sample

    lik = LinearGaussian(op, args.noise_std)

    def program(y):
        x = pyro.sample("x", model.as_distribution())
        pyro.sample("y", lik(x), obs=y)

    opts = {"steps": args.steps} if args.steps is not None and args.method != "mcmc" else {}
    if args.method != "mcmc" and clamp_range(model) is not None:
        # quantized data (images) in a known range: clamp x̂₀ to it, as the models' own samplers can
        opts["clip_x0"] = clamp_range(model)
    return posterior_sample(program, y.to(args.device), site="x", method=args.method, num_samples=args.num_samples,
                            generator=torch.Generator(device=args.device).manual_seed(args.seed), **opts)


def _save(out: Path, arrays: dict[str, Any], panels: dict[str, Any]) -> None:
    import numpy as np

    from probgen.diagnostics import compare_panels

    out.mkdir(parents=True, exist_ok=True)
    for name, value in arrays.items():
        np.save(out / f"{name}.npy", value.detach().cpu().numpy())
    try:
        compare_panels({k: v.detach().cpu().float() for k, v in panels.items()}, path=out / "figure.png")
    except (ValueError, TypeError):  # vectors that are neither 2-D points nor images: arrays only
        pass


def _cmd_condition(args: argparse.Namespace) -> int:
    import torch

    from probgen.infer.posterior.operators import make_operator

    model = _load(args)
    event = tuple(model.event_shape)
    y = _read(args.observe, "--observe")
    if args.operator == "inpaint":
        if tuple(y.shape) != event:
            raise ValueError(f"--observe for inpaint must have the model's event shape {event} with NaN where x is "
                             f"missing, got {tuple(y.shape)}")
        mask = torch.isfinite(y)
        op = make_operator("inpaint", event, mask=mask)
        obs = y[mask]
    else:
        opts = {"blur": {"size": args.blur_size, "width": args.blur_width},
                "subsample": {"factor": args.factor}}.get(args.operator, {})
        op = make_operator(args.operator, event, **opts)
        if y.numel() != op.out_dim or not bool(torch.isfinite(y).all()):
            raise ValueError(f"--observe for {args.operator} must hold {op.out_dim} finite values, got shape "
                             f"{tuple(y.shape)}")
        obs = y.reshape(-1)
    start = time.perf_counter()
    post = _sample(model, op, obs, args)
    out = Path(args.out) if args.out else Path(args.dir if Path(args.dir).is_dir() else Path(args.dir).parent) / "condition"
    std = post.std()
    panels = {"posterior draws": post.samples[:16]}
    if len(event) == 3:
        panels = {"posterior draws": post.samples[:16], "mean": post.mean()[None],
                  "std": (std / std.max().clamp_min(1e-12) * 2 - 1)[None]}
    _save(out, {"draws": post.samples, "mean": post.mean(), "std": std}, panels)
    print(f"{args.method}: {args.num_samples} posterior draws in {time.perf_counter() - start:.1f} s; wrote draws.npy, "
          f"mean.npy, std.npy and figure.png to {out}")
    return 0


def _cmd_impute(args: argparse.Namespace) -> int:
    import torch

    from probgen.infer import MaskOperator

    model = _load(args)
    event = tuple(model.event_shape)
    data = _read(args.data, "--data")
    if tuple(data.shape[1:]) != event or data.dim() != len(event) + 1:
        raise ValueError(f"--data must have shape (rows, {', '.join(map(str, event))}), got {tuple(data.shape)}")
    start = time.perf_counter()
    draws = []
    for row in data:
        mask = torch.isfinite(row)
        if bool(mask.all()):
            draws.append(row.expand(args.num_samples, *event))
            continue
        if not bool(mask.any()):
            draws.append(model.sample(args.num_samples).detach().cpu().to(row))
            continue
        draws.append(_sample(model, MaskOperator(mask), row[mask], args).samples.cpu().to(row))
    imputations = torch.stack(draws)  # (rows, K, *event)
    out = Path(args.out) if args.out else Path(args.dir if Path(args.dir).is_dir() else Path(args.dir).parent) / "impute"
    mean = imputations.mean(1)
    panels = {"imputed (first draw)": imputations[:, 0][:64], "mean": mean[:64]}
    _save(out, {"imputations": imputations, "mean": mean, "std": imputations.std(1)}, panels)
    print(f"imputed {int((~torch.isfinite(data)).sum())} missing entries of {len(data)} rows, {args.num_samples} draws "
          f"each, in {time.perf_counter() - start:.1f} s; wrote imputations.npy, mean.npy, std.npy and figure.png to {out}")
    return 0


COMMANDS = {"condition": _cmd_condition, "impute": _cmd_impute}
