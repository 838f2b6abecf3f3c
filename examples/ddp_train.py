"""Data-parallel training with torchrun: one model, several processes, the same result as one process.

Trains a 2-D normalizing flow on ``8gaussians`` with :func:`probgen.fit` under
``torch.nn.parallel.DistributedDataParallel``. ``fit`` initialises the process group from torchrun's
environment (gloo on CPU, NCCL on CUDA), shards each global batch of ``--batch-size`` rows across the
ranks, averages the gradients, and writes the checkpoint from rank 0 only.

Usage::

    # 2 CPU processes (gloo); under a minute on a laptop
    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py --steps 300 --out runs/ddp-flow

    # every GPU of one machine (NCCL), one process per GPU
    torchrun --standalone --nproc_per_node=gpu examples/ddp_train.py --device cuda --steps 3000

    # two machines (run on each, same --rdzv-endpoint)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        examples/ddp_train.py --device cuda --out /shared/runs/ddp-flow

    # interrupted? the same command with --resume continues exactly where it stopped
    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py --steps 300 --out runs/ddp-flow --resume

    # without torchrun it is an ordinary single-process run (same loss trajectory up to rounding)
    python examples/ddp_train.py --steps 300
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import probgen as pg
from probgen import distributed
from probgen.flows import Flow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=512, help="the global batch, over all ranks")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--kind", default="realnvp")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (each rank uses cuda:LOCAL_RANK)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/ddp-flow")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    # optional: fit would do this itself; done here so that rank is known before training
    distributed.init_from_env(device=args.device)
    rank, world_size = distributed.rank_and_world_size()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))

    data = pg.data.load_dataset("8gaussians", seed=args.seed)
    torch.manual_seed(args.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = Flow(2, args.kind)
    start = time.perf_counter()
    history = pg.fit(model, data.train, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                     device=args.device, checkpoint=os.path.join(args.out, "checkpoint.pt"), resume=args.resume,
                     progress=rank == 0)
    seconds = time.perf_counter() - start

    if rank == 0:
        model.eval()
        with torch.no_grad():
            nll = -model.log_prob(data.test[:5000].to(next(model.parameters()).device)).mean().item()
        entropy = data.entropy[0] if data.entropy is not None else float("nan")
        print(f"{world_size} process(es), global batch {args.batch_size} ({args.batch_size // world_size} rows per "
              f"rank), {history.steps_done} steps in {seconds:.1f} s; final loss {history.final_loss:.4f}; test NLL "
              f"{nll:.4f} nats (true entropy {entropy:.4f}); checkpoint in {args.out}")
    distributed.barrier()
    distributed.cleanup()


if __name__ == "__main__":
    main()
