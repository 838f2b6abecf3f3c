"""Command-line recipe (build, tuned defaults, scoring, sampling) for score SDEs and DDPM.

Read through :mod:`probgen.registry`; the shared behaviour is :class:`probgen.recipes.Recipe`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probgen.diffusion.base import clamp_range
from probgen.recipes import Recipe, bits_per_dim_stat, mean_stderr

__all__ = ["ScoreSDERecipe", "DDPMRecipe", "LARGE_IMAGE"]

#: images of more than 16x16 pixels (MNIST 28x28, CIFAR-10 32x32) on the CPU budget of the command line:
#: one U-Net training step at 28x28, batch 64, takes ~0.8 s on one CPU thread (docs/images.md), so the grayscale
#: and colour rows' steps (measured on 8x8 digits) would run for most of an hour; these take their place
#: (``fit``), and the test set is scored on a few points (``eval_points``: ELBO, ODE), the ODE with the
#: Hutchinson trace (the exact trace costs C*H*W network VJPs per function evaluation). ``--steps``,
#: ``--batch-size`` and ``probgen nll -n`` override them; on a GPU use the full budgets.
#: ``sample_steps``: DDPM draws these images by DDIM with that many steps unless ``--method`` says otherwise
#: (ancestral sampling takes all 1000 network passes per image; ``probgen fit`` draws 2000 images for its plot).
LARGE_IMAGE = {"fit": {"steps": 600, "batch_size": 32}, "eval_points": (16, 8), "sample_steps": 50}


def _large_image(event_shape) -> bool:
    shape = tuple(event_shape or ())
    return len(shape) == 3 and shape[1] * shape[2] > 256


class ScoreSDERecipe(Recipe):
    """A score model under the VP SDE, trained with the likelihood weighting (importance-sampled t) and EMA;
    exact log-likelihood through the probability-flow ODE."""

    name = "score-sde"
    sample_methods = ("sde", "pc", "ode", "annealed-langevin", "dpm++2m")
    #: sample metrics (FID/KID): DPM-Solver++(2M) on the Karras grid, 30 network passes per draw
    metric_sampler = {"method": "dpm++2m", "steps": 30}
    traces = ("exact", "hutchinson")
    max_eval_points = 2000  # one adaptive ODE solve with the exact trace per batch: a fixed subset
    standardize = True
    settings = {
        "default": {"fit": {"steps": 4000, "batch_size": 256, "lr": 1e-3, "lr_schedule": "cosine"}},
        "2d": {"fit": {"steps": 8000, "batch_size": 512, "lr": 1e-3, "lr_schedule": "cosine"}},
        # tabular: EMA 0.99 (0.999 still averages in the first steps after the few hundred a small set gets) and
        # 750 passes over the data (1,500 steps at N = 512); tuned on tabsynth (benchmarks/bench_profiles.py):
        # test KL 5.49 nats against 8.84 for a full-covariance Gaussian, the held-out loss flat from 900 steps on
        "tabular": {"model": {"ema_decay": 0.99},
                    "fit": {"epochs": 750, "max_steps": 4000, "batch_size": 256, "lr": 1e-3, "lr_schedule": "constant"}},
        "grayscale": {"fit": {"steps": 2000, "batch_size": 128, "lr": 2e-3, "lr_schedule": "cosine"}},
        "colour": {"fit": {"steps": 2000, "batch_size": 128, "lr": 2e-3, "lr_schedule": "cosine"}},
    }

    def settings_for(self, dataset):
        out = super().settings_for(dataset)
        if _large_image(dataset.event_shape):
            out["fit"].update(LARGE_IMAGE["fit"])
        return out

    def evaluate(self, model, dataset, *, trace=None, bound=None, num_points=None) -> dict[str, dict]:
        if _large_image(dataset.event_shape):
            num_points = LARGE_IMAGE["eval_points"][1] if num_points is None else num_points
            trace = trace or "hutchinson"
        return super().evaluate(model, dataset, trace=trace, bound=bound, num_points=num_points)

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.diffusion import ScoreSDE

        options = {"loss_weighting": "likelihood", "importance_sampling": True, "ema_decay": 0.999,
                   **self.settings_for(dataset)["model"]}
        if dataset.num_levels and getattr(dataset, "data_range", None) is not None:
            options["data_range"] = tuple(dataset.data_range)  # quantized data: sample() clamps x̂_0 there
        return self.standardized(ScoreSDE(tuple(dataset.event_shape), **options), dataset)

    def sampler_options(self, model, opts):
        opts = dict(opts)
        if opts.get("method") is None and _large_image(getattr(model, "event_shape", None)):
            # the 1000-step reverse SDE costs ~3 s of CPU per 28x28 draw: images default to the metric sampler
            opts.update(method=self.metric_sampler["method"], steps=opts.get("steps") or self.metric_sampler["steps"])
        if opts.get("clip_x0") is None and clamp_range(model) is not None:
            # quantized data (images) live in data_range: clamp x̂_0 there at every step, as DDPM's recipe does; an
            # under-trained network's ε-error, times σ/α (~150 at t = 1 of the VP SDE), otherwise throws the samples
            # far outside it (docs/images.md: 91 % of the pixels of an unclamped MNIST run)
            opts["clip_x0"] = clamp_range(model)
        return opts

    def log_likelihoods(self, model, x, *, trace=None, bound=None):
        lp = model.log_prob(x, trace=trace or "exact", batch_size=500)
        return {"NLL": (lp.detach(), 0.0)}

    def describe(self, model) -> str:
        return f"score SDE ({type(model.sde).__name__}, {model.parameterization} parameterization)"


class DDPMRecipe(Recipe):
    """DDPM (Ho et al. 2020) with EMA; ``probgen nll --bound elbo|ode`` scores it with the closed-form ELBO
    (a discretized decoder for digits, so a bound on the probability of the levels) or with the exact
    likelihood of the same network through the matched VP probability-flow ODE.

    Settings measured in docs/ddpm.md (``examples/ddpm_2d.py``, ``examples/ddpm_digits.py``)."""

    name = "ddpm"
    bounds = ("elbo", "ode")
    traces = ("exact", "hutchinson")
    sample_methods = ("ancestral", "ddim", "dpm-solver")
    #: sample metrics (FID/KID): multistep DPM-Solver++ (order 3, logSNR grid, x̂_0 clamped for images),
    #: 20 network passes per draw instead of ancestral sampling's 1000
    metric_sampler = {"method": "dpm-solver", "steps": 20}
    standardize = True
    #: images: a small U-Net, and the discretized decoder L_0 for quantized data (the ELBO then bounds the
    #: levels' probability); ``eval_points``: test points scored by default (ELBO, ODE): the ELBO costs
    #: num_steps network passes per point, the ODE one solve
    _image = {"model": {"ema_decay": 0.995, "image": True,
                        "net_options": {"base_channels": 16, "channel_mults": [1, 2], "embed_dim": 32}},
              "fit": {"steps": 3000, "batch_size": 64, "lr": 2e-3, "grad_clip": 1.0}, "eval_points": (64, 32)}
    settings = {
        "default": {"model": {"ema_decay": 0.999}, "eval_points": (1000, 1000),
                    "fit": {"steps": 3000, "batch_size": 256, "lr": 1e-3, "grad_clip": 1.0}},
        "2d": {"fit": {"steps": 3000, "batch_size": 256, "lr": 1e-3, "grad_clip": 1.0}},
        # tabular: as score-sde's row (EMA 0.99, 750 passes); on tabsynth test KL 4.50 nats vs 8.84 for a Gaussian
        "tabular": {"model": {"ema_decay": 0.99},
                    "fit": {"epochs": 750, "max_steps": 3000, "batch_size": 256, "lr": 1e-3, "grad_clip": 1.0}},
        "grayscale": _image,
        "colour": _image,
    }

    def settings_for(self, dataset):
        out = super().settings_for(dataset)
        if _large_image(dataset.event_shape):
            out["fit"].update(LARGE_IMAGE["fit"])
        return out

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.diffusion import DDPM

        options = dict(self.settings_for(dataset)["model"])
        if options.pop("image", False) and dataset.num_levels:
            # quantized data get the discretized decoder L_0, so the ELBO bounds the levels' probability
            options.update(data_levels=dataset.num_levels, data_range=tuple(dataset.data_range))
        return self.standardized(DDPM(tuple(dataset.event_shape), **options), dataset)

    def batch_transform(self, dataset):
        return None  # the ELBO's decoder models the levels themselves

    def _eval_points(self, dataset) -> tuple[int, int]:
        if _large_image(dataset.event_shape):
            return LARGE_IMAGE["eval_points"]
        row = self.settings.get(self.profile(dataset).row, {})
        return row.get("eval_points", self.settings["default"]["eval_points"])

    def default_eval_points(self, dataset) -> int:
        return max(self._eval_points(dataset))

    def evaluate(self, model, dataset, *, trace=None, bound=None, num_points=None) -> dict[str, dict]:
        self._check_eval_options(trace, bound)
        device = next(model.parameters()).device
        n_elbo, n_ode = self._eval_points(dataset)
        if num_points is not None:
            n_elbo = n_ode = num_points
        num_dims = dataset.test[0].numel()
        report: dict[str, dict] = {}
        terms: dict[str, tuple[Tensor, Tensor]] = {}
        if bound in (None, "elbo"):
            x = dataset.test[:n_elbo].to(device)
            elbo = torch.cat([model.elbo(c).detach() for c in x.split(256)])
            terms["-ELBO"] = (elbo, x)
            report[f"test -ELBO ({len(x)} points)"] = mean_stderr(-elbo)
            if dataset.num_levels:
                report["test -ELBO bits/dim"] = bits_per_dim_stat(elbo, num_dims, dataset, 0.0, continuous=False)
        if bound in (None, "ode"):
            x = dataset.test[:n_ode].to(device)
            if dataset.num_levels and model.data_levels:
                # bins centred on the levels, as the ELBO's decoder uses (see DDPM.bits_per_dim)
                g = torch.Generator(device=device).manual_seed(0)
                # Hutchinson and rtol = atol = 1e-4, as docs/ddpm.md measured: the exact trace costs 64 VJPs
                bpd = model.bits_per_dim(x, method="ode", generator=g, trace=trace or "hutchinson", rtol=1e-4,
                                         atol=1e-4, batch_size=256)
                report[f"test NLL (ODE, {len(x)} points) bits/dim"] = mean_stderr(bpd.detach(), unit="bits/dim")
            else:
                lp = model.log_prob(x, trace=trace or "exact", batch_size=500).detach()
                terms["NLL (ODE)"] = (lp, x)
                report[f"test NLL (ODE, {len(x)} points)"] = mean_stderr(-lp)
        if dataset.log_prob is not None and terms:
            lp, x = terms.get("NLL (ODE)", next(iter(terms.values())))
            if dataset.entropy is not None:
                h, h_se = dataset.entropy
                report["true entropy"] = {"value": h, "stderr": h_se, "unit": "nats"}
            report["KL gap (NLL - entropy)"] = mean_stderr(dataset.log_prob(x.double()).to(lp) - lp)
        return report

    def sampler_options(self, model, opts):
        opts = dict(opts)
        if opts.get("method") is None and _large_image(getattr(model, "event_shape", None)):
            opts.update(method="ddim", steps=opts.get("steps") or LARGE_IMAGE["sample_steps"])
        if opts.get("method") in (None, "ancestral") and opts.get("steps") is not None:
            raise ValueError("--steps applies to --method ddim or dpm-solver; ancestral sampling takes every step")
        if (clamp_range(model) is not None and opts.get("clip_x0") is None
                and opts.get("method") in (None, "ancestral", "ddim", "dpm-solver")):
            # quantized data (images) live in data_range: clamp x̂_0 there at every step, as Ho et al. (2020) do;
            # an under-trained ε-network's error, times σ at high noise, otherwise throws samples far outside it
            opts["clip_x0"] = clamp_range(model)
        return opts

    def describe(self, model) -> str:
        schedule = getattr(model, "_schedule_arg", None) or "custom"
        return f"DDPM ({model.num_steps} steps, {schedule} schedule, {model.variance} variance)"
