"""Posterior sampling cost: DPS, ΠGDM, DDRM and SMC against an unconditional sample of the same NFE.

One DDPM prior (``N = 1000``, linear schedule) with an untrained network of realistic cost, conditioned on
half its coordinates (``MaskOperator``, ``σ_y = 0.1``) through ``pg.infer.posterior_sample``:

* ``mlp``: ``D = 64``, DDPM's built-in MLP (3 × 256), 256 draws;
* ``unet``: ``1 × 8 × 8`` images (the digits' shape), the image recipe's U-Net (16 base channels,
  multipliers 1, 2), 64 draws, the left half of each image observed.

The baseline is the unconditional ancestral sampler on the same σ-space denoiser and the same noise
levels (``probgen.samplers.sample_denoiser(model.denoiser(), method="euler-ancestral")``: DDPM's
ancestral step, which is the step every posterior method takes), so a ratio is the price of
conditioning alone. Each method and the baseline run ``repeat`` times, interleaved (one round runs every
contender once, so a burst of load hits them alike); the table reports medians and each method's ratio
of medians. ``ΠGDM (no VJP)`` is ``vjp=False`` (Jacobian ``I/(1 + σ²)``, no backward pass); SMC uses as
many particles as draws.

Usage::

    python benchmarks/bench_posterior.py [--quick] [--device cuda]
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pyro  # noqa: E402
import torch  # noqa: E402

import probgen as pg  # noqa: E402
from probgen.samplers import sample_denoiser  # noqa: E402

try:
    from benchmarks.common import Section, script_main, sync, warm_up  # noqa: E402
except ImportError:
    from common import Section, script_main, sync, warm_up  # type: ignore[no-redef]  # noqa: E402

__all__ = ["run", "contenders", "TARGETS"]

#: the issue's targets: ratio to an unconditional sample of the same NFE
TARGETS = {"dps": 2.5, "pigdm (no VJP)": 1.3, "ddrm": 1.3}


def _setup(kind: str, device: str) -> tuple[pg.diffusion.DDPM, pg.infer.LinearGaussian, torch.Tensor, int]:
    torch.manual_seed(0)
    if kind == "mlp":
        model, num = pg.diffusion.DDPM((64,), num_steps=1000), 256
        mask = torch.zeros(64, dtype=torch.bool)
        mask[::2] = True
    else:
        model, num = pg.diffusion.DDPM((1, 8, 8), num_steps=1000, net_options={
            "base_channels": 16, "channel_mults": [1, 2], "embed_dim": 32}), 64
        mask = torch.zeros(1, 8, 8, dtype=torch.bool)
        mask[..., :4] = True
    model = model.to(device).eval()
    lik = pg.infer.LinearGaussian(pg.infer.MaskOperator(mask.to(device)), 0.1)
    y = torch.zeros(int(mask.sum()), device=device)
    return model, lik, y, num


def contenders(model, lik, y: torch.Tensor, num: int, steps: int, device: str) -> dict:
    """``name -> fn()`` drawing ``num`` samples with ``steps`` network calls each (per particle for SMC)."""
    def program(obs):
        x = pyro.sample("x", model.as_distribution())
        pyro.sample("y", lik(x), obs=obs)

    def posterior(method: str, **opts):
        gen = torch.Generator(device=device).manual_seed(0)
        return lambda: pg.infer.posterior_sample(program, y, site="x", method=method, num_samples=num, steps=steps,
                                                 generator=gen, **opts)

    def unconditional():
        gen = torch.Generator(device=device).manual_seed(0)
        with torch.no_grad():
            return sample_denoiser(model.denoiser(), (num, *model.event_shape), method="euler-ancestral",
                                   steps=steps, generator=gen, device=device)

    return {"unconditional": unconditional, "dps": posterior("dps"), "pigdm": posterior("pigdm"),
            "pigdm (no VJP)": posterior("pigdm", vjp=False), "ddrm": posterior("ddrm"), "smc": posterior("smc")}


def _medians(fns: dict, repeat: int, device: str) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(repeat):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


def run(*, quick: bool = False, device: str = "cpu") -> Section:
    warm_up()
    steps, repeat = (50, 3) if quick else (100, 5)
    sec = Section(
        "Posterior sampling: cost of conditioning vs an unconditional sample of the same NFE",
        "Cost of conditioning a diffusion prior (`pg.infer.posterior_sample`) against an unconditional "
        f"ancestral sample with the same NFE ({steps} network calls), half the coordinates observed; medians "
        f"of {repeat} interleaved repeats (`benchmarks/bench_posterior.py`).")
    start = time.perf_counter()
    for kind in ("mlp", "unet"):
        model, lik, y, num = _setup(kind, device)
        med = _medians(contenders(model, lik, y, num, steps, device), repeat, device)
        base = med["unconditional"]
        title = ("DDPM built-in MLP (3 x 256), D = 64" if kind == "mlp" else "DDPM U-Net (16 ch, 1, 2), 1 x 8 x 8")
        table = sec.table(f"{title}, {num} draws, {steps} NFE", ("method", "median s", "ratio", "target"))
        for name, seconds in med.items():
            target = TARGETS.get(name)
            table.add(name, seconds, seconds / base, f"≤ {target}" if target else "")
            if target:
                sec.goal(f"{kind}: {name} ≤ {target}× an unconditional sample (measured {seconds / base:.2f}×)",
                         seconds / base <= target)
    sec.notes.append("DPS, ΠGDM (with VJP) and SMC pay one backward pass through the network per step (a VJP "
                     "costs about one to two forward passes); ΠGDM without VJP and DDRM pay none: their extra "
                     "work is a few element-wise operations in the operator's spectral space.")
    sec.seconds = time.perf_counter() - start
    return sec


if __name__ == "__main__":
    script_main(run, __doc__)
