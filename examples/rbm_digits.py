"""Bernoulli RBMs on the binarized 8x8 digits: CD-1 against PCD, AIS test log-likelihoods, Gibbs samples.

Trains two :class:`probgen.ebm.BernoulliRBM` (64 visible units) with the same optimizer budget, one by
CD-1 and one by PCD-1 (100 persistent chains), then estimates ``log Z`` by annealed importance
sampling (base RBM fitted to the training pixel means, Salakhutdinov & Murray 2008) and reports the
average test log-likelihood in nats (and bits per pixel). With ``--hidden 20`` or fewer the exact
``log Z`` is printed next to the AIS estimate.

Run:  python examples/rbm_digits.py                 (about 1-2 minutes on one CPU core)
      python examples/rbm_digits.py --out rbm.png   (also writes the Gibbs samples as an image grid)
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import probgen as pg
from probgen.ebm import BernoulliRBM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--ais-chains", type=int, default=200)
    parser.add_argument("--ais-steps", type=int, default=1000)
    parser.add_argument("--out", default=None, help="write a PNG grid of Gibbs samples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = pg.data.load_dataset("digits-binary")
    train, test = data.train, data.test
    print(f"digits-binary: {train.shape[0]} train / {test.shape[0]} test images of shape {tuple(train.shape[1:])}")

    results = {}
    for objective in ("cd", "pcd"):
        rbm = BernoulliRBM(64, args.hidden, objective=objective, k=1, num_chains=100, event_shape=(1, 8, 8))
        t0 = time.time()
        pg.fit(rbm, train, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
        secs = time.time() - t0
        log_z, se = rbm.log_partition("ais", data=train, num_chains=args.ais_chains, num_steps=args.ais_steps,
                                      return_stderr=True, generator=torch.Generator().manual_seed(1))
        exact = rbm.log_partition("exact") if args.hidden <= 20 else None
        with torch.no_grad():
            ll = (-rbm.free_energy(test) - log_z).mean().item()
            ll_train = (-rbm.free_energy(train) - log_z).mean().item()
        results[objective] = rbm
        line = (f"[{objective.upper()}-1] trained {secs:.0f} s; AIS log Z = {log_z.item():.2f} ± {se.item():.2f}"
                + (f" (exact {exact.item():.2f})" if exact is not None else "")
                + f"; mean log-lik train {ll_train:.2f}, test {ll:.2f} nats"
                + f" ({-ll / (64 * math.log(2)):.3f} bits/pixel)")
        print(line)

    for objective, rbm in results.items():
        x = rbm.sample(64, gibbs_steps=1000, mean=True, generator=torch.Generator().manual_seed(2))
        print(f"[{objective.upper()}] Gibbs samples (1000 sweeps): mean pixel {x.mean().item():.3f} "
              f"(data {train.mean().item():.3f})")
        if args.out:
            from probgen.diagnostics.plots import image_grid

            path = args.out.replace(".png", f"_{objective}.png")
            image_grid(x, value_range=(0.0, 1.0), path=path)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
