"""The command line's default settings measured on data they were not tuned on (docs/cli.md, "Held-out data").

Each run does what ``probgen fit FAMILY --data FILE.npy`` does — the data profile picks the settings row, the
recipe builds the model (standardized inside for continuous data) and ``probgen.fit`` trains it with the row's
options — on held-out sets written to ``.npy`` files here:

* ``mixture``: a 2-D mixture of 5 anisotropic Gaussians with unequal weights (not the 8gaussians ring);
* ``banana``: ``x1 ~ N(0, 2²)``, ``x2 | x1 ~ N(x1²/4 - 1, 0.5²)``;
* ``funnel``: Neal's funnel in 2-D, ``v ~ N(0, 1.5²)``, ``x | v ~ N(0, e^v)``;
* ``cancer``: scikit-learn's bundled breast-cancer features (569 x 30), standardized: a tabular profile row.

The 2-D sets have an exact density, so the KL gap ``E_p[log p(x) - log q(x)]`` is reported (paired over the
test points, with its standard error); for the tabular set only the test NLL.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_profiles.py --set mixture --family flow [--steps N]

prints one JSON line (set, family, profile row, steps, KL or NLL with standard error, wall time).
"""

from __future__ import annotations

import argparse
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


def tabular(name: str) -> np.ndarray:
    from sklearn.datasets import load_breast_cancer

    x = load_breast_cancer().data
    return (x - x.mean(0)) / x.std(0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, choices=["mixture", "banana", "funnel", "cancer"])
    parser.add_argument("--family", required=True, choices=registry.names())
    parser.add_argument("--steps", type=int, default=None, help="override the row's steps (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.set}.npy"
        data = tabular(args.set) if args.set == "cancer" else sample(args.set, N_TOTAL, seed=1234).numpy()
        np.save(path, data.astype(np.float32))
        dataset = pg.data.load_dataset(path, seed=args.seed)
    recipe = registry.recipe(args.family)
    recipe.check_dataset(dataset)
    torch.manual_seed(args.seed)
    model = recipe.build(dataset)
    options = recipe.fit_options(dataset, steps=args.steps)
    start = time.perf_counter()
    pg.fit(model, recipe.training_data(dataset), seed=args.seed, progress=False, **options)
    train_s = time.perf_counter() - start
    model.eval()
    n = recipe.max_eval_points or len(dataset.test)
    x = dataset.test[:n]
    start = time.perf_counter()
    terms = recipe.log_likelihoods(model, recipe.to_model(x))
    eval_s = time.perf_counter() - start
    name, (lp, _) = next(iter(terms.items()))
    lp = lp.double()
    out = {"set": args.set, "family": args.family, "row": recipe.profile(dataset).row,
           "model": recipe.describe(model), "steps": options["steps"], "batch_size": options["batch_size"],
           "lr": options["lr"], "train_s": round(train_s, 1), "eval_s": round(eval_s, 1), "eval_points": len(x)}
    out["test " + name] = [round(float(-lp.mean()), 4), round(float(lp.std() / math.sqrt(len(lp))), 4)]
    if args.set != "cancer":
        gap = log_prob(args.set, x) - lp
        out["KL"] = [round(float(gap.mean()), 4), round(float(gap.std() / math.sqrt(len(gap))), 4)]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
