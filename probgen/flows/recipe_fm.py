"""CLI recipe of flow matching (``probgen fit fm``): defaults measured in docs/flows.md."""

from __future__ import annotations

from probgen.recipes import Recipe

__all__ = ["FlowMatchingRecipe"]


class FlowMatchingRecipe(Recipe):
    """Flow matching with the linear (rectified) path and independent coupling; exact NLL through the ODE.

    ``--kind`` picks the path (``linear`` | ``cosine``). Settings from docs/flows.md.
    """

    name = "fm"
    kinds = ("linear", "cosine")
    sample_methods = ("dopri5", "rk4", "heun", "dpm++2m", "euler")
    traces = ("exact", "hutchinson")
    max_eval_points = 2000
    flatten = True
    standardize = True
    settings = {
        "default": {"fit": {"steps": 4000, "batch_size": 256, "lr": 1e-3, "lr_schedule": "cosine"}},
        "2d": {"fit": {"steps": 8000, "batch_size": 256, "lr": 2e-3, "lr_schedule": "cosine"}},
        # tabular: 300 passes over the data (600 steps at N = 512), constant lr; on tabsynth (N = 512, D = 16,
        # benchmarks/bench_profiles.py) the held-out flow-matching loss is lowest at 600-900 steps and rises after
        # (measured with minibatch-OT coupling, the default then; docs/cli.md)
        "tabular": {"model": {"coupling": "ot"},
                    "fit": {"epochs": 300, "max_steps": 4000, "batch_size": 256, "lr": 1e-3,
                            "lr_schedule": "constant"}},
    }

    def build(self, dataset, *, kind=None, objective=None):
        from probgen.flows import FlowMatching

        num_dims = 1
        for size in dataset.event_shape:
            num_dims *= int(size)
        # independent coupling: minibatch OT (scipy's exact assignment, ~10 ms per batch of 256) tripled the
        # cost of a step without lowering the KL gap reached in 8000 steps (docs/flows.md); a row may ask for "ot"
        options = {"coupling": "independent", **self.settings_for(dataset)["model"]}
        return self.standardized(FlowMatching((num_dims,), path=kind or "linear", **options), dataset)

    def log_likelihoods(self, model, x, *, trace=None, bound=None):
        lp = model.log_prob(x, trace=trace or "exact", batch_size=500)
        return {"NLL": (lp.detach(), 0.0)}

    def sample_options(self, *, method=None, steps=None):
        opts = super().sample_options(method=method, steps=steps)
        if opts.get("method") in ("rk4", "euler", "heun", "dpm++2m") and "steps" not in opts:
            opts["steps"] = 40
        return opts

    def describe(self, model) -> str:
        return f"flow matching ({model.path_name} path, {model.coupling} coupling)"

    def reflows(self, model) -> bool:
        """``probgen fit --reflow`` applies to this model."""
        return True

    def reflow(self, model, dataset, *, rounds: int, options, seed: int = 0, device=None, progress: bool = True):
        """``rounds`` rounds of :func:`probgen.flows.matching.reflow` on ``model`` (inside the standardizing
        wrapper, where the flow lives), each drawing ``min(len(train), steps × batch)`` pairs and training as
        long as the first fit (``options``: the fit options). Returns the model with the reflowed flow."""
        from probgen.flows.matching import reflow

        wrapped = hasattr(model, "inner_family")
        flow = model.model if wrapped else model
        num_pairs = min(len(dataset.train), options["steps"] * options["batch_size"])
        for r in range(rounds):
            flow = reflow(flow, num_pairs=num_pairs, steps=options["steps"], batch_size=options["batch_size"],
                          lr=options["lr"], lr_schedule=options.get("lr_schedule"), seed=seed + 1 + r,
                          progress=progress, device=device)
        if wrapped:
            model.model = flow
            return model
        return flow
