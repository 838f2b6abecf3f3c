"""Inpainting half an image with a trained DDPM prior: posterior draws and the pointwise posterior-std map.

A DDPM trained on the 8×8 digits (built in) or on MNIST (``--data mnist --data-dir DIR``, the raw IDX
files) is the prior ``p(x)`` of a Pyro model that observes the top half of a test image,
``y = M x + σ_y ε`` (``pg.infer.MaskOperator``); ``pg.infer.posterior_sample`` draws ``x | y`` (SMC by
default: the asymptotically exact method). The figure has one row per test image: the image, what is
observed (the hidden half grey), posterior draws, the posterior mean and the pointwise posterior std
(an uncertainty map: near 0 on the observed half, large where the digit is ambiguous). Printed: wall
times, and per image the RMSE of the posterior mean on the hidden half with the average posterior std
on each half.

The prior is either a run of ``probgen fit ddpm --data digits`` (``--checkpoint runs/ddpm-digits``) or
trained here with the same recipe (``probgen.registry.recipe("ddpm")``: U-Net, 3,000 steps for digits,
about 3 CPU minutes on an idle core; 600 steps for MNIST, far from converged on a CPU budget).

Usage::

    OMP_NUM_THREADS=1 python examples/inpainting_digits.py                     # trains, then docs/figures/inpainting_digits.png
    probgen fit ddpm --data digits --out runs/ddpm-digits
    OMP_NUM_THREADS=1 python examples/inpainting_digits.py --checkpoint runs/ddpm-digits
    OMP_NUM_THREADS=1 python examples/inpainting_digits.py --data mnist --data-dir /path/to/mnist \\
        --checkpoint runs/ddpm-mnist --out docs/figures/inpainting_mnist.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

import probgen as pg  # noqa: E402
from probgen import registry  # noqa: E402
from probgen.data import load_dataset  # noqa: E402


def prior_model(args: argparse.Namespace, dataset) -> torch.nn.Module:
    """The DDPM of ``--checkpoint``, or one trained here with the ``probgen fit ddpm`` recipe."""
    if args.checkpoint:
        return pg.load(args.checkpoint).eval()
    recipe = registry.recipe("ddpm")
    torch.manual_seed(args.seed)
    model = recipe.build(dataset)
    options = recipe.fit_options(dataset, steps=args.train_steps)
    start = time.perf_counter()
    pg.fit(model, recipe.training_data(dataset), seed=args.seed, progress=False, **options)
    print(f"trained {recipe.describe(model)} for {options['steps']} steps in {time.perf_counter() - start:.0f} s")
    return model.eval()


def inpaint(model, image: torch.Tensor, mask: torch.Tensor, args: argparse.Namespace, seed: int):
    """Posterior draws of ``image`` given its entries where ``mask`` (``pg.infer.posterior_sample``)."""
    likelihood = pg.infer.LinearGaussian(pg.infer.MaskOperator(mask), args.noise_std)

    def program(y):
        x = pyro.sample("x", model.as_distribution())
        pyro.sample("y", likelihood(x), obs=y)

    opts = {"steps": args.steps, "clip_x0": args.clip_x0}
    if args.method == "smc":
        opts["num_particles"] = args.particles
    return pg.infer.posterior_sample(program, image[mask], site="x", method=args.method, num_samples=args.draws,
                                     generator=torch.Generator().manual_seed(seed), **opts)


def figure(rows: list[dict], path: Path, num_draws: int) -> None:
    cols = 2 + num_draws + 2
    fig, axes = plt.subplots(len(rows), cols, figsize=(0.95 * cols, 1.0 * len(rows) + 0.3), squeeze=False)
    titles = ["image", "observed", *[f"draw {i + 1}" for i in range(num_draws)], "mean", "std"]
    vmax = max(float(r["std"].max()) for r in rows)
    for r, row in enumerate(rows):
        panels = [row["image"], row["observed"], *row["draws"][:num_draws], row["mean"]]
        for c, img in enumerate(panels):
            axes[r, c].imshow(img[0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
        im = axes[r, -1].imshow(row["std"][0].numpy(), cmap="magma", vmin=0, vmax=vmax)
        for c in range(cols):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=7)
    fig.colorbar(im, ax=axes[:, -1].tolist(), shrink=0.8, pad=0.04).ax.tick_params(labelsize=6)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", choices=("digits", "mnist"))
    parser.add_argument("--data-dir", default=None, help="folder of the MNIST IDX files (--data mnist)")
    parser.add_argument("--checkpoint", default=None, help="a `probgen fit ddpm` run folder (default: train here)")
    parser.add_argument("--train-steps", type=int, default=None, help="training steps (default: the recipe's)")
    parser.add_argument("--method", default="smc", choices=tuple(pg.infer.posterior.POSTERIOR_METHODS))
    parser.add_argument("--steps", type=int, default=100, help="network calls per draw (noise levels)")
    parser.add_argument("--particles", type=int, default=64, help="SMC particles per image")
    parser.add_argument("--draws", type=int, default=6, help="posterior draws shown per image")
    parser.add_argument("--images", type=int, default=4, help="test images")
    parser.add_argument("--noise-std", type=float, default=0.05, help="observation noise σ_y")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="figure path (default docs/figures/inpainting_<data>.png)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    start = time.perf_counter()
    dataset = load_dataset(args.data, data_dir=args.data_dir)
    model = prior_model(args, dataset)
    args.clip_x0 = tuple(dataset.data_range)  # x̂₀ clamped to [-1, 1]: a trained ε-network is far off at high noise
    images = dataset.test[: args.images].to(torch.get_default_dtype())
    mask = torch.zeros(images.shape[1:], dtype=torch.bool)
    mask[:, : images.shape[2] // 2] = True  # the top half is observed
    rows = []
    for i, image in enumerate(images):
        post = inpaint(model, image, mask, args, seed=args.seed + i)
        mean, std = post.mean(), post.std()
        hidden = ~mask
        rmse = float(((mean - image)[hidden] ** 2).mean().sqrt())
        print(f"image {i}: {args.method} {args.draws} draws in {post.wall_time:.1f} s ({post.nfe} network calls); "
              f"hidden half: RMSE of the posterior mean {rmse:.3f}, mean posterior std {float(std[hidden].mean()):.3f}"
              f" (observed half: {float(std[mask].mean()):.3f})"
              + (f"; final ESS {float(post.ess[-1]):.1f} of {args.particles}" if post.ess is not None else ""))
        observed = torch.where(mask, image, torch.zeros_like(image))
        rows.append({"image": image, "observed": observed, "draws": post.samples, "mean": mean, "std": std})
    out = Path(args.out or f"docs/figures/inpainting_{args.data}.png")
    figure(rows, out, args.draws)
    print(f"wrote {out}; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
