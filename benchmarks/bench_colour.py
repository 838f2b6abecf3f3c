"""The ``colour`` image row (``3×32×32``, 256 levels) measured on held-out colour data that is on every machine.

No CIFAR-10 files are needed: the two photos scikit-learn ships (``sklearn.datasets.load_sample_images()``:
``china.jpg`` and ``flower.jpg``, 427×640×3 uint8 each) are cut into ``32×32×3`` patches and written as a
user's ``.npy`` files of uint8 ``(N, 32, 32, 3)`` (channels-last, as users have them), so the measurement
goes through the user-file path (``probgen.data.files``: 8-bit image stack -> ``(N, 3, 32, 32)`` in
``[-1, 1]``, 256 levels, the ``colour`` profile row, uniform dequantization, bits/dim).

The split is by image **region**, so that no test patch overlaps a training patch: in each photo the
right-most ``--test-cols`` columns (default 128 of 640) give the test patches, the columns left of them the
training patches (both cut with stride ``--stride``, default 8):

* ``patches_train.npy``: the training region (6,100 patches at the defaults); ``probgen fit`` splits it 90/10
  at random, so the "test" numbers ``fit`` prints are on patches that overlap its training ones;
* ``patches_test.npy``: the held-out region (1,300 patches), never seen in training.

Sections (``--section``):

* ``make`` — write the two files into ``--out`` (default ``runs/colour``) and print their shapes;
* ``baseline`` — bits/dim of simple discrete models of the 256 levels, fitted on the training region and
  scored on every held-out patch: the 8-bit uniform (8 bits/dim), an i.i.d. per-channel histogram (256 bins,
  add-one smoothing), and a "PNG-style" predictor (the first pixel of each row by the channel histogram, every
  other pixel by the histogram of its difference to its left neighbour, per channel);
* ``figure`` — ``--figure`` (default ``docs/figures/colour_patches.png``): held-out patches next to samples
  of each ``--runs`` folder, drawn by its recipe;
* ``score`` — each ``--runs`` folder written by ``probgen fit FAMILY --data patches_train.npy`` scored on the
  held-out patches by the command line's own recipe (``probgen.registry``: the same numbers ``probgen nll``
  prints; flow and VAE on every held-out patch unless ``--num-test`` caps it, DDPM on its recipe's default
  16 (ELBO) / 8 (ODE) patches).

Every bits/dim follows the one convention of docs/data.md (``probgen.data.bits_per_dim``); the baselines are
probabilities of the levels themselves, the flow's and VAE's numbers bound them from above (densities of
dequantized values), so a model below a baseline is better than it on the levels too.

Usage (the commands of docs/images.md, "Colour images (32x32x3)")::

    OMP_NUM_THREADS=1 python benchmarks/bench_colour.py --section make --out runs/colour
    OMP_NUM_THREADS=1 python benchmarks/bench_colour.py --section baseline --out runs/colour
    OMP_NUM_THREADS=1 probgen fit flow --data runs/colour/patches_train.npy --out runs/colour/flow
    OMP_NUM_THREADS=1 python benchmarks/bench_colour.py --section score --out runs/colour \\
        --runs runs/colour/flow runs/colour/vae runs/colour/ddpm
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SECTIONS = ("make", "baseline", "score", "figure")
PATCH = 32
LEVELS = 256


def photos() -> list[tuple[str, np.ndarray]]:
    """scikit-learn's two bundled photos, ``(427, 640, 3)`` uint8 each (no download: they ship in the wheel)."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    return [(Path(f).name, np.asarray(img, dtype=np.uint8)) for f, img in zip(bunch.filenames, bunch.images)]


def cut(image: np.ndarray, col_lo: int, col_hi: int, stride: int) -> np.ndarray:
    """Every ``PATCH×PATCH`` patch of ``image[:, col_lo:col_hi]`` at ``stride``, ``(n, 32, 32, 3)`` uint8."""
    h = image.shape[0]
    out = [image[r:r + PATCH, c:c + PATCH]
           for r in range(0, h - PATCH + 1, stride) for c in range(col_lo, col_hi - PATCH + 1, stride)]
    return np.stack(out)


def patches(stride: int, test_cols: int) -> dict[str, np.ndarray]:
    """Training patches (left of the last ``test_cols`` columns) and test patches (those columns) of both photos:
    no test patch shares a pixel with a training patch."""
    train, test = [], []
    for _, img in photos():
        w = img.shape[1]
        if not PATCH <= test_cols <= w - PATCH:
            raise SystemExit(f"--test-cols must be in [{PATCH}, {w - PATCH}], got {test_cols}")
        train.append(cut(img, 0, w - test_cols, stride))
        test.append(cut(img, w - test_cols, w, stride))
    return {"train": np.concatenate(train), "test": np.concatenate(test)}


def section_make(args) -> list[str]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = patches(args.stride, args.test_cols)
    lines = [f"patches {PATCH}x{PATCH}x3, stride {args.stride}, test region = the right-most {args.test_cols} "
             f"columns of each photo (china.jpg, flower.jpg)", ""]
    for split, arr in sets.items():
        path = out / f"patches_{split}.npy"
        np.save(path, arr)
        lines.append(f"- `{path}`: {arr.shape} {arr.dtype}, mean level {arr.mean():.1f}")
    return lines


def _hist(values: np.ndarray, bins: int) -> np.ndarray:
    """Add-one smoothed histogram of integer ``values`` in ``0..bins-1``, as log2-probabilities."""
    counts = np.bincount(values.reshape(-1), minlength=bins).astype(np.float64) + 1.0
    return np.log2(counts / counts.sum())


def baselines(train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
    """Per-patch bits/dim of the held-out patches under three discrete models fitted on the training patches
    (arrays ``(N, 32, 32, 3)`` uint8)."""
    n, h, w, c = test.shape
    dims = h * w * c
    out = {"8-bit uniform (every level 1/256)": np.full(n, 8.0)}
    bits = np.zeros(n)
    for ch in range(c):
        table = _hist(train[..., ch], LEVELS)
        bits -= table[test[..., ch]].reshape(n, -1).sum(-1)
    out["i.i.d. pixels: per-channel histogram"] = bits / dims
    bits = np.zeros(n)
    for ch in range(c):
        first = _hist(train[:, :, 0, ch], LEVELS)
        diff_train = (train[:, :, 1:, ch].astype(np.int64) - train[:, :, :-1, ch]) + LEVELS - 1
        table = _hist(diff_train, 2 * LEVELS - 1)
        diff_test = (test[:, :, 1:, ch].astype(np.int64) - test[:, :, :-1, ch]) + LEVELS - 1
        bits -= first[test[:, :, 0, ch]].reshape(n, -1).sum(-1) + table[diff_test].reshape(n, -1).sum(-1)
    out["left-neighbour difference (PNG 'Sub' filter), per-channel histogram"] = bits / dims
    return out


def _load(out: Path) -> dict[str, np.ndarray]:
    sets = {}
    for split in ("train", "test"):
        path = out / f"patches_{split}.npy"
        if not path.exists():
            raise SystemExit(f"{path}: no such file; run --section make --out {out} first")
        sets[split] = np.load(path, allow_pickle=False)
    return sets


def _mean_se(v) -> tuple[float, float]:
    v = np.asarray(v, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def _cli_split(out: Path) -> dict[str, np.ndarray]:
    """The training file split as ``probgen fit`` splits it (seed 0, 90/10 at random), back as uint8
    channels-last levels."""
    from probgen.data import load_dataset

    ds = load_dataset(out / "patches_train.npy")
    return {split: ((getattr(ds, split) + 1) * (LEVELS - 1) / 2).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for split in ("train", "test")}


def section_baseline(args) -> list[str]:
    out = Path(args.out)
    sets, cli = _load(out), _cli_split(out)
    t0 = time.perf_counter()
    held = baselines(sets["train"], sets["test"])
    split = baselines(cli["train"], cli["test"])
    lines = [f"Baselines fitted on the training patches, scored on the {len(cli['test']):,} patches `probgen fit` "
             f"holds out at random from the training file (fitted on its other {len(cli['train']):,}) and on all "
             f"{len(sets['test']):,} patches of the held-out region (fitted on all {len(sets['train']):,} training "
             f"patches); {time.perf_counter() - t0:.1f} s", "",
             "| model (discrete, of the 256 levels) | bits/dim, fit's random 10 % | bits/dim, held-out region |",
             "|---|---|---|"]
    for name in held:
        (m1, se1), (m2, se2) = _mean_se(split[name]), _mean_se(held[name])
        lines.append(f"| {name} | {m1:.3f} ± {se1:.3f} | {m2:.3f} ± {se2:.3f} |")
    return lines


def _held_out(out: Path, train_ds):
    """The held-out region as a data set the recipes score: the training file's data set with its test split
    replaced by every held-out patch, read through the same user-file path."""
    import dataclasses

    from probgen.data import load_dataset

    held = load_dataset(out / "patches_test.npy", n_test=1)  # the same file_levels path: (N, 3, 32, 32) in [-1, 1]
    test = torch.cat([held.train, held.test])
    # a fixed random order: families that score the first few test points (DDPM, score SDE) get a random subset
    # of the region, not its top-left corner
    test = test[torch.randperm(len(test), generator=torch.Generator().manual_seed(0))]
    if tuple(test.shape[1:]) != tuple(train_ds.event_shape) or held.num_levels != train_ds.num_levels:
        raise SystemExit(f"held-out patches {tuple(test.shape[1:])}, {held.num_levels} levels do not match the "
                         f"training file's {tuple(train_ds.event_shape)}, {train_ds.num_levels} levels")
    return dataclasses.replace(train_ds, test=test, labels_test=None)


def section_score(args) -> list[str]:
    """Each run scored on the held-out region by its recipe (what ``probgen nll`` prints), with the fit's summary."""
    from probgen import recipes
    from probgen.checkpoint import load
    from probgen.data import load_dataset

    out = Path(args.out)
    train_ds = load_dataset(out / "patches_train.npy")  # the fit's data set (seed 0: the CLI default)
    lines = [f"Held-out region: {len(_load(out)['test']):,} patches (`{out / 'patches_test.npy'}`), none overlapping "
             "a training patch", "",
             "| run | model | printed by `fit` (random 10 % of the training region) | held-out region | scoring wall |",
             "|---|---|---|---|---|"]
    for run in args.runs:
        torch.manual_seed(0)
        model = load(run, map_location="cpu").eval()
        recipe = recipes.for_model(model)
        dataset, _ = recipe.prepare_dataset(_held_out(out, train_ds))
        recipe.check_data(model, dataset)
        t0 = time.perf_counter()
        report = recipe.evaluate(model, dataset, num_points=args.num_test)
        seconds = time.perf_counter() - t0
        held = "; ".join(f"{k} {v['value']:.3f} ± {v.get('stderr', float('nan')):.3f}" for k, v in report.items()
                         if "bits/dim" in k or v.get("unit") == "bits/dim")
        fitted = ""
        summary = Path(run) / "summary.json"
        if summary.exists():
            metrics = json.loads(summary.read_text()).get("metrics", {})
            fitted = "; ".join(f"{k} {v['value']:.3f} ± {v.get('stderr', float('nan')):.3f}"
                               for k, v in metrics.items() if isinstance(v, dict) and "bits/dim" in k)
        lines.append(f"| `{run}` | {recipe.describe(model)} | {fitted or '—'} | {held} | {seconds:.0f} s |")
    return lines


def section_figure(args) -> list[str]:
    """One panel of held-out patches and one of samples per run (each drawn by its recipe, as ``probgen sample``
    draws them, seed 0), side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from probgen import recipes
    from probgen.checkpoint import load
    from probgen.diagnostics.plots import image_grid

    out = Path(args.out)
    n = args.num_images
    held = torch.from_numpy(_load(out)["test"][:: max(1, len(_load(out)["test"]) // n)][:n]).permute(0, 3, 1, 2)
    panels = [("held-out patches", held.float() * 2 / (LEVELS - 1) - 1)]
    t0 = time.perf_counter()
    for run in args.runs:
        torch.manual_seed(0)
        model = load(run, map_location="cpu").eval()
        recipe = recipes.for_model(model)
        panels.append((f"{Path(run).name}", recipe.sample(model, n).clamp(-1, 1)))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
    for ax, (title, images) in zip(np.atleast_1d(axes), panels):
        image_grid(images, nrow=int(math.sqrt(n)), ax=ax, title=title)
    fig.tight_layout()
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=110)
    return [f"wrote {args.figure}: {len(panels)} panels of {n} images ({time.perf_counter() - t0:.0f} s)"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--section", choices=SECTIONS, default="make")
    p.add_argument("--out", default="runs/colour", help="folder of the patch files")
    p.add_argument("--stride", type=int, default=8)
    p.add_argument("--test-cols", type=int, default=128)
    p.add_argument("--runs", nargs="*", default=[], help="score: folders written by `probgen fit`")
    p.add_argument("--num-test", type=int, default=None, help="score: held-out patches per run (default: all; "
                   "DDPM: its recipe's default)")
    p.add_argument("--figure", default="docs/figures/colour_patches.png", help="figure: the PNG written")
    p.add_argument("--num-images", type=int, default=16, help="figure: images per panel")
    p.add_argument("--output", default=None, help="also append the Markdown lines to this file")
    args = p.parse_args(argv)
    sections = {"make": section_make, "baseline": section_baseline, "score": section_score, "figure": section_figure}
    lines = sections[args.section](args)
    text = "\n".join(lines)
    print(text)
    if args.output:
        with open(args.output, "a", encoding="utf-8") as handle:
            handle.write(text + "\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
