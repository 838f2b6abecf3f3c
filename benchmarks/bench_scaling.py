"""Scaling of likelihood, sampling and CNF training in batch size, dimension and number of steps.

* Likelihood (``ode_log_prob``, fixed-step RK4 so that NFE is exact and comparable): time and peak
  memory vs batch size (D = 2), vs dimension D ∈ {2, 16, 64, 784} (exact trace up to 64, Hutchinson
  everywhere), and vs NFE.
* Sampling (``sample_ddim`` with an MLP ε-network): time and memory vs batch size, D and steps.
* CNF training (``Flow(2, "cnf")``, fixed-step RK4): peak memory of one loss + backward vs the
  number of solver steps, with the adjoint (``odeint_adjoint``, memory flat in NFE) and with direct
  backpropagation through the solver (memory linear in NFE).

Memory on CPU is the peak increase of the process's resident set size, sampled every millisecond
from ``/proc/self/statm`` during the call (:class:`common.PeakRSS`); torch returns large CPU blocks
to the OS when freed, so this follows the live tensors (tracemalloc would not see them). On CUDA it
is ``torch.cuda.max_memory_allocated``. Small entries (< ~1 MiB) are at the resolution of the method.

Usage::

    python benchmarks/bench_scaling.py [--quick] [--device cuda]
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import probgen as pg  # noqa: E402
from probgen.diffusion import ode_log_prob  # noqa: E402
from probgen.samplers.ddim import sample_ddim  # noqa: E402

try:
    from benchmarks.common import script_main, PeakRSS, Section, Stopwatch, warm_up  # noqa: E402
except ImportError:
    from common import script_main, PeakRSS, Section, Stopwatch, warm_up  # type: ignore[no-redef]  # noqa: E402

__all__ = ["run", "measure"]


def measure(fn, device: str) -> tuple[float, float]:
    """(seconds, peak MiB) of one call of ``fn`` (after one untimed warm-up call)."""
    fn()
    with PeakRSS(device) as mem, Stopwatch(device) as sw:
        fn()
    return sw.seconds, mem.mib


def _score_model(dim: int, device: str) -> pg.diffusion.ScoreSDE:
    torch.manual_seed(0)
    hidden = [128, 128, 128] if dim <= 16 else [256, 256]
    return pg.diffusion.ScoreSDE((dim,), net_options={"hidden": hidden}).to(device).eval()


def _loglik(model, x, trace: str, steps: int):
    def call():
        with torch.no_grad():
            return ode_log_prob(model.score, model.sde, x, trace=trace, method="rk4", steps=steps)

    return call


def run(*, quick: bool = False, device: str = "cpu") -> Section:
    warm_up()
    t_section = time.perf_counter()
    sec = Section(
        "Scaling: time and memory vs batch size, dimension and NFE",
        "Fixed-step RK4 (4 evaluations per step) for the likelihood so that NFE is set exactly; untrained "
        "ScoreSDE MLPs (3×128 for D ≤ 16, 2×256 above); DDIM with the same MLP as ε-network. Memory: peak "
        "RSS increase during the call (CPU), sampled every 1 ms.",
    )
    batches = (64, 256, 1024) if quick else (64, 256, 1024, 4096)
    # likelihood vs batch size
    model2 = _score_model(2, device)
    t = sec.table("ode_log_prob vs batch size (D = 2, RK4 × 8 steps = 32 NFE)",
                  ["B", "exact s", "exact MiB", "Hutchinson s", "Hutchinson MiB", "µs / point (exact)"])
    for b in batches:
        x = torch.randn(b, 2, device=device)
        te, me = measure(_loglik(model2, x, "exact", 8), device)
        th, mh = measure(_loglik(model2, x, "hutchinson", 8), device)
        t.add(b, te, me, th, mh, 1e6 * te / b)
    # likelihood vs dimension
    t = sec.table("ode_log_prob vs dimension (B = 64, RK4 × 8 steps = 32 NFE)",
                  ["D", "exact s", "exact MiB", "Hutchinson s", "Hutchinson MiB", "exact / Hutchinson"])
    for dim in (2, 16, 64, 784):
        model = _score_model(dim, device)
        x = torch.randn(64, dim, device=device)
        th, mh = measure(_loglik(model, x, "hutchinson", 8), device)
        if dim <= 64:
            te, me = measure(_loglik(model, x, "exact", 8), device)
            t.add(dim, te, me, th, mh, te / th)
        else:
            t.add(dim, None, None, th, mh, None)
    # likelihood vs NFE
    t = sec.table("ode_log_prob vs NFE (D = 2, B = 1024, exact trace)", ["RK4 steps", "NFE", "s", "ms / NFE", "MiB"])
    x = torch.randn(1024, 2, device=device)
    for steps in ((4, 8, 16) if quick else (4, 8, 16, 32, 64)):
        ts, ms = measure(_loglik(model2, x, "exact", steps), device)
        t.add(steps, 4 * steps, ts, 1e3 * ts / (4 * steps), ms)
    # sampling
    ddpm = pg.diffusion.DDPM((2,), num_steps=1000).to(device).eval()
    net = ddpm.eps_net

    def ddim(n: int, d: int, steps: int, eps_net=net, sched=ddpm.schedule):
        def call():
            with torch.no_grad():
                return sample_ddim(eps_net, sched, (n, d), steps=steps, device=device).samples
        return call

    t = sec.table("DDIM sampling vs batch size and steps (D = 2)", ["B", "steps", "s", "µs / sample", "MiB"])
    for b in batches:
        for steps in (10, 50):
            ts, ms = measure(ddim(b, 2, steps), device)
            t.add(b, steps, ts, 1e6 * ts / b, ms)
    t = sec.table("DDIM sampling vs dimension (B = 256, 20 steps)", ["D", "s", "µs / sample", "MiB"])
    for dim in (2, 16, 64, 784):
        hidden = [128, 128, 128] if dim <= 16 else [256, 256]
        model = pg.diffusion.DDPM((dim,), num_steps=1000, net_options={"hidden": hidden}).to(device).eval()
        ts, ms = measure(ddim(256, dim, 20, eps_net=model.eps_net, sched=model.schedule), device)
        t.add(dim, ts, 1e6 * ts / 256, ms)
    # CNF training memory: adjoint vs direct
    t = sec.table("CNF training step (Flow(2, 'cnf'), B = 1024, RK4, exact trace): adjoint vs direct backprop",
                  ["RK4 steps", "NFE fwd", "adjoint s", "adjoint MiB", "direct s", "direct MiB"])
    data = pg.data.load_dataset("8gaussians").train[:1024].to(device)
    for steps in ((4, 16, 32) if quick else (4, 16, 32, 64)):
        row = [steps, 4 * steps]
        for adjoint in (True, False):
            torch.manual_seed(0)
            flow = pg.flows.Flow(2, "cnf", num_layers=1, adjoint=adjoint).to(device)
            # Flow(kind="cnf") does not take step_size (CNFTransform does): switch its layer to fixed-step RK4
            for layer in flow.modules():
                if isinstance(layer, pg.flows.CNFTransform):
                    layer.method, layer.step_size = "rk4", 1.0 / steps

            def step(flow=flow):
                flow.zero_grad(set_to_none=True)
                flow.loss(data).backward()

            ts, ms = measure(step, device)
            row += [ts, ms]
        t.add(*row)
    sec.notes.append("Entries below ~1 MiB mean the call was served from memory the process already held after "
                     "its warm-up call (no new pages touched): the likelihood and DDIM under no_grad keep only "
                     "O(B·D) live state, which is below this method's resolution at these sizes.")
    sec.notes.append("With the adjoint, peak memory should stay flat as the number of solver steps grows; direct "
                     "backpropagation stores every stage of every step, so its memory grows linearly in NFE.")
    sec.seconds = time.perf_counter() - t_section
    return sec


def main() -> None:
    script_main(run, __doc__)


if __name__ == "__main__":
    main()
