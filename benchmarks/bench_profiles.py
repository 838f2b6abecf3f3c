"""The command line's default settings tuned and measured on data they were not tuned on (docs/cli.md, "The
defaults on held-out data").

Each run does what ``probgen fit FAMILY --data FILE.npy`` does — the data profile picks the settings row, the
recipe builds the model (standardized or whitened inside for continuous data) and ``probgen.fit`` trains it with
the row's options — on sets written to ``.npy`` files here:

* 2-D, held out for the ``2d`` row: ``mixture`` (5 anisotropic Gaussians, unequal weights), ``banana``
  (``x1 ~ N(0, 2²)``, ``x2 | x1 ~ N(x1²/4 - 1, 0.5²)``), ``funnel`` (``v ~ N(0, 1.5²)``, ``x | v ~ N(0, e^v)``);
  50,000 train / 5,556 test;
* ``tabsynth``: the set the ``tabular`` rows were TUNED on: D = 16 (``--dim``), a 3-component full-covariance
  Gaussian mixture with every third coordinate exponentiated (``y = exp(z/2)``: skewed, positive) and bent pairs
  (``y_b = z_b + 0.3 y_a²``), exact density; ``--n-train`` points (512) and 2,000 test points;
  ``tabsynth-o``: the same with 3 % outliers (each drawn from its component with twice the standard deviations;
  exact density), as users' tabular data have (also a tuning set: the flow row's tail guard was chosen on it);
* held out for the ``tabular`` row, scikit-learn's bundled sets in their raw units (no download): ``cancer``
  (breast cancer, 569 x 30), ``wine`` (178 x 13), ``diabetes`` (442 x 10; its ``sex`` column takes two values, so a
  density model can exploit it), scored by ``--folds``-fold cross-validation (5: every point is scored once, by
  a model that did not see it);
* ``bernmix``: held out for the ``binary`` row, a mixture of 8 product-Bernoulli components in D = 32 with an
  exact log-likelihood; ``--n-train`` points and 2,000 test points.

Reported: the test NLL (nats, mean ± standard error), the paired difference to a baseline fitted to the same
training split (a full-covariance Gaussian; independent Bernoulli marginals for binary data) with its standard
error, its median and the share of test points the model scores better, and the KL gap
``E_p[log p(x) - log q(x)]`` where the density is exact. ``--family gaussian`` (or ``bernoulli``) prints the
baseline alone. Tuning: ``--model-json`` / ``--fit-json`` lay settings over the row, ``--curve K`` prints the test
NLL (or with ``--curve-loss`` the held-out training loss) every K steps.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_profiles.py --set cancer --family flow [--steps N]

prints one JSON line (set, family, profile row, options, NLL and baseline statistics, wall times).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probgen as pg  # noqa: E402
from probgen import registry  # noqa: E402

N_TOTAL = 55_556  # a 90/10 split: 50,000 train / 5,556 test, as the built-in 2-D sets have 50,000 train

_W = torch.tensor([0.35, 0.25, 0.2, 0.12, 0.08])
_MU = torch.tensor([[-2.5, 0.5], [1.5, 2.0], [0.0, -2.0], [2.5, -1.0], [-1.0, 2.5]])
_ANGLE = torch.tensor([0.3, -0.8, 1.2, 0.0, 2.0])
_SD = torch.tensor([[0.8, 0.25], [0.5, 0.3], [1.0, 0.2], [0.3, 0.3], [0.6, 0.15]])


def _mixture_components():
    rot = torch.stack([torch.stack([_ANGLE.cos(), -_ANGLE.sin()], -1), torch.stack([_ANGLE.sin(), _ANGLE.cos()], -1)],
                      -2)  # (5, 2, 2)
    scale_tril = rot @ torch.diag_embed(_SD)
    cov = scale_tril @ scale_tril.transpose(-1, -2)
    return torch.distributions.MultivariateNormal(_MU.double(), covariance_matrix=cov.double())


def sample(name: str, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if name == "mixture":
        comps = _mixture_components()
        k = torch.multinomial(_W, n, replacement=True, generator=g)
        eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
        return comps.loc[k] + (comps.scale_tril[k] @ eps[..., None])[..., 0]
    if name == "banana":
        x1 = 2 * torch.randn(n, generator=g, dtype=torch.float64)
        x2 = x1**2 / 4 - 1 + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
        return torch.stack([x1, x2], 1)
    if name == "funnel":
        v = 1.5 * torch.randn(n, generator=g, dtype=torch.float64)
        x = (v / 2).exp() * torch.randn(n, generator=g, dtype=torch.float64)
        return torch.stack([v, x], 1)
    raise ValueError(name)


def log_prob(name: str, x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    normal = torch.distributions.Normal
    if name == "mixture":
        comps = _mixture_components()
        return torch.logsumexp(comps.log_prob(x[:, None, :]) + _W.double().log(), -1)
    if name == "banana":
        return normal(0.0, 2.0).log_prob(x[:, 0]) + normal(x[:, 0] ** 2 / 4 - 1, 0.5).log_prob(x[:, 1])
    if name == "funnel":
        return normal(0.0, 1.5).log_prob(x[:, 0]) + normal(0.0, (x[:, 0] / 2).exp()).log_prob(x[:, 1])
    raise ValueError(name)


def _tabsynth_parts(dim: int):
    """The fixed parts of ``tabsynth``: a 3-component Gaussian mixture in ``dim`` dimensions with random full
    covariances (seeded), which coordinates are log-normal-like and which pairs are bent."""
    g = torch.Generator().manual_seed(77)
    k = 3
    loc = 1.5 * torch.randn(k, dim, generator=g, dtype=torch.float64)
    a = torch.randn(k, dim, dim, generator=g, dtype=torch.float64) / math.sqrt(dim)
    cov = a @ a.transpose(-1, -2) + 0.1 * torch.eye(dim, dtype=torch.float64)
    comps = torch.distributions.MultivariateNormal(loc, covariance_matrix=cov)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    skewed = list(range(0, dim, 3))  # y = exp(z / 2): positive, right-skewed like sizes and counts
    bent = [(j, j + 1) for j in range(1, dim - 1, 4)]  # y_b = z_b + 0.3 y_a^2: a curved dependence
    return weights, comps, skewed, bent


#: ``tabsynth-o``: this share of the points are outliers, drawn from their component with twice its standard deviations
TABSYNTH_OUTLIERS = 0.03


def tabsynth_sample(n: int, seed: int, dim: int = 16, outliers: float = 0.0) -> torch.Tensor:
    weights, comps, skewed, bent = _tabsynth_parts(dim)
    g = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(weights, n, replacement=True, generator=g)
    eps = torch.randn(n, dim, generator=g, dtype=torch.float64)
    if outliers:  # contamination: a few points from the same component with twice its standard deviations
        eps = eps * torch.where(torch.rand(n, generator=g, dtype=torch.float64) < outliers, 2.0, 1.0)[:, None]
    y = comps.loc[idx] + (comps.scale_tril[idx] @ eps[..., None])[..., 0]
    y[:, skewed] = (y[:, skewed] / 2).exp()
    for a, b in bent:
        y[:, b] = y[:, b] + 0.3 * y[:, a] ** 2
    return y


def tabsynth_log_prob(x: torch.Tensor, dim: int = 16, outliers: float = 0.0) -> torch.Tensor:
    """Exact density: undo the bends (unit Jacobian), then the exponentials (Jacobian ``y / 2`` each)."""
    weights, comps, skewed, bent = _tabsynth_parts(dim)
    if outliers:
        wide = torch.distributions.MultivariateNormal(comps.loc, scale_tril=2 * comps.scale_tril)
        comps = torch.distributions.MultivariateNormal(torch.cat([comps.loc, wide.loc]),
                                                       scale_tril=torch.cat([comps.scale_tril, wide.scale_tril]))
        weights = torch.cat([(1 - outliers) * weights, outliers * weights])
    z = x.double().clone()
    for a, b in reversed(bent):
        z[:, b] = z[:, b] - 0.3 * z[:, a] ** 2
    y_skew = z[:, skewed]
    log_jac = (y_skew / 2).log().sum(-1)
    z[:, skewed] = 2 * y_skew.clamp_min(1e-300).log()
    lp = torch.logsumexp(comps.log_prob(z[:, None, :]) + weights.log(), -1) - log_jac
    return torch.where((y_skew > 0).all(-1), lp, torch.full_like(lp, -math.inf))


def _bernmix_parts(dim: int = 32, k: int = 8):
    """``bernmix``: a mixture of ``k`` product-Bernoulli components in ``dim`` dimensions (seeded), a binary
    set with an exact log-likelihood (Bernoulli mixtures are the classic test of binary density models)."""
    g = torch.Generator().manual_seed(99)
    probs = torch.rand(k, dim, generator=g, dtype=torch.float64) ** 3  # mostly-off pixels, some near 1
    probs = torch.where(torch.rand(k, dim, generator=g, dtype=torch.float64) < 0.3, 1 - probs, probs)
    weights = torch.distributions.Dirichlet(torch.full((k,), 4.0, dtype=torch.float64)).sample()
    return weights, probs.clamp(0.02, 0.98)


def bernmix_sample(n: int, seed: int) -> torch.Tensor:
    weights, probs = _bernmix_parts()
    g = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(weights, n, replacement=True, generator=g)
    return torch.bernoulli(probs[idx], generator=g)


def bernmix_log_prob(x: torch.Tensor) -> torch.Tensor:
    weights, probs = _bernmix_parts()
    x = x.double()[:, None, :]
    return torch.logsumexp((x * probs.log() + (1 - x) * (1 - probs).log()).sum(-1) + weights.log(), -1)


REAL_SETS = {"cancer": "load_breast_cancer", "diabetes": "load_diabetes", "wine": "load_wine"}
BINARY_SETS = ("bernmix",)


def tabular(name: str) -> np.ndarray:
    """A scikit-learn bundled set (no download), raw units: the model standardizes inside."""
    import sklearn.datasets

    return getattr(sklearn.datasets, REAL_SETS[name])().data


class IndependentBernoulli(torch.nn.Module):
    """The baseline of binary data: independent Bernoulli marginals fitted to the training split (smoothed)."""

    def __init__(self, train: torch.Tensor):
        super().__init__()
        x = train.double().reshape(len(train), -1)
        self.p = (x.sum(0) + 0.5) / (len(x) + 1)

    def log_prob(self, x):
        x = x.double().reshape(len(x), -1)
        return (x * self.p.log() + (1 - x) * (1 - self.p).log()).sum(-1)


class Gaussian(torch.nn.Module):
    """The baseline: a full-covariance Gaussian fitted by maximum likelihood to the training split."""

    def __init__(self, train: torch.Tensor):
        super().__init__()
        x = train.double()
        self.dist = torch.distributions.MultivariateNormal(x.mean(0), covariance_matrix=torch.cov(x.T, correction=0))

    def log_prob(self, x):
        return self.dist.log_prob(x.double())


def _override(recipe, dataset, model_json, fit_json):
    """Tuning runs: lay ``--model-json`` / ``--fit-json`` over the data's row (on this recipe instance only)."""
    if not (model_json or fit_json):
        return
    row = recipe.profile(dataset).row
    tuned = {part: dict(recipe.settings.get(row, {}).get(part, {})) for part in ("model", "fit")}
    tuned["model"].update(json.loads(model_json or "{}"))
    tuned["fit"].update(json.loads(fit_json or "{}"))
    if "steps" in json.loads(fit_json or "{}"):  # explicit steps replace the row's passes over the data
        tuned["fit"].pop("epochs", None), tuned["fit"].pop("max_steps", None)
    recipe.settings = {**recipe.settings, row: {**recipe.settings.get(row, {}), **tuned}}


def run_split(args, dataset):
    """Train ``args.family`` on ``dataset.train`` as ``probgen fit`` does; per-point test log-likelihoods of the
    model and of the Gaussian baseline, and the options and wall times."""
    limit = args.eval_points
    if limit is None and args.family in registry.names():
        limit = registry.recipe(args.family).max_eval_points  # what `probgen fit` scores (the score SDE: 2,000)
    x = dataset.test[:limit]
    binary = args.set in BINARY_SETS
    base = (IndependentBernoulli if binary else Gaussian)(dataset.train).log_prob(x)
    if args.family in ("gaussian", "bernoulli"):
        what = "independent Bernoulli" if binary else "full-covariance Gaussian"
        return base, base, x, {"model": what, "steps": 0, "batch_size": 0, "lr": 0}, 0.0, 0.0
    recipe = registry.recipe(args.family)
    _override(recipe, dataset, args.model_json, args.fit_json)
    if args.no_whiten:  # tuning: per-dimension standardization where the row would whiten
        recipe.whiten_rows = ()
    if args.whiten:  # tuning: whiten (full covariance) where the row would standardize per dimension
        recipe.whiten_rows = (*recipe.whiten_rows, recipe.profile(dataset).row)
    recipe.check_dataset(dataset)
    torch.manual_seed(args.seed)
    model = recipe.build(dataset)
    options = recipe.fit_options(dataset, steps=args.steps)
    callback = None
    if args.curve:  # tuning: the test NLL (and KL) every `--curve` steps, one JSON line each
        def callback(step, loss, metrics):
            if step % args.curve == 0 and args.curve_loss:  # held-out training loss (cheap: no ODE solve)
                with torch.no_grad():
                    held = torch.stack([model.loss(recipe.to_model(x)) for _ in range(4)]).mean()
                print(json.dumps({"step": step, "loss": round(loss, 4), "held-out loss": round(float(held), 4)}),
                      flush=True)
            elif step % args.curve == 0:
                model.eval()
                lp = next(iter(recipe.log_likelihoods(model, recipe.to_model(x)).values()))[0].double()
                model.train()
                line = {"step": step, "loss": round(loss, 4), "test NLL": _stat(-lp)}
                if args.set.startswith("tabsynth"):
                    line["KL"] = _stat(tabsynth_log_prob(x, args.dim, _outliers(args.set)) - lp)
                elif args.set == "bernmix":
                    line["KL"] = _stat(bernmix_log_prob(x) - lp)
                print(json.dumps(line), flush=True)
    start = time.perf_counter()
    history = pg.fit(model, recipe.training_data(dataset), seed=args.seed, progress=False, callback=callback,
                     **options)
    train_s = time.perf_counter() - start
    model.eval()
    start = time.perf_counter()
    terms = recipe.log_likelihoods(model, recipe.to_model(x))
    eval_s = time.perf_counter() - start
    name = next((n for n in terms if n.startswith("NLL")), next(iter(terms)))  # IWAE rather than the ELBO
    lp = terms[name][0].double()
    info = {"model": recipe.describe(model), "row": recipe.profile(dataset).row, "name": name,
            **{k: v for k, v in options.items() if k != "batch_transform"}, "steps_done": history.steps_done}
    if history.best_step is not None:  # early stopping: the step whose parameters were restored
        info["best_step"] = history.best_step
    return lp, base, x, info, train_s, eval_s


def _outliers(name: str) -> float:
    """Share of outliers of a tabsynth variant."""
    return TABSYNTH_OUTLIERS if name == "tabsynth-o" else 0.0


def _stat(values: torch.Tensor) -> list[float]:
    return [round(float(values.mean()), 4), round(float(values.std() / math.sqrt(len(values))), 4)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, choices=["mixture", "banana", "funnel", "tabsynth", "tabsynth-o", "bernmix",
                                                             *REAL_SETS])
    parser.add_argument("--family", required=True, choices=[*registry.names(), "gaussian", "bernoulli"])
    parser.add_argument("--steps", type=int, default=None, help="override the row's steps (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds of the scikit-learn sets")
    parser.add_argument("--n-train", type=int, default=512, help="training points of tabsynth")
    parser.add_argument("--dim", type=int, default=16, help="dimension of tabsynth")
    parser.add_argument("--curve", type=int, default=0, help="tuning: print the test NLL every CURVE steps")
    parser.add_argument("--curve-loss", action="store_true", help="tuning: the curve shows the held-out loss")
    parser.add_argument("--eval-points", type=int, default=None, help="score only the first test points")
    parser.add_argument("--no-whiten", action="store_true", help="tuning: standardize per dimension, never whiten")
    parser.add_argument("--whiten", action="store_true", help="tuning: whiten where the row standardizes per dimension")
    parser.add_argument("--model-json", default=None, help="tuning: model settings laid over the row (JSON)")
    parser.add_argument("--fit-json", default=None, help="tuning: training settings laid over the row (JSON)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    if args.set in REAL_SETS:
        # k-fold cross-validation: every point is scored once, by a model that did not train on it
        raw = tabular(args.set)
        perm = torch.randperm(len(raw), generator=torch.Generator().manual_seed(args.seed)).numpy()
        folds = np.array_split(perm, args.folds)
        splits = [(np.concatenate([f for j, f in enumerate(folds) if j != i]), folds[i]) for i in range(args.folds)]
    else:
        synthetic = args.set in ("tabsynth", "tabsynth-o", "bernmix")
        n_test = 2000 if synthetic else N_TOTAL - 50_000
        n_train = args.n_train if synthetic else 50_000
        if args.set.startswith("tabsynth"):
            raw = tabsynth_sample(n_train + n_test, seed=1234, dim=args.dim, outliers=_outliers(args.set)).numpy()
        elif args.set == "bernmix":
            raw = bernmix_sample(n_train + n_test, seed=1234).numpy()
        else:
            raw = sample(args.set, N_TOTAL, seed=1234).numpy()
        perm = torch.randperm(len(raw), generator=torch.Generator().manual_seed(args.seed)).numpy()
        splits = [(perm[n_test:], perm[:n_test])]

    lps, bases, xs, train_s, eval_s, per_fold = [], [], [], 0.0, 0.0, {}
    with tempfile.TemporaryDirectory() as tmp:
        for train_idx, test_idx in splits:
            # the file round trip `probgen fit --data FILE.npy` makes (profile, float32), then this split
            path = Path(tmp) / f"{args.set}.npy"
            np.save(path, np.concatenate([raw[train_idx], raw[test_idx]]).astype(np.float32))
            full = pg.data.load_dataset(path, seed=args.seed, n_train=len(train_idx), n_test=len(test_idx))
            rows = torch.from_numpy(np.load(path))
            train = rows[: len(train_idx)]
            data_range = full.data_range if full.num_levels else (float(train.min()), float(train.max()))
            dataset = dataclasses.replace(full, train=train, test=rows[len(train_idx):], data_range=data_range)
            lp, base, x, info, t_s, e_s = run_split(args, dataset)
            for key in ("steps_done", "best_step"):  # per fold
                per_fold.setdefault(key, []).append(info.pop(key, None))
            lps.append(lp), bases.append(base), xs.append(x)
            train_s, eval_s = train_s + t_s, eval_s + e_s
    lp, base, x = torch.cat(lps), torch.cat(bases), torch.cat(xs)
    out = {"set": args.set, "family": args.family, **info, "folds": len(splits), "train_points": len(splits[0][0]),
           "train_s": round(train_s, 1), "eval_s": round(eval_s, 1), "eval_points": len(lp),
           **{k: v for k, v in per_fold.items() if any(s is not None for s in v)}}
    out["test NLL"] = _stat(-lp)
    baseline = "independent Bernoulli" if args.set in BINARY_SETS else "Gaussian"
    out[f"NLL - {baseline} NLL (paired)"] = _stat(base - lp)
    # the mean is the test NLL, but a few far-out test points can dominate it: the typical point too
    out[f"median NLL - {baseline} NLL"] = round(float((base - lp).median()), 4)
    out[f"points better than {baseline}"] = round(float((lp > base).double().mean()), 3)
    out[f"{baseline} test NLL"] = _stat(-base)
    if args.set == "bernmix":
        out["KL"] = _stat(bernmix_log_prob(x) - lp)
    elif args.set.startswith("tabsynth"):
        out["KL"] = _stat(tabsynth_log_prob(x, args.dim, _outliers(args.set)) - lp)
    elif args.set not in REAL_SETS:
        out["KL"] = _stat(log_prob(args.set, x) - lp)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
