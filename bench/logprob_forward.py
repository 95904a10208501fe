"""The log-prob forward pass, torch against the nogil kernel, alone and beside a busy event loop.

``python -m bench.logprob_forward [--model models/mnist-fast]``: per batch size, the best and median
time of ``log_prob_batch`` through torch and through :class:`service.engine.logprob_kernel.NogilLogProb`
on the same rows; then the largest batch again in a worker thread while the main thread spins in
Python, as the event loop does under load. The two must agree (printed: the largest difference).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `python -m service serve` sets it
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from service.engine.logprob import log_prob_batch
from service.engine.logprob_kernel import NogilLogProb
from service.made import load_model


def timed(f: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best and median milliseconds of ``repeats`` calls."""
    spent = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        spent.append(time.perf_counter() - t0)
    return min(spent) * 1e3, float(np.median(spent)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=Path("models/mnist-fast"))
    ap.add_argument("--rows", default="1,4,8,16,31", help="comma-separated batch sizes")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    model, _ = load_model(args.model, verify=False)
    model.eval().keep_masked_weights()
    kernel = NogilLogProb(model)
    sizes = [int(s) for s in args.rows.split(",")]
    x = np.random.default_rng(0).integers(0, 2, (max(sizes), model.data_dim)).astype(np.float64)
    diff = np.abs(log_prob_batch(model, x, True, kernel)[1] - log_prob_batch(model, x, True)[1]).max()  # type: ignore[operator]
    print(f"{args.model.name}: largest difference per dimension {diff:.2e} nats")
    print("| rows | torch best / median ms | nogil best / median ms |\n| --- | --- | --- |")
    for b in sizes:
        xb = x[:b]
        t = timed(lambda: log_prob_batch(model, xb, False), args.repeats)  # noqa: B023
        k = timed(lambda: log_prob_batch(model, xb, False, kernel), args.repeats)  # noqa: B023
        print(f"| {b} | {t[0]:.2f} / {t[1]:.2f} | {k[0]:.2f} / {k[1]:.2f} |")
    got: dict[str, tuple[float, float]] = {}

    def worker() -> None:
        got["torch"] = timed(lambda: log_prob_batch(model, x, False), args.repeats)
        got["nogil"] = timed(lambda: log_prob_batch(model, x, False, kernel), args.repeats)

    th = threading.Thread(target=worker)
    th.start()
    while th.is_alive():  # the main thread holds the GIL but for the forced switches
        sum(range(100))
    print(
        f"{len(x)} rows in a worker beside a spinning main thread: torch {got['torch'][0]:.2f} / "
        f"{got['torch'][1]:.2f} ms, nogil {got['nogil'][0]:.2f} / {got['nogil'][1]:.2f} ms (best / median)"
    )


if __name__ == "__main__":
    main()
