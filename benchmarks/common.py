"""Shared helpers of the benchmark scripts: timing, memory, machine/version info and Markdown tables.

Every ``bench_*.py`` module exposes ``run(*, quick: bool, device: str) -> Section``; ``run_all.py``
collects the sections into ``RESULTS.md``. Nothing here is imported by the library.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

__all__ = [
    "script_main",
    "Section",
    "Table",
    "time_call",
    "Stopwatch",
    "PeakRSS",
    "optional_import",
    "machine_info",
    "version_info",
    "other_load",
    "sync",
    "fmt",
    "seed_all",
    "threads",
    "today",
    "warm_up",
]


def sync(device: str | torch.device) -> None:
    """Wait for queued kernels on ``device`` (a no-op on CPU) so that wall times are honest."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], *, repeat: int = 5, warmup: int = 1, device: str = "cpu",
              min_time: float = 0.0, stat: str = "min") -> float:
    """Wall time in seconds of ``fn()`` over ``repeat`` runs after ``warmup`` untimed ones.

    ``stat="min"`` (default) reports the fastest run: on a shared machine other processes can only
    add time, so the minimum is the most reproducible estimate of the cost itself; ``"median"`` is
    also available. With ``min_time > 0`` each timed run calls ``fn`` in a loop until ``min_time``
    seconds have passed and reports the mean per call (for calls of a few microseconds).
    """
    if stat not in ("min", "median"):
        raise ValueError(f"stat must be 'min' or 'median', got {stat!r}")
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            sync(device)
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                break
        times.append(elapsed / n)
    return min(times) if stat == "min" else statistics.median(times)


class Stopwatch:
    """``with Stopwatch(device) as sw: ...`` then ``sw.seconds``."""

    def __init__(self, device: str = "cpu") -> None:
        self.device, self.seconds = device, float("nan")

    def __enter__(self) -> Stopwatch:
        sync(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._t0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak increase of the process's resident set size during a block, sampled every ``interval`` s.

    On CPU this is what a user pays: torch's CPU allocator returns large blocks to the OS on free, so
    the RSS follows the live tensors. (tracemalloc would miss them: it only sees Python's allocator.)
    On CUDA it reports ``torch.cuda.max_memory_allocated`` instead.
    """

    def __init__(self, device: str = "cpu", interval: float = 0.001) -> None:
        self.device, self.interval = torch.device(device), interval
        self.peak_bytes = 0

    def __enter__(self) -> PeakRSS:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base = _rss_bytes()
        self._peak = self._base
        self._stop = threading.Event()

        def poll() -> None:
            while not self._stop.is_set():
                self._peak = max(self._peak, _rss_bytes())
                time.sleep(self.interval)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
            return
        self._peak = max(self._peak, _rss_bytes())
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self._peak - self._base, 0)

    @property
    def mib(self) -> float:
        return self.peak_bytes / 2**20


def optional_import(name: str) -> Any | None:
    """Import a peer library or return ``None`` (the caller prints a note and skips that peer)."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - any failure to import means "peer not available"
        return None


def warm_up() -> None:
    """Pay torch's one-time lazy imports before anything is timed.

    The first ``torch.optim.Adam(...)`` of a process imports ``torch._dynamo`` (4–6 s on a loaded
    2-core machine); without this the first contender timed would carry it.
    """
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-3)
    p.sum().backward()
    opt.step()
    torch.func.vmap(lambda v: v * 2)(torch.zeros(2, 1))


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)


def version_info() -> dict[str, str]:
    """Versions of probgen, its stack and the peers (``"not installed"`` where absent)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("probgen", "torch", "pyro-ppl", "torchdiffeq", "torchsde", "arviz", "scipy", "zuko",
                "diffusers", "numpyro", "jax"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def machine_info(device: str = "cpu") -> dict[str, str]:
    """CPU model, core count, torch threads, and the GPU name when ``device`` is CUDA."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "os": f"{platform.system()} {platform.release()}",
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def other_load() -> str:
    """The 1-minute load average and the busiest other processes (the machine may be shared)."""
    load = os.getloadavg()[0]
    me = os.getpid()
    busy = []
    with contextlib.suppress(Exception):
        out = subprocess.run(["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=5).stdout.splitlines()[1:]
        for line in out:
            pid, cpu, comm = line.split(None, 2)
            if int(pid) != me and float(cpu) >= 20.0:
                busy.append(f"{comm} {cpu}%")
    return f"load average {load:.2f}" + (f"; other busy processes: {', '.join(busy[:6])}" if busy else "")


def fmt(value: Any, digits: int = 3) -> str:
    """Format a table cell: floats with ``digits`` significant digits, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value == 0.0:
            return "0"
        if abs(value) >= 10 ** digits or abs(value) < 10 ** -(digits - 1):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


@dataclasses.dataclass
class Table:
    """A titled table: ``columns`` and ``rows`` (lists of cells, formatted with :func:`fmt`)."""

    title: str
    columns: Sequence[str]
    rows: list[Sequence[Any]] = dataclasses.field(default_factory=list)

    def add(self, *cells: Any) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"table {self.title!r} has {len(self.columns)} columns, got {len(cells)} cells")
        self.rows.append(cells)

    def markdown(self) -> str:
        head = "| " + " | ".join(self.columns) + " |"
        rule = "|" + "|".join("---" for _ in self.columns) + "|"
        body = ["| " + " | ".join(fmt(c) for c in row) + " |" for row in self.rows]
        return "\n".join([f"**{self.title}**", "", head, rule, *body])

    def text(self) -> str:
        cells = [list(self.columns)] + [[fmt(c) for c in row] for row in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
        return "\n".join([self.title, *lines])


@dataclasses.dataclass
class Section:
    """One benchmark's output: a heading, a short description, tables, goal lines and notes."""

    name: str
    description: str = ""
    tables: list[Table] = dataclasses.field(default_factory=list)
    goals: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def table(self, title: str, columns: Sequence[str]) -> Table:
        t = Table(title, columns)
        self.tables.append(t)
        return t

    def goal(self, text: str, met: bool | None) -> None:
        mark = "not measured" if met is None else ("met" if met else "MISSED")
        self.goals.append(f"{text} — **{mark}**")

    def markdown(self) -> str:
        parts = [f"## {self.name}", ""]
        if self.description:
            parts += [self.description, ""]
        for t in self.tables:
            parts += [t.markdown(), ""]
        if self.goals:
            parts += ["Goals:", ""] + [f"- {g}" for g in self.goals] + [""]
        if self.notes:
            parts += ["Notes:", ""] + [f"- {n}" for n in self.notes] + [""]
        parts.append(f"_Section wall time: {self.seconds:.0f} s._")
        return "\n".join(parts) + "\n"

    def text(self) -> str:
        parts = [f"== {self.name} =="]
        parts += [t.text() + "\n" for t in self.tables]
        parts += [f"goal: {g}" for g in self.goals]
        parts += [f"note: {n}" for n in self.notes]
        return "\n".join(parts)


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def script_main(run: Callable[..., Any], doc: str | None, **extra: Any) -> None:
    """The command line every benchmark script shares: ``--quick`` and ``--device``, one torch thread unless
    ``OMP_NUM_THREADS`` says otherwise, and the section's table printed."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(run(quick=args.quick, device=args.device, **extra).text())
