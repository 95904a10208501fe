"""Training-step benchmark (figures, not tests): ``python -m bench.train_step``.

Times one optimisation step of a single-layer MADE on 784 binary dimensions (forward, backward, Adam
update; batch of random pixels at MNIST's density) with Adam's fused kernel, which training uses, against
the for-loop Adam, measured in the same run. Prints ms per step, the implied seconds per epoch of 59,000
rows, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from service.made import MADE, MADEConfig


def time_step(hidden: int, batch: int, fused: bool, reps: int, dropout: float) -> float:
    """Median seconds per step after a short warm-up."""
    torch.manual_seed(0)
    model = MADE(MADEConfig(data_dim=784, hidden=(hidden,), direct=True)).train()
    model.set_dropout(dropout)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    x = (torch.rand(batch, 784) < 0.13).float()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        (-model.log_prob(x, 0).mean()).backward()
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", default="2000,4000,8000", help="widths to time, comma separated")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch}, dropout {args.dropout}, {args.threads} threads, torch {torch.__version__}")
    print(f"{'hidden':>7} | {'for-loop Adam':>22} | {'fused Adam':>22} | speed-up")
    for h in (int(w) for w in args.hidden.split(",")):
        ref = time_step(h, args.batch, False, args.reps, args.dropout)
        fast = time_step(h, args.batch, True, args.reps, args.dropout)
        per_epoch = 59_000 / args.batch
        print(
            f"{h:>7} | {ref * 1e3:7.1f} ms ({ref * per_epoch:4.0f} s/ep) | "
            f"{fast * 1e3:7.1f} ms ({fast * per_epoch:4.0f} s/ep) | {ref / fast:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
