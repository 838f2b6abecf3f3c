"""``probgen mcmc``: batched MCMC chains on a benchmark target or a user potential; writes the summary,
trace figure and draws."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from probgen.cli._common import UsageError, _atomic_write_text, _check_device, _check_out_dir


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
