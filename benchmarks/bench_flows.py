"""Density estimation at equal training budgets: probgen's flows, CNFs (flow matching, FFJORD) vs zuko.

Contenders, each trained from scratch by Adam until the budget is spent, with the recipe's learning rate
and batch size where ``probgen fit`` has one, and a cosine decay of the learning rate over the *budget*
(``lr · ½(1 + cos(π · spent / budget))``, the time analogue of the recipes' cosine schedule over steps):

* ``probgen fit flow``'s model for 2-D data, ``Flow(2, "spline-ar", **TOY2D_FLOW)`` (three autoregressive
  rational-quadratic spline layers, Durkan et al. 2019, arXiv:1906.04032), lr 1e-3, batch 256;
* probgen's ``ScoreSDE`` (VP SDE, denoising score matching), evaluated by its exact probability-flow ODE
  likelihood (only with ``--full-grid``);
* ``probgen fit fm``'s model (``FlowMatching``, linear path, standardized inside; the fm recipe's lr and
  batch) — a CNF trained by flow matching (Lipman et al. 2023, arXiv:2210.02747);
* ``probgen fit cnf --objective ffjord``'s model (``Flow(D, "cnf")`` trained by maximum likelihood through
  the ODE solve at tolerance 1e-3, FFJORD, Grathwohl et al. 2019, arXiv:1810.01367; the cnf recipe's lr and
  batch) — the same model class as flow matching's, trained the other way;
* zuko's ``NSF`` (the same family of spline flows, zuko's defaults), trained by a bare PyTorch loop (on
  tabular data standardized by the training rows' mean and standard deviation, the NLL corrected back to
  the original units).

On the tabular set the spline-flow contender is what ``probgen fit flow`` builds for it (the tabular
recipe row: standardized or whitened inside, its lr and batch).

Data: the 2-D sets (exact density: KL gap) and one tabular set, scikit-learn's breast-cancer features
(569 × 30, standardized; ``benchmarks/bench_profiles.py``'s ``cancer``; test NLL only). Both CNFs are
scored as the command line scores them (dopri5, ``rtol = atol = 1e-5``, exact trace).

**Model selection on tabular data.** A fixed budget over-trains a few hundred rows (thousands of passes), so on
the tabular set every contender holds out 10 % of its training rows (``probgen.training.validation.split_off``, seed 0),
scores them with its own training loss every ``budget / VALIDATION_EVALS`` seconds (``probgen``'s
``Validator``: fixed noise, so scores are comparable; zuko's NSF by its NLL), and is evaluated with the
parameters of its best score — the protocol of Papamakarios et al. (2017) for tabular density estimation. The
validation passes count against the budget. The 2-D sets draw fresh points and need no selection.

Reported: test NLL (nats, ± standard error over test points), the KL divergence to the true density
``KL(p || q) = E_p[log p - log q]`` (paired over the test points, with its standard error), and the number
of optimizer steps that fit in the budget.

**Budget clock.** By default the budget is the *CPU time* of the training process (``--clock cpu``; one torch
thread per run, so on an idle machine it equals the wall time), which keeps the comparison fair on a
shared machine whose other load would otherwise decide how many steps each run gets; ``--clock wall``
uses wall-clock time. ``--workers`` runs train at once in separate processes (default 2 on a CPU).

Usage::

    python benchmarks/bench_flows.py                    # 90 s budgets: FM vs FFJORD vs zuko (+ the spline flow)
    python benchmarks/bench_flows.py --full-grid        # also ScoreSDE
    python benchmarks/bench_flows.py --budgets 30 120   # other budgets
    python benchmarks/bench_flows.py --quick            # 5 s budgets
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import probgen as pg  # noqa: E402
from probgen import registry  # noqa: E402
from probgen.flows.recipe import TOY2D_FLOW  # noqa: E402

try:
    from benchmarks.common import Section, optional_import, warm_up  # noqa: E402
except ImportError:
    from common import Section, optional_import, warm_up  # type: ignore[no-redef]  # noqa: E402

__all__ = ["run", "train_for", "DATASETS", "CONTENDERS"]

DATASETS = ("8gaussians", "checkerboard", "rings", "cancer")
TABULAR = ("cancer",)
FLOW, SCORE, ZUKO = "probgen Flow spline-ar", "probgen ScoreSDE (ODE NLL)", "zuko NSF"
FM, FFJORD = "probgen CNF, flow matching (fit fm)", "probgen CNF, FFJORD (fit cnf --objective ffjord)"
CONTENDERS = (FM, FFJORD, FLOW, SCORE, ZUKO)
#: the contenders of the default run (ScoreSDE trails the flow at 30 s on every 2-D set: --full-grid adds it)
DEFAULT_CONTENDERS = (FM, FFJORD, FLOW, ZUKO)


class _BudgetSpent(Exception):
    pass


def _clock(kind: str) -> Callable[[], float]:
    return time.process_time if kind == "cpu" else time.perf_counter


#: validation scores per budget on the tabular sets (model selection, see the module doc)
VALIDATION_EVALS = 15


class _NegLogProb(torch.nn.Module):
    """A bare-loop contender as a module with ``loss(x)`` (its training loss), for probgen's ``Validator``."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(x)


def train_for(model: torch.nn.Module, data: torch.Tensor, budget: float, *, loss_fn: Callable | None = None,
              batch_size: int = 256, lr: float = 1e-3, seed: int = 0, clock: str = "cpu",
              validation: torch.Tensor | None = None) -> tuple[int, int | None]:
    """Train for ``budget`` seconds of ``clock`` (``"cpu"``: this process's CPU time; ``"wall"``) with the
    learning rate decayed as ``½(1 + cos(π · spent / budget))``; ``probgen.fit`` when ``loss_fn`` is None,
    else a bare Adam loop. With ``validation`` rows the model's loss on them is scored every
    ``budget / VALIDATION_EVALS`` seconds (inside the budget) and the best parameters are restored at the end.
    Returns ``(steps taken, step of the parameters kept or None without validation)``.
    """
    from probgen.training.validation import Validator

    now = _clock(clock)
    start = now()
    validator = None
    if validation is not None:
        scored = model if loss_fn is None else _NegLogProb(model, loss_fn)
        validator = Validator(scored, (validation,), eval_every=1, patience=None, batch_size=1024,
                              batch_transform=None, device=validation.device)
    last_eval = [start]

    def factor(_step: int = 0) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min((now() - start) / budget, 1.0)))

    def after_step(step: int) -> bool:
        """Validate when due; whether the budget is spent."""
        if validator is not None and now() - last_eval[0] >= budget / VALIDATION_EVALS:
            validator.evaluate(step)
            last_eval[0] = now()
        return now() - start >= budget

    def finish(step: int) -> tuple[int, int | None]:
        if validator is None:
            return step, None
        validator.evaluate(step)
        validator.restore_best(stopped_early=False)
        return step, validator.best_step

    if loss_fn is None:
        taken = [0]

        def stop(step: int, loss: float, metrics: dict) -> None:
            taken[0] = step
            if after_step(step):
                raise _BudgetSpent

        try:
            pg.fit(model, data, steps=10**8, batch_size=batch_size, lr=lr, seed=seed, progress=False, callback=stop,
                   lr_schedule=factor)
        except _BudgetSpent:
            pass
        return finish(taken[0])
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = 0
    while True:
        for group in opt.param_groups:
            group["lr"] = lr * factor()
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss_fn(data[idx]).backward()
        opt.step()
        steps += 1
        if after_step(steps):
            return finish(steps)


def _contender(label: str, ds):
    """label -> (model, loss_fn for a bare loop or None for fit, log_prob(x), fit options)."""
    dim = int(ds.train[0].numel())
    if label in (FM, FFJORD):
        recipe = registry.recipe("fm" if label == FM else "cnf")
        model = recipe.build(ds, objective=None if label == FM else "ffjord")
        opts = recipe.fit_options(ds)
        return (model, None, lambda x: recipe.log_likelihoods(model, x)["NLL"][0],
                {"batch_size": opts["batch_size"], "lr": opts["lr"]})
    if label == FLOW:
        if dim != 2:  # tabular: what `probgen fit flow` builds for it (standardized or whitened inside), its lr/batch
            recipe = registry.recipe("flow")
            model = recipe.build(ds)
            opts = recipe.fit_options(ds)
            return (model, None, lambda x: recipe.log_likelihoods(model, x)["NLL"][0],
                    {"batch_size": opts["batch_size"], "lr": opts["lr"]})
        model = pg.flows.Flow(dim, "spline-ar", **TOY2D_FLOW)
        return model, None, model.log_prob, {}
    if label == SCORE:
        model = pg.diffusion.ScoreSDE((dim,))
        return model, None, lambda x: model.log_prob(x, batch_size=1000), {}
    if label == ZUKO:
        import zuko

        model = zuko.flows.NSF(dim)
        # tabular data in raw units (areas in the thousands): standardized by the training rows, as a zuko user
        # would, with the log-determinant added back so that the NLL is of the original values, like probgen's
        loc, scale = (ds.train.mean(0), ds.train.std(0)) if dim != 2 else (torch.zeros(dim), torch.ones(dim))

        def log_prob(x):
            return model().log_prob((x - loc.to(x)) / scale.to(x)) - scale.log().sum().to(x)

        return model, lambda x: -log_prob(x).mean(), log_prob, {}
    raise ValueError(f"unknown contender {label!r}; valid: {', '.join(CONTENDERS)}")


def _load(name: str):
    """A built-in 2-D set, or the tabular set of bench_profiles (written to a temporary .npy)."""
    if name not in TABULAR:
        return pg.data.load_dataset(name)
    import tempfile
    from pathlib import Path

    import numpy as np

    try:
        from benchmarks.bench_profiles import tabular
    except ImportError:
        from bench_profiles import tabular  # type: ignore[no-redef]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.npy"
        np.save(path, tabular(name).astype(np.float32))
        return pg.data.load_dataset(path, seed=0)


def _worker_init() -> None:
    torch.set_num_threads(1)
    warm_up()


def _job(data_name: str, label: str, budget: float, device: str, n_test: int, clock: str
         ) -> tuple[str, float, float, float | None, float | None]:
    """Train one contender for ``budget`` seconds and score it: ``(steps, NLL, SE, KL, KL SE)``; on tabular
    data ``steps`` reads ``"kept/taken"`` (the step whose parameters the validation kept)."""
    from probgen.training.validation import split_off

    ds = _load(data_name)
    torch.manual_seed(0)
    model, loss_fn, log_prob, opts = _contender(label, ds)
    model.to(device)
    train, validation = ds.train.to(device), None
    if data_name in TABULAR:
        (train,), (validation,) = split_off((train,), 0.1, seed=0)
    taken, kept = train_for(model, train, budget, loss_fn=loss_fn, clock=clock, validation=validation, **opts)
    steps = str(taken) if kept is None else f"{kept}/{taken}"
    model.eval()
    x = ds.test[:n_test].to(device)
    with torch.no_grad():
        lp = log_prob(x).double().cpu()
    kl = kl_se = None
    if ds.log_prob is not None:
        gap = ds.log_prob(x.double()).cpu() - lp
        kl, kl_se = float(gap.mean()), float(gap.std() / math.sqrt(gap.numel()))
    return steps, float(-lp.mean()), float(lp.std() / math.sqrt(lp.numel())), kl, kl_se


def run(*, quick: bool = False, device: str = "cpu", budgets: Sequence[float] | None = None,
        full_grid: bool = False, workers: int | None = None, clock: str = "cpu",
        datasets: Sequence[str] | None = None, contenders: Sequence[str] | None = None) -> Section:
    t_section = time.perf_counter()
    if budgets is None:
        budgets = (5.0,) if quick else (90.0,)
    if workers is None:
        workers = 1 if torch.device(device).type == "cuda" else min(2, os.cpu_count() or 1)
    datasets = tuple(datasets or DATASETS)
    contenders = tuple(contenders or (CONTENDERS if full_grid else DEFAULT_CONTENDERS))
    n_test = 300 if quick else 1000
    have_zuko = optional_import("zuko") is not None
    what = "CPU time of the training process" if clock == "cpu" else "wall-clock time"
    sec = Section(
        "Density estimation at equal training budgets: flow matching vs FFJORD vs probgen flows vs zuko",
        f"Test NLL in nats on up to {n_test} held-out points (± standard error); KL = E_p[log p − log q] paired "
        "over the test points (± standard error) where the density is known. Budgets: "
        + ", ".join(f"{b:g} s" for b in budgets) + f" of {what} per model (one torch thread per run; on an idle "
        "machine this is the wall time), Adam with each recipe's lr and batch and the lr decayed by a cosine over "
        f"the budget; {workers} run(s) at a time.",
    )
    if not have_zuko:
        sec.notes.append("zuko is not installed: the zuko NSF column was skipped "
                         "(`pip install -c constraints.txt -e '.[bench]'`).")
    jobs = [(name, label, budget) for budget in budgets for name in datasets for label in contenders
            if have_zuko or label != ZUKO]
    jobs.sort(key=lambda j: -j[2])  # longest first: the short jobs fill the gaps at the end
    results: dict[tuple[str, str, float], tuple] = {}
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
            futures = {pool.submit(_job, *job, device, n_test, clock): job for job in jobs}
            for future in concurrent.futures.as_completed(futures):
                results[futures[future]] = future.result()
    else:
        warm_up()
        for job in jobs:
            results[job] = _job(*job, device, n_test, clock)

    table = sec.table("Test NLL and KL", ["data", "budget s", "model", "steps", "NLL", "± SE", "KL", "± SE"])
    verdicts, cnf_verdicts = [], []
    for budget in sorted(budgets):
        for name in datasets:
            row = {}
            for label in contenders:
                if (name, label, budget) not in results:
                    continue
                steps, nll, se, kl, kl_se = results[(name, label, budget)]
                row[label] = (nll, se)
                table.add(name, budget, label, steps, nll, se, kl, kl_se)
            if FM in row and FFJORD in row:
                cnf_verdicts.append((name, budget, row[FM][0] - row[FFJORD][0], 2 * math.hypot(row[FM][1], row[FFJORD][1])))
            if ZUKO in row and len(row) > 1:
                ours = min((v for k, v in row.items() if k != ZUKO), key=lambda v: v[0])
                theirs = row[ZUKO]
                # "matches": within two standard errors of the difference (errors added in quadrature)
                verdicts.append((name, budget, ours[0] - theirs[0], 2 * math.hypot(ours[1], theirs[1])))
    if cnf_verdicts:
        sec.goal("flow matching beats FFJORD at equal budget, so `probgen fit cnf` trains by flow matching "
                 "(NLL difference FM − FFJORD < 0): "
                 + "; ".join(f"{n} {b:g}s: {d:+.3f} (2 SE {t:.3f})" for n, b, d, t in cnf_verdicts),
                 all(d < 0 for _, _, d, _ in cnf_verdicts))
    if verdicts:
        ok = all(d <= tol for _, _, d, tol in verdicts)
        sec.goal("probgen's best model matches or beats zuko NSF (NLL difference ≤ 2 SE): "
                 + "; ".join(f"{n} {b:g}s: {d:+.3f} (2 SE {t:.3f})" for n, b, d, t in verdicts), ok)
    sec.notes.append("Steps per budget are what one core did in that much CPU time; the NLL of a CNF is its exact "
                     "ODE likelihood (dopri5, rtol = atol = 1e-5, exact trace), as `probgen fit` reports it.")
    if any(name in TABULAR for name in datasets):
        sec.notes.append(f"Tabular sets: steps read 'kept/taken': each model was trained on 90 % of the training "
                         f"rows, scored on the other 10 % by its own loss {VALIDATION_EVALS} times within the budget, "
                         "and evaluated with the parameters of its best score (model selection as in Papamakarios "
                         "et al. 2017).")
    sec.seconds = time.perf_counter() - t_section
    return sec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--budgets", type=float, nargs="+", default=None, help="training budgets in seconds")
    parser.add_argument("--full-grid", action="store_true", help="every contender (adds ScoreSDE)")
    parser.add_argument("--workers", type=int, default=None, help="training runs at once (default: 2 on CPU)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="what the budget counts")
    parser.add_argument("--data", nargs="+", default=None, choices=DATASETS, help="data sets (default: all)")
    parser.add_argument("--contenders", nargs="+", default=None, choices=CONTENDERS)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(run(quick=args.quick, device=args.device, budgets=args.budgets, full_grid=args.full_grid,
              workers=args.workers, clock=args.clock, datasets=args.data, contenders=args.contenders).text())


if __name__ == "__main__":
    main()
