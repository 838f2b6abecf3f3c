"""GAN and WGAN-GP on 8gaussians: per-mode coverage, MMD, precision/recall and the training diagnostics.

Trains ``probgen.gan.GAN`` (non-saturating) and ``probgen.gan.WGANGP`` with :func:`probgen.fit` on the
8-Gaussians set of Metz et al. (2016), the classic mode-collapse test, then prints for each model

* the share of samples within 3σ of each of the 8 centres (σ = 1/(2√2), the component std) and the
  number of modes that receive at least 2% of them ("covered");
* MMD² to held-out data (Gaussian kernel, median bandwidth, unbiased) and the improved precision/recall
  of Kynkäänniemi et al. (2019) on 2,000 points each;
* the wall time of training;

and writes one PNG with the samples beside the data and the curves of the diagnostics that
``training_step`` records (d_loss, g_loss, diversity, d_acc / wasserstein_estimate, gradient norms).

Usage::

    python examples/gan_2d.py                          # 1000 steps each, batch 256, lr 1e-3 (about 1-2 min each)
    python examples/gan_2d.py --steps 3000 --seed 1 --out gan_2d_out
"""

from __future__ import annotations

import argparse
import math
import os
import time

import pyro
import torch

import probgen as pg
from probgen.diagnostics import plots
from probgen.gan import GAN, WGANGP, mode_coverage

SIGMA = 0.5 / math.sqrt(2.0)  # component std of 8gaussians (probgen.data.toy2d)
RADIUS = 2.0 * math.sqrt(2.0)  # centres on this circle
COVERED = 0.02  # a mode is covered when it gets at least this share of the samples


def centres() -> torch.Tensor:
    angle = torch.arange(8, dtype=torch.float32) * (math.pi / 4.0)
    return RADIUS * torch.stack([angle.cos(), angle.sin()], dim=-1)


def evaluate(model: torch.nn.Module, test: torch.Tensor, n: int) -> tuple[torch.Tensor, dict[str, float]]:
    pyro.set_rng_seed(12345)
    samples = model.sample(n)
    per_mode, off = mode_coverage(samples, centres(), radius=3.0 * SIGMA)
    m = min(n, 2000)
    precision, recall = pg.metrics.precision_recall(test[:m], samples[:m])
    return samples, {
        "per_mode": per_mode.tolist(),
        "off_mode": float(off),
        "covered": int((per_mode >= COVERED).sum()),
        "mmd2": float(pg.metrics.mmd(samples[:m], test[:m])),
        "precision": float(precision),
        "recall": float(recall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="fit steps per model (one step = k D updates + 1 G)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=10_000, help="samples drawn to measure coverage")
    parser.add_argument("--out", default="gan_2d_out", help="folder for the PNG")
    args = parser.parse_args()

    data = pg.data.load_dataset("8gaussians", seed=args.seed)
    builders = {"GAN": GAN, "WGAN-GP": WGANGP}
    histories, samples = {}, {}
    print(f"8gaussians, {args.steps} steps, batch {args.batch_size}, lr {args.lr:g}, seed {args.seed}")
    print(f"{'model':8s} {'CPU':>7s} {'wall':>7s} {'covered':>8s} {'off-mode':>9s} {'MMD²':>9s} {'prec':>6s} {'recall':>6s}  "
          "share of samples within 3σ of each centre")
    for name, cls in builders.items():
        torch.manual_seed(args.seed)  # the initial weights
        model = cls(2)
        start, cpu_start = time.perf_counter(), time.process_time()
        histories[name] = pg.fit(model, data.train, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                 seed=args.seed, progress=True)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        samples[name], r = evaluate(model, data.test, args.samples)
        shares = " ".join(f"{v:.3f}" for v in r["per_mode"])
        print(f"{name:8s} {cpu:6.1f}s {elapsed:6.1f}s {r['covered']:>6d}/8 {r['off_mode']:9.3f} {r['mmd2']:9.2e} "
              f"{r['precision']:6.3f} {r['recall']:6.3f}  {shares}")

    # one figure: data and samples on top, the diagnostics below
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 8), layout="constrained")
    grid = fig.subplots(2, 4, squeeze=False)
    lims = (-4.0, 4.0)
    for ax, (title, pts) in zip(grid[0], [("data", data.test[: args.samples]), *samples.items()]):
        plots.scatter_2d(pts, ax=ax, marker_size=1.0)
        ax.set_xlim(*lims)
        ax.set_ylim(*lims)
        ax.set_title(title)
    ax = grid[0, 3]
    for name, h in histories.items():
        ax.plot(h.metrics["diversity"], label=name, linewidth=0.8)
    ax.axhline(1.0, color="k", linewidth=0.5)
    ax.set_title("diversity (1 = spread of the data)")
    ax.set_xlabel("step")
    ax.legend()
    panels = [("GAN", "d_loss"), ("GAN", "d_acc"), ("WGAN-GP", "wasserstein_estimate"), ("WGAN-GP", "gp")]
    for ax, (name, key) in zip(grid[1], panels):
        plots.loss_curve(histories[name].metrics[key], ax=ax, title=f"{name}: {key}")
        ax.set_ylabel(key)
    path = plots.save_figure(fig, os.path.join(args.out, "gan_2d.png"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
