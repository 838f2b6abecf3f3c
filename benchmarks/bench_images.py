"""Measured results at image scale (28×28), one section per model family.

Sections (``--section``; others may be added):

* ``rbm`` — the Salakhutdinov & Murray (2008) row: a Bernoulli RBM with 20 hidden units trained by
  CD-1 on binarized MNIST; **exact** ``log Z`` by enumerating the ``2^20`` hidden states against the
  library's default AIS estimate (``rbm.log_partition("ais")`` with no options: base fitted to the data
  statistics the RBM saved while training, schedule from ``ais_defaults()``), the old default (base =
  the RBM's own visible biases, same schedule), the default bracket of ``rbm.log_likelihood_bracket``
  (forward AIS below, reverse AIS from its particles above, schedule grown until they agree), the RAISE
  end from test images for comparison, and the test log-likelihood (exact and bracketed).

* ``vae`` — the command line's default conv VAE (``probgen fit vae --data mnist-binary``: the recipe's
  ``grayscale`` row) trained on dynamically binarized MNIST for ``--steps`` steps, then the test NLL by IWAE
  with ``K = --iwae-k`` (5000, evaluated ``--iwae-chunk`` particles at a time to bound memory) on the first
  ``--num-test`` images of the fixed binarized test split, next to ``K = 100`` and the ELBO on the same images
  (paired), against the IWAE paper's one-layer VAE (86.76 nats, Burda et al. 2016, Table 1).
* ``ddpm`` — the command line's DDPM on MNIST (U-Net, discretized decoder; ``probgen fit ddpm --data
  mnist``) after ``--steps`` steps; the ELBO bits/dim (a bound on the 256 levels' probability) on
  ``--num-test`` test images and the probability-flow-ODE bits/dim of the SAME network on ``--num-ode``
  images, uniformly dequantized, ``probgen.data.bits_per_dim`` (the one convention of docs/data.md),
  with the solver's rtol/atol and the measured NFE. CPU: Hutchinson trace (the exact trace costs 784
  VJPs per evaluation); cuda: the exact trace.
* ``flow`` — the command line's multi-scale ``ImageFlow`` (``probgen fit flow --data mnist``) on uniformly
  dequantized MNIST after ``--steps`` steps; test bits/dim on ``--num-test`` test images (one fixed
  dequantization draw), ``probgen.data.bits_per_dim``.
* ``throughput`` — training images/s of ``probgen.fit`` against a bare PyTorch loop (same DDPM U-Net,
  Adam, batch, data on the device) at 28×28, interleaved repeats, the fastest of each; their ratio.

Every section but ``rbm`` reads MNIST through ``probgen.data.load_dataset`` and builds its model with the
command line's recipe (:mod:`probgen.registry`), so on the CPU it measures exactly what ``probgen fit``
builds; ``--device cuda`` switches to the full-size settings of :data:`FULL_SIZE`. Training budgets are
steps (the wall time is printed: on a shared machine it varies, the steps do not).

MNIST is read by probgen's own IDX reader (:func:`probgen.data.images.read_image_set`: raw or ``.gz``
files in ``--data-dir``); pixels are binarized at 0.5 (``x > 127``), deterministically. Nothing is
downloaded.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_images.py --section rbm --data-dir /path/to/mnist \\
        [--device cuda] [--hidden 20] [--epochs 10] [--output benchmarks/RESULTS_images.md]
    OMP_NUM_THREADS=1 python benchmarks/bench_images.py --section vae|ddpm|flow|throughput --data-dir /path/to/mnist \\
        [--device cuda] [--steps N] [--batch-size B] [--lr LR] [--num-test N] [--output benchmarks/RESULTS_images.md]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probgen as pg  # noqa: E402
from probgen.ebm import BernoulliRBM  # noqa: E402

SECTIONS = ("rbm", "vae", "ddpm", "flow", "throughput")
#: the rbm section's defaults of the shared options (the other sections take theirs from the recipes)
RBM_DEFAULTS = {"batch_size": 100, "lr": 0.05}


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


# ------------------------------------------------------------------ the sections built on the library's recipes

#: full-size settings (``--device cuda``): model options over the recipe's, and the training budget. The CPU
#: settings are the command line's own (the recipes' ``grayscale`` rows), read from :mod:`probgen.registry`.
FULL_SIZE = {
    "vae": {"model": {"latent_dim": 32, "hidden": (512,), "conv_channels": (32, 64)},
            "fit": {"steps": 50_000, "batch_size": 128, "lr": 1e-3}, "num_test": 10_000},
    "ddpm": {"model": {"ema_decay": 0.9999, "net_options": {"base_channels": 64, "channel_mults": [1, 2, 2],
                                                            "embed_dim": 128}},
             "fit": {"steps": 50_000, "batch_size": 128, "lr": 2e-4, "grad_clip": 1.0}, "num_test": 1000,
             "num_ode": 100},
    "flow": {"model": {"num_couplings": 3, "hidden": 128, "num_blocks": 4},
             "fit": {"steps": 50_000, "batch_size": 64, "lr": 1e-3, "grad_clip": 100.0}, "num_test": 10_000},
    "throughput": {"batch_size": 128, "steps": 50},
}
#: CPU test subsets (``--num-test``, ``--num-ode``) and the throughput budget
CPU_EVAL = {"vae": {"num_test": 32}, "ddpm": {"num_test": 32, "num_ode": 8}, "flow": {"num_test": 10_000},
            "throughput": {"batch_size": 32, "steps": 20}}
IWAE_PAPER_NATS = 86.76  # Burda, Grosse & Salakhutdinov (2016), arXiv:1509.00519, Table 1: VAE, one layer, k = 1


def _full(args: argparse.Namespace) -> bool:
    return torch.device(args.device).type == "cuda"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    v = v.detach().double().cpu()
    return float(v.mean()), float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")


def _eval_size(args: argparse.Namespace, key: str) -> int:
    """``--num-test`` / ``--num-ode`` if given, else the section's setting for the device."""
    given = getattr(args, key.replace("-", "_"))
    if given is not None:
        return given
    return (FULL_SIZE if _full(args) else CPU_EVAL)[args.section][key.replace("-", "_")]


def _recipe_model(args: argparse.Namespace, family: str, dataset):
    """The command line's model for ``dataset`` (CPU), or the same class with the full-size options (cuda)."""
    from probgen import registry

    recipe = registry.recipe(family)
    if not _full(args):
        return recipe, recipe.build(dataset)
    # full size: the recipe's model options updated by FULL_SIZE (the recipes read their options from
    # settings_for, so a patched copy of the row builds the same class at the larger size)
    row = recipe.profile(dataset).row
    patched = {**recipe.settings, row: {**recipe.settings.get(row, {}),
                                        "model": {**recipe.settings_for(dataset)["model"],
                                                  **FULL_SIZE[family]["model"]}}}
    recipe.settings = patched  # an instance attribute: the class's table is untouched
    return recipe, recipe.build(dataset)


def _train(args: argparse.Namespace, recipe, model, dataset) -> tuple[dict, float]:
    """``probgen.fit`` with the recipe's options (CPU) or the full-size budget (cuda); ``--steps``,
    ``--batch-size``, ``--lr`` override. Returns the options used and the training wall time."""
    opts = recipe.fit_options(dataset)
    if _full(args):
        opts.update(FULL_SIZE[args.section]["fit"])
    for key in ("steps", "batch_size", "lr"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    dev = torch.device(args.device)
    t0 = time.perf_counter()
    pg.fit(model, recipe.training_data(dataset), seed=args.seed, device=dev, progress=False, **opts)
    _sync(dev)
    return opts, time.perf_counter() - t0


def _trained(args: argparse.Namespace, family: str, dataset):
    """``(recipe, model, fit options, training seconds)``: trained here by :func:`_train`, or read back from
    ``--from-run DIR`` (a ``probgen fit`` run folder: its checkpoint and the budget in its ``summary.json``),
    so that one training serves both the command line's timing and this section's evaluation."""
    from probgen import registry

    if args.from_run is None:
        recipe, model = _recipe_model(args, family, dataset)
        opts, seconds = _train(args, recipe, model, dataset)
        return recipe, model, opts, seconds
    summary = json.loads((Path(args.from_run) / "summary.json").read_text())
    model = pg.load(args.from_run, map_location=args.device)
    recipe = registry.recipe_for(model)
    if recipe.name != family:
        raise SystemExit(f"--from-run {args.from_run}: a {recipe.name!r} run; section {args.section!r} "
                         f"needs a {family!r} run")
    return recipe, model, {**summary["fit"], "seed": summary.get("seed")}, float(summary["train_seconds"])


def _budget(opts: dict, seconds: float, seed: int) -> str:
    extra = ", ".join(f"{k} {v}" for k, v in opts.items() if k in ("lr_schedule", "grad_clip"))
    return (f"{opts['steps']} steps × batch {opts['batch_size']}, Adam lr {opts['lr']:g}"
            f"{', ' + extra if extra else ''}, seed {seed} → {seconds:.0f} s of training")


def _num_params(model) -> int:
    """Trainable parameters (an EMA copy of the weights is not counted, as ``probgen fit`` prints)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def section_vae(args: argparse.Namespace) -> list[str]:
    dev = torch.device(args.device)
    ds = pg.data.load_dataset("mnist-binary", data_dir=args.data_dir)
    recipe, model, opts, t_train = _trained(args, "vae", ds)
    budget = _budget(opts, t_train, opts.get("seed", args.seed))
    model.eval()
    n = _eval_size(args, "num-test")
    x = ds.test[:n].to(dev)  # the fixed Bernoulli draw of load_dataset("mnist-binary")
    k_big, chunk = args.iwae_k, args.iwae_chunk
    with torch.no_grad():
        elbo = torch.cat([model.elbo(c) for c in x.split(500)])
        g = torch.Generator(dev).manual_seed(1)
        t0 = time.perf_counter()
        ll100 = torch.cat([model.log_likelihood(c, num_particles=100, chunk_size=100, generator=g)
                           for c in x.split(100)])
        _sync(dev)
        t100 = time.perf_counter() - t0
        t0 = time.perf_counter()
        # one image at a time, ``chunk`` particles per decoder call: memory ∝ chunk, independent of K
        llk = torch.cat([model.log_likelihood(c, num_particles=k_big, chunk_size=chunk, generator=g)
                         for c in x.split(1)])
        _sync(dev)
        tk = time.perf_counter() - t0
    d = 784 * math.log(2)
    (e, e_se), (l1, l1_se), (lk, lk_se) = _mean_se(-elbo), _mean_se(-ll100), _mean_se(-llk)
    gap, gap_se = _mean_se(ll100 - llk)  # paired: K = 100 minus K = K on the same images
    return [
        f"{recipe.describe(model)}, {_num_params(model):,} parameters "
        f"(`probgen fit vae --data mnist-binary`'s model{', full-size options' if _full(args) else ''}); "
        f"dynamically binarized MNIST (a fresh Bernoulli draw of every batch), {budget}; "
        f"device {args.device}, {torch.get_num_threads()} thread(s).",
        f"Test: the first {n} images of the fixed binarized test split (`load_dataset(\"mnist-binary\")`, seed 0).",
        "",
        "| quantity (first %d test images) | nats | bits/dim | wall time |" % n,
        "|---|---|---|---|",
        f"| −ELBO | {e:.2f} ± {e_se:.2f} | {e / d * 1:.4f} | |",
        f"| NLL, IWAE K = 100 | {l1:.2f} ± {l1_se:.2f} | {l1 / d:.4f} | {t100:.0f} s |",
        f"| **NLL, IWAE K = {k_big}** ({chunk} particles per pass) | **{lk:.2f} ± {lk_se:.2f}** | {lk / d:.4f} "
        f"| {tk:.0f} s |",
        f"| NLL(K = 100) − NLL(K = {k_big}) (paired, same images) | {-gap:.2f} ± {gap_se:.2f} | | |",
        f"| IWAE paper, one-layer VAE (k = 1 training), whole test set | {IWAE_PAPER_NATS} | "
        f"{IWAE_PAPER_NATS / d:.4f} | 3280 epochs |",
    ]


def _net_brief(model) -> str:
    options = model.config().get("net_options") or {}
    return ", ".join(f"{k} {options[k]}" for k in ("base_channels", "channel_mults", "embed_dim") if k in options)


def section_ddpm(args: argparse.Namespace) -> list[str]:
    dev = torch.device(args.device)
    ds = pg.data.load_dataset("mnist", data_dir=args.data_dir)
    recipe, model, opts, t_train = _trained(args, "ddpm", ds)
    budget = _budget(opts, t_train, opts.get("seed", args.seed))
    model.eval()
    n, n_ode = _eval_size(args, "num-test"), _eval_size(args, "num-ode")
    trace = "exact" if _full(args) else "hutchinson"
    rtol = atol = args.rtol
    x = ds.test[:n].to(dev)
    with torch.no_grad():
        t0 = time.perf_counter()
        g = torch.Generator(dev).manual_seed(1)
        elbo_bpd = torch.cat([model.bits_per_dim(c, method="elbo", generator=g) for c in x.split(64)])
        _sync(dev)
        t_elbo = time.perf_counter() - t0
        # the same network through the matched VP probability-flow ODE, on uniformly dequantized levels:
        # z = -1 + 2(k + u)/256, bpd = -(log p(z) + 784 log(2/256)) / (784 ln 2) (docs/data.md)
        z = pg.data.dequantize_scaled(x[:n_ode], num_levels=256, data_range=ds.data_range,
                                      generator=torch.Generator(dev).manual_seed(2))
        t0 = time.perf_counter()
        lp, nfe = model.log_prob(z, trace=trace, rtol=rtol, atol=atol, batch_size=args.ode_batch,
                                 return_nfe=True, generator=torch.Generator(dev).manual_seed(3))
        _sync(dev)
        t_ode = time.perf_counter() - t0
    ode_bpd = pg.data.bits_per_dim(lp, 784, num_levels=256, data_range=ds.data_range)
    (eb, eb_se), (ob, ob_se) = _mean_se(elbo_bpd), _mean_se(ode_bpd)
    (eb_same, eb_same_se) = _mean_se(elbo_bpd[:n_ode])
    m = min(n, n_ode)  # the images scored both ways: a paired difference
    diff, diff_se = _mean_se(ode_bpd[:m] - elbo_bpd[:m])
    solves = math.ceil(n_ode / args.ode_batch)
    return [
        f"{recipe.describe(model)}, U-Net {_net_brief(model)}, {_num_params(model):,} parameters "
        f"(`probgen fit ddpm --data mnist`'s model{', full-size options' if _full(args) else ''}); "
        f"MNIST levels scaled to [-1, 1], discretized decoder over 256 levels; {budget}; "
        f"device {args.device}, {torch.get_num_threads()} thread(s). EMA weights for evaluation.",
        "",
        "| quantity | bits/dim | test images | wall time |",
        "|---|---|---|---|",
        f"| ELBO (discretized decoder, 1000 terms, one draw each; bound on the levels' probability) "
        f"| {eb:.3f} ± {eb_se:.3f} | {n} | {t_elbo:.0f} s |",
        f"| ELBO on the ODE's images | {eb_same:.3f} ± {eb_same_se:.3f} | {n_ode} | |",
        f"| **probability-flow ODE** (same network, uniform dequantization, dopri5 rtol = atol = {rtol:g}, "
        f"{trace} trace, NFE {nfe} over {solves} solve(s) = {nfe / solves:.0f} per solve) "
        f"| **{ob:.3f} ± {ob_se:.3f}** | {n_ode} | {t_ode:.0f} s |",
        f"| ODE − ELBO, paired on the same images | {diff:+.3f} ± {diff_se:.3f} | {m} | |",
    ]


def section_flow(args: argparse.Namespace) -> list[str]:
    dev = torch.device(args.device)
    ds = pg.data.load_dataset("mnist", data_dir=args.data_dir)
    recipe, model, opts, t_train = _trained(args, "flow", ds)
    budget = _budget(opts, t_train, opts.get("seed", args.seed))
    model.eval()
    n = _eval_size(args, "num-test")
    z = pg.data.dequantize_scaled(ds.test[:n], num_levels=256, data_range=ds.data_range,
                                  generator=torch.Generator().manual_seed(0)).to(dev)
    t0 = time.perf_counter()
    with torch.no_grad():
        lp = torch.cat([model.log_prob(recipe.to_model(c)) for c in z.split(500)])
    _sync(dev)
    t_eval = time.perf_counter() - t0
    bpd, bpd_se = _mean_se(pg.data.bits_per_dim(lp, 784, num_levels=256, data_range=ds.data_range))
    return [
        f"{recipe.describe(model)}: `ImageFlow` {getattr(model, 'num_scales', '?')} scales, "
        f"{_num_params(model):,} parameters (`probgen fit flow --data mnist`'s model"
        f"{', full-size options' if _full(args) else ''}); uniformly dequantized MNIST (fresh noise every batch); "
        f"{budget}; device {args.device}, {torch.get_num_threads()} thread(s).",
        "",
        "| quantity | value | test images | wall time |",
        "|---|---|---|---|",
        f"| **test bits/dim** (one dequantization draw, `bits_per_dim(num_levels=256, data_range=(-1, 1))`) "
        f"| **{bpd:.3f} ± {bpd_se:.3f}** | {n} | {t_eval:.0f} s |",
        "| RealNVP (Dinh et al. 2017), Glow (Kingma & Dhariwal 2018), published | 1.06, 1.05 | 10,000 | days of GPU |",
    ]


def section_throughput(args: argparse.Namespace) -> list[str]:
    dev = torch.device(args.device)
    ds = pg.data.load_dataset("mnist", data_dir=args.data_dir)
    recipe, model = _recipe_model(args, "ddpm", ds)
    cfg = (FULL_SIZE if _full(args) else CPU_EVAL)["throughput"]
    batch = args.batch_size or cfg["batch_size"]
    steps = args.steps or cfg["steps"]
    lr = args.lr or 1e-3
    data = ds.train.to(dev)
    model.to(dev)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def bare(num_steps: int) -> dict:
        model.load_state_dict(state)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(args.seed)
        perm = torch.randperm(len(data), generator=gen)
        marks = []
        _sync(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(num_steps):
            idx = perm[i * batch:(i + 1) * batch].to(dev)
            loss = model.loss(data[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            _sync(dev)
            marks.append((time.perf_counter(), time.process_time()))
        return {"wall": marks[-1][0] - t0, "cpu": marks[-1][1] - c0, "marks": marks}

    def with_fit(num_steps: int) -> dict:
        model.load_state_dict(state)
        marks = []

        def mark(step, loss, metrics):
            _sync(dev)
            marks.append((time.perf_counter(), time.process_time()))

        _sync(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        pg.fit(model, data, steps=num_steps, batch_size=batch, lr=lr, seed=args.seed, device=dev, progress=False,
               callback=mark)
        _sync(dev)
        return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0, "marks": marks}

    bare(2), with_fit(2)  # warm-up: lazy imports, allocator
    runs = {"bare": [], "fit": []}
    for _ in range(args.repeats):
        runs["bare"].append(bare(steps))
        runs["fit"].append(with_fit(steps))

    def rate(run: dict, what: str) -> float:
        """images/s: whole run (``"wall"``, ``"cpu"``) or steady state from the end of step 1 to the last step
        (``"steady"``: wall, ``"steady-cpu"``), the fastest of the repeats."""
        if what in ("wall", "cpu"):
            return steps * batch / run[what]
        k = 0 if what == "steady" else 1
        return (steps - 1) * batch / (run["marks"][-1][k] - run["marks"][0][k])

    cols = ("wall", "cpu", "steady", "steady-cpu")
    best = {name: {c: max(rate(r, c) for r in rs) for c in cols} for name, rs in runs.items()}
    ratio = {c: best["fit"][c] / best["bare"][c] for c in cols}
    return [
        f"The DDPM U-Net of `probgen fit ddpm --data mnist`{' (full-size options)' if _full(args) else ''} "
        f"({_num_params(model):,} parameters), its loss (`model.loss`), Adam lr {lr:g}, batch {batch}, "
        f"28×28 MNIST on the device; {steps} steps per run, {args.repeats} interleaved runs of each, the fastest "
        f"kept; device {args.device}, {torch.get_num_threads()} thread(s). `whole call`: the `probgen.fit` call "
        f"(set-up, data checks, seeding, EMA update, non-finite guard) against the bare loop; `steady`: from "
        f"the end of the first step to the end of the last (per-step cost only); wall clock and this process's "
        f"CPU time (`time.process_time`, which on a shared machine is not inflated by other jobs).",
        "",
        "| loop | images/s, whole call (wall / CPU) | images/s, steady (wall / CPU) |",
        "|---|---|---|",
        *(f"| {label} | {best[k]['wall']:.1f} / {best[k]['cpu']:.1f} | {best[k]['steady']:.1f} / "
          f"{best[k]['steady-cpu']:.1f} |"
          for k, label in (("bare", "bare PyTorch (`loss`, `zero_grad`, `backward`, `step`)"),
                           ("fit", "`probgen.fit`"))),
        f"| **ratio fit / bare** | **{ratio['wall']:.3f} / {ratio['cpu']:.3f}** | "
        f"**{ratio['steady']:.3f} / {ratio['steady-cpu']:.3f}** |",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--section", choices=SECTIONS, default="rbm")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=os.environ.get("PROBGEN_DATA_DIR", "data/mnist"))
    p.add_argument("--hidden", type=int, default=20)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: rbm 100; vae, ddpm, flow the command line's recipe (cuda: FULL_SIZE)")
    p.add_argument("--lr", type=float, default=None,
                   help="default: rbm 0.05; vae, ddpm, flow the command line's recipe (cuda: FULL_SIZE)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps of vae, ddpm, flow (default: the command line's recipe; cuda: FULL_SIZE) "
                        "or steps per timed run of throughput")
    p.add_argument("--from-run", default=None,
                   help="vae, ddpm, flow: evaluate the model of this `probgen fit` run folder instead of training one")
    p.add_argument("--num-test", type=int, default=None,
                   help="test images scored (default: vae 32 for K = 5000, ddpm 32 (ELBO), flow 10000)")
    p.add_argument("--num-ode", type=int, default=None, help="ddpm: test images through the ODE (default 8)")
    p.add_argument("--ode-batch", type=int, default=8, help="ddpm: images per ODE solve")
    p.add_argument("--rtol", type=float, default=1e-4, help="ddpm: ODE solver rtol = atol")
    p.add_argument("--iwae-k", type=int, default=5000, help="vae: importance samples K of the IWAE bound")
    p.add_argument("--iwae-chunk", type=int, default=500, help="vae: particles per decoder pass (bounds memory)")
    p.add_argument("--repeats", type=int, default=2, help="throughput: timed runs of each loop")
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
    if args.section == "rbm":
        for key, value in RBM_DEFAULTS.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    t0 = time.perf_counter()
    rows = {"rbm": section_rbm, "vae": section_vae, "ddpm": section_ddpm, "flow": section_flow,
            "throughput": section_throughput}[args.section](args)
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
