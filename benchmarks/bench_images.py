"""Measured results at image scale (28×28), one section per model family.

Sections (``--section``; others may be added):

* ``rbm`` — the Salakhutdinov & Murray (2008) row: a Bernoulli RBM with 20 hidden units trained by
  CD-1 on binarized MNIST; **exact** ``log Z`` by enumerating the ``2^20`` hidden states against the
  library's default AIS estimate (``rbm.log_partition("ais")`` with no options: base fitted to the data
  statistics the RBM saved while training, schedule from ``ais_defaults()``), the old default (base =
  the RBM's own visible biases, same schedule), the default bracket of ``rbm.log_likelihood_bracket``
  (forward AIS below, reverse AIS from its particles above, schedule grown until they agree), the RAISE
  end from test images for comparison, and the test log-likelihood (exact and bracketed).

MNIST is read by probgen's own IDX reader (:func:`probgen.data.images.read_image_set`: raw or ``.gz``
files in ``--data-dir``); pixels are binarized at 0.5 (``x > 127``), deterministically. Nothing is
downloaded.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_images.py --section rbm --data-dir /path/to/mnist \\
        [--device cuda] [--hidden 20] [--epochs 10] [--output benchmarks/RESULTS_images.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probgen.ebm import BernoulliRBM  # noqa: E402

SECTIONS = ("rbm",)


def read_mnist(data_dir: str) -> dict[str, torch.Tensor]:
    """MNIST's splits as ``(N, 784)`` uint8 through probgen's own IDX reader (raw or ``.gz``; a missing or
    corrupt file exits with its one-line message)."""
    from probgen.data.images import read_image_set

    try:
        sets = read_image_set("mnist", data_dir=data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e)) from None
    return {split: sets[split].reshape(len(sets[split]), -1) for split in ("train", "test")}


def section_rbm(args: argparse.Namespace) -> list[str]:
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    mnist = read_mnist(args.data_dir)
    train = (mnist["train"] > 127).to(device=dev, dtype=torch.float32)
    test = (mnist["test"] > 127).to(device=dev, dtype=torch.float64)
    rbm = BernoulliRBM(784, args.hidden).to(dev)
    opt = torch.optim.SGD(rbm.parameters(), lr=args.lr, momentum=0.9)
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        for batch in train[torch.randperm(len(train), device=dev)].split(args.batch_size):
            opt.zero_grad()
            rbm.loss(batch).backward()
            opt.step()
    t_train = time.perf_counter() - t0
    rbm = rbm.double().eval()
    t0 = time.perf_counter()
    exact = rbm.log_partition("exact").item()
    t_exact = time.perf_counter() - t0
    n, k = rbm.ais_defaults()
    t0 = time.perf_counter()
    ais, ais_se = rbm.log_partition("ais", return_stderr=True, generator=torch.Generator(dev).manual_seed(1))
    t_ais = time.perf_counter() - t0
    t0 = time.perf_counter()
    old, old_se = rbm.log_partition("ais", return_stderr=True, base_visible_bias=rbm.visible_bias.detach(),
                                    warn=False, generator=torch.Generator(dev).manual_seed(1))
    t_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    br = rbm.log_likelihood_bracket(test, generator=torch.Generator(dev).manual_seed(2))
    t_br = time.perf_counter() - t0
    raise_rows = []
    for base in args.raise_base:
        t0 = time.perf_counter()
        rb = rbm.log_likelihood_bracket(test, upper="raise", raise_base=base, num_raise_points=args.raise_points,
                                        num_steps=args.bracket_steps or k, warn=False,
                                        generator=torch.Generator(dev).manual_seed(2))
        raise_rows.append(
            f"| RAISE end instead (`upper=\"raise\"`, raise_base={base!r}: from the first "
            f"{min(args.raise_points, len(test))} test images, K = {rb.num_steps}) | {rb.log_z_upper.item():.3f} | "
            f"{rb.upper_stderr.item():.3f} | {rb.log_z_upper.item() - exact:+.3f} | {time.perf_counter() - t0:.0f} s |")
    neg_f = -rbm.free_energy(test).mean().item()
    rounds = ", ".join(f"K = {kk}: [{lo:.3f}, {up:.3f}]" for kk, lo, up in br.history)
    rows = [
        f"RBM 784-{args.hidden}, CD-1, {args.epochs} epochs of binarized MNIST (60,000 images, x > 127), "
        f"batch {args.batch_size}, SGD lr {args.lr} momentum 0.9, seed {args.seed}; device {args.device}, "
        f"{torch.get_num_threads()} thread(s). Training {t_train:.0f} s.",
        "",
        "| quantity | value | standard error | error vs exact | wall time |",
        "|---|---|---|---|---|",
        f"| exact log Z (2^{args.hidden} hidden states enumerated) | {exact:.3f} | 0 | — | {t_exact:.0f} s |",
        f"| default AIS log Z (`log_partition(\"ais\")`: N = {n}, K = {k}, base from saved data statistics) "
        f"| {ais.item():.3f} | {ais_se.item():.3f} | {ais.item() - exact:+.3f} | {t_ais:.0f} s |",
        f"| old default: same AIS, base = the RBM's own visible biases | {old.item():.3f} | {old_se.item():.3f} "
        f"| {old.item() - exact:+.3f} | {t_old:.0f} s |",
        f"| default bracket, lower end (forward AIS, `log_likelihood_bracket(test)`) | {br.log_z_lower.item():.3f} "
        f"| {br.lower_stderr.item():.3f} | {br.log_z_lower.item() - exact:+.3f} | {t_br:.0f} s (both ends) |",
        f"| default bracket, upper end (reverse AIS from the forward particles, K = {br.num_steps}) | "
        f"{br.log_z_upper.item():.3f} | {br.upper_stderr.item():.3f} | {br.log_z_upper.item() - exact:+.3f} | |",
        *raise_rows,
        f"| test log-likelihood, exact (10,000 images, nats) | {neg_f - exact:.3f} | — | — | |",
        f"| test log-likelihood, default bracket | [{br.log_likelihood_lower.mean().item():.3f}, "
        f"{br.log_likelihood_upper.mean().item():.3f}] | | | |",
        "",
        f"Bracket rounds: {rounds}; warning: {br.warning or 'none'}.",
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--section", choices=SECTIONS, default="rbm")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=os.environ.get("PROBGEN_DATA_DIR", "data/mnist"))
    p.add_argument("--hidden", type=int, default=20)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--raise-points", type=int, default=500)
    p.add_argument("--bracket-steps", type=int, default=None,
                   help="temperatures of the RAISE rows (default: rbm.ais_defaults())")
    p.add_argument("--raise-base", choices=("model", "same"), nargs="*", default=["model", "same"],
                   help="also report RAISE's end (from test images) with these bases: the model's own marginals, "
                        "the AIS base fitted to the data (default: both; none: no RAISE rows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="also append the Markdown table to this file")
    args = p.parse_args(argv)
    if args.hidden > 24:
        raise SystemExit(f"--hidden {args.hidden}: exact enumeration of 2^{args.hidden} states is too slow; use <= 24")
    t0 = time.perf_counter()
    rows = {"rbm": section_rbm}[args.section](args)
    cmd = "OMP_NUM_THREADS=%s python benchmarks/bench_images.py %s" % (
        os.environ.get("OMP_NUM_THREADS", "?"), " ".join(sys.argv[1:] if argv is None else argv))
    text = "\n".join([f"## {args.section}", "", f"Command: `{cmd}` (total {time.perf_counter() - t0:.0f} s)", "",
                      *rows, ""])
    print(text)
    if args.output:
        with open(args.output, "a") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
