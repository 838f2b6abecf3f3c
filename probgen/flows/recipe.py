"""Command-line recipe (build, tuned defaults, scoring, sampling) for flows: discrete flows,
continuous normalizing flows (CNF) and MADE for binary data.

Read through :mod:`probgen.registry`; the shared behaviour is :class:`probgen.recipes.Recipe`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen.recipes import Recipe, numel, require_binary

__all__ = ["CNF_EVAL_TOL", "CNF_DEFAULT_OBJECTIVE", "TOY2D_FLOW", "TABULAR_FLOW", "TABULAR_FLOW_FIT",
           "IMAGE_FLOW", "FlowRecipe", "ImageFlowRecipe", "CNFRecipe", "MADERecipe"]


#: the ODE solver tolerance (rtol = atol) at which the command line scores a CNF's likelihood
CNF_EVAL_TOL = 1e-5


#: the flow fitted to 2-D toy data by default: three autoregressive rational-quadratic spline layers (each
#: transforms both coordinates, where a coupling layer leaves one alone), the fastest to a small KL gap in
#: docs/flows.md and benchmarks/bench_flows.py
TOY2D_FLOW = {"num_layers": 3, "hidden_dims": (64, 64), "bound": 3.0}


#: the flow fitted to low-dimensional tabular data (the ``tabular`` row, 3 <= D <= 64) by default: masked
#: autoregressive affine layers (MAF) with small conditioners. Spline couplings start from a diagonal Gaussian and
#: learn the correlations of a few hundred points too slowly to beat a full-covariance Gaussian before they
#: overfit; MAF learns them in ~100 steps. Tuned on ``tabsynth`` (benchmarks/bench_profiles.py, D = 16, N = 512):
#: test KL 6.81 nats against 8.84 for the full-covariance Gaussian, where the general default (spline couplings,
#: width 160, 3,000 steps) is at 13.5 after 300 steps and overfits further.
#: ``gaussian_weight``: the whitened flow is the defensive mixture 0.95 MAF + 0.05 full-covariance Gaussian
#: (:class:`probgen.ops.standardize.Whitened`), a tail guard: MAF's affine layers extrapolate without bound, so one
#: test point a few standard deviations out got an absurd log-density (tabsynth-o, 3 % outliers: KL 2960 ± 2948
#: nats without the guard, 11.06 ± 0.17 with it, Gaussian 14.34; breast cancer: +221 nats behind the Gaussian
#: without, 5.2 nats ahead with it); on tabsynth it also helps (KL 6.56 ± 0.09 against 6.86 ± 0.13); w = 0.01 was
#: no better on tabsynth-o (11.08) and worse on tabsynth (6.63) — docs/cli.md
TABULAR_FLOW = {"kind": "maf", "hidden_dims": (64, 64), "gaussian_weight": 0.05}
#: the flow's training on tabular data: early stopping on 10 % of the training rows held out (``probgen.fit``'s
#: ``validation``; scored once per pass, stopped after 30 scores without improvement, the best parameters kept), at
#: a constant lr, within 1,000 passes and at most 3,000 steps. MAF overfits a few hundred points within ~100 steps
#: past its best, and where the best lies depends on N: on tabsynth it stopped at step 109 (best 79), on wine's
#: 142-point folds at ~40 (best ~10). Chosen on the tuning sets against the fixed 75 passes at a cosine lr that the
#: row had before: tabsynth KL 6.84 ± 0.11 against 6.56 ± 0.09, tabsynth-o 9.68 ± 0.19 against 11.06 ± 0.17
TABULAR_FLOW_FIT = {"epochs": 1000, "max_steps": 3000, "batch_size": 256, "lr": 2e-3, "lr_schedule": "constant",
                    "validation": 0.1, "patience": 30}



#: the flow fitted to images (grayscale and colour rows) by default: a multi-scale coupling flow
#: (:class:`probgen.flows.ImageFlow`: checkerboard couplings, squeeze, channel couplings, factor-out), the CPU
#: settings measured in docs/flows.md ("images") and benchmarks/bench_images.py; ``num_scales`` is
#: lowered for images whose sides are not divisible by 4
IMAGE_FLOW = {"num_scales": 2, "num_couplings": 2, "hidden": 32, "num_blocks": 0}
#: test images scored by default for an image flow (one pass per image, but 10,000 MNIST images on 2 CPU
#: cores take minutes): a fixed subset, the first ones of the test split
IMAGE_EVAL_POINTS = 2000


def _image_flow(event_shape, data_range, options):
    """``ImageFlow`` for events ``(C, H, W)``; quantized data in ``[low, high]`` get the logit layer on that
    range (dequantized values ``low + (high - low)(k + u)/L`` lie inside it)."""
    from probgen.flows import ImageFlow

    options = dict(options)
    _, h, w = event_shape
    scales = options.pop("num_scales", 2)
    while scales > 0 and (h % 2**scales or w % 2**scales):
        scales -= 1
    logit = None if data_range is None else tuple(float(v) for v in data_range)
    return ImageFlow(tuple(event_shape), num_scales=scales, logit=logit, **options)


class FlowRecipe(Recipe):
    """Discrete normalizing flows (``probgen.flows.Flow``): on 2-D continuous data autoregressive splines
    (``Flow(2, "spline-ar", **TOY2D_FLOW)``), on tabular data (``3 <= D <= 64``) MAF with small conditioners
    on whitened data, mixed with the fitted Gaussian as a tail guard (:data:`TABULAR_FLOW`), trained for a number of
    passes over the data (:data:`TABULAR_FLOW_FIT`), on images (grayscale and colour rows) the multi-scale coupling
    flow ``ImageFlow(event_shape, **IMAGE_FLOW)`` on uniformly dequantized pixels, otherwise spline couplings
    (one pass each way); continuous vector data are standardized inside the model.

    ``--kind`` picks a vector flow: on images it builds that ``Flow`` over the flattened pixels
    (``C * H * W`` coordinates) instead of the ``ImageFlow``."""

    name = "flow"
    kinds = ("spline", "spline-ar", "realnvp", "maf", "iaf", "planar", "radial")
    flatten = True
    standardize = True
    whiten_rows = ("tabular",)
    settings = {
        "default": {"model": {"kind": "spline"},
                    "fit": {"steps": 3000, "batch_size": 256, "lr": 1e-3, "lr_schedule": "cosine"}},
        "2d": {"model": {"kind": "spline-ar", **TOY2D_FLOW},
               "fit": {"steps": 4000, "batch_size": 512, "lr": 3e-3, "lr_schedule": "cosine"}},
        "tabular": {"model": TABULAR_FLOW, "fit": TABULAR_FLOW_FIT},
        # images: ~13 steps/s at 28x28, batch 32, on one CPU thread (docs/images.md)
        "grayscale": {"model": {"kind": "image", **IMAGE_FLOW},
                      "fit": {"steps": 2000, "batch_size": 32, "lr": 1e-3, "grad_clip": 100.0}},
        "colour": {"model": {"kind": "image", **IMAGE_FLOW},
                   "fit": {"steps": 1000, "batch_size": 32, "lr": 1e-3, "grad_clip": 100.0}},
    }

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.flows import Flow

        dim = numel(dataset.event_shape)
        options = dict(self.settings_for(dataset)["model"])
        row_kind = options.pop("kind")
        gaussian_weight = options.pop("gaussian_weight", 0.0)  # the row's tail guard, whatever the --kind
        if kind not in (None, row_kind):  # an explicit --kind wins, with that kind's own defaults
            options = {}
        kind = kind or row_kind
        if kind == "image":
            self.flatten, self.max_eval_points = False, IMAGE_EVAL_POINTS  # this instance: images in, not vectors
            data_range = dataset.data_range if dataset.num_levels else None
            return _image_flow(tuple(dataset.event_shape), data_range, options)
        if dim > 16 and kind in ("spline", "realnvp", "maf", "iaf", "spline-ar") and "hidden_dims" not in options:
            # the default conditioner width grows as 10 D; for images a fixed width keeps a CPU run practical
            options["hidden_dims"] = (256, 256)
        return self.standardized(Flow(dim, kind, **options), dataset, gaussian_weight=gaussian_weight)

    def log_likelihoods(self, model, x: Tensor, *, trace=None, bound=None) -> dict[str, tuple[Tensor, float]]:
        """Exact ``log p(x)``; a CNF is scored at ``rtol = atol = CNF_EVAL_TOL`` whatever it was trained with."""
        blocks = getattr(model, "cnf_transforms", [])
        saved = [(b.rtol, b.atol) for b in blocks]
        try:
            for b in blocks:
                b.rtol, b.atol = min(b.rtol, CNF_EVAL_TOL), min(b.atol, CNF_EVAL_TOL)
            return super().log_likelihoods(model, x, trace=trace, bound=bound)
        finally:
            for b, (rtol, atol) in zip(blocks, saved):
                b.rtol, b.atol = rtol, atol

    def describe(self, model) -> str:
        if getattr(model, "family", None) == "image-flow":
            return (f"multi-scale image flow ({model.num_scales} scales, {model.num_couplings} couplings per "
                    f"mask, hidden {model.hidden})")
        if model.kind == "cnf":
            return f"continuous normalizing flow ({model.num_layers} block{'s' * (model.num_layers > 1)})"
        weight = getattr(model, "gaussian_weight", 0.0)
        return f"flow ({model.kind}, {model.num_layers} layers" + (
            f"; mixed with the fitted Gaussian, weight {weight:g})" if weight else ")")


class ImageFlowRecipe(FlowRecipe):
    """Reads back an ``ImageFlow`` (family ``"image-flow"``) that ``probgen fit flow`` built for images: events
    stay ``(C, H, W)``. Not a ``probgen fit`` family of its own (the registry row has ``fit=False``)."""

    name = "flow"
    flatten = False
    max_eval_points = IMAGE_EVAL_POINTS


#: how ``probgen fit cnf`` trains by default: flow matching, which reached a smaller KL gap than FFJORD's
#: maximum likelihood at equal training time (docs/flows.md, "`probgen fit cnf`: flow matching or FFJORD")
CNF_DEFAULT_OBJECTIVE = "fm"


def _trained_by_fm(model) -> bool:
    """Whether ``model`` (possibly inside the standardizing wrapper) is a flow-matching CNF."""
    return "fm" in (getattr(model, "family", None), getattr(model, "inner_family", None))


class CNFRecipe(FlowRecipe):
    """A continuous normalizing flow. ``--objective fm`` (the default, :data:`CNF_DEFAULT_OBJECTIVE`): trained
    simulation-free by flow matching (the ``fm`` family's recipe builds, trains and scores it); ``--objective
    ffjord``: ``Flow(dim, "cnf")`` trained by maximum likelihood through the ODE solve (FFJORD)."""

    name = "cnf"
    whiten_rows = ()  # tuned with per-dimension standardization
    kinds = ()
    objectives = ("fm", "ffjord")
    settings = {
        "default": {"fit": {"steps": 1000, "batch_size": 256, "lr": 1e-3, "lr_schedule": "cosine"}},
        "2d": {"fit": {"steps": 1600, "batch_size": 512, "lr": 3e-3, "lr_schedule": "cosine"}},
        # tabular: 300 passes over the data (600 steps at N = 512); on tabsynth (benchmarks/bench_profiles.py) the
        # held-out NLL still falls at 250 steps (17.3 nats against 22.0 for a full-covariance Gaussian)
        "tabular": {"fit": {"epochs": 300, "max_steps": 1000, "batch_size": 256, "lr": 1e-3, "lr_schedule": "cosine"}},
    }

    def _flow_matching(self):
        """The ``fm`` recipe, which builds, trains and scores a CNF trained by flow matching."""
        from probgen import registry

        return registry.recipe("fm")

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.flows import Flow

        self.objective = objective or CNF_DEFAULT_OBJECTIVE  # this instance: fit_options follows the choice
        if self.objective == "fm":
            return self._flow_matching().build(dataset)
        # trained at solver tolerance 1e-3 with backprop through the solver (what docs/flows.md measured as
        # fastest to train), scored at CNF_EVAL_TOL
        options = {"rtol": 1e-3, "atol": 1e-3, "adjoint": False, **self.settings_for(dataset)["model"]}
        return self.standardized(Flow(numel(dataset.event_shape), "cnf", **options), dataset)

    def fit_options(self, dataset, *, steps=None, batch_size=None, lr=None):
        if getattr(self, "objective", CNF_DEFAULT_OBJECTIVE) == "fm":
            return self._flow_matching().fit_options(dataset, steps=steps, batch_size=batch_size, lr=lr)
        return super().fit_options(dataset, steps=steps, batch_size=batch_size, lr=lr)

    def default_eval_points(self, dataset):
        if getattr(self, "objective", CNF_DEFAULT_OBJECTIVE) == "fm":
            return self._flow_matching().default_eval_points(dataset)
        return super().default_eval_points(dataset)

    def log_likelihoods(self, model, x, *, trace=None, bound=None):
        if _trained_by_fm(model):
            return self._flow_matching().log_likelihoods(model, x, trace=trace, bound=bound)
        return super().log_likelihoods(model, x, trace=trace, bound=bound)

    def sample(self, model, num_samples, **opts):
        if _trained_by_fm(model):
            return self._flow_matching().sample(model, num_samples, **opts)
        return super().sample(model, num_samples, **opts)

    def reflows(self, model) -> bool:
        return _trained_by_fm(model)

    def reflow(self, model, dataset, **opts):
        return self._flow_matching().reflow(model, dataset, **opts)

    def describe(self, model) -> str:
        if _trained_by_fm(model):
            return "continuous normalizing flow trained by " + self._flow_matching().describe(model)
        return super().describe(model)


class MADERecipe(Recipe):
    """MADE for binary data: exact ``log p(x) = Σ log p(x_i | x_<i)``."""

    name = "made"
    continuous = False
    flatten = True
    #: the ``binary`` row (vectors of 0/1) keeps the default, measured on the held-out Bernoulli mixture ``bernmix``
    #: of benchmarks/bench_profiles.py (D = 32, N = 5,000): KL 0.53 nats (docs/cli.md)
    _fit = {"fit": {"steps": 3000, "batch_size": 128, "lr": 1e-3}}
    settings = {"default": _fit, "binary": _fit}
    binary_data = True

    def check_dataset(self, dataset) -> None:
        require_binary(self.name, dataset)

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.flows import MADE

        return MADE(numel(dataset.event_shape))

    def describe(self, model) -> str:
        return f"MADE ({model.dim} binary units)"
