"""Density estimation on 2-D toy sets at equal wall-clock training budgets: probgen vs zuko.

Contenders, each trained from scratch by Adam (lr 1e-3, batch 256) until the budget is spent:

* probgen's best discrete flow, ``Flow(2, "spline")`` (rational-quadratic spline couplings, Durkan
  et al. 2019, arXiv:1906.04032), trained by ``probgen.fit``;
* probgen's ``ScoreSDE`` (VP SDE, denoising score matching), trained by ``probgen.fit``, evaluated by
  its exact probability-flow ODE likelihood (``log_prob``, exact trace);
* zuko's ``NSF`` (same family of spline flows, zuko's defaults), trained by a bare PyTorch loop.

Reported: test NLL (nats, ± standard error over test points), the KL divergence to the true density
``KL(p || q) = E_p[-log q] - H(p) = NLL - H(p)`` with ``H(p)`` from ``probgen.data`` (its Monte Carlo
standard error is added in quadrature), and the number of optimizer steps that fit in the budget.

Usage::

    python benchmarks/bench_flows.py                  # 30 s budget per model and data set
    python benchmarks/bench_flows.py --budgets 30 120 # the 30 s and 2 min budgets (~20 min on 2 cores)
    python benchmarks/bench_flows.py --quick          # 5 s budgets
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import probgen as pg  # noqa: E402

try:
    from benchmarks.common import warm_up, Section, optional_import  # noqa: E402
except ImportError:
    from common import warm_up, Section, optional_import  # type: ignore[no-redef]  # noqa: E402

__all__ = ["run", "train_for", "DATASETS"]

DATASETS = ("8gaussians", "checkerboard", "rings")


class _BudgetSpent(Exception):
    pass


def train_for(model: torch.nn.Module, data: torch.Tensor, budget: float, *, loss_fn: Callable | None = None,
              batch_size: int = 256, lr: float = 1e-3, seed: int = 0) -> int:
    """Train for ``budget`` seconds; ``probgen.fit`` when ``loss_fn`` is None, else a bare Adam loop.

    Returns the number of optimizer steps taken.
    """
    start = time.perf_counter()
    if loss_fn is None:
        taken = [0]

        def stop(step: int, loss: float, metrics: dict) -> None:
            taken[0] = step
            if time.perf_counter() - start >= budget:
                raise _BudgetSpent

        try:
            pg.fit(model, data, steps=10**8, batch_size=batch_size, lr=lr, seed=seed, progress=False, callback=stop)
        except _BudgetSpent:
            pass
        return taken[0]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = 0
    while time.perf_counter() - start < budget:
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss_fn(data[idx]).backward()
        opt.step()
        steps += 1
    return steps


def _contenders(zuko) -> dict[str, tuple[Callable[[], torch.nn.Module], Callable | None, Callable]]:
    """name -> (build, loss_fn for a bare loop or None for fit, log_prob(model, x))."""
    out = {
        "probgen Flow spline": (lambda: pg.flows.Flow(2, "spline"), None, lambda m, x: m.log_prob(x)),
        "probgen ScoreSDE (ODE NLL)": (lambda: pg.diffusion.ScoreSDE((2,)), None,
                                       lambda m, x: m.log_prob(x, batch_size=1000)),
    }
    if zuko is not None:
        out["zuko NSF"] = (lambda: zuko.flows.NSF(2), lambda m: (lambda x: -m().log_prob(x).mean()),
                           lambda m, x: m().log_prob(x))
    return out


def run(*, quick: bool = False, device: str = "cpu", budgets: Sequence[float] | None = None) -> Section:
    warm_up()
    t_section = time.perf_counter()
    if budgets is None:
        budgets = (5.0,) if quick else (30.0,)
    n_test = 300 if quick else 1000
    zuko = optional_import("zuko")
    sec = Section(
        "Density estimation at equal training budgets: probgen flows vs zuko",
        f"Test NLL in nats on {n_test} held-out points (± standard error); KL = NLL − H(p) with the exact "
        "entropy of the data set (KL ± combined standard error). Budgets: "
        + ", ".join(f"{b:g} s" for b in budgets) + " of wall-clock training per model, Adam lr 1e-3, batch 256.",
    )
    if zuko is None:
        sec.notes.append("zuko is not installed: the zuko NSF column was skipped "
                         "(`pip install -c constraints.txt -e '.[bench]'`).")
    table = sec.table("Test NLL and KL", ["data", "budget s", "model", "steps", "NLL", "± SE", "KL", "± SE"])
    best: dict[tuple[str, float], dict[str, tuple[float, float]]] = {}
    for name in DATASETS:
        ds = pg.data.load(name)
        x_test = ds.test[:n_test].to(device)
        h, h_se = ds.entropy
        for budget in budgets:
            for label, (build, loss_maker, log_prob) in _contenders(zuko).items():
                torch.manual_seed(0)
                model = build().to(device)
                loss_fn = loss_maker(model) if loss_maker is not None else None
                steps = train_for(model, ds.train.to(device), budget, loss_fn=loss_fn)
                model.eval()
                with torch.no_grad():
                    lp = log_prob(model, x_test)
                nll = float(-lp.mean())
                se = float(lp.std() / math.sqrt(lp.numel()))
                kl_se = math.sqrt(se**2 + h_se**2)
                best.setdefault((name, budget), {})[label] = (nll, kl_se)
                table.add(name, budget, label, steps, nll, se, nll - h, kl_se)
    if zuko is not None:
        verdicts = []
        for (name, budget), res in best.items():
            ours = min((v for k, v in res.items() if k.startswith("probgen")), key=lambda v: v[0])
            theirs = res["zuko NSF"]
            # "matches": within two standard errors of the paired difference (errors added in quadrature)
            tol = 2 * math.hypot(ours[1], theirs[1])
            verdicts.append((name, budget, ours[0] - theirs[0], tol))
        ok = all(d <= tol for _, _, d, tol in verdicts)
        sec.goal("probgen's best model matches or beats zuko NSF (NLL difference ≤ 2 SE): "
                 + "; ".join(f"{n} {b:g}s: {d:+.3f} (2 SE {t:.3f})" for n, b, d, t in verdicts), ok)
    sec.notes.append("Steps per budget depend on the other load on the machine; all contenders in a row ran "
                     "back to back in the same process.")
    sec.seconds = time.perf_counter() - t_section
    return sec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budgets", type=float, nargs="+", default=None, help="training budgets in seconds")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(run(quick=args.quick, device=args.device, budgets=args.budgets).text())


if __name__ == "__main__":
    main()
