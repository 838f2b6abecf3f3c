"""DDPM on the 8×8 digits: ELBO and ODE bits/dim, and samples from three samplers.

Trains ``probgen.diffusion.DDPM`` (T = 1000 linear β's, a small U-Net with a sinusoidal step
embedding, simple ε-MSE, EMA of the weights) on the 17-level digits scaled to [-1, 1], with the
discretized decoder (``data_levels=17``) so the ELBO bounds the probability mass; then

* fits Analytic-DPM's Γ_t on training images and prints the test ELBO bits/dim for the three reverse
  variances (β, β̃, analytic);
* prints the ODE bits/dim (probability-flow likelihood of dequantized test images, Hutchinson trace)
  on a subset of the test split (``--num-ode``; the ODE solve dominates the cost);
* draws samples with ancestral sampling (1000 steps), DDIM (50 steps) and DPM-Solver (10 steps),
  saves them as one PNG, and prints each sampler's MMD² to held-out test images if
  ``probgen.metrics.mmd`` is available.

Usage::

    OMP_NUM_THREADS=2 python examples/ddpm_digits.py                  # the recipe below
    OMP_NUM_THREADS=2 python examples/ddpm_digits.py --steps 300 --num-ode 16   # a quick look
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

import probgen as pg
from probgen.diffusion.ddpm import DDPM

RECIPE = {"steps": 4000, "batch_size": 128, "lr": 2e-3, "ema_decay": 0.999,
          "net_options": {"base_channels": 32, "channel_mults": [1, 2], "embed_dim": 64}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=RECIPE["steps"])
    parser.add_argument("--batch-size", type=int, default=RECIPE["batch_size"])
    parser.add_argument("--lr", type=float, default=RECIPE["lr"])
    parser.add_argument("--num-ode", type=int, default=64, help="test images for the ODE bits/dim")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--out", default="ddpm_digits_out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)

    data = pg.data.load("digits")
    model = DDPM(data.event_shape, 1000, "linear", data_levels=data.num_levels, data_range=data.data_range,
                 ema_decay=RECIPE["ema_decay"], net_options=RECIPE["net_options"])
    print(f"DDPM with {sum(p.numel() for p in model.eps_net.parameters()):,} parameters; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, torch threads={torch.get_num_threads()}")
    start = time.time()
    pg.fit(model, data.train, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
           grad_clip=1.0)
    print(f"trained {args.steps} steps in {time.time() - start:.0f} s")
    model.eval()

    test = data.test
    g = torch.Generator().manual_seed(1)
    start = time.time()
    model.fit_analytic_variance(data.train, num_batches=1, batch_size=256, generator=g)
    for variance in ("beta", "beta_tilde", "analytic"):
        model.variance = variance
        bpd = model.bits_per_dim(test, method="elbo", generator=torch.Generator().manual_seed(2))
        print(f"test ELBO bits/dim, variance={variance:<10}: {bpd.mean():.3f} ± {bpd.std() / math.sqrt(len(bpd)):.3f}")
    print(f"  (Γ fit + 3 ELBO passes: {time.time() - start:.0f} s)")
    model.variance = "beta_tilde"
    start = time.time()
    sub = test[: args.num_ode]
    bpd_ode = model.bits_per_dim(sub, method="ode", trace="hutchinson", rtol=1e-4, atol=1e-4,
                                 generator=torch.Generator().manual_seed(3))
    print(f"test ODE bits/dim on {len(sub)} images (dequantized, Hutchinson): "
          f"{bpd_ode.mean():.3f} ± {bpd_ode.std() / math.sqrt(len(bpd_ode)):.3f}  ({time.time() - start:.0f} s)")

    samples = {}
    for name, method, steps in (("ancestral 1000", "ancestral", None), ("DDIM 50", "ddim", 50),
                                ("DPM-Solver 10", "dpm-solver", 10)):
        start = time.time()
        samples[name] = model.sample(args.num_samples, method=method, steps=steps, clip_x0=data.data_range,
                                     generator=torch.Generator().manual_seed(4)).clamp(*data.data_range)
        print(f"{name:>15}: {time.time() - start:.1f} s", end="")
        try:
            from probgen.metrics import mmd
        except ImportError:
            print()
            continue
        value = mmd(samples[name].flatten(1), test.flatten(1))
        print(f", MMD² to test = {float(value):.4f}")

    from probgen.diagnostics.plots import image_grid, save_figure

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, (name, x) in zip(axes, samples.items()):
        image_grid(x[:64], nrow=8, ax=ax, title=name, value_range=data.data_range)
    path = save_figure(fig, os.path.join(args.out, "ddpm_digits_samples.png"))
    print(f"samples written to {path}")


if __name__ == "__main__":
    main()
