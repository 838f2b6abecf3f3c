"""Every flow kind on the 2-D sets of the flow papers: test NLL against the true entropy, and density maps.

Trains ``probgen.flows.Flow(2, kind)`` with :func:`probgen.fit` on each chosen data set, then prints a
table of the test NLL, the data's entropy ``H`` and the KL gap ``E_data[log p_data - log p_model]``
(a paired estimate with its standard error) and writes one density heat map per (data, kind) as PNG.

Usage::

    python examples/flows_2d.py                                   # quick default set, < 2 min on CPU
    python examples/flows_2d.py --kinds spline maf cnf --data 8gaussians checkerboard rings --steps 3000
    python examples/flows_2d.py --kinds spline-ar spline --data 8gaussians --tuned   # the CLI's tuned recipe

``--tuned`` uses the settings of ``probgen fit flow`` / ``probgen fit cnf`` measured for the documentation
(docs/flows.md): for the discrete kinds 4000 steps, batch 512, lr 3e-3 with cosine decay, and for
``spline-ar`` the command line's 2-D flow (``probgen.recipes.TOY2D_FLOW``: 3 layers, conditioners
``(64, 64)``, ``bound = 3``); for ``cnf`` the command line's step count, batch 512, lr 3e-3, solver
tolerances 1e-3 while training (1e-5 to evaluate), backpropagation through the solver.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

import probgen as pg
from probgen.flows import FLOW_KINDS, Flow
from probgen.recipes import CNFRecipe, TOY2D_FLOW

CNF_STEPS = CNFRecipe.defaults["toy2d"]["steps"]

QUICK_KINDS = ("spline-ar", "spline", "realnvp", "maf")
QUICK_DATA = ("8gaussians",)


def build(kind: str, *, tuned: bool = False) -> Flow:
    if kind == "cnf":
        # loose tolerances and plain backprop train fastest on CPU; evaluation tightens them (see evaluate)
        tol = 1e-3 if tuned else 1e-4
        return Flow(2, "cnf", rtol=tol, atol=tol, adjoint=False)
    if kind == "spline-ar" and tuned:
        return Flow(2, kind, **TOY2D_FLOW)
    return Flow(2, kind)


def evaluate(flow: Flow, name: str, test: torch.Tensor) -> dict[str, float]:
    for block in flow.cnf_transforms:
        block.rtol = block.atol = 1e-5
    with torch.set_grad_enabled(flow.kind == "cnf"):  # a CNF's divergence needs autograd
        lp = torch.cat([flow.log_prob(chunk).detach() for chunk in test.split(2000)])
    true_lp = pg.data.toy2d_log_prob(name, test.double()).to(lp)
    gap = true_lp - lp
    entropy, entropy_se = pg.data.toy2d_entropy(name)
    n = test.shape[0]
    return {
        "nll": float(-lp.mean()),
        "nll_se": float(lp.std() / math.sqrt(n)),
        "entropy": entropy,
        "entropy_se": entropy_se,
        "kl": float(gap.mean()),
        "kl_se": float(gap.std() / math.sqrt(n)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=list(QUICK_KINDS), choices=FLOW_KINDS)
    parser.add_argument("--data", nargs="+", default=list(QUICK_DATA), choices=("8gaussians", "checkerboard", "rings"))
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 400, or the tuned value)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--tuned", action="store_true", help="use the tuned step counts of docs/flows.md")
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="flows_2d_out", help="folder for the PNG heat maps")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name in args.data:
        data = pg.data.load_dataset(name, seed=args.seed, n_test=args.n_test)
        for kind in args.kinds:
            steps = args.steps or ((CNF_STEPS if kind == "cnf" else 4000) if args.tuned else 400)
            torch.manual_seed(args.seed)
            flow = build(kind, tuned=args.tuned)
            start, cpu = time.perf_counter(), time.process_time()
            pg.fit(flow, data.train, steps=steps, batch_size=args.batch_size, lr=args.lr, lr_schedule="cosine",
                   seed=args.seed, progress=False)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            res = evaluate(flow, name, data.test)
            rows.append((name, kind, steps, wall, cpu, res))
            print(f"{name:>12} {kind:>9} steps={steps:<5} NLL={res['nll']:.3f}±{res['nll_se']:.3f} "
                  f"H={res['entropy']:.3f} KL={res['kl']:.3f}±{res['kl_se']:.3f} train {wall:.0f}s "
                  f"(cpu {cpu:.0f}s)", flush=True)
            if not args.no_plots:
                from probgen.diagnostics.plots import density_heatmap

                path = os.path.join(args.out, f"{name}_{kind}.png")
                with torch.set_grad_enabled(kind == "cnf"):
                    density_heatmap(lambda x: flow.log_prob(x).detach(), bounds=(-4.0, 4.0), resolution=100,
                                    path=path, title=f"{kind} on {name}", chunk_size=2500)

    print()
    print(f"| data | kind | steps | test NLL | entropy H | KL gap (NLL - H) | train s (wall / cpu) |")
    print(f"|---|---|---|---|---|---|---|")
    for name, kind, steps, wall, cpu, r in rows:
        print(f"| {name} | {kind} | {steps} | {r['nll']:.3f} ± {r['nll_se']:.3f} | {r['entropy']:.3f} | "
              f"{r['kl']:.3f} ± {r['kl_se']:.3f} | {wall:.0f} / {cpu:.0f} |")


if __name__ == "__main__":
    main()
