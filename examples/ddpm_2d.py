"""DDPM on 8gaussians: test ELBO vs exact ODE NLL vs the true entropy, and fast samplers vs 1000 steps.

Trains ``probgen.diffusion.ddpm.DDPM((2,))`` (T = 1000 linear β's, the default ``ConditionedMLP``, simple
ε-MSE, EMA of the weights) on 8gaussians, then

* prints the test negative ELBO (nats) for the three reverse variances (β, β̃, analytic after
  ``fit_analytic_variance``), the exact negative log-likelihood of the probability-flow ODE of the same
  network, and the true entropy ``H = -E log p(x)`` of the data (``probgen.data.load_dataset("8gaussians").entropy``).
  On the same test points ``NLL - (-log p(x))`` estimates ``KL(p || p_θ) >= 0``; its standard error is that
  of the paired per-point difference;
* draws ``--num-mmd`` (2000) samples from each sampler (ancestral 1000 steps, DDIM 10/20/50, DPM-Solver++ 10/20) and
  computes MMD² (unbiased and biased, Gaussian kernel with one fixed bandwidth: the median pairwise distance
  of held-out data) to as many held-out test points, over ``--seeds`` repetitions, each with its own sampler
  seed and a disjoint block of test points; the noise floor is the MMD² between as many training points and
  the same held-out block. Mean ± standard error over the repetitions (sd / sqrt(seeds)).
* saves the samples of every sampler beside the data in one PNG.

Usage::

    OMP_NUM_THREADS=1 python examples/ddpm_2d.py                        # 2000 samples, 5 repetitions
    OMP_NUM_THREADS=1 python examples/ddpm_2d.py --num-mmd 1000 --seeds 3 --num-test 500   # docs/ddpm.md
    OMP_NUM_THREADS=1 python examples/ddpm_2d.py --steps 500 --seeds 2      # a quick look

(One thread: on a busy 2-core machine two OpenMP threads made each step several times more expensive.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

import probgen as pg
from probgen.diffusion.ddpm import DDPM

RECIPE = {"steps": 3000, "batch_size": 256, "lr": 1e-3, "ema_decay": 0.999}
SAMPLERS = (("ancestral 1000", "ancestral", None), ("DDIM 10", "ddim", 10), ("DDIM 20", "ddim", 20),
            ("DDIM 50", "ddim", 50), ("DPM-Solver 10", "dpm-solver", 10), ("DPM-Solver 20", "dpm-solver", 20))
NUM_MMD = 2000


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    v = v.double()
    return float(v.mean()), float(v.std() / math.sqrt(len(v))) if len(v) > 1 else math.nan


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{time.perf_counter() - start[0]:.0f} s wall, {time.process_time() - start[1]:.0f} CPU-s, load {load:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=RECIPE["steps"])
    parser.add_argument("--batch-size", type=int, default=RECIPE["batch_size"])
    parser.add_argument("--lr", type=float, default=RECIPE["lr"])
    parser.add_argument("--num-test", type=int, default=1000, help="test points for the ELBO and the ODE NLL")
    parser.add_argument("--seeds", type=int, default=5, help="repetitions of the MMD comparison")
    parser.add_argument("--num-mmd", type=int, default=NUM_MMD, help="samples per sampler and held-out points")
    parser.add_argument("--out", default="ddpm_2d_out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.num_mmd < 2 or not 1 <= args.seeds <= 10_000 // args.num_mmd:
        parser.error(f"--seeds × --num-mmd must fit in the 10,000 test points (disjoint blocks), got "
                     f"{args.seeds} × {args.num_mmd}")
    num_mmd = args.num_mmd
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)

    data = pg.data.load_dataset("8gaussians")  # 50,000 train, 10,000 test points
    model = DDPM((2,), 1000, "linear", ema_decay=RECIPE["ema_decay"])
    print(f"DDPM((2,)) with {sum(p.numel() for p in model.eps_net.parameters()):,} parameters; {args.steps} steps, "
          f"batch {args.batch_size}, lr {args.lr:g}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
          flush=True)
    start = _clock()
    pg.fit(model, data.train, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
           grad_clip=1.0, progress=False)
    print(f"trained in {_since(start)}", flush=True)
    summary: dict = {"recipe": {**RECIPE, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr},
                     "train": _since(start)}
    model.eval()

    # ---- likelihoods ----------------------------------------------------------------------------------
    x = data.test[: args.num_test]
    true_lp = data.log_prob(x)
    entropy, entropy_se = data.entropy
    start = _clock()
    model.fit_analytic_variance(data.train, batch_size=500, generator=torch.Generator().manual_seed(1))
    neg_elbo = {}
    for variance in ("beta", "beta_tilde", "analytic"):
        model.variance = variance
        neg_elbo[variance] = -model.elbo(x, generator=torch.Generator().manual_seed(2))
    model.variance = "beta_tilde"
    print(f"ELBO (3 variances, {len(x)} points) in {_since(start)}", flush=True)
    start = _clock()
    nll = -model.log_prob(x, trace="exact", batch_size=500)
    print(f"ODE NLL ({len(x)} points, exact trace) in {_since(start)}", flush=True)
    rows = [(f"-ELBO, σ² = {k}", v) for k, v in neg_elbo.items()] + [("ODE NLL (exact)", nll)]
    print(f"\n| test, {len(x)} points | nats ± SE | minus true entropy (paired, = KL bound) ± SE |\n|---|---|---|")
    summary["likelihood"] = {}
    for name, v in rows:
        m, se = _mean_se(v)
        gap, gap_se = _mean_se(v + true_lp)
        summary["likelihood"][name] = {"mean": m, "se": se, "gap": gap, "gap_se": gap_se}
        print(f"| {name} | {m:.3f} ± {se:.3f} | {gap:+.3f} ± {gap_se:.3f} |")
    m, se = _mean_se(-true_lp)
    print(f"| -log p(x), true density | {m:.3f} ± {se:.3f} | 0 |")
    print(f"| true entropy H (10^6-point Monte Carlo) | {entropy:.4f} ± {entropy_se:.4f} | |\n", flush=True)
    summary["true"] = {"neg_log_p": [m, se], "entropy": [entropy, entropy_se]}

    # ---- MMD² of each sampler to held-out data --------------------------------------------------------
    from probgen.metrics import median_bandwidth, mmd

    bandwidth = median_bandwidth(data.test[:num_mmd])
    results = {name: {"unbiased": [], "biased": [], "nfe": 0, "wall_s": 0.0} for name, _, _ in SAMPLERS}
    results["data floor"] = {"unbiased": [], "biased": [], "nfe": 0, "wall_s": 0.0}
    panels = {}
    for s in range(args.seeds):
        held_out = data.test[s * num_mmd: (s + 1) * num_mmd]
        floor = data.train[s * num_mmd: (s + 1) * num_mmd]
        draws = [("data floor", floor, 0, 0.0)]
        for name, method, num in SAMPLERS:
            t0 = time.perf_counter()
            y, nfe = model.sample(num_mmd, method=method, steps=num, return_nfe=True,
                                  generator=torch.Generator().manual_seed(100 + s))
            draws.append((name, y, nfe, time.perf_counter() - t0))
            if s == 0:
                panels[name] = y
        for name, y, nfe, wall in draws:
            results[name]["unbiased"].append(float(mmd(y, held_out, bandwidth=bandwidth)))
            results[name]["biased"].append(float(mmd(y, held_out, bandwidth=bandwidth, unbiased=False)))
            results[name]["nfe"], results[name]["wall_s"] = nfe, results[name]["wall_s"] + wall / args.seeds
        print(f"MMD repetition {s + 1}/{args.seeds} done", flush=True)
    print(f"\n| sampler | NFE | MMD² unbiased (×1e-4) | MMD² biased (×1e-4) | seconds per {num_mmd} samples |\n|---|---|---|---|---|")
    summary["mmd"] = {"bandwidth": float(bandwidth), "num": num_mmd, "seeds": args.seeds}
    for name, r in results.items():
        u, u_se = _mean_se(torch.tensor(r["unbiased"]))
        b, b_se = _mean_se(torch.tensor(r["biased"]))
        summary["mmd"][name] = {"unbiased": [u, u_se], "biased": [b, b_se], "nfe": r["nfe"], "wall_s": r["wall_s"]}
        print(f"| {name} | {r['nfe']} | {u * 1e4:.2f} ± {u_se * 1e4:.2f} | {b * 1e4:.2f} ± {b_se * 1e4:.2f} "
              f"| {r['wall_s']:.1f} |")
    print(f"(Gaussian kernel, bandwidth {float(bandwidth):.3f}; {args.seeds} repetitions; "
          f"{num_mmd} samples vs {num_mmd} held-out points)")

    from probgen.diagnostics.plots import compare_panels

    path = os.path.join(args.out, "ddpm_2d_samples.png")
    compare_panels(panels, reference=data.test[:num_mmd], path=path, marker_size=1.0)
    print(f"samples written to {path}")
    with open(os.path.join(args.out, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    main()
