"""Image-scale models on real MNIST (28×28): ImageFlow, a conv VAE and a DCGAN-style WGAN-GP.

Each model trains from scratch with Adam for a wall-clock ``--budget`` (seconds, per model) and is then
evaluated on the first ``--num-test`` test images:

* **flow** — ``probgen.flows.ImageFlow((1, 28, 28), num_scales=2, ..., logit=(0, 1))`` on *uniformly
  dequantized* MNIST, ``y = (k + u) / 256`` with ``k ∈ {0..255}``, ``u ~ U[0, 1)`` (a fresh ``u`` every
  batch; one fixed draw for the test set). Reported: test NLL in nats of ``x = 256 y ∈ [0, 256)^784``
  (i.e. ``-log p(y) + 784 ln 256``) and bits/dim ``= NLL_nats(x) / (784 ln 2)``, computed with
  :func:`probgen.data.bits_per_dim` (``num_levels=256``, ``data_range=(0, 1)``) — the convention of the
  RealNVP / Glow papers, an upper bound on the discrete model's bits/dim.
* **vae** — ``VAE(ConvEncoder, ConvDecoder, likelihood="bernoulli")`` on *dynamically binarized* MNIST
  (each pixel ``~ Bernoulli(k / 255)``, redrawn every batch; one fixed draw for the test set). Reported:
  the IWAE bound ``log p(x) ≥ L_K`` with ``K = --iwae-k`` (100) as NLL in nats ``= -L_K`` and bits/dim
  ``= NLL / (784 ln 2)``.
* **gan** — ``GAN`` (CPU settings: non-saturating loss, one discriminator step) or ``WGANGP`` (cuda settings,
  ``n_critic=5``) with ``generator=ConvGenerator(..., output="tanh"), discriminator=ConvDiscriminator`` on
  pixels scaled to ``[-1, 1]``. No likelihood: reported are the generator steps, the final losses and
  the sample diversity (:func:`probgen.gan.sample_diversity`, ≈1 when the spread matches the data's).

MNIST is read from the raw IDX files in ``--data-dir`` (default ``$PROBGEN_DATA/mnist`` or
``/work/data/mnist``; names ``train-images.idx3-ubyte`` or ``train-images-idx3-ubyte``, optionally ``.gz``).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_image_models.py --models flow --budget 180      # CPU, 1 thread
    python benchmarks/bench_image_models.py --device cuda --budget 1800                         # full size
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import struct
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probgen as pg  # noqa: E402
from probgen.flows import ImageFlow  # noqa: E402
from probgen.gan import GAN, WGANGP  # noqa: E402
from probgen.gan.conv_nets import ConvDiscriminator, ConvGenerator  # noqa: E402
from probgen.vae import VAE  # noqa: E402
from probgen.vae.conv import ConvDecoder, ConvEncoder  # noqa: E402

D = 784

#: per device: the constructor keywords and the training settings used for the numbers in the docs
SETTINGS = {
    "cpu": {
        "flow": {"model": {"num_scales": 2, "num_couplings": 2, "hidden": 32, "num_blocks": 0},
                 "batch_size": 32, "lr": 1e-3},
        "vae": {"model": {"latent_dim": 16, "channels": [8, 16], "hidden": 128}, "batch_size": 128, "lr": 1e-3},
        "gan": {"kind": "gan", "model": {"latent_dim": 32, "channels": [16, 32]}, "batch_size": 64, "lr": 2e-4,
                "updates": 1},
    },
    "cuda": {
        "flow": {"model": {"num_scales": 2, "num_couplings": 3, "hidden": 128, "num_blocks": 4},
                 "batch_size": 64, "lr": 1e-3},
        "vae": {"model": {"latent_dim": 32, "channels": [32, 64], "hidden": 512}, "batch_size": 128, "lr": 1e-3},
        "gan": {"kind": "wgan-gp", "model": {"latent_dim": 64, "channels": [64, 128]}, "batch_size": 64,
                "lr": 2e-4, "updates": 5},
    },
}


def _read_idx(path: Path) -> torch.Tensor:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def load_mnist(folder: Path, split: str) -> torch.Tensor:
    """``(N, 1, 28, 28)`` uint8 images of ``split`` (``"train"`` or ``"t10k"``)."""
    for name in (f"{split}-images.idx3-ubyte", f"{split}-images-idx3-ubyte"):
        for suffix in ("", ".gz"):
            path = folder / (name + suffix)
            if path.exists():
                return _read_idx(path).unsqueeze(1)
    raise SystemExit(f"MNIST {split} images not found in {folder} (expected {split}-images-idx3-ubyte[.gz])")


def dequantize(k: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    u = torch.rand(k.shape, generator=generator, device=k.device)
    return (k.float() + u) / 256.0


def binarize(k: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.bernoulli(k.float() / 255.0, generator=generator)


def _train(model, params, step_loss, train, *, batch_size: int, lr: float, budget: float, device: str,
           clip: float | None = None) -> tuple[int, float]:
    opt = torch.optim.Adam(params, lr=lr)
    n, steps, start = train.shape[0], 0, time.perf_counter()
    last = float("nan")
    while time.perf_counter() - start < budget:
        idx = torch.randint(0, n, (batch_size,))
        loss = step_loss(train[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        steps += 1
        last = float(loss.detach())
    return steps, last


def run_flow(train, test, cfg, device, budget) -> dict:
    model = ImageFlow((1, 28, 28), logit=(0.0, 1.0), **cfg["model"]).to(device)
    with torch.no_grad():  # ActNorm's data-dependent initialisation on a larger batch
        model.log_prob(dequantize(train[:512].to(device)))
    steps, last = _train(model, list(model.parameters()), lambda k: model.loss(dequantize(k)), train,
                         batch_size=cfg["batch_size"], lr=cfg["lr"], budget=budget, device=device, clip=100.0)
    g = torch.Generator().manual_seed(0)
    y = dequantize(test, g).to(device)
    with torch.no_grad():
        lp = torch.cat([model.log_prob(chunk) for chunk in y.split(250)])
    bpd = pg.data.bits_per_dim(lp, D, num_levels=256, data_range=(0.0, 1.0))
    nll = bpd * D * math.log(2)
    n = lp.numel()
    return {"model": "flow", "steps": steps, "last_train_loss": last,
            "test_nll_nats": float(nll.mean()), "test_nll_se": float(nll.std() / math.sqrt(n)),
            "test_bits_per_dim": float(bpd.mean()), "test_bpd_se": float(bpd.std() / math.sqrt(n)),
            "num_params": sum(p.numel() for p in model.parameters())}


def run_vae(train, test, cfg, device, budget, iwae_k) -> dict:
    m = cfg["model"]
    enc = ConvEncoder((1, 28, 28), m["latent_dim"], channels=m["channels"], hidden=m["hidden"])
    dec = ConvDecoder(m["latent_dim"], (1, 28, 28), channels=m["channels"], hidden=m["hidden"])
    model = VAE(enc, dec, latent_dim=m["latent_dim"], likelihood="bernoulli").to(device)
    steps, last = _train(model, list(model.parameters()), lambda k: model.loss(binarize(k)), train,
                         batch_size=cfg["batch_size"], lr=cfg["lr"], budget=budget, device=device)
    g = torch.Generator().manual_seed(0)
    x = binarize(test, g).to(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        ll = torch.cat([model.log_likelihood(chunk, num_particles=iwae_k, chunk_size=25) for chunk in x.split(100)])
        elbo = torch.cat([model.elbo(chunk) for chunk in x.split(100)])
    n = ll.numel()
    return {"model": "vae", "steps": steps, "last_train_loss": last, "iwae_k": iwae_k,
            "test_nll_nats": float(-ll.mean()), "test_nll_se": float(ll.std() / math.sqrt(n)),
            "test_bits_per_dim": float(-ll.mean() / (D * math.log(2))),
            "test_neg_elbo_nats": float(-elbo.mean()), "eval_seconds": time.perf_counter() - t0,
            "num_params": sum(p.numel() for p in model.parameters())}


def run_gan(train, test, cfg, device, budget) -> dict:
    m = cfg["model"]
    nets = {"generator": ConvGenerator(m["latent_dim"], (1, 28, 28), channels=m["channels"], output="tanh"),
            "discriminator": ConvDiscriminator((1, 28, 28), channels=m["channels"])}
    if cfg["kind"] == "wgan-gp":
        model = WGANGP((1, 28, 28), latent_dim=m["latent_dim"], n_critic=cfg["updates"], **nets)
    else:
        model = GAN((1, 28, 28), latent_dim=m["latent_dim"], d_steps=cfg["updates"], **nets)
    model = model.to(device)
    opts = model.configure_optimizers(cfg["lr"])
    n, steps, start, out = train.shape[0], 0, time.perf_counter(), {}
    while time.perf_counter() - start < budget:
        idx = torch.randint(0, n, (cfg["batch_size"],))
        batch = train[idx].to(device).float() / 127.5 - 1.0
        out = model.training_step((batch,), opts)
        steps += 1
    with torch.no_grad():
        fake = model.sample(500)
        real = test[:500].to(device).float() / 127.5 - 1.0
        div = float(pg.gan.sample_diversity(fake, real))
    return {"model": cfg["kind"], "generator_steps": steps, "d_loss": float(out.get("d_loss", float("nan"))),
            "g_loss": float(out.get("g_loss", float("nan"))), "diversity": div, "num_params": sum(p.numel() for p in model.parameters())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--budget", type=float, default=180.0, help="training seconds per model")
    p.add_argument("--models", default="flow,vae,gan")
    p.add_argument("--data-dir", default=os.environ.get("PROBGEN_DATA", "/work/data") + "/mnist")
    p.add_argument("--num-test", type=int, default=1000)
    p.add_argument("--iwae-k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="append results as JSON lines to this file")
    p.add_argument("--override", default=None,
                   help='JSON merged into the settings, e.g. \'{"vae": {"model": {"channels": [8, 16]}}}\'')
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    folder = Path(args.data_dir)
    train = load_mnist(folder, "train")
    test = load_mnist(folder, "t10k")[: args.num_test]
    settings = json.loads(json.dumps(SETTINGS[args.device]))
    if args.override:
        for name, part in json.loads(args.override).items():
            for key, value in part.items():
                if isinstance(value, dict):
                    settings[name][key].update(value)
                else:
                    settings[name][key] = value
    for name in args.models.split(","):
        t0 = time.perf_counter()
        cfg = settings[name]
        if name == "flow":
            res = run_flow(train, test, cfg, args.device, args.budget)
        elif name == "vae":
            res = run_vae(train, test, cfg, args.device, args.budget, args.iwae_k)
        elif name == "gan":
            res = run_gan(train, test, cfg, args.device, args.budget)
        else:
            raise SystemExit(f"unknown model {name!r}; choose from flow, vae, gan")
        res.update({"device": args.device, "budget_s": args.budget, "threads": torch.get_num_threads(),
                    "wall_s": round(time.perf_counter() - t0, 1), "settings": cfg})
        line = json.dumps(res)
        print(line, flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
