"""DDPM on the 8×8 digits: ELBO and exact ODE bits/dim of one network, and samples from three samplers.

Trains ``probgen.diffusion.ddpm.DDPM`` (T = 1000 linear β's, simple ε-MSE, EMA of the weights) on the
17-level digits scaled to [-1, 1], with the discretized decoder (``data_levels=17``) so that the ELBO
bounds the probability mass of the discrete images; then, with the EMA weights,

* fits Analytic-DPM's Γ_t on training images and prints the test ELBO bits/dim for the three reverse
  variances (β, β̃, analytic with the "moment" and with the "residual" estimate of Γ_t), each on the same
  draws of x_t (paired differences);
* prints the ODE bits/dim of the same network (probability-flow likelihood of uniformly dequantized test
  images, bins of width 2/16 centred on the levels, Hutchinson trace) on the first ``--num-ode`` test
  images, with the ELBO bits/dim of the same images beside it;
* draws samples with ancestral sampling (1000 steps), DDIM (50 steps) and DPM-Solver++ (10 steps), saves
  them as one PNG with three panels, and prints each sampler's MMD² to the test images in the feature
  space of the shipped digits classifier (``probgen.metrics.digits_features``), beside the data-vs-data
  floor (training images vs test images, same sample size).

Two networks: ``--net unet`` (default; ``probgen.nn.UNet`` on ``(1, 8, 8)``) and ``--net mlp``
(``probgen.nn.ConditionedMLP`` on the flattened 64 pixels). The U-Net is far better (ELBO 2.93 vs 4.37,
ODE 2.22 vs 2.96 bits/dim in ``docs/ddpm.md``) but costs about 20 times more CPU per image in every
network call, so its recipe evaluates the ELBO on the first 64 test images (the MLP's: all 364). Both
recipes train in under three CPU minutes.

Usage::

    OMP_NUM_THREADS=1 python examples/ddpm_digits.py                       # U-Net recipe (docs/ddpm.md)
    OMP_NUM_THREADS=1 python examples/ddpm_digits.py --net mlp             # MLP recipe (docs/ddpm.md)
    OMP_NUM_THREADS=1 python examples/ddpm_digits.py --steps 200 --num-elbo 32 --num-ode 8 --num-samples 32

(On a busy machine, ``OMP_NUM_THREADS=2`` made the small MLP's training steps about ten times more
expensive in CPU time than one thread, through the threads' spin-waiting; one thread is faster there.)
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

RECIPES = {
    # ~150k parameters; one step at batch 64 costs about 0.055 CPU-seconds (one thread)
    "unet": {"steps": 3000, "batch_size": 64, "lr": 2e-3, "ema_decay": 0.995, "num_elbo": 64,
             "num_ode": 32, "num_samples": 100, "gamma_batch": 64,
             "net_options": {"base_channels": 16, "channel_mults": [1, 2], "embed_dim": 32}},
    # ~0.22M parameters on the flattened image; one step at batch 128 costs about 0.007 CPU-seconds (one thread)
    "mlp": {"steps": 15000, "batch_size": 128, "lr": 1e-3, "ema_decay": 0.999, "num_elbo": None,
            "num_ode": 64, "num_samples": 200, "gamma_batch": 128,
            "net_options": {"hidden": [256, 256, 256], "embed_dim": 64}},
}
SAMPLERS = (("ancestral 1000", "ancestral", None), ("DDIM 50", "ddim", 50), ("DPM-Solver 10", "dpm-solver", 10))


class _Clock:
    """Wall and process CPU seconds since construction, with the 1-minute load average."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __str__(self) -> str:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        return (f"{time.perf_counter() - self.wall:.0f} s wall, {time.process_time() - self.cpu:.0f} CPU-s, "
                f"load {load:.1f}")

    def seconds(self) -> dict[str, float]:
        return {"wall_s": time.perf_counter() - self.wall, "cpu_s": time.process_time() - self.cpu}


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(len(v)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=sorted(RECIPES), default="unet")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--num-elbo", type=int, default=-1,
                        help="test images for the ELBO (first rows of the test split; default: the recipe's, "
                             "0 = all 364)")
    parser.add_argument("--num-ode", type=int, default=None, help="test images for the ODE bits/dim (first rows)")
    parser.add_argument("--gamma-batch", type=int, default=None, help="training images per step for Γ_t")
    parser.add_argument("--num-samples", type=int, default=None, help="samples per sampler")
    parser.add_argument("--out", default="ddpm_digits_out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    recipe = RECIPES[args.net]
    steps = args.steps if args.steps is not None else recipe["steps"]
    batch_size = args.batch_size if args.batch_size is not None else recipe["batch_size"]
    lr = args.lr if args.lr is not None else recipe["lr"]
    num_elbo = recipe["num_elbo"] if args.num_elbo < 0 else (args.num_elbo or None)
    for name in ("num_ode", "num_samples", "gamma_batch"):
        if getattr(args, name) is None:
            setattr(args, name, recipe[name])
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    summary: dict = {"net": args.net, "steps": steps, "batch_size": batch_size, "lr": lr,
                     "ema_decay": recipe["ema_decay"], "net_options": recipe["net_options"]}

    data = pg.data.load_dataset("digits")
    event_shape = data.event_shape if args.net == "unet" else (64,)
    train = data.train.reshape(-1, *event_shape)
    test = data.test.reshape(-1, *event_shape)
    model = DDPM(event_shape, 1000, "linear", data_levels=data.num_levels, data_range=data.data_range,
                 ema_decay=recipe["ema_decay"], net_options=recipe["net_options"])
    print(f"DDPM/{args.net} with {sum(p.numel() for p in model.eps_net.parameters()):,} parameters; "
          f"{steps} steps, batch {batch_size}, lr {lr:g}, EMA {recipe['ema_decay']}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, torch threads={torch.get_num_threads()}",
          flush=True)
    clock = _Clock()
    history = pg.fit(model, train, steps=steps, batch_size=batch_size, lr=lr, seed=args.seed, grad_clip=1.0,
                     progress=False)
    print(f"trained in {clock}; final loss (mean of last 100) {sum(history.losses[-100:]) / min(100, steps):.4f}",
          flush=True)
    summary["train"] = {**clock.seconds(), "load": os.getloadavg()[0]}
    model.eval()

    # ---- ELBO bits/dim for the three variances, paired (same x_t draws) --------------------------------
    clock = _Clock()
    model.fit_analytic_variance(train, num_batches=1, batch_size=args.gamma_batch,
                                generator=torch.Generator().manual_seed(1))
    print(f"Γ_t fitted ({args.gamma_batch} training images per step) in {clock}", flush=True)
    x_elbo = test if num_elbo is None else test[:num_elbo]
    elbo = {}
    for variance in ("beta", "beta_tilde", "analytic", "analytic-residual"):
        clock = _Clock()
        if variance == "analytic-residual":  # Γ_t from the residual ‖ε - ε̂‖² (Bao et al. 2022b)
            model.fit_analytic_variance(train, num_batches=1, batch_size=args.gamma_batch, estimator="residual",
                                        generator=torch.Generator().manual_seed(1))
        model.variance = variance.split("-")[0]
        elbo[variance] = model.bits_per_dim(x_elbo, method="elbo", generator=torch.Generator().manual_seed(2))
        m, se = _mean_se(elbo[variance])
        print(f"test ELBO bits/dim ({len(x_elbo)} images), variance={variance:<17}: {m:.3f} ± {se:.3f}  ({clock})",
              flush=True)
    model.variance = "beta_tilde"
    summary["elbo_bpd"] = {k: _mean_se(v) for k, v in elbo.items()}
    summary["num_elbo"] = len(x_elbo)
    for variance in ("beta", "analytic", "analytic-residual"):
        print(f"  {variance} - beta_tilde (paired): {_mean_se(elbo[variance] - elbo['beta_tilde'])[0]:+.3f} "
              f"± {_mean_se(elbo[variance] - elbo['beta_tilde'])[1]:.3f}")

    # ---- ODE bits/dim of the same network ---------------------------------------------------------------
    clock = _Clock()
    sub = test[: args.num_ode]
    bpd_ode = model.bits_per_dim(sub, method="ode", trace="hutchinson", rtol=1e-4, atol=1e-4,
                                 dequantization="centered", generator=torch.Generator().manual_seed(3))
    m, se = _mean_se(bpd_ode)
    print(f"test ODE bits/dim on {len(sub)} images (centred uniform dequantization, Hutchinson): "
          f"{m:.3f} ± {se:.3f}  ({clock})", flush=True)
    summary["ode_bpd"] = (m, se)
    bpd_uniform = model.bits_per_dim(sub, method="ode", trace="hutchinson", rtol=1e-4, atol=1e-4,
                                     dequantization="uniform", generator=torch.Generator().manual_seed(3))
    summary["ode_bpd_uniform_bins"] = _mean_se(bpd_uniform)
    print(f"  same with probgen.data.dequantize's bins (dequantization='uniform'): "
          f"{summary['ode_bpd_uniform_bins'][0]:.3f} ± {summary['ode_bpd_uniform_bins'][1]:.3f}", flush=True)
    summary["num_ode"] = len(sub)
    same = {k: _mean_se(v[: len(sub)]) for k, v in elbo.items()} if len(sub) <= len(x_elbo) else None
    summary["elbo_bpd_on_ode_subset"] = same

    # ---- samples and MMD² in classifier-feature space ---------------------------------------------------
    from probgen.metrics import digits_features, mmd

    test_feats = digits_features(data.test)
    floor_rows = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(5))[: args.num_samples]
    floor = float(mmd(digits_features(data.train[floor_rows]), test_feats))
    samples, summary["samplers"] = {}, {}
    for name, method, num in SAMPLERS:
        clock = _Clock()
        x = model.sample(args.num_samples, method=method, steps=num, clip_x0=data.data_range,
                         generator=torch.Generator().manual_seed(4)).clamp(*data.data_range)
        samples[name] = x.reshape(-1, *data.event_shape)
        value = float(mmd(digits_features(samples[name]), test_feats))
        summary["samplers"][name] = {"mmd2": value, **clock.seconds()}
        print(f"{name:>15}: MMD² to test = {value:.4f}  ({clock})", flush=True)
    print(f"{'data floor':>15}: MMD² to test = {floor:.4f}  ({args.num_samples} training images)")
    summary["mmd2_floor"] = floor

    from probgen.diagnostics.plots import compare_panels

    path = os.path.join(args.out, f"ddpm_digits_{args.net}_samples.png")
    compare_panels({k: v[:64] for k, v in samples.items()}, path=path, value_range=data.data_range)
    print(f"samples written to {path}")

    # ---- the table ------------------------------------------------------------------------------------
    print(f"\n| bits/dim ({args.net}) | test images | value ± SE |\n|---|---|---|")
    for variance in elbo:
        m, se = summary["elbo_bpd"][variance]
        print(f"| ELBO, σ² = {variance} | {len(x_elbo)} | {m:.3f} ± {se:.3f} |")
    if same is not None:
        for variance in elbo:
            m, se = same[variance]
            print(f"| ELBO, σ² = {variance} | first {len(sub)} | {m:.3f} ± {se:.3f} |")
    print(f"| ODE (exact likelihood) | first {len(sub)} | {summary['ode_bpd'][0]:.3f} ± {summary['ode_bpd'][1]:.3f} |")
    m, se = summary["ode_bpd_uniform_bins"]
    print(f"| ODE, dequantization='uniform' | first {len(sub)} | {m:.3f} ± {se:.3f} |")
    with open(os.path.join(args.out, f"summary_{args.net}.json"), "w") as handle:
        json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    main()
