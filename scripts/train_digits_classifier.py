"""Train the digits classifier shipped in ``probgen/metrics/weights/`` (reproducible, CPU, < 2 min).

Usage::

    python scripts/train_digits_classifier.py [--epochs 60] [--seed 0] [--out probgen/metrics/weights]

Trains :class:`probgen.metrics.classifier.DigitsClassifier` on the fixed train split of
:func:`probgen.data.digits` (1,433 images scaled to ``[-1, 1]``) with light augmentation — a random shift
of up to one pixel (background-padded) and Gaussian pixel noise of a random scale in ``[0, 0.2]`` — so the
features stay stable on imperfect generated samples. Adam, cross-entropy, one thread, fixed seed.
Reports the test accuracy on the 364 held-out images, refuses to write weights below 95%, and writes
``digits_classifier.pt`` (a plain float32 ``state_dict``) and ``digits_classifier.json`` (accuracy, seed,
command, date, torch version).
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

from probgen.data import digits
from probgen.metrics.classifier import DigitsClassifier

MIN_ACCURACY = 0.95


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shift in {-1, 0, 1}² (padding with the background value -1) plus Gaussian noise."""
    b = x.shape[0]
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)  # (B, 1, 10, 10)
    dx = torch.randint(0, 3, (b,), generator=g)
    dy = torch.randint(0, 3, (b,), generator=g)
    rows = (dy.view(b, 1) + torch.arange(8)).view(b, 1, 8, 1).expand(b, 1, 8, 10)
    shifted = padded.gather(2, rows)
    cols = (dx.view(b, 1) + torch.arange(8)).view(b, 1, 1, 8).expand(b, 1, 8, 8)
    shifted = shifted.gather(3, cols)
    scale = 0.2 * torch.rand(b, 1, 1, 1, generator=g)
    return shifted + scale * torch.randn(shifted.shape, generator=g)


def accuracy(net: DigitsClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        return float((net(x).argmax(-1) == y).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "probgen" / "metrics" / "weights"
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    x_train, y_train = digits("train")
    x_test, y_test = digits("test")

    net = DigitsClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    start = time.perf_counter()
    n = x_train.shape[0]
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
            total += loss.item() * idx.numel()
        sched.step()
        if (epoch + 1) % 10 == 0 or epoch == args.epochs - 1:
            print(
                f"epoch {epoch + 1:3d}  train loss {total / n:.4f}  test accuracy {accuracy(net, x_test, y_test):.4f}"
            )
    elapsed = time.perf_counter() - start
    acc = accuracy(net, x_test, y_test)
    print(f"test accuracy {acc:.4f} on {x_test.shape[0]} images ({elapsed:.1f} s)")
    if acc < MIN_ACCURACY:
        print(f"accuracy below {MIN_ACCURACY:.0%}; weights not written", file=sys.stderr)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in net.state_dict().items()}
    torch.save(state, args.out / "digits_classifier.pt")
    info = {
        "test_accuracy": round(acc, 6),
        "num_test": int(x_test.shape[0]),
        "num_train": int(x_train.shape[0]),
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "augmentation": "random shift in {-1,0,1}^2 (background padded) + N(0, s^2) noise, s ~ U[0, 0.2]",
        "command": " ".join(["python scripts/train_digits_classifier.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "train_seconds": round(elapsed, 1),
    }
    (args.out / "digits_classifier.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.out / 'digits_classifier.pt'} and {args.out / 'digits_classifier.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
