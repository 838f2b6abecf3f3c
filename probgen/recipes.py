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

__all__ = ["Recipe", "RECIPES", "get", "for_model", "names"]


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
    #: tuned options per data kind ("toy2d", "image", "file"; "default" for the rest)
    defaults: dict[str, dict[str, Any]] = {}

    # --- building and training -------------------------------------------------------------------------
    def build(self, dataset, *, kind: str | None = None, objective: str | None = None):
        raise NotImplementedError

    def check_dataset(self, dataset) -> None:
        """Refuse data the family cannot model, before anything is trained (binary-only families)."""

    def fit_options(self, dataset, *, steps=None, batch_size=None, lr=None) -> dict[str, Any]:
        opts = dict(self.defaults.get(dataset.kind) or self.defaults.get("default") or {})
        opts.setdefault("steps", 2000)
        opts.setdefault("batch_size", 256)
        opts.setdefault("lr", 1e-3)
        for key, value in (("steps", steps), ("batch_size", batch_size), ("lr", lr)):
            if value is not None:
                opts[key] = value
        transform = self.batch_transform(dataset)
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
        """Refuse a data set whose events do not fit the checkpoint's model."""
        want = tuple(getattr(model, "event_shape", ()) or ())
        have = tuple(dataset.event_shape)
        if self.flatten:
            have = (_numel(have),)
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
            stat = _stat(-lp)
            stat["stderr"] = math.sqrt(stat["stderr"] ** 2 + extra_se**2)
            report[f"test {name}"] = stat
            if dataset.num_levels:
                report[f"test {name} bits/dim"] = _bits_per_dim(lp, num_dims, dataset, extra_se, continuous)
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
            report["KL gap (NLL - entropy)"] = _stat(true_lp - lp)
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
            plots.image_grid(samples[:64], path=path, value_range=_value_range(dataset))
        elif samples.dim() == 2 and samples.shape[1] == 64:
            plots.image_grid(samples[:64].reshape(-1, 1, 8, 8), path=path, value_range=_value_range(dataset))
        else:
            plots.scatter_2d(samples[:, :2], path=path)


def _value_range(dataset) -> tuple[float, float]:
    return tuple(dataset.data_range) if dataset is not None and dataset.num_levels else (-1.0, 1.0)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _bits_per_dim(lp: Tensor, num_dims: int, dataset, extra_se: float, continuous: bool) -> dict[str, Any]:
    if continuous:  # a density over dequantized values: the change of variables of probgen.data.bits_per_dim
        from probgen.data import bits_per_dim

        bpd = bits_per_dim(lp.double(), num_dims, num_levels=dataset.num_levels, data_range=dataset.data_range)
    else:  # a discrete model of the levels themselves
        bpd = -lp.double() / (num_dims * math.log(2))
    stat = _stat(bpd, unit="bits/dim")
    stat["stderr"] = math.sqrt(stat["stderr"] ** 2 + (extra_se / (num_dims * math.log(2))) ** 2)
    return stat


def _require_binary(name: str, dataset) -> None:
    from probgen.data.files import is_binary_dataset

    if not is_binary_dataset(dataset):
        raise ValueError(f"family {name!r} models binary data; --data {dataset.name!r} is not binary "
                         "(values other than 0 and 1; use 'digits-binary' or a 0/1 file)")


# ------------------------------------------------------------------------------------------- families


#: the ODE solver tolerance (rtol = atol) at which the command line scores a CNF's likelihood
CNF_EVAL_TOL = 1e-5


#: the flow fitted to 2-D toy data by default: three autoregressive rational-quadratic spline layers (each
#: transforms both coordinates, where a coupling layer leaves one alone), the fastest to a small KL gap in
#: docs/flows.md and benchmarks/bench_flows.py
TOY2D_FLOW = {"num_layers": 3, "hidden_dims": (64, 64), "bound": 3.0}


class FlowRecipe(Recipe):
    """Discrete normalizing flows (``probgen.flows.Flow``): on 2-D toy data autoregressive splines
    (``Flow(2, "spline-ar", **TOY2D_FLOW)``), otherwise spline couplings (one pass each way)."""

    name = "flow"
    families = ("flow",)
    kinds = ("spline", "spline-ar", "realnvp", "maf", "iaf", "planar", "radial")
    flatten = True
    defaults = {
        "toy2d": {"steps": 4000, "batch_size": 512, "lr": 3e-3, "lr_schedule": "cosine"},
        "default": {"steps": 3000, "batch_size": 256, "lr": 1e-3, "lr_schedule": "cosine"},
    }

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.flows import Flow

        self._check_kind(kind, objective)
        dim = _numel(dataset.event_shape)
        if dataset.kind == "toy2d" and kind in (None, "spline-ar"):
            return Flow(dim, "spline-ar", **TOY2D_FLOW)
        if dim > 16 and (kind or "spline") in ("spline", "realnvp", "maf", "iaf", "spline-ar"):
            # the default conditioner width grows as 10 D; for images a fixed width keeps a CPU run practical
            return Flow(dim, kind or "spline", hidden_dims=(256, 256))
        return Flow(dim, kind or "spline")

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
        if model.kind == "cnf":
            return f"continuous normalizing flow ({model.num_layers} block{'s' * (model.num_layers > 1)})"
        return f"flow ({model.kind}, {model.num_layers} layers)"


class CNFRecipe(FlowRecipe):
    """A continuous normalizing flow (FFJORD): ``Flow(dim, "cnf")``, trained through the adjoint ODE."""

    name = "cnf"
    families = ()  # a CNF checkpoint is a "flow" checkpoint; FlowRecipe reads it back
    kinds = ()
    defaults = {
        "toy2d": {"steps": 1600, "batch_size": 512, "lr": 3e-3, "lr_schedule": "cosine"},
        "default": {"steps": 1000, "batch_size": 256, "lr": 1e-3, "lr_schedule": "cosine"},
    }

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.flows import Flow

        self._check_kind(kind, objective)
        # trained at solver tolerance 1e-3 with backprop through the solver (what docs/flows.md measured as
        # fastest to train), scored at CNF_EVAL_TOL
        return Flow(_numel(dataset.event_shape), "cnf", rtol=1e-3, atol=1e-3, adjoint=False)


class MADERecipe(Recipe):
    """MADE for binary data: exact ``log p(x) = Σ log p(x_i | x_<i)``."""

    name = "made"
    families = ("made",)
    continuous = False
    flatten = True
    defaults = {"default": {"steps": 3000, "batch_size": 128, "lr": 1e-3}}

    def check_dataset(self, dataset) -> None:
        _require_binary(self.name, dataset)

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.flows import MADE

        self._check_kind(kind, objective)
        self.check_dataset(dataset)
        return MADE(_numel(dataset.event_shape))

    def describe(self, model) -> str:
        return f"MADE ({model.dim} binary units)"


class VAERecipe(Recipe):
    """A VAE: Gaussian likelihood with a learnt scale for real data, Bernoulli for binary data."""

    name = "vae"
    families = ("vae",)
    bounds = ("elbo", "iwae")
    max_eval_points = 2000  # IWAE with K = 1000 costs 1000 decoder passes per point
    defaults = {
        "toy2d": {"steps": 4000, "batch_size": 256, "lr": 1e-3},
        "default": {"steps": 2000, "batch_size": 128, "lr": 1e-3},
    }
    num_particles = 1000

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.vae import VAE

        self._check_kind(kind, objective)
        if dataset.num_levels == 2:
            return VAE(latent_dim=8, likelihood="bernoulli", event_shape=tuple(dataset.event_shape))
        latent = 2 if dataset.kind == "toy2d" else 8
        return VAE(latent_dim=latent, likelihood="gaussian", obs_scale=0.3, learn_obs_scale=True,
                   event_shape=tuple(dataset.event_shape))

    def batch_transform(self, dataset):
        return None if dataset.num_levels == 2 else super().batch_transform(dataset)

    def is_continuous(self, model) -> bool:
        return model.likelihood != "bernoulli"

    def log_likelihoods(self, model, x, *, trace=None, bound=None):
        out = {}
        with torch.no_grad():
            if bound in (None, "elbo"):
                out["-ELBO"] = (torch.cat([model.elbo(c).detach() for c in x.split(512)]), 0.0)
            if bound in (None, "iwae"):
                k = self.num_particles
                out[f"NLL (IWAE, K={k})"] = (torch.cat([model.log_likelihood(c, num_particles=k).detach()
                                                        for c in x.split(256)]), 0.0)
        return out

    def extra_metrics(self, model, dataset) -> dict[str, dict]:
        """Reconstruction quality (MSE, PSNR, SSIM for images) and, with labels, how well k-means on the
        posterior means recovers the classes (homogeneity, completeness, V-measure)."""
        from probgen.metrics import clustering_scores, reconstruction_metrics

        device = next(model.parameters()).device
        x = dataset.test[: self.max_eval_points].to(device)
        out: dict[str, dict] = {}
        with torch.no_grad():
            recon = model.reconstruct(x)
            low, high = dataset.data_range if dataset.num_levels else (float(x.min()), float(x.max()))
            for name, value in reconstruction_metrics(x, recon, data_range=high - low).items():
                out[f"reconstruction {name}"] = {"value": float(value), "stderr": None, "unit": "", "kind": "latent"}
            if dataset.labels_test is not None:
                latents = model.encode(x)[0].reshape(len(x), -1).cpu()
                labels = dataset.labels_test[: len(x)]
                for name, value in clustering_scores(latents, labels).items():
                    if name == "num_clusters":
                        continue
                    out[f"latent {name}"] = {"value": float(value), "stderr": None, "unit": "", "kind": "latent"}
        return out

    def describe(self, model) -> str:
        return f"VAE ({model.likelihood} likelihood, {model.latent_dim}-d latent)"


class EBMRecipe(Recipe):
    """An energy-based model; its normalizer is estimated by AIS for the test log-likelihood."""

    name = "ebm"
    families = ("ebm",)
    objectives = ("dsm", "cd", "pcd", "ssm", "esm", "nce")
    sample_methods = ("langevin", "mala", "persistent")
    # (model options, training options) per objective, from docs/ebm.md's measurements
    tuned = {
        "dsm": ({"sigma": 0.1}, {"steps": 1500, "batch_size": 256, "lr": 1e-3}),
        "cd": ({"sample_steps": 40, "step_size": 0.05, "alpha": 0.1}, {"steps": 800, "batch_size": 128, "lr": 1e-3}),
        "pcd": ({"sample_steps": 40, "step_size": 0.05, "alpha": 0.1}, {"steps": 1000, "batch_size": 128, "lr": 1e-3}),
        "ssm": ({}, {"steps": 1500, "batch_size": 256, "lr": 1e-3}),
        "esm": ({}, {"steps": 1500, "batch_size": 256, "lr": 1e-3}),
        "nce": ({"noise_ratio": 4}, {"steps": 2000, "batch_size": 256, "lr": 1e-3}),
    }

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.ebm import EBM

        self._check_kind(kind, objective)
        self.objective = objective or "dsm"
        model_opts, self.defaults = self.tuned[self.objective][0], {"default": self.tuned[self.objective][1]}
        return EBM(event_shape=tuple(dataset.event_shape), objective=self.objective, init_noise="gaussian",
                   init_scale=2.5, **model_opts)

    def log_likelihoods(self, model, x, *, trace=None, bound=None):
        with torch.no_grad():
            energy = torch.cat([model.energy(c).detach() for c in x.split(1024)])
        log_z, se = model.log_partition(num_chains=500, num_steps=300, return_stderr=True)
        return {"NLL (AIS log Z)": (-energy / model.temperature - log_z.detach(), float(se))}

    def sample(self, model, num_samples: int, **opts) -> Tensor:
        opts.setdefault("steps", 500)
        if opts.get("method", "langevin") == "langevin":
            opts.setdefault("step_size", 0.01)
        return model.sample(num_samples, **opts).detach()

    def describe(self, model) -> str:
        return f"EBM ({model.objective if isinstance(model.objective, str) else 'custom'} objective)"


class RBMRecipe(Recipe):
    """A Bernoulli RBM for binary data (CD-1 by default; ``--objective pcd``)."""

    name = "rbm"
    families = ("rbm",)
    objectives = ("cd", "pcd")
    continuous = False
    defaults = {"default": {"steps": 1500, "batch_size": 64, "lr": 3e-3}}

    def check_dataset(self, dataset) -> None:
        _require_binary(self.name, dataset)

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.ebm import BernoulliRBM

        self._check_kind(kind, objective)
        self.check_dataset(dataset)
        return BernoulliRBM(_numel(dataset.event_shape), 64, objective=objective or "cd", k=1, num_chains=100,
                            event_shape=tuple(dataset.event_shape))

    def log_likelihoods(self, model, x, *, trace=None, bound=None):
        with torch.no_grad():
            free = torch.cat([model.free_energy(c).detach() for c in x.split(1024)])
        if min(model.n_visible, model.n_hidden) <= 20:
            return {"NLL": (-free - model.log_partition("exact").detach(), 0.0)}
        log_z, se = model.log_partition("ais", return_stderr=True, num_chains=200, num_steps=1000)
        return {"NLL (AIS log Z)": (-free - log_z.detach(), float(se))}

    def sample(self, model, num_samples: int, **opts) -> Tensor:
        return model.sample(num_samples, gibbs_steps=opts.get("steps", 1000)).detach()

    def describe(self, model) -> str:
        return f"Bernoulli RBM ({model.n_visible} visible, {model.n_hidden} hidden, {model.objective.upper()}-{model.k})"


class ScoreSDERecipe(Recipe):
    """A score model under the VP SDE, trained with the likelihood weighting (importance-sampled t) and EMA;
    exact log-likelihood through the probability-flow ODE."""

    name = "score-sde"
    families = ("score-sde",)
    sample_methods = ("sde", "pc", "ode", "annealed-langevin")
    traces = ("exact", "hutchinson")
    max_eval_points = 2000  # one adaptive ODE solve with the exact trace per batch: a fixed subset
    defaults = {
        "toy2d": {"steps": 8000, "batch_size": 512, "lr": 1e-3, "lr_schedule": "cosine"},
        "image": {"steps": 2000, "batch_size": 128, "lr": 2e-3, "lr_schedule": "cosine"},
        "default": {"steps": 4000, "batch_size": 256, "lr": 1e-3, "lr_schedule": "cosine"},
    }

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.diffusion import ScoreSDE

        self._check_kind(kind, objective)
        return ScoreSDE(tuple(dataset.event_shape), loss_weighting="likelihood", importance_sampling=True,
                        ema_decay=0.999)

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
    families = ("ddpm",)
    bounds = ("elbo", "ode")
    traces = ("exact", "hutchinson")
    sample_methods = ("ancestral", "ddim", "dpm-solver")
    defaults = {
        "toy2d": {"steps": 3000, "batch_size": 256, "lr": 1e-3, "grad_clip": 1.0},
        "image": {"steps": 3000, "batch_size": 64, "lr": 2e-3, "grad_clip": 1.0},
        "default": {"steps": 3000, "batch_size": 256, "lr": 1e-3, "grad_clip": 1.0},
    }
    #: test points scored by default: the ELBO costs num_steps network passes per point, the ODE one solve
    eval_points = {"toy2d": (1000, 1000), "image": (64, 32), "default": (1000, 1000)}

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.diffusion import DDPM

        self._check_kind(kind, objective)
        if dataset.kind == "image":
            # quantized data get the discretized decoder L_0, so the ELBO bounds the levels' probability
            return DDPM(tuple(dataset.event_shape), ema_decay=0.995, data_levels=dataset.num_levels,
                        data_range=tuple(dataset.data_range),
                        net_options={"base_channels": 16, "channel_mults": [1, 2], "embed_dim": 32})
        return DDPM(tuple(dataset.event_shape), ema_decay=0.999)

    def batch_transform(self, dataset):
        return None  # the ELBO's decoder models the levels themselves

    def evaluate(self, model, dataset, *, trace=None, bound=None, num_points=None) -> dict[str, dict]:
        self._check_eval_options(trace, bound)
        device = next(model.parameters()).device
        n_elbo, n_ode = self.eval_points.get(dataset.kind, self.eval_points["default"])
        if num_points is not None:
            n_elbo = n_ode = num_points
        num_dims = dataset.test[0].numel()
        report: dict[str, dict] = {}
        terms: dict[str, tuple[Tensor, Tensor]] = {}
        if bound in (None, "elbo"):
            x = dataset.test[:n_elbo].to(device)
            elbo = torch.cat([model.elbo(c).detach() for c in x.split(256)])
            terms["-ELBO"] = (elbo, x)
            report[f"test -ELBO ({len(x)} points)"] = _stat(-elbo)
            if dataset.num_levels:
                report["test -ELBO bits/dim"] = _bits_per_dim(elbo, num_dims, dataset, 0.0, continuous=False)
        if bound in (None, "ode"):
            x = dataset.test[:n_ode].to(device)
            if dataset.num_levels and model.data_levels:
                # bins centred on the levels, as the ELBO's decoder uses (see DDPM.bits_per_dim)
                g = torch.Generator(device=device).manual_seed(0)
                # Hutchinson and rtol = atol = 1e-4, as docs/ddpm.md measured: the exact trace costs 64 VJPs
                bpd = model.bits_per_dim(x, method="ode", generator=g, trace=trace or "hutchinson", rtol=1e-4,
                                         atol=1e-4, batch_size=256)
                report[f"test NLL (ODE, {len(x)} points) bits/dim"] = _stat(bpd.detach(), unit="bits/dim")
            else:
                lp = model.log_prob(x, trace=trace or "exact", batch_size=500).detach()
                terms["NLL (ODE)"] = (lp, x)
                report[f"test NLL (ODE, {len(x)} points)"] = _stat(-lp)
        if dataset.log_prob is not None and terms:
            lp, x = terms.get("NLL (ODE)", next(iter(terms.values())))
            if dataset.entropy is not None:
                h, h_se = dataset.entropy
                report["true entropy"] = {"value": h, "stderr": h_se, "unit": "nats"}
            report["KL gap (NLL - entropy)"] = _stat(dataset.log_prob(x.double()).to(lp) - lp)
        return report

    def sample(self, model, num_samples: int, **opts) -> Tensor:
        if opts.get("method") in (None, "ancestral") and opts.get("steps") is not None:
            raise ValueError("--steps applies to --method ddim or dpm-solver; ancestral sampling takes every step")
        with torch.no_grad():
            return model.sample(num_samples, **opts)

    def describe(self, model) -> str:
        schedule = getattr(model, "_schedule_arg", None) or "custom"
        return f"DDPM ({model.num_steps} steps, {schedule} schedule, {model.variance} variance)"


class GANRecipe(Recipe):
    """The original GAN (non-saturating generator loss); no likelihood: evaluated by its samples."""

    name = "gan"
    families = ("gan",)
    has_likelihood = False
    defaults = {"default": {"steps": 1000, "batch_size": 256, "lr": 1e-3}}

    def _model_class(self):
        from probgen.gan import GAN

        return GAN

    def build(self, dataset, *, kind=None, objective=None):
        self._check_kind(kind, objective)
        return self._model_class()(tuple(dataset.event_shape))

    def evaluate(self, model, dataset, *, trace=None, bound=None, num_points=None) -> dict[str, dict]:
        """Sample metrics against the test split (MMD², sliced Wasserstein, precision/recall, KDE)."""
        if trace is not None or bound is not None:
            raise ValueError(f"family {self.name!r} has no likelihood: --trace and --bound do not apply")
        from probgen.evaluation import sample_metrics

        n = min(len(dataset.test), num_points or 2000)
        samples = self.sample(model, n).detach().cpu().reshape(n, *dataset.event_shape)
        image = tuple(dataset.event_shape) == (1, 8, 8)
        return sample_metrics(samples, dataset.test[:n], reference=dataset.train[:n], image_features=image)

    def describe(self, model) -> str:
        return f"{type(model).__name__} ({model.latent_dim}-d latent)"


class WGANGPRecipe(GANRecipe):
    """WGAN with gradient penalty (Gulrajani et al. 2017)."""

    name = "wgan-gp"
    families = ("wgan-gp",)

    def _model_class(self):
        from probgen.gan import WGANGP

        return WGANGP


RECIPES: dict[str, type[Recipe]] = {
    "flow": FlowRecipe,
    "cnf": CNFRecipe,
    "made": MADERecipe,
    "vae": VAERecipe,
    "ebm": EBMRecipe,
    "rbm": RBMRecipe,
    "score-sde": ScoreSDERecipe,
    "ddpm": DDPMRecipe,
    "gan": GANRecipe,
    "wgan-gp": WGANGPRecipe,
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
