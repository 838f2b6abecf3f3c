"""Exact likelihood through the probability-flow ODE: ``probgen.diffusion.ode_log_prob`` vs score_sde_pytorch.

The peer is the algorithm of ``likelihood.py`` in Song et al.'s ``score_sde_pytorch`` (the reference
implementation of arXiv:2011.13456), re-created here because that repository is not a package:
the state ``(x, log p)`` is flattened to one float64 numpy vector and integrated by
``scipy.integrate.solve_ivp(method="RK45")``; each right-hand side converts to torch, evaluates the
drift ``f - ½ g² s`` with one network call and the Hutchinson divergence with a *second* network call
under ``torch.enable_grad`` (``autograd.grad`` of ``sum(v · ε)``), and converts back to numpy.

Both sides get the same score network, the same data, the same SDE, ``eps``, ``rtol = atol`` and the
same Hutchinson probes (drawn with :func:`probgen.ops.sample_probes` from one seed), so the
two log-likelihoods agree up to the solvers' tolerances. probgen integrates with ``dopri5`` (same
Dormand–Prince 5(4) pair as RK45) without leaving torch: ``probgen.ops.dopri``, which takes torchdiffeq's
dopri5 steps without its per-stage bookkeeping (before it, that bookkeeping cost 15–40 % over the floor).

Also reported:

* the *floor*: probgen's NFE × the time of one right-hand side (drift + divergence) evaluated alone;
  goal: ``ode_log_prob`` within 1.15× of it (the solver's own overhead is ≤ 15 %);
* the exact trace (``D`` VJPs batched with ``torch.func.vmap``) against one Hutchinson evaluation
  at ``D = 64``; goal ≤ 4×.

Usage::

    python benchmarks/bench_likelihood.py [--quick] [--device cuda]
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import probgen as pg  # noqa: E402
from probgen.diffusion import ode_log_prob  # noqa: E402
from probgen.ops.trace import divergence, sample_probes  # noqa: E402

try:
    from benchmarks.common import script_main, warm_up, Section, Stopwatch, optional_import, time_call  # noqa: E402
except ImportError:
    from common import script_main, warm_up, Section, Stopwatch, optional_import, time_call  # type: ignore[no-redef]  # noqa: E402

__all__ = ["run", "score_sde_reference_log_prob", "make_problem"]


def score_sde_reference_log_prob(score_fn, sde, x: torch.Tensor, probes: torch.Tensor, *, eps: float,
                                 rtol: float, atol: float) -> tuple[torch.Tensor, int]:
    """score_sde_pytorch's ``likelihood.py`` algorithm (scipy RK45 on flattened numpy state).

    Returns ``(log p(x), nfe)``; ``probes``: ``(B, *event)`` Hutchinson probe fixed over the solve.
    """
    from scipy import integrate

    shape, device, dtype = x.shape, x.device, x.dtype
    batch = shape[0]

    def drift_fn(sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return sde.ode_drift(score_fn, sample, t)

    def div_fn(sample: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            sample = sample.detach().requires_grad_(True)
            fn_eps = torch.sum(drift_fn(sample, t) * noise)
            grad = torch.autograd.grad(fn_eps, sample)[0]
        return torch.sum(grad * noise, dim=tuple(range(1, len(shape))))

    def ode_func(t: float, state: np.ndarray) -> np.ndarray:
        sample = torch.from_numpy(state[:-batch].reshape(shape)).to(device=device, dtype=dtype)
        vec_t = torch.full((batch,), t, device=device, dtype=dtype)
        with torch.no_grad():
            drift = drift_fn(sample, vec_t).detach().cpu().numpy().reshape(-1)
        logp_grad = div_fn(sample, vec_t, probes).detach().cpu().numpy().reshape(-1)
        return np.concatenate([drift, logp_grad], axis=0)

    init = np.concatenate([x.detach().cpu().numpy().reshape(-1), np.zeros((batch,))], axis=0)
    solution = integrate.solve_ivp(ode_func, (eps, sde.T), init, rtol=rtol, atol=atol, method="RK45")
    zp = solution.y[:, -1]
    z = torch.from_numpy(zp[:-batch].reshape(shape)).to(device=device, dtype=dtype)
    delta_logp = torch.from_numpy(zp[-batch:]).to(device=device, dtype=dtype)
    return sde.prior_log_prob(z) + delta_logp, int(solution.nfev)


def _train(model: torch.nn.Module, data: torch.Tensor, steps: int, device: str) -> None:
    if steps > 0:
        pg.fit(model, data.to(device), steps=steps, batch_size=256, lr=2e-3, seed=0, progress=False)


def make_problem(dim: int, *, quick: bool, device: str) -> tuple[str, pg.diffusion.ScoreSDE, torch.Tensor]:
    """A score model and a test batch for ``D = dim`` (2: 8gaussians, 64: digits, 784: random 28×28)."""
    torch.manual_seed(0)
    if dim == 2:
        ds = pg.data.load_dataset("8gaussians")
        model = pg.diffusion.ScoreSDE((2,)).to(device)
        _train(model, ds.train, 150 if quick else 600, device)
        x = ds.test[: (256 if quick else 512)]
        label = f"8gaussians (D=2), MLP 3×128 trained {150 if quick else 600} steps"
    elif dim == 64:
        ds = pg.data.load_dataset("digits")
        train = ds.train.flatten(1)
        model = pg.diffusion.ScoreSDE((64,), net_options={"hidden": [256, 256]}).to(device)
        _train(model, train, 100 if quick else 400, device)
        x = ds.test.flatten(1)[: (64 if quick else 128)]
        label = f"digits 8×8 (D=64), MLP 2×256 trained {100 if quick else 400} steps"
    elif dim == 784:
        model = pg.diffusion.ScoreSDE((784,), net_options={"hidden": [256, 256]}).to(device)
        x = torch.rand(8 if quick else 16, 784, generator=torch.Generator().manual_seed(1)) * 2 - 1
        # an untrained network with a zero last layer is a pure Gaussian score: perturb it so that
        # the ODE is not trivially easy for the solvers
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        label = "random 28×28 in [-1, 1] (D=784), MLP 2×256, untrained (perturbed init)"
    else:
        raise ValueError(f"dim must be 2, 64 or 784, got {dim}")
    model.eval()
    return label, model, x.to(device)


def _profile(fn) -> tuple[str, float]:
    """cProfile of ``fn()``: the top functions by own time, and the share of the time spent inside the
    right-hand side (``probgen.ops.divergence``: network, VJP and probe product)."""
    prof = cProfile.Profile()
    prof.enable()
    start = time.perf_counter()
    fn()
    total = time.perf_counter() - start
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    rhs = sum(v[3] for (path, _, name), v in stats.stats.items()  # type: ignore[attr-defined]
              if name == "divergence" and path.endswith(os.path.join("ops", "divergence.py")))
    stats.sort_stats("tottime").print_stats(12)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    first = next(i for i, ln in enumerate(lines) if "ncalls" in ln)
    return "\n".join(lines[first: first + 13]), rhs / total


def run(*, quick: bool = False, device: str = "cpu") -> Section:
    warm_up()
    t_section = time.perf_counter()
    sec = Section(
        "Exact likelihood: ode_log_prob vs score_sde_pytorch's likelihood.py",
        "Probability-flow ODE of a VP SDE, float32, eps = 1e-5, rtol = atol = 1e-5 for both, same network, "
        "data and Hutchinson probes. *Floor* = probgen's NFE × one right-hand-side evaluation "
        "(drift + divergence) timed alone. All times are the fastest of repeated runs (other processes only add time).",
    )
    scipy = optional_import("scipy.integrate")
    if scipy is None:
        sec.notes.append("scipy is not installed: the score_sde_pytorch reference was skipped "
                         "(`pip install -c constraints.txt -e '.[bench]'`).")
    tol = 1e-5
    eps = 1e-5
    dims = (2, 64, 784)
    main = sec.table(
        "Wall time, NFE and agreement (Hutchinson, 1 Rademacher probe, same probes both sides)",
        ["data", "B", "score_sde s", "score_sde NFE", "probgen s", "probgen NFE", "speed-up",
         "floor s", "probgen / floor", "max |Δ log p| (nats)", "mean log p"],
    )
    exact = sec.table(
        "probgen exact trace (D batched VJPs) vs Hutchinson",
        ["data", "B", "exact s", "exact NFE", "1 exact RHS ms", "1 Hutchinson RHS ms", "exact / Hutch",
         "Hutch RHS on B·D rows ms", "exact / (B·D-row Hutch)", "mean log p exact", "mean log p Hutch"],
    )
    floors, trace_ratio, profiles = {}, None, []
    for dim in dims:
        label, model, x = make_problem(dim, quick=quick, device=device)
        sde, score = model.sde, model.score
        b = x.shape[0]
        probes = sample_probes(x, num_probes=1, generator=torch.Generator(device=device).manual_seed(3))

        def probgen_call(trace: str = "hutchinson", x=x, score=score, sde=sde):
            with torch.no_grad():
                return ode_log_prob(score, sde, x, eps=eps, rtol=tol, atol=tol, trace=trace,
                                    generator=torch.Generator(device=device).manual_seed(3), return_nfe=True)

        lp, nfe = probgen_call()  # also the warm-up (lazy initialisation, first-call dispatch)
        # fastest of two solves, interleaved with the floor's timing below (robust to other load)
        pg_s = time_call(probgen_call, repeat=2, warmup=0, device=device)

        def rhs(trace: str, x=x, sde=sde, score=score, probes=probes):
            t = torch.full((x.shape[0],), 0.5, device=x.device, dtype=x.dtype)
            with torch.no_grad():
                return divergence(lambda y: sde.ode_drift(score, y, t), x, method=trace,
                                  probes=probes if trace == "hutchinson" else None)

        rhs_h = time_call(lambda: rhs("hutchinson"), repeat=9, warmup=2, device=device, min_time=0.05)
        floor = nfe * rhs_h
        floors[dim] = pg_s / floor
        if scipy is not None:
            with Stopwatch(device) as sw:
                ref, ref_nfe = score_sde_reference_log_prob(score, sde, x, probes[0], eps=eps, rtol=tol, atol=tol)
            ref_s = sw.seconds
            delta = float((ref - lp).abs().max())
            main.add(label, b, ref_s, ref_nfe, pg_s, nfe, ref_s / pg_s, floor, pg_s / floor, delta,
                     float(lp.mean()))
        else:
            main.add(label, b, None, None, pg_s, nfe, None, floor, pg_s / floor, None, float(lp.mean()))
        if pg_s / floor > 1.15:
            text, rhs_share = _profile(probgen_call)
            # the RHS inside the solve, against the same RHS timed alone in a hot loop (the floor's unit)
            in_solve = rhs_share * pg_s / nfe
            profiles.append((label, text, rhs_share, in_solve / rhs_h))
        if dim <= 64:  # D = 784 exact: 784 VJPs per RHS × ~400 NFE is minutes on a CPU
            rhs_e = time_call(lambda: rhs("exact"), repeat=5, warmup=1, device=device, min_time=0.05)
            # the arithmetic floor of D VJPs: one Hutchinson RHS on the batch repeated D times
            xb = x.repeat(dim, 1)
            pb = probes.repeat(1, dim, 1)
            rhs_bd = time_call(lambda: rhs("hutchinson", x=xb, probes=pb), repeat=3, warmup=1, device=device,
                               min_time=0.05)
            with Stopwatch(device) as sw:
                lpe, nfe_e = probgen_call("exact")
            exact.add(label, b, sw.seconds, nfe_e, 1e3 * rhs_e, 1e3 * rhs_h, rhs_e / rhs_h, 1e3 * rhs_bd,
                      rhs_e / rhs_bd, float(lpe.mean()), float(lp.mean()))
            if dim == 64:
                trace_ratio = rhs_e / rhs_h
    worst = max(floors.values())
    sec.goal("probgen within 1.15× of the floor (NFE × one RHS): "
             + ", ".join(f"D={d}: {r:.2f}×" for d, r in floors.items()), worst <= 1.15)
    if trace_ratio is not None:
        sec.goal(f"exact trace at D=64 ≤ 4× one Hutchinson evaluation: {trace_ratio:.2f}×", trace_ratio <= 4.0)
    for label, text, share, slower in profiles:
        sec.notes.append(
            f"{label}: over the floor. Under cProfile, {100 * share:.0f} % of the solve is spent in the right-hand "
            f"side, whose calls there cost about {slower:.2f}× the same call timed alone in a hot loop on one input "
            "(the floor's unit; the profiler's own overhead is part of that factor); the remaining "
            f"{100 - 100 * share:.0f} % is the solver's own step bookkeeping (stage combinations, error ratio, "
            "step-size control; probgen.ops.dopri). Functions by own time:\n\n"
            "```\n" + text + "\n```")
    sec.notes.append("The peer evaluates the network twice per right-hand side (once for the drift, once "
                     "inside its divergence), and crosses numpy↔torch each time; probgen evaluates it once "
                     "(the drift is the VJP's primal output) and stays in torch.")
    sec.notes.append("Δ log p between the two solvers is the difference of two adaptive solutions at "
                     "rtol = atol = 1e-5 in float32 (identical probes), not a statistical error.")
    if trace_ratio is not None and trace_ratio > 4.0:
        sec.notes.append(
            "Exact trace at D = 64: the D vector–Jacobian products are one vmapped backward pass over B·D rows, "
            "so on a CPU (compute-bound, no idle lanes to fill) it costs about as much as a Hutchinson "
            "evaluation on B·D rows — the column 'exact / (B·D-row Hutch)' is ≈ 1 or below, i.e. batching "
            "already removed all per-call overhead. ≤ 4× one Hutchinson evaluation would need fewer FLOPs "
            "than D VJPs, which no exact method for a general network has; on a GPU, where a B-row "
            "evaluation leaves the device mostly idle, the ratio is the one to watch (rerun with --device cuda).")
    sec.seconds = time.perf_counter() - t_section
    return sec


def main() -> None:
    script_main(run, __doc__)


if __name__ == "__main__":
    main()
