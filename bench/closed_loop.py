"""The engine under a closed loop of callers that also spend Python time per request:
``python -m bench.closed_loop``.

``hey`` with 32 clients is a closed loop: each client sends its next request when the last is answered.
Here 32 in-process callers do the same against :class:`service.engine.Engine` alone (no HTTP), and
after each answer each one holds the event loop for ``--python-ms`` (a busy wait), standing in for the
Python an HTTP request costs around the engine. With 0 this is the engine's own rate; the rows show
how much of each request's Python time the engine's work overlaps. If the two overlapped fully, the
rate would be the lower of the engine's own rate and ``1 / python_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

import uvloop

from service.engine import Engine, EngineConfig
from service.made import load_model

from .server import REPO

__all__ = ["closed_loop", "main"]


async def closed_loop(
    folder: Path, clients: int, seconds: float, python_ms: float, backend: str = "auto"
) -> tuple[float, float, int]:
    """Requests per second, cores busy (process CPU over wall time) and chunks run."""
    model, _ = load_model(folder, verify=False)
    engine = Engine(model, EngineConfig(backend=backend), folder.name)
    await engine.start()
    try:
        for i in range(20):  # warm: compiled kernels, a first rate estimate
            await engine.sample(1, i)
        done = 0
        stop = time.monotonic() + seconds

        async def caller(k: int) -> None:
            nonlocal done
            while time.monotonic() < stop:
                await engine.sample(1, k * 1_000_003 + done)
                until = time.perf_counter() + python_ms / 1000.0
                while time.perf_counter() < until:  # the request's own Python, on the event loop
                    pass
                done += 1

        chunks0, cpu0, t0 = engine.stats().chunks_run, time.process_time(), time.monotonic()
        await asyncio.gather(*(caller(k) for k in range(clients)))
        wall = time.monotonic() - t0
        return done / wall, (time.process_time() - cpu0) / wall, engine.stats().chunks_run - chunks0
    finally:
        await engine.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "mnist-fast")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--python-ms", default="0,0.3,0.6", help="comma-separated Python ms per request")
    p.add_argument("--backends", default="numba,stream", help="comma-separated engine backends")
    args = p.parse_args()
    print(f"{args.model.name}, {args.clients} callers, {args.seconds:g} s each, {os.cpu_count()} CPUs")
    print("| backend | Python per request (ms) | requests/s | if fully overlapped | cores busy | chunks |")
    print("| --- | --- | --- | --- | --- | --- |")
    for ms in (float(v) for v in args.python_ms.split(",")):
        for backend in args.backends.split(","):
            rate, cores, chunks = uvloop.run(closed_loop(args.model, args.clients, args.seconds, ms, backend))
            bound = "engine's own" if ms == 0 else f"<= {1000.0 / ms:,.0f}"
            print(f"| {backend} | {ms:g} | {rate:,.0f} | {bound} | {cores:.2f} | {chunks} |")


if __name__ == "__main__":
    main()
