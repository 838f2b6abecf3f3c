"""Effective samples per second: probgen's batched MALA / HMC against Pyro's NUTS.

Same target for all: a correlated 10-D Gaussian potential (condition number ~ 10^3 after scaling the
coordinates from 0.3 to 3), same machine, same process, one after the other. For each sampler we
report the total wall time *including warmup*, the ArviZ bulk ESS (minimum over the 10 coordinates,
computed by probgen.diagnostics) and their ratio, ESS per second. Pyro's NUTS runs one chain
(``pyro.infer.MCMC`` runs one chain per process; a fair per-core comparison), probgen runs ``C``
chains in one tensor in the same single process.

Usage::

    python benchmarks/bench_mcmc.py            # C = 1000 chains, NUTS 1000 + 1000 iterations
    python benchmarks/bench_mcmc.py --quick    # a smaller run (~1 min on 2 cores)

No timing is asserted anywhere; this script only prints.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import probgen.diagnostics as diagnostics  # noqa: E402
from probgen.infer import run_chains  # noqa: E402

D = 10


def gaussian(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(D, D, generator=g, dtype=dtype)
    cov = a @ a.T / D + 0.3 * torch.eye(D, dtype=dtype)
    scale = torch.logspace(-0.5, 0.5, D, dtype=dtype)
    cov = scale[:, None] * cov * scale[None, :]
    return torch.linspace(-2.0, 2.0, D, dtype=dtype), cov


class Potential:
    """U(x) = ½ (x - μ)ᵀ Σ⁻¹ (x - μ) for x: (..., D)."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor) -> None:
        self.mean, self.prec = mean, torch.linalg.inv(cov)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        d = x - self.mean
        return 0.5 * ((d @ self.prec) * d).sum(-1)


def min_bulk_ess(samples: torch.Tensor) -> float:
    """samples (chains, draws, D) -> minimum over coordinates of ArviZ's bulk ESS."""
    with warnings.catch_warnings():  # ArviZ warns when there are more chains than draws
        warnings.simplefilter("ignore", UserWarning)
        return float(diagnostics.ess(samples, method="bulk").min())


def bench_batched(kernel: str, potential: Potential, num_chains: int, warmup: int, samples: int,
                  dtype: torch.dtype) -> dict:
    init = torch.randn(num_chains, D, dtype=dtype, generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    res = run_chains(potential, init, kernel=kernel, num_samples=samples, warmup_steps=warmup,
                     num_leapfrog=8, generator=torch.Generator().manual_seed(2))
    wall = time.perf_counter() - t0
    ess = min_bulk_ess(res.samples)
    return {"sampler": f"probgen {kernel.upper()} x{num_chains}", "wall_s": wall, "ess": ess,
            "accept": float(res.acceptance_rate().mean()), "draws": num_chains * samples}


def bench_nuts(potential: Potential, warmup: int, samples: int, dtype: torch.dtype) -> dict:
    from pyro.infer import MCMC, NUTS

    def pot(params: dict) -> torch.Tensor:
        return potential(params["x"])

    init = {"x": torch.zeros(D, dtype=dtype)}
    t0 = time.perf_counter()
    mcmc = MCMC(NUTS(potential_fn=pot, adapt_mass_matrix=True), num_samples=samples, warmup_steps=warmup,
                initial_params=init, disable_progbar=True)
    mcmc.run()
    wall = time.perf_counter() - t0
    draws = mcmc.get_samples(group_by_chain=True)["x"]  # (1, S, D)
    ess = min_bulk_ess(draws)
    return {"sampler": "Pyro NUTS x1", "wall_s": wall, "ess": ess,
            "accept": float(mcmc.diagnostics()["acceptance rate"]["chain 0"]), "draws": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (~1 min on 2 cores)")
    parser.add_argument("--chains", type=int, default=None, help="number of batched chains")
    parser.add_argument("--float32", action="store_true", help="run in float32 (default float64)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dtype = torch.float32 if args.float32 else torch.float64
    if args.quick:
        chains, warmup, samples, nuts_warmup, nuts_samples = 500, 300, 300, 300, 300
    else:
        chains, warmup, samples, nuts_warmup, nuts_samples = 1000, 500, 1000, 1000, 1000
    chains = args.chains or chains
    mean, cov = gaussian(dtype)
    potential = Potential(mean, cov)

    rows = [
        bench_batched("mala", potential, chains, warmup, samples, dtype),
        bench_batched("hmc", potential, chains, warmup, samples, dtype),
        bench_nuts(potential, nuts_warmup, nuts_samples, dtype),
    ]
    nuts = rows[-1]["ess"] / rows[-1]["wall_s"]
    print(f"10-D correlated Gaussian, {dtype}, threads={torch.get_num_threads()}; wall time includes warmup")
    print(f"{'sampler':<24}{'draws':>10}{'wall s':>10}{'min bulk ESS':>14}{'ESS/s':>12}{'accept':>9}{'vs NUTS':>10}")
    for r in rows:
        rate = r["ess"] / r["wall_s"]
        print(f"{r['sampler']:<24}{r['draws']:>10d}{r['wall_s']:>10.2f}{r['ess']:>14.0f}{rate:>12.0f}"
              f"{r['accept']:>9.2f}{rate / nuts:>9.1f}x")
    best = max(r["ess"] / r["wall_s"] for r in rows[:-1])
    print(f"best batched / NUTS ESS-per-second ratio: {best / nuts:.1f}x (goal >= 50x)")


if __name__ == "__main__":
    main()
