"""Event-loop CPU per request of the whole app, without sockets: ``python -m bench.app_cost``.

The app (``create_app`` on the committed models, default settings, the usual lifespan) is called as an
ASGI callable by ``--clients`` concurrent in-process callers, each sending the same request in a loop;
no server, no load generator. It prints requests/s, the event-loop thread's CPU per request
(``time.thread_time``: the app's Python, the engine's admission and whatever runs inline) and the
wall time per request. Where the wall time is well above the CPU time, the event loop waited (for
the log-prob worker or the kernel threads) with nothing to do. ``--profile`` adds cProfile's table.
Over HTTP, uvicorn's parsing and the socket calls come on top (``bench.http``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging.config
import os
import pstats
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `python -m service serve` sets them
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import orjson
import uvloop
from starlette.types import Message

from service.api.app import create_app
from service.config import Settings
from service.logging import log_config
from service.made import read_card

PATHS = ("/log-prob", "/sample")


def body(path: str, model: str, shape: tuple[int, int]) -> bytes:
    """One sample, or the log-prob of one binary image (a fixed pattern) of the model's shape."""
    if path == "/sample":
        return orjson.dumps({"model": model, "n": 1})
    h, w = shape
    image = [[(r * w + c) % 3 % 2 for c in range(w)] for r in range(h)]
    return orjson.dumps({"model": model, "inputs": [image]})


async def drive(
    settings: Settings, path: str, body: bytes, clients: int, requests: int, profile: bool = False
) -> float:
    """Requests/s of ``path`` with ``body`` (printed with the CPU and wall time per request)."""
    app = create_app(settings)
    lifespan_in: asyncio.Queue[Message] = asyncio.Queue()
    lifespan_out: asyncio.Queue[Message] = asyncio.Queue()
    state: dict[str, Any] = {}
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    lifespan = asyncio.create_task(app(scope, lifespan_in.get, lifespan_out.put))  # type: ignore[arg-type]
    await lifespan_in.put({"type": "lifespan.startup"})
    started = await lifespan_out.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"start-up failed: {started}")
    headers = [
        (b"host", b"bench"),
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
    ]

    async def call() -> None:
        sent: list[Message] = []
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # no disconnect: the request is cancelled by its watcher
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            sent.append(message)

        request_scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": list(headers), "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": state,
        }  # fmt: skip
        await app(request_scope, receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"{path} answered {sent[0]['status']}: {sent[-1].get('body', b'')[:200]!r}")

    async def caller(n: int) -> None:
        for _ in range(n):
            await call()

    await asyncio.gather(*(caller(50) for _ in range(clients)))  # warm-up
    per = max(1, requests // clients)
    prof = cProfile.Profile() if profile else None
    t0, c0 = time.perf_counter(), time.thread_time()
    if prof:
        prof.enable()
    await asyncio.gather(*(caller(per) for _ in range(clients)))
    if prof:
        prof.disable()
    wall, cpu, n = time.perf_counter() - t0, time.thread_time() - c0, per * clients
    print(
        f"{path}: {n / wall:,.0f} req/s, event-loop CPU {cpu / n * 1e6:.0f} us a request, "
        f"wall {wall / n * 1e6:.0f} us a request ({clients} callers, {n} requests)"
    )
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    await lifespan_in.put({"type": "lifespan.shutdown"})
    await lifespan_out.get()
    await lifespan
    return n / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=Path("models"))
    ap.add_argument("--model", default="mnist-fast", help="a binary model of the repository")
    ap.add_argument("--path", choices=PATHS, action="append", help="default: every one")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=6400)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    config = log_config()  # the server's logging, access lines included, written to the null device
    config["handlers"]["default"]["stream"] = open(os.devnull, "w")  # noqa: SIM115
    logging.config.dictConfig(config)
    settings = Settings(model_dir=args.model_dir, default_model=args.model)
    shape = tuple(read_card(args.model_dir / args.model)["shape"])
    for path in args.path or PATHS:
        data = body(path, args.model, shape)  # type: ignore[arg-type]
        uvloop.run(drive(settings, path, data, args.clients, args.requests, args.profile))


if __name__ == "__main__":
    main()
