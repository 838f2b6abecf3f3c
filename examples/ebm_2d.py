"""Energy-based models on 8gaussians: two objectives, three samplers, MMD against held-out data.

Trains an EBM (default MLP energy, SiLU) with denoising score matching and with contrastive
divergence (short-run Langevin negatives, Du & Mordatch's energy penalty), then draws samples with

* short-run Langevin from a Gaussian start (the sampler CD is trained with),
* MALA chains (:func:`probgen.infer.run_chains`, asymptotically exact for the learnt density),
* Pyro's NUTS on ``pyro.sample("x", ebm.as_distribution())`` (a few hundred draws),

and reports the squared MMD (Gaussian kernel, median bandwidth, biased V-statistic) to held-out data
next to the noise floor: the same statistic between two independent held-out samples of the same size,
averaged over repeats.

Run:  python examples/ebm_2d.py            (about 2-3 minutes on one CPU core)
      python examples/ebm_2d.py --out ebm_2d.png   (also writes a figure)
"""

from __future__ import annotations

import argparse
import time

import pyro
import torch

import probgen as pg
from probgen.ebm import EBM
from probgen.metrics import mmd

N_EVAL = 1000
REPEATS = 5


def noise_floor(test: torch.Tensor) -> float:
    vals = []
    for r in range(REPEATS):
        idx = torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(r))
        vals.append(mmd(test[idx[:N_EVAL]], test[idx[N_EVAL:2 * N_EVAL]], unbiased=False).item())
    return sum(vals) / len(vals)


def mmd_to_test(draw, test: torch.Tensor) -> float:
    """Average over repeats of MMD²(fresh samples, a fresh held-out subset)."""
    vals = []
    for r in range(REPEATS):
        x = draw(r)
        idx = torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(100 + r))[: x.shape[0]]
        vals.append(mmd(x, test[idx], unbiased=False).item())
    return sum(vals) / len(vals)


def nuts_samples(ebm: EBM, num_samples: int, warmup: int) -> torch.Tensor:
    def model():
        pyro.sample("x", ebm.as_distribution())

    mcmc = pyro.infer.MCMC(pyro.infer.NUTS(model), num_samples=num_samples, warmup_steps=warmup,
                           disable_progbar=True)
    mcmc.run()
    return mcmc.get_samples()["x"].detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsm-steps", type=int, default=1500)
    parser.add_argument("--cd-steps", type=int, default=500)
    parser.add_argument("--nuts", type=int, default=300, help="NUTS draws (0 to skip)")
    parser.add_argument("--out", default=None, help="write a PNG of the samples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = pg.data.load_dataset("8gaussians")
    test = data.test
    floor = noise_floor(test)
    print(f"noise floor (MMD² between two held-out samples of {N_EVAL}): {floor:.5f}")

    common = dict(dim=2, hidden=(128, 128), activation="silu", init_noise="gaussian", init_scale=2.5)
    models = {
        "dsm": (EBM(objective="dsm", sigma=0.1, step_size=0.01, sample_steps=500, **common),
                dict(steps=args.dsm_steps, batch_size=256, lr=1e-3)),
        "cd": (EBM(objective="cd", sample_steps=40, step_size=0.05, alpha=0.1, **common),
               dict(steps=args.cd_steps, batch_size=128, lr=1e-3)),
    }
    rows = []
    samples = {}
    for name, (ebm, fit_opts) in models.items():
        t0 = time.time()
        pg.fit(ebm, data.train, seed=args.seed, progress=True, **fit_opts)
        print(f"[{name}] trained in {time.time() - t0:.0f} s")
        ebm.eval()
        draws = {
            "langevin": lambda r, e=ebm: e.sample(N_EVAL, method="langevin",
                                                  generator=torch.Generator().manual_seed(r)).detach(),
            "mala": lambda r, e=ebm: e.sample(N_EVAL, method="mala", steps=400, step_size=0.05,
                                              generator=torch.Generator().manual_seed(r)).detach(),
        }
        for sampler, draw in draws.items():
            t0 = time.time()
            value = mmd_to_test(draw, test)
            rows.append((name, sampler, value, value / floor, time.time() - t0))
            samples[(name, sampler)] = draw(0)
        if args.nuts:
            t0 = time.time()
            x = nuts_samples(ebm, args.nuts, warmup=args.nuts // 2)
            idx = torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(7))[: x.shape[0]]
            floor_small = mmd(test[idx], test[-x.shape[0]:], unbiased=False).item()
            value = mmd(x, test[idx], unbiased=False).item()
            rows.append((name, f"nuts (1 chain, {args.nuts})", value, value / floor_small, time.time() - t0))
            samples[(name, "nuts")] = x

    print(f"\n{'objective':<10}{'sampler':<24}{'MMD²':>10}{'/ floor':>10}{'time (s)':>10}")
    for name, sampler, value, ratio, secs in rows:
        print(f"{name:<10}{sampler:<24}{value:>10.5f}{ratio:>10.2f}{secs:>10.1f}")
    print("(NUTS: one chain of correlated draws, compared with the floor of samples of its size)")

    if args.out:
        from probgen.diagnostics.plots import scatter_2d

        scatter_2d(samples[("dsm", "langevin")], reference=test[:N_EVAL], titles=("EBM (DSM, Langevin)", "data"),
                   path=args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
