"""What the command line knows about each family: how to build a model for a data set, the tuned training
defaults, how to score and sample it, and how to plot what it draws.

A recipe is a small class; :data:`RECIPES` maps the CLI's family names to them (one explicit table, no
decorator registry). Loaded checkpoints find their recipe through the model's ``family`` attribute, so no
code here switches on model types.

Every default below was measured with a command in this repository; the README's tables give the command
and the numbers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_choice

__all__ = ["Recipe", "RECIPES", "get", "for_model", "names", "FlowRecipe"]


def _stat(values: Tensor, *, scale: float = 1.0, unit: str = "nats") -> dict[str, Any]:
    """Mean and its standard error of per-point values."""
    values = values.detach().double().cpu() * scale
    n = values.numel()
    se = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return {"value": float(values.mean()), "stderr": se, "unit": unit, "n": n}


class Recipe:
    """Defaults shared by every family; subclasses override what differs."""

    name: str = ""
    families: tuple[str, ...] = ()  #: the ``model.family`` values this recipe reads back
    kinds: tuple[str, ...] = ()  #: valid ``--kind`` values (empty: the option is not used)
    objectives: tuple[str, ...] = ()  #: valid ``--objective`` values
    sample_methods: tuple[str, ...] = ()  #: valid ``--method`` values for `probgen sample`
    #: tuned (steps, batch_size, lr) per data kind ("toy2d", "image", "file")
    defaults: dict[str, dict[str, Any]] = {}

    # --- building and training -------------------------------------------------------------------------
    def build(self, dataset, *, kind: str | None = None, objective: str | None = None):
        raise NotImplementedError

    def fit_options(self, dataset, *, steps=None, batch_size=None, lr=None) -> dict[str, Any]:
        opts = dict(self.defaults.get(dataset.kind) or self.defaults.get("default") or {})
        opts.setdefault("steps", 2000)
        opts.setdefault("batch_size", 256)
        opts.setdefault("lr", 1e-3)
        for key, value in (("steps", steps), ("batch_size", batch_size), ("lr", lr)):
            if value is not None:
                opts[key] = value
        return opts

    def training_data(self, dataset):
        return dataset.train

    def _check_kind(self, kind: str | None, objective: str | None) -> None:
        if kind is not None:
            if not self.kinds:
                raise ValueError(f"--kind is not used by family {self.name!r}")
            check_choice("--kind", kind, self.kinds)
        if objective is not None:
            if not self.objectives:
                raise ValueError(f"--objective is not used by family {self.name!r}")
            check_choice("--objective", objective, self.objectives)

    def describe(self, model) -> str:
        return self.name

    # --- evaluation --------------------------------------------------------------------------------------
    def check_data(self, model, dataset) -> None:
        want = tuple(getattr(model, "event_shape", ()) or ())
        if want and tuple(dataset.event_shape) != want:
            raise ValueError(
                f"--data {dataset.name!r} has events of shape {tuple(dataset.event_shape)}, but the checkpoint's "
                f"model expects {want}"
            )

    def log_prob(self, model, x: Tensor, *, trace: str | None = None) -> Tensor:
        if trace is not None:
            raise ValueError(f"--trace is not used by family {self.name!r}")
        return model.log_prob(x)

    def evaluate(self, model, dataset, *, trace=None, bound=None, num_points=None) -> dict[str, dict]:
        """Test NLL (nats), the data's entropy and the KL gap where the density is known, bits/dim for
        quantized data."""
        if bound is not None:
            raise ValueError(f"--bound is not used by family {self.name!r}")
        device = next(model.parameters()).device
        x = dataset.test if num_points is None else dataset.test[:num_points]
        x = x.to(device)
        with torch.no_grad() if not self.needs_grad_for_likelihood else torch.enable_grad():
            lp = torch.cat([self.log_prob(model, chunk, trace=trace).detach() for chunk in x.split(1024)])
        report = {"test NLL": _stat(-lp)}
        if dataset.log_prob is not None:
            true_lp = dataset.log_prob(x.double()).to(lp)
            if dataset.entropy is not None:
                h, h_se = dataset.entropy
                report["true entropy"] = {"value": h, "stderr": h_se, "unit": "nats"}
            # KL(p_data || p_model) = E_data[log p_data - log p_model], estimated on the same test points
            # (a paired estimate: far smaller standard error than NLL minus entropy).
            report["KL gap (NLL - entropy)"] = _stat(true_lp - lp)
        return report

    needs_grad_for_likelihood = False

    # --- sampling -----------------------------------------------------------------------------------------
    def sample_options(self, *, method=None, steps=None) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if method is not None:
            if not self.sample_methods:
                raise ValueError(f"--method is not used by family {self.name!r}")
            opts["method"] = check_choice("--method", method, self.sample_methods)
        if steps is not None:
            opts["steps"] = steps
        return opts

    def sample(self, model, num_samples: int, **opts) -> Tensor:
        with torch.no_grad():
            return model.sample(num_samples, **opts)

    def plot(self, samples: Tensor, dataset, *, path: str) -> None:
        from probgen.diagnostics import plots

        samples = samples.detach().cpu()
        if samples.dim() == 2 and samples.shape[1] == 2:
            ref = None if dataset is None else dataset.test[: len(samples)]
            plots.scatter_2d(samples, reference=ref, path=path)
        elif samples.dim() == 4:
            plots.image_grid(samples[:64], path=path)
        elif samples.dim() == 2 and samples.shape[1] == 64:
            plots.image_grid(samples[:64].reshape(-1, 1, 8, 8), path=path)
        else:
            plots.scatter_2d(samples[:, :2], path=path)


# ------------------------------------------------------------------------------------------- families


class FlowRecipe(Recipe):
    """Discrete normalizing flows (``probgen.flows.Flow``); the default kind is a neural spline flow."""

    name = "flow"
    families = ("flow",)
    kinds = ("spline", "spline-ar", "realnvp", "maf", "iaf", "planar", "radial")
    defaults = {
        "toy2d": {"steps": 3000, "batch_size": 512, "lr": 3e-3},
        "default": {"steps": 3000, "batch_size": 256, "lr": 1e-3},
    }

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.flows import Flow

        self._check_kind(kind, objective)
        return Flow(int(torch.tensor(dataset.event_shape).prod()), kind or "spline")

    def describe(self, model) -> str:
        return f"flow ({model.kind}, {model.num_layers} layers)"


RECIPES: dict[str, type[Recipe]] = {
    "flow": FlowRecipe,
}


def names() -> list[str]:
    """The family names ``probgen fit`` accepts."""
    return sorted(RECIPES)


def get(name: str) -> Recipe:
    """The recipe for a CLI family name (``probgen fit <family>``)."""
    check_choice("family", name, names())
    return RECIPES[name]()


def for_model(model) -> Recipe:
    """The recipe that reads back a loaded model, found through ``model.family``."""
    family = getattr(model, "family", None)
    for cls in RECIPES.values():
        if family in cls.families:
            return cls()
    raise ValueError(f"no command-line recipe for a model of family {family!r}")
