"""Posterior samplers checked against exact posteriors (the table of docs/conditioning.md).

Prior: a 3-component Gaussian mixture in D = 2 and D = 16 whose exact (analytic) score is the network of a
ScoreSDE (VP) or of a DDPM (1000-step linear schedule); observations y = A x + σ_y ε with A one coordinate,
a random projection or a mask; the exact posterior is again a Gaussian mixture
(probgen.infer.GaussianMixture.posterior). For each method: error of the posterior mean and covariance,
MMD² and sliced W₂ to exact posterior draws, coverage of the central 50/90 % intervals, wall time.

    OMP_NUM_THREADS=1 python examples/posterior_calibration.py            # ~10 min on one core
    OMP_NUM_THREADS=1 python examples/posterior_calibration.py --quick    # ~2 min

The cost of each method against an unconditional sample is measured by ``benchmarks/bench_posterior.py``.
"""

from __future__ import annotations

import argparse
import time

import torch

from probgen.diffusion import DDPM, ScoreSDE
from probgen.infer import DenseOperator, GaussianMixture, MaskOperator, posterior_calibration
from probgen.sde import VPSDE

F64 = torch.float64
COLUMNS = ("method", "mean_err", "cov_err", "mmd", "sw", "cover50", "cover90", "wall_s")


def mixture(dim: int, seed: int = 0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(3, dim, generator=g, dtype=F64) * 1.5
    a = torch.randn(3, dim, dim, generator=g, dtype=F64) * 0.3
    return GaussianMixture(torch.tensor([0.2, 0.3, 0.5], dtype=F64), means, a @ a.mT + 0.15 * torch.eye(dim, dtype=F64))


def prior(family: str, gm: GaussianMixture):
    if family == "ScoreSDE":
        sde = VPSDE()
        return ScoreSDE((gm.dim,), sde=sde, net=gm.score_fn(sde), parameterization="score")
    model = DDPM((gm.dim,), num_steps=1000, eps_net=torch.nn.Identity())
    model.eps_net = gm.eps_fn(model.schedule)
    return model


def operator(kind: str, dim: int):
    g = torch.Generator().manual_seed(1)
    if kind == "one coordinate":
        return DenseOperator(torch.eye(1, dim, dtype=F64))
    if kind == "projection":
        m = max(1, dim // 4)
        return DenseOperator(torch.randn(m, dim, generator=g, dtype=F64) / dim**0.5)
    mask = torch.zeros(dim, dtype=torch.bool)
    mask[::2] = True
    return MaskOperator(mask)


def table(title: str, rows: list[dict]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(r[c] if c == "method" else f"{r[c]:.3f}" for c in COLUMNS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 200 if args.quick else 500
    obs = 1 if args.quick else 2
    settings = [(2, "ScoreSDE", "one coordinate"), (2, "DDPM", "projection"),
                (16, "ScoreSDE", "projection"), (16, "DDPM", "mask")]
    if args.quick:
        settings = settings[:1]
    start = time.perf_counter()
    for dim, family, kind in settings:
        gm = mixture(dim)
        steps = 200 if dim == 2 else 300
        opts = {"dps": {"steps": steps}, "pigdm": {"steps": steps}, "ddrm": {"steps": 100},
                "annealed-langevin": {"steps": 100, "steps_per_level": 5}, "smc": {"steps": steps}}
        rows = posterior_calibration(prior(family, gm), gm, operator(kind, dim), 0.2, methods=tuple(opts),
                                     num_samples=n, num_observations=obs, method_options=opts, seed=0)
        print(table(f"D = {dim}, {family} prior, {kind}, σ_y = 0.2 ({n} draws, {obs} observations)", rows))
        print(flush=True)
    # SMC converges: error shrinks as particles grow (D = 2, projection)
    gm = mixture(2)
    rows = []
    for k in ((50, 400) if args.quick else (50, 400, 2000)):
        r = posterior_calibration(prior("ScoreSDE", gm), gm, operator("projection", 2), 0.2, methods=("smc",),
                                  num_samples=k, num_observations=3, method_options={"smc": {"steps": 300}}, seed=1)
        rows.append({**r[1], "method": f"smc K={k}"})
        rows.append({**r[0], "method": f"exact n={k}"})
    print(table("SMC as particles grow (D = 2, ScoreSDE, projection, 300 steps, 3 observations)", rows))
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
