"""Train the MNIST classifier shipped in ``probgen/metrics/weights/`` (reproducible, CPU, one thread).

Usage::

    python scripts/train_mnist_classifier.py --data-dir DIR [--epochs 3] [--seed 0] [--out probgen/metrics/weights]

Trains :class:`probgen.metrics.mnist_net.MnistClassifier` on MNIST's 60,000 training images (read from
``DIR`` by :func:`probgen.data.load_dataset`, scaled to ``[-1, 1]``) with light augmentation — a random shift of up to
two pixels (background-padded) and Gaussian pixel noise of a random scale in ``[0, 0.2]`` — so the features
stay stable on imperfect generated samples. Adam, cosine learning rate, cross-entropy, one thread, fixed seed.
Reports the accuracy on the 10,000 test images, refuses to write weights below 98%, and writes
``mnist_classifier.pt`` (a plain float32 ``state_dict``) and ``mnist_classifier.json`` (accuracy, seed,
command, date, torch version, training time).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import probgen as pg
from probgen.metrics.mnist_net import MnistClassifier

MIN_ACCURACY = 0.98
MAX_SHIFT = 2


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shift in {-2..2}² (padding with the background value -1) plus Gaussian noise."""
    b, _, h, w = x.shape
    s = MAX_SHIFT
    padded = F.pad(x, (s, s, s, s), value=-1.0)
    dx = torch.randint(0, 2 * s + 1, (b,), generator=g)
    dy = torch.randint(0, 2 * s + 1, (b,), generator=g)
    rows = (dy.view(b, 1) + torch.arange(h)).view(b, 1, h, 1).expand(b, 1, h, w + 2 * s)
    shifted = padded.gather(2, rows)
    cols = (dx.view(b, 1) + torch.arange(w)).view(b, 1, 1, w).expand(b, 1, h, w)
    shifted = shifted.gather(3, cols)
    scale = 0.2 * torch.rand(b, 1, 1, 1, generator=g)
    return shifted + scale * torch.randn(shifted.shape, generator=g)


def accuracy(net: MnistClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        return float(torch.cat([net(c).argmax(-1) for c in x.split(1000)]).eq(y).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder of the MNIST files (default: $PROBGEN_DATA_DIR)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "probgen" / "metrics" / "weights"
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    ds = pg.data.load_dataset("mnist", data_dir=args.data_dir)
    x_train, y_train, x_test, y_test = ds.train, ds.labels_train, ds.test, ds.labels_test

    net = MnistClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=1e-4)
    n = x_train.shape[0]
    steps = args.epochs * ((n + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    start = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for i in range(0, n, args.batch_size):
            idx = perm[i : i + args.batch_size]
            loss = F.cross_entropy(net(augment(x_train[idx], g)), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * idx.numel()
        print(f"epoch {epoch + 1:3d}  train loss {total / n:.4f}  test accuracy {accuracy(net, x_test, y_test):.4f}"
              f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    elapsed = time.perf_counter() - start
    acc = accuracy(net, x_test, y_test)
    print(f"test accuracy {acc:.4f} on {x_test.shape[0]} images ({elapsed:.1f} s)")
    if acc < MIN_ACCURACY:
        print(f"accuracy below {MIN_ACCURACY:.0%}; weights not written", file=sys.stderr)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in net.state_dict().items()}
    torch.save(state, args.out / "mnist_classifier.pt")
    info = {
        "test_accuracy": round(acc, 6),
        "num_test": int(x_test.shape[0]),
        "num_train": int(n),
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "augmentation": f"random shift in {{-{MAX_SHIFT}..{MAX_SHIFT}}}^2 (background padded) + N(0, s^2) noise, "
                        "s ~ U[0, 0.2]",
        "command": " ".join(["python scripts/train_mnist_classifier.py",
                             *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "train_seconds": round(elapsed, 1),
    }
    (args.out / "mnist_classifier.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.out / 'mnist_classifier.pt'} and {args.out / 'mnist_classifier.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
