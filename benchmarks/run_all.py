"""Run every probgen benchmark and rewrite ``benchmarks/RESULTS.md``.

Usage::

    python benchmarks/run_all.py                 # the full suite (< 15 min on 2 CPU cores)
    python benchmarks/run_all.py --quick         # a fast pass (~5 min)
    python benchmarks/run_all.py --device cuda   # the GPU tables (same scripts, on the GPU)
    python benchmarks/run_all.py --only likelihood sampling   # a subset
    python benchmarks/run_all.py --output /tmp/RESULTS.md     # write elsewhere

Each section comes from one ``bench_*.py`` module's ``run(quick=..., device=...)``; every ratio in
the file comes from this one run on this one machine. A section that fails is reported in the file
with its error instead of stopping the suite. Peers that are not installed (zuko, diffusers, scipy,
numpyro) are skipped with a note: install them with ``pip install -c constraints.txt -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from common import Section, machine_info, other_load, today, version_info  # noqa: E402

__all__ = ["main", "BENCHMARKS"]

#: section key -> module name, in the order they run
BENCHMARKS = {
    "likelihood": "bench_likelihood",
    "mcmc": "bench_mcmc",
    "flows": "bench_flows",
    "sampling": "bench_sampling",
    "posterior": "bench_posterior",
    "training": "bench_training",
    "scaling": "bench_scaling",
}


def _header(args: argparse.Namespace, load_before: str, load_after: str, total: float) -> str:
    cmd = "python benchmarks/run_all.py" + (" --quick" if args.quick else "") + (
        f" --device {args.device}" if args.device != "cpu" else "")
    info = machine_info(args.device)
    versions = version_info()
    lines = [
        "# probgen benchmarks",
        "",
        "_This file is rewritten by `benchmarks/run_all.py`; do not edit by hand._",
        "",
        f"- Date: {today()}",
        f"- Command: `{cmd}` ({'quick pass' if args.quick else 'full suite'}), total {total / 60:.1f} min",
        "- Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- Load on the machine: before the run {load_before}; after {load_after}.",
        "",
        "Every ratio below comes from this one run on this one machine. Wall times are the fastest of "
        "repeated runs where a call is repeated (other processes only add time). When the load average "
        "above exceeds the core count, other processes were competing "
        "for the CPU during the run and absolute timings are inflated and noisy; ratios of contenders "
        "measured back to back are more robust than absolute numbers.",
        "",
    ]
    if torch.device(args.device).type != "cuda":
        lines += [
            "## GPU",
            "",
            "Not measured in this run (no GPU on this machine). To produce the GPU tables run "
            "`python benchmarks/run_all.py --device cuda --output benchmarks/RESULTS_cuda.md` on a CUDA "
            "machine: every benchmark takes the same `--device`.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast pass with smaller budgets")
    parser.add_argument("--device", default="cpu", help="torch device for every benchmark (cpu, cuda)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=None,
                        help="run only these sections")
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"), help="where to write the Markdown")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    load_before = other_load()
    t0 = time.perf_counter()
    sections: list[str] = []
    for key, module_name in BENCHMARKS.items():
        if args.only and key not in args.only:
            continue
        print(f"[run_all] {key} ...", flush=True)
        start = time.perf_counter()
        try:
            module = importlib.import_module(module_name)
            section: Section = module.run(quick=args.quick, device=args.device)
            print(section.text(), flush=True)
            sections.append(section.markdown())
        except Exception as error:  # noqa: BLE001 - one failing section must not hide the others
            tb = traceback.format_exc(limit=4)
            print(f"[run_all] {key} FAILED: {error!r}\n{tb}", flush=True)
            sections.append(f"## {key}\n\nFailed in this run: `{type(error).__name__}: {error}`\n\n"
                            f"```\n{tb}\n```\n")
        print(f"[run_all] {key} done in {time.perf_counter() - start:.0f} s", flush=True)
    total = time.perf_counter() - t0
    text = _header(args, load_before, other_load(), total) + "\n" + "\n".join(sections)
    Path(args.output).write_text(text)
    print(f"[run_all] wrote {args.output} ({total / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
