"""The shared part of every command-line recipe: :class:`Recipe` (how the CLI builds, trains, scores,
samples and plots a family) and the helpers the families' recipes use.

Each family's recipe lives beside the family (``probgen/<family>/recipe.py``) and is found through the
one family table, :mod:`probgen.registry`; :func:`get`, :func:`for_model` and :func:`names` here are the
registry's lookups under their first names. Loaded checkpoints find their recipe through the model's
``family`` attribute, so no code here switches on model types.

Every default a recipe holds was measured with a command in this repository; the docs give the command
and the numbers.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from probgen._checks import check_choice

__all__ = [
    "Recipe",
    "get",
    "for_model",
    "names",
    "mean_stderr",
    "bits_per_dim_stat",
    "numel",
    "require_binary",
    "value_range",
    "settings_table",
    "steps_for_epochs",
    "MIN_VALIDATION_ROWS",
]


#: a row's validation split (``validation`` in its fit settings, :func:`probgen.fit`'s early stopping) is dropped when
#: it would hold fewer rows than this: the run then trains for the row's budget of steps
MIN_VALIDATION_ROWS = 10


def mean_stderr(values: Tensor, *, scale: float = 1.0, unit: str = "nats") -> dict[str, Any]:
    """Mean and its standard error of per-point values."""
    values = values.detach().double().cpu() * scale
    n = values.numel()
    se = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return {"value": float(values.mean()), "stderr": se, "unit": unit, "n": n}


class Recipe:
    """Defaults shared by every family; subclasses override what differs."""

    name: str = ""
    kinds: tuple[str, ...] = ()  #: valid ``--kind`` values (empty: the option is not used)
    objectives: tuple[str, ...] = ()  #: valid ``--objective`` values
    sample_methods: tuple[str, ...] = ()  #: valid ``--method`` values for `probgen sample`
    #: sampler options for sample metrics (FID/KID) when no ``--method`` is given: a fast sampler for families
    #: whose default takes many network passes per draw (``None``: the family's default sampler)
    metric_sampler: dict[str, Any] | None = None
    #: the evaluation's fixed part (the RBM's log Z bracket) is computed once per set of parameters and cached, so
    #: after the first probe of `probgen fit --eval quick` only the points cost time (they are then all scored)
    cached_fixed_cost = False
    bounds: tuple[str, ...] = ()  #: valid ``--bound`` values for `probgen nll`
    traces: tuple[str, ...] = ()  #: valid ``--trace`` values for `probgen nll`
    #: the model is a density over continuous values: quantized data (digits) are dequantized for it
    continuous: bool = True
    #: the model takes vectors: image events are flattened to ``(N, D)`` on the way in
    flatten: bool = False
    #: the family has a likelihood, a bound or an estimate of one (GANs do not)
    has_likelihood: bool = True
    #: test points scored by default (``None``: the whole test split); costly estimators use a fixed subset
    max_eval_points: int | None = None
    #: the family's rows of the settings table: profile row (:data:`probgen.data.profile.PROFILE_ROWS`) ->
    #: ``{"model": {...}, "fit": {...}}``; ``"default"`` is what every row starts from (see :meth:`settings_for`)
    settings: dict[str, dict[str, dict[str, Any]]] = {}
    #: continuous data are standardized inside the model (:mod:`probgen.ops.standardize`)
    standardize: bool = False
    #: profile rows whose vectors are whitened instead (full covariance, :func:`probgen.ops.standardize.whiten`):
    #: the model then starts from the full-covariance Gaussian fitted to the data
    whiten_rows: tuple[str, ...] = ()

    # --- what the data is ---------------------------------------------------------------------------------
    def profile(self, dataset):
        """The :class:`~probgen.data.profile.DataProfile` of ``dataset``'s training split (computed once)."""
        from probgen.data.profile import data_profile

        cache = self.__dict__.setdefault("_profiles", {})
        key = id(dataset.train)
        if key not in cache or cache[key][0] is not dataset.train:
            cache[key] = (dataset.train, data_profile(dataset))
        return cache[key][1]

    def settings_for(self, dataset) -> dict[str, dict[str, Any]]:
        """``{"model": {...}, "fit": {...}}``: the ``"default"`` row updated by the data's profile row.

        A row may size its training by the data instead of a fixed ``steps``: ``"epochs": E`` (and optionally
        ``"max_steps"``) gives ``steps = min(ceil(E N / min(batch_size, N)), max_steps)`` for the profile's ``N``
        training points (:func:`steps_for_epochs`), so small data sets are not trained into overfitting."""
        prof = self.profile(dataset)
        base, tuned = self.settings.get("default", {}), self.settings.get(prof.row, {})
        out = {part: {**base.get(part, {}), **tuned.get(part, {})} for part in ("model", "fit")}
        fit = out["fit"]
        if "epochs" in tuned.get("fit", {}):
            fit["steps"] = steps_for_epochs(fit.pop("epochs"), prof.size, fit.get("batch_size", 256),
                                            max_steps=fit.pop("max_steps", None))
        return out

    def profile_line(self, dataset) -> str:
        """One line for ``probgen fit``: which profile row the data got and why."""
        from probgen.data.profile import PROFILE_ROWS

        prof = self.profile(dataset)
        tuned = "its tuned settings" if prof.row in self.settings else "the family's general defaults"
        return (f"data profile {prof.describe()} -> row {prof.row!r} ({dict(PROFILE_ROWS)[prof.row]}): "
                f"{tuned}" + (f"; {self._standardizing(dataset)} inside the model" if self.standardizes(dataset) else ""))

    def _standardizing(self, dataset) -> str:
        return "whitened (full covariance)" if self.profile(dataset).row in self.whiten_rows else "standardized"

    def standardizes(self, dataset) -> bool:
        """Whether :meth:`standardized` wraps models of ``dataset``: continuous data, continuous families."""
        return self.standardize and self.profile(dataset).value_type == "continuous"

    def standardized(self, model, dataset, *, gaussian_weight: float = 0.0):
        """``model`` wrapped in the standardizing bijection fitted to the training data, when
        :meth:`standardizes` (``log_prob`` stays the density of the original values); ``gaussian_weight`` mixes
        the fitted Gaussian into it (:class:`probgen.ops.standardize.Standardized`)."""
        if not self.standardizes(dataset):
            return model
        from probgen.ops.standardize import standardize, whiten

        data = self.to_model(dataset.train)
        if self.profile(dataset).row in self.whiten_rows and data.dim() == 2:
            return whiten(model, data, gaussian_weight=gaussian_weight)
        return standardize(model, data, gaussian_weight=gaussian_weight)

    # --- building and training -------------------------------------------------------------------------
    def build(self, dataset, *, kind: str | None = None, objective: str | None = None):
        """A fresh model for ``dataset`` with the settings of its profile row. ``kind`` and ``objective`` are
        checked by :meth:`check_options` and the data by :meth:`check_dataset` at the entry, not here."""
        raise NotImplementedError

    def check_dataset(self, dataset) -> None:
        """Refuse data the family cannot model, before anything is trained (binary-only families)."""

    #: a family of binary data (RBM, MADE): quantized data (grey images) are binarized dynamically for it
    binary_data = False

    def prepare_dataset(self, dataset):
        """``(dataset, note)``: the data as this family models them, and one line saying what changed (or ``None``).

        For a family of binary data, quantized data that are not binary (e.g. ``--data mnist``) become their
        dynamically binarized copy (:func:`probgen.data.binarized`: a fresh Bernoulli draw of each grey level at
        every batch, the test split binarized once), as Salakhutdinov & Murray (2008) train RBMs on MNIST.
        """
        if not self.binary_data or dataset.num_levels in (None, 2):
            return dataset, None
        from probgen.data import binarized

        return binarized(dataset), (f"{self.name} models binary data: {dataset.name!r} ({dataset.num_levels} levels) "
                                    "is dynamically binarized (each value read as P(1) over its data range)")

    def fit_options(self, dataset, *, steps=None, batch_size=None, lr=None) -> dict[str, Any]:
        opts = dict(self.settings_for(dataset)["fit"])
        opts.setdefault("steps", 2000)
        opts.setdefault("batch_size", 256)
        opts.setdefault("lr", 1e-3)
        for key, value in (("steps", steps), ("batch_size", batch_size), ("lr", lr)):
            if value is not None:
                opts[key] = value
        if opts.get("validation") is not None and round(opts["validation"] * len(dataset.train)) < MIN_VALIDATION_ROWS:
            for key in ("validation", "patience", "eval_every"):  # too few rows to score: the row's fixed budget
                opts.pop(key, None)
        # a data set that redraws its own batches (dynamic binarization of MNIST) keeps its transform
        transform = getattr(dataset, "batch_transform", None) or self.batch_transform(dataset)
        if transform is not None:
            opts["batch_transform"] = transform
        return opts

    def to_model(self, x: Tensor) -> Tensor:
        """Data as the model takes it (flattened for vector models)."""
        return x.reshape(x.shape[0], -1) if self.flatten else x

    def training_data(self, dataset):
        return self.to_model(dataset.train)

    def batch_transform(self, dataset):
        """Fresh uniform dequantization noise every step for continuous models of quantized data."""
        if not (self.continuous and dataset.num_levels):
            return None
        from probgen.data import dequantize_scaled

        levels, data_range = dataset.num_levels, dataset.data_range
        return lambda x: dequantize_scaled(x, num_levels=levels, data_range=data_range)

    def check_options(self, kind: str | None, objective: str | None) -> None:
        """Refuse a ``--kind`` or ``--objective`` the family does not have (checked once, at the entry: the CLI
        calls this and :meth:`check_dataset` before :meth:`build`, which does not check again)."""
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
        """Refuse a data set whose events do not fit the checkpoint's model."""
        want = tuple(getattr(model, "event_shape", ()) or ())
        have = tuple(dataset.event_shape)
        if self.flatten:
            have = (numel(have),)
        if want and have != want:
            raise ValueError(
                f"--data {dataset.name!r} has events of shape {tuple(dataset.event_shape)}, but the checkpoint's "
                f"model expects {want}"
            )
        self.check_dataset(dataset)

    def log_likelihoods(self, model, x: Tensor, *, trace=None, bound=None) -> dict[str, tuple[Tensor, float]]:
        """Per-point log-likelihoods or bounds (nats) by name, each with an extra standard error shared by
        all points (e.g. from an AIS estimate of log Z); exact families return ``{"NLL": (log p(x), 0)}``."""
        with torch.no_grad():
            lp = torch.cat([model.log_prob(chunk).detach() for chunk in x.split(1024)])
        return {"NLL": (lp, 0.0)}

    def default_eval_points(self, dataset) -> int | None:
        """Test points :meth:`evaluate` scores when not told (``None``: the whole test split)."""
        return self.max_eval_points

    def _check_eval_options(self, trace, bound) -> None:
        if trace is not None:
            if not self.traces:
                raise ValueError(f"--trace is not used by family {self.name!r}")
            check_choice("--trace", trace, self.traces)
        if bound is not None:
            if not self.bounds:
                raise ValueError(f"--bound is not used by family {self.name!r}")
            check_choice("--bound", bound, self.bounds)

    def is_continuous(self, model) -> bool:
        return self.continuous

    def evaluate(self, model, dataset, *, trace=None, bound=None, num_points=None) -> dict[str, dict]:
        """Test NLL or bounds (nats) with standard errors; the data's entropy and the KL gap where the
        density is known; bits/dim for quantized data."""
        self._check_eval_options(trace, bound)
        device = next(model.parameters()).device
        if num_points is None:
            num_points = self.max_eval_points
        x = dataset.test if num_points is None else dataset.test[:num_points]
        x = x.to(device)
        continuous = self.is_continuous(model)
        x_eval = x
        if continuous and dataset.num_levels:
            from probgen.data import dequantize_scaled

            g = torch.Generator(device=device).manual_seed(0)
            x_eval = dequantize_scaled(x, num_levels=dataset.num_levels, data_range=dataset.data_range, generator=g)
        terms = self.log_likelihoods(model, self.to_model(x_eval), trace=trace, bound=bound)
        report: dict[str, dict] = {}
        num_dims = x[0].numel()
        for name, (lp, extra_se) in terms.items():
            stat = mean_stderr(-lp)
            stat["stderr"] = math.sqrt(stat["stderr"] ** 2 + extra_se**2)
            report[f"test {name}"] = stat
            if dataset.num_levels:
                report[f"test {name} bits/dim"] = bits_per_dim_stat(lp, num_dims, dataset, extra_se, continuous)
        if dataset.log_prob is not None:
            # the tightest estimate: an NLL (exact, IWAE or AIS) rather than an ELBO where both are reported
            primary = next((n for n in terms if n.startswith("NLL")), next(iter(terms)))
            lp = terms[primary][0]
            true_lp = dataset.log_prob(x.double()).to(lp)
            if dataset.entropy is not None:
                h, h_se = dataset.entropy
                report["true entropy"] = {"value": h, "stderr": h_se, "unit": "nats"}
            # KL(p_data || p_model) = E_data[log p_data - log p_model], estimated on the same test points
            # (a paired estimate: far smaller standard error than NLL minus entropy).
            report["KL gap (NLL - entropy)"] = mean_stderr(true_lp - lp)
        return report

    def extra_metrics(self, model, dataset) -> dict[str, dict]:
        """Family-specific metrics for ``probgen evaluate`` (latent-space metrics for VAEs); none by default."""
        return {}

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

    def sampler_options(self, model, opts: dict[str, Any]) -> dict[str, Any]:
        """The options :meth:`sample` passes to ``model.sample``: ``opts`` with the family's defaults for this
        model laid under them (e.g. a few-step sampler for large images; `probgen sample` prints them)."""
        return dict(opts)

    def sample(self, model, num_samples: int, **opts) -> Tensor:
        with torch.no_grad():
            return model.sample(num_samples, **self.sampler_options(model, opts))

    def plot(self, samples: Tensor, dataset, *, path: str) -> None:
        from probgen.diagnostics import plots

        samples = samples.detach().cpu()
        if samples.dim() == 2 and samples.shape[1] == 2:
            ref = None if dataset is None else dataset.test[: len(samples)]
            plots.scatter_2d(samples, reference=ref, path=path)
        elif samples.dim() == 4:
            plots.image_grid(samples[:64], path=path, value_range=value_range(dataset))
        elif samples.dim() == 2 and samples.shape[1] == 64:
            plots.image_grid(samples[:64].reshape(-1, 1, 8, 8), path=path, value_range=value_range(dataset))
        else:
            plots.scatter_2d(samples[:, :2], path=path)


def steps_for_epochs(epochs: float, num_data: int, batch_size: int, *, max_steps: int | None = None) -> int:
    """Training steps that pass ``epochs`` times over ``num_data`` points in batches of ``batch_size`` (the
    whole data when it is smaller), at most ``max_steps``.

    Example:
        >>> steps_for_epochs(100, 512, 256), steps_for_epochs(100, 100_000, 256, max_steps=3000)
        (200, 3000)
    """
    steps = max(1, math.ceil(epochs * num_data / max(1, min(batch_size, num_data))))
    return steps if max_steps is None else min(steps, int(max_steps))


def value_range(dataset) -> tuple[float, float]:
    return tuple(dataset.data_range) if dataset is not None and dataset.num_levels else (-1.0, 1.0)


def numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def bits_per_dim_stat(lp: Tensor, num_dims: int, dataset, extra_se: float, continuous: bool) -> dict[str, Any]:
    if continuous:  # a density over dequantized values: the change of variables of probgen.data.bits_per_dim
        from probgen.data import bits_per_dim

        bpd = bits_per_dim(lp.double(), num_dims, num_levels=dataset.num_levels, data_range=dataset.data_range)
    else:  # a discrete model of the levels themselves
        bpd = -lp.double() / (num_dims * math.log(2))
    stat = mean_stderr(bpd, unit="bits/dim")
    stat["stderr"] = math.sqrt(stat["stderr"] ** 2 + (extra_se / (num_dims * math.log(2))) ** 2)
    return stat


def require_binary(name: str, dataset) -> None:
    """Refuse data whose values are not all 0 or 1 (by their profile, whatever the data set's name)."""
    from probgen.data.profile import data_profile

    if data_profile(dataset).value_type != "binary":
        raise ValueError(f"family {name!r} models binary data; --data {dataset.name!r} is not binary "
                         "(use 'digits-binary', 'mnist-binary', or a file of 0/1 values)")


# ---------------------------------------------------------------------------------- the settings table


def _brief(part: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" if not isinstance(v, dict) else f"{k} {{...}}" for k, v in part.items())


def settings_table(*, markdown: bool = True) -> str:
    """The one table of defaults: each profile row (:data:`probgen.data.profile.PROFILE_ROWS`) against each
    family's model and training settings, read from the recipes (rows a family does not tune take its
    ``default`` row). ``markdown=False``: the short form ``probgen fit --help`` shows."""
    from probgen import registry
    from probgen.data.profile import PROFILE_ROWS

    recipes = [registry.recipe(name) for name in registry.names()]
    if not markdown:
        lines = ["data profiles (defaults are chosen from what the data is, never its name; "
                 "full table in docs/cli.md):"]
        for row, what in PROFILE_ROWS:
            tuned = [r.name for r in recipes if row in r.settings]
            lines.append(f"  {row:<10} {what:<50} tuned: {', '.join(tuned) or 'none (general defaults)'}")
        lines.append("  continuous data are standardized inside flow, cnf, fm, score-sde, ddpm (and tabular vae) models;"
                     " the flow whitens tabular vectors (full covariance)")
        lines.append("  'epochs E' rows train ceil(E N / batch) steps for N training points, at most max_steps")
        return "\n".join(lines)
    lines = ["| family | row | model | training |", "|---|---|---|---|"]
    for r in recipes:
        for row in ("default", *(name for name, _ in PROFILE_ROWS)):
            if row not in r.settings:
                continue
            s = r.settings[row]
            model, fit = _brief(s.get("model", {})) or "-", _brief(s.get("fit", {})) or "-"
            lines.append(f"| {r.name} | {row} | {model} | {fit} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- lookups (the registry's)


def names() -> list[str]:
    """The family names ``probgen fit`` accepts (:func:`probgen.registry.names`)."""
    from probgen import registry

    return registry.names()


def get(name: str) -> Recipe:
    """The recipe for a CLI family name (``probgen fit <family>``; :func:`probgen.registry.recipe`)."""
    from probgen import registry

    return registry.recipe(name)


def for_model(model) -> Recipe:
    """The recipe that reads back a loaded model (:func:`probgen.registry.recipe_for`)."""
    from probgen import registry

    return registry.recipe_for(model)


#: names that lived here before the recipes moved beside their families: name -> new home
_MOVED = {
    "FlowRecipe": "probgen.flows.recipe", "CNFRecipe": "probgen.flows.recipe", "MADERecipe": "probgen.flows.recipe",
    "TOY2D_FLOW": "probgen.flows.recipe", "CNF_EVAL_TOL": "probgen.flows.recipe",
    "VAERecipe": "probgen.vae.recipe", "EBMRecipe": "probgen.ebm.recipe", "RBMRecipe": "probgen.ebm.recipe",
    "ScoreSDERecipe": "probgen.diffusion.recipe", "DDPMRecipe": "probgen.diffusion.recipe",
    "GANRecipe": "probgen.gan.recipe", "WGANGPRecipe": "probgen.gan.recipe",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        warnings.warn(f"probgen.recipes.{name} moved to {_MOVED[name]}.{name}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    if name == "RECIPES":
        from probgen import registry

        warnings.warn("probgen.recipes.RECIPES is replaced by probgen.registry.FAMILIES", DeprecationWarning,
                      stacklevel=2)
        return {n: type(registry.recipe(n)) for n in registry.names()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
