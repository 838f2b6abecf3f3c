"""Few-step sampling: probgen's DDIM and DPM-Solver vs diffusers' schedulers driving the same ε-network.

One ``probgen.diffusion.DDPM`` (linear schedule, ``N = 1000``) is trained on 8gaussians; its
``eps_net`` is then driven by

* ``probgen.samplers.sample_ddim`` (η = 0) and ``probgen.samplers.sample_dpm_solver`` (multistep
  DPM-Solver++, order 3, logSNR grid: probgen's defaults);
* ``diffusers.DDIMScheduler`` (η = 0, ``timestep_spacing="linspace"``, ``set_alpha_to_one=True``) and
  ``diffusers.DPMSolverMultistepScheduler`` (DPM-Solver++, ``solver_order=3``, diffusers' default
  grid), each in the loop of a diffusers pipeline (``set_timesteps`` then ``step`` per timestep),

at 10, 20 and 50 network evaluations. Reported: MMD² (Gaussian kernel, median heuristic) and
sliced Wasserstein-2 to held-out data, time per sample, and the per-step overhead over the bare
network call, ``(wall − S · t_net) / S``.

Second table (EDM, Karras et al. 2022): one ``probgen.diffusion.EDM`` trained on 8gaussians; its network
``F_θ`` is driven by probgen's σ-space samplers (``probgen.samplers.karras``: EDM's Heun, Algorithm 1, and
DPM-Solver++(2M), on the ρ = 7 grid) and by diffusers' ``EDMEulerScheduler`` and
``EDMDPMSolverMultistepScheduler`` (DPM-Solver++(2M), same σ range, σ_d and ρ; the scheduler applies EDM's
preconditioning around the same ``F_θ``) at about 10, 20 and 35 network evaluations (Heun takes
``2N − 1`` evaluations for ``N`` levels: 9, 19, 35). Reported: MMD² to held-out data and the NFE counted.

Usage::

    python benchmarks/bench_sampling.py [--quick] [--device cuda]
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import probgen as pg  # noqa: E402
from probgen.samplers.ddim import sample_ddim  # noqa: E402
from probgen.samplers.dpm_solver import sample_dpm_solver  # noqa: E402

try:
    from benchmarks.common import script_main, warm_up, Section, optional_import, time_call  # noqa: E402
except ImportError:
    from common import script_main, warm_up, Section, optional_import, time_call  # type: ignore[no-redef]  # noqa: E402

__all__ = ["run", "train_ddpm", "train_edm", "diffusers_sample", "diffusers_edm_sample", "edm_table"]


def train_ddpm(*, steps: int, device: str) -> tuple[pg.diffusion.DDPM, pg.data.DataSet]:
    """A 2-D DDPM on 8gaussians trained for ``steps`` steps of ``probgen.fit``."""
    torch.manual_seed(0)
    ds = pg.data.load_dataset("8gaussians")
    model = pg.diffusion.DDPM((2,), num_steps=1000).to(device)
    pg.fit(model, ds.train.to(device), steps=steps, batch_size=512, lr=2e-3, seed=0, progress=False,
           lr_schedule="cosine")
    model.eval()
    return model, ds


def train_edm(*, steps: int, device: str) -> tuple[pg.diffusion.EDM, pg.data.DataSet]:
    """A 2-D EDM on 8gaussians (``σ_d`` = the data's standard deviation) trained for ``steps`` steps."""
    torch.manual_seed(0)
    ds = pg.data.load_dataset("8gaussians")
    model = pg.diffusion.EDM((2,), sigma_data=float(ds.train.std())).to(device)
    pg.fit(model, ds.train.to(device), steps=steps, batch_size=512, lr=2e-3, seed=0, progress=False,
           lr_schedule="cosine")
    model.eval()
    return model, ds


def diffusers_edm_sample(scheduler, net, shape: tuple[int, ...], steps: int, *, generator: torch.Generator,
                         device: str) -> tuple[torch.Tensor, int]:
    """A diffusers EDM scheduler's sampling loop around the raw network ``F_θ(c_in x, c_noise)``: the scheduler's
    ``timesteps`` are ``c_noise``, ``scale_model_input`` is ``c_in x`` and ``step`` applies ``c_skip``/``c_out``.
    Returns the samples and the number of network calls."""
    scheduler.set_timesteps(steps, device=device)
    x = torch.randn(shape, generator=generator, device=device) * scheduler.init_noise_sigma
    nfe = 0
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        out = net(x_in, t.to(device=device, dtype=x.dtype).expand(shape[0]))
        nfe += 1
        x = scheduler.step(out, t, x).prev_sample
    return x, nfe


def edm_table(sec, *, quick: bool, device: str, n: int) -> None:
    """EDM: probgen Heun and DPM-Solver++(2M) vs diffusers' EDM schedulers at ~10/20/35 NFE on one network."""
    from probgen.samplers.karras import sample_denoiser

    train_steps = 800 if quick else 2000
    model, ds = train_edm(steps=train_steps, device=device)
    held_out = ds.test[:n].to(device)
    other = ds.test[n: 2 * n].to(device) if ds.test.shape[0] >= 2 * n else ds.train[:n].to(device)
    floor = float(pg.metrics.mmd(other, held_out))
    net = model._pick_net(None)

    def probgen_sampler(method: str, levels):
        def draw(nfe_target: int, g: torch.Generator):
            denoiser = model.denoiser()
            x = sample_denoiser(denoiser, (n, 2), method=method, steps=levels(nfe_target), generator=g,
                                device=device)
            return x, denoiser.nfe
        return draw

    samplers = {
        "probgen Heun (EDM Alg. 1)": probgen_sampler("heun", lambda k: (k + 1) // 2),
        "probgen DPM-Solver++(2M)": probgen_sampler("dpm++2m", lambda k: k),
    }
    diffusers = optional_import("diffusers")
    if diffusers is None:
        sec.notes.append("diffusers is not installed: its EDM schedulers were skipped.")
    else:
        common = dict(sigma_min=model.sigma_min, sigma_max=model.sigma_max, sigma_data=model.sigma_data, rho=7.0,
                      prediction_type="epsilon", final_sigmas_type="zero")
        euler = diffusers.EDMEulerScheduler(**common)
        dpm = diffusers.EDMDPMSolverMultistepScheduler(**common, solver_order=2, algorithm_type="dpmsolver++")
        samplers["diffusers EDMEulerScheduler"] = lambda k, g: diffusers_edm_sample(euler, net, (n, 2), k,
                                                                                   generator=g, device=device)
        samplers["diffusers EDMDPMSolverMultistep(2)"] = lambda k, g: diffusers_edm_sample(dpm, net, (n, 2), k,
                                                                                          generator=g, device=device)
    table = sec.table(
        f"EDM (σ_d = {model.sigma_data:.2f}, σ ∈ [{model.sigma_min:g}, {model.sigma_max:g}], ρ = 7) trained "
        f"{train_steps} steps on 8gaussians, one network for every sampler; {n} samples vs {n} held-out points "
        f"(two held-out sets: MMD² = {floor:.2e})",
        ["sampler", "NFE budget", "NFE", "MMD²", "ms"],
    )
    best: dict[int, dict[str, float]] = {}
    for budget in (10, 20, 35):
        for name, fn in samplers.items():
            with torch.no_grad():
                start = time.perf_counter()
                x, nfe = fn(budget, torch.Generator(device="cpu").manual_seed(11))
                ms = 1e3 * (time.perf_counter() - start)
            mmd = float(pg.metrics.mmd(x, held_out))
            best.setdefault(budget, {})[name] = mmd
            table.add(name, budget, nfe, mmd, ms)
    if diffusers is not None:
        for ours, theirs in (("probgen DPM-Solver++(2M)", "diffusers EDMDPMSolverMultistep(2)"),):
            # same quality: MMD² excess over the peer within 3 × |MMD² of two held-out sets| (unbiased MMD² can be < 0)
            gap = max(best[b][ours] - best[b][theirs] for b in best)
            sec.goal(f"EDM: {ours} as good as {theirs} at 10/20/35 NFE (largest MMD² excess {gap:+.2e}; "
                     f"tolerance 3 × |held-out floor| = {3 * abs(floor):.2e})", gap <= 3 * abs(floor))


def diffusers_sample(scheduler, eps_net, shape: tuple[int, ...], steps: int, *, generator: torch.Generator,
                     device: str) -> torch.Tensor:
    """The sampling loop of a diffusers pipeline with ``eps_net(x, t_index)``."""
    scheduler.set_timesteps(steps, device=device)
    x = torch.randn(shape, generator=generator, device=device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        eps = eps_net(x, t.to(device).expand(shape[0]))
        x = scheduler.step(eps, t, x).prev_sample
    return x


def run(*, quick: bool = False, device: str = "cpu") -> Section:
    warm_up()
    t_section = time.perf_counter()
    train_steps = 800 if quick else 2000
    n = 1000 if quick else 2000
    sec = Section(
        "Few-step sampling: probgen DDIM / DPM-Solver vs diffusers, same ε-network",
        f"DDPM (linear β, N = 1000, MLP) trained {train_steps} steps on 8gaussians; {n} samples per run vs "
        f"{n} held-out points. MMD² unbiased (Gaussian kernel, median bandwidth); SW₂ with 128 projections. "
        "The per-step overhead is measured directly by driving each sampler with a free network (ε̂ = 0); "
        "subtracting steps × a separately timed network call from the sampling time is too noisy on a shared machine.",
    )
    model, ds = train_ddpm(steps=train_steps, device=device)
    held_out = ds.test[:n].to(device)
    other = ds.test[n: 2 * n].to(device) if ds.test.shape[0] >= 2 * n else ds.train[:n].to(device)
    net = model._pick_net(None)
    gen_q = torch.Generator(device="cpu").manual_seed(5)
    floor_mmd = float(pg.metrics.mmd(other, held_out))
    floor_sw = float(pg.metrics.sliced_wasserstein(other, held_out, generator=gen_q))
    with torch.no_grad():
        x_probe = torch.randn(n, 2, device=device)
        t_net = time_call(lambda: net(x_probe, torch.full((n,), 500, device=device, dtype=torch.long)),
                          repeat=7, warmup=2, device=device, min_time=0.05)

    diffusers = optional_import("diffusers")
    samplers = {
        "probgen DDIM": lambda s, g: sample_ddim(net, model.schedule, (n, 2), steps=s, generator=g,
                                                 device=device).samples,
        "probgen DPM-Solver++(3M)": lambda s, g: sample_dpm_solver(net, model.schedule, (n, 2), steps=s, order=3,
                                                                   generator=g, device=device).samples,
    }
    if diffusers is None:
        sec.notes.append("diffusers is not installed: its schedulers were skipped "
                         "(`pip install -c constraints.txt -e '.[bench]'`).")
    else:
        common = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
        ddim = diffusers.DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True,
                                       timestep_spacing="linspace")
        dpm = diffusers.DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=3)
        samplers["diffusers DDIMScheduler"] = lambda s, g: diffusers_sample(ddim, net, (n, 2), s, generator=g,
                                                                            device=device)
        samplers["diffusers DPMSolverMultistep(3)"] = lambda s, g: diffusers_sample(dpm, net, (n, 2), s,
                                                                                    generator=g, device=device)
    table = sec.table(
        f"Quality and speed (reference: two held-out sets give MMD² = {floor_mmd:.2e}, SW₂ = {floor_sw:.3f}; "
        f"one network call on {n} points = {1e3 * t_net:.2f} ms)",
        ["sampler", "steps", "MMD²", "SW₂", "µs / sample", "sampling / (steps × net call)"],
    )
    quality: dict[tuple[str, int], float] = {}
    for steps in (10, 20, 50):
        for name, fn in samplers.items():
            with torch.no_grad():
                x = fn(steps, torch.Generator(device="cpu").manual_seed(11))
                wall = time_call(lambda fn=fn, steps=steps: fn(steps, torch.Generator(device="cpu").manual_seed(11)),
                                 repeat=3 if quick else 5, warmup=0, device=device)
            mmd = float(pg.metrics.mmd(x, held_out))
            sw = float(pg.metrics.sliced_wasserstein(x, held_out, generator=torch.Generator().manual_seed(5)))
            quality[(name, steps)] = sw
            table.add(name, steps, mmd, sw, 1e6 * wall / n, wall / (steps * t_net))
    # Overhead measured directly: the same loops driving a free network (ε̂ = 0), many repeats.
    free = lambda x, t: torch.zeros_like(x)  # noqa: E731
    free_samplers = {
        "probgen DDIM": lambda s: sample_ddim(free, model.schedule, (n, 2), steps=s, device=device),
        "probgen DPM-Solver++(3M)": lambda s: sample_dpm_solver(free, model.schedule, (n, 2), steps=s, order=3,
                                                                device=device),
    }
    if diffusers is not None:
        free_samplers["diffusers DDIMScheduler"] = lambda s: diffusers_sample(
            ddim, free, (n, 2), s, generator=torch.Generator().manual_seed(0), device=device)
        free_samplers["diffusers DPMSolverMultistep(3)"] = lambda s: diffusers_sample(
            dpm, free, (n, 2), s, generator=torch.Generator().manual_seed(0), device=device)
    free_table = sec.table(
        f"Per-step overhead with a free network (ε̂ = 0, {n} points; fastest of 7 runs, 20 and 50 steps)",
        ["sampler", "ms / step (20 steps)", "ms / step (50 steps)", "vs one network call"],
    )
    overhead: dict[str, list[float]] = {}
    for name, fn in free_samplers.items():
        per = [time_call(lambda fn=fn, s=s: fn(s), repeat=7, warmup=1, device=device) / s for s in (20, 50)]
        overhead[name] = [max(per)]
        free_table.add(name, 1e3 * per[0], 1e3 * per[1], max(per) / t_net)
    if diffusers is not None:
        for ours, theirs in (("probgen DDIM", "diffusers DDIMScheduler"),
                             ("probgen DPM-Solver++(3M)", "diffusers DPMSolverMultistep(3)")):
            o, t = max(overhead[ours]), max(overhead[theirs])
            sec.goal(f"{ours}: per-step overhead ≤ {theirs}'s (free network, worst of 20/50 steps: "
                     f"{1e3 * o:.3f} vs {1e3 * t:.3f} ms)",
                     o <= t)
            # "same quality": SW₂ within 0.05 (the SW₂ of two held-out sets of this size is the noise level)
            gap = max(quality[(ours, s)] - quality[(theirs, s)] for s in (10, 20, 50))
            sec.goal(f"{ours}: same quality as {theirs} (largest SW₂ excess {gap:+.3f}; tolerance "
                     f"0.05; two held-out sets differ by {floor_sw:.3f})", gap <= 0.05)
    edm_table(sec, quick=quick, device=device, n=n)
    sec.notes.append("The grids differ where the libraries' defaults differ: probgen's DPM-Solver uses a "
                     "logSNR-uniform continuous-time grid ending at t = 1/N; diffusers' uses linspace over "
                     "the discrete indices and a final denoising step to σ = 0.")
    sec.seconds = time.perf_counter() - t_section
    return sec


def main() -> None:
    script_main(run, __doc__)


if __name__ == "__main__":
    main()
