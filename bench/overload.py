"""Goodput under overload: ``python -m bench.overload`` (also ``python -m bench.http --overload``).

In one run, against ``python -m service serve`` on the committed models (default settings):

1. within capacity: ``--base-clients`` clients (``hey``) each ask ``/sample`` for ``--n`` rows of the
   default model, as many rows as the engine advances together, for ``--base-seconds``: the samples/s
   the service sustains when nobody is refused;
2. overload: ``--clients`` clients ask the same for ``--seconds``, far past the engine's active and
   queued rows. ``hey`` retries at once, ignoring ``Retry-After``: the worst case for a server.
   Meanwhile a checker reads a sample of the refusals with httpx and checks each is a 503
   problem+json with a ``Retry-After`` within the configured bounds.

Printed: samples/s in 200 responses in both phases and their ratio (target: at least 80%), the
status counts, the slowest accepted request against the request timeout, the Retry-After values
seen, and the server's own counters (every 200 an engine ``ok``, every 503 a ``rejected``).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
from collections import Counter
from pathlib import Path

import httpx
import orjson

from .hey import Body, HeyResult, run_hey
from .loadtest import engine_outcomes
from .server import REPO, Server

__all__ = ["run_overload"]


def _check_refusals(url: str, body: bytes, stop: threading.Event, seen: Counter[str]) -> None:
    """Sample answers during the overload; record every 503's shape and Retry-After."""

    async def go() -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            while not stop.is_set():
                r = await client.post(
                    f"{url}/sample", content=body, headers={"content-type": "application/json"}
                )
                if r.status_code != 503:
                    seen[f"status {r.status_code}"] += 1
                    continue
                ok = r.headers.get("content-type", "").startswith("application/problem+json")
                ok = ok and r.json().get("status") == 503 and "retry-after" in r.headers
                seen["503 problem+json with Retry-After" if ok else "503 malformed"] += 1
                if "retry-after" in r.headers:
                    seen[f"Retry-After: {r.headers['retry-after']}"] += 1
                await asyncio.sleep(0.05)

    asyncio.run(go())


def _samples_per_s(r: HeyResult, n: int) -> float:
    return r.count(200) * n / r.seconds


def run_overload(
    model_dir: Path,
    *,
    seconds: float = 30.0,
    clients: int = 256,
    n: int = 64,
    base_clients: int = 16,
    base_seconds: float = 15.0,
    timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
) -> list[str]:
    """Both phases against one server; returns the report lines (also printed)."""
    body = orjson.dumps({"n": n})
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory() as tmp, Server(model_dir, Path(tmp) / "server.log", env=env) as server:
        url = f"{server.url}/sample"
        req = Body(body, "application/json")
        run_hey(url, req, clients=base_clients, seconds=3)  # warm
        base = run_hey(url, req, clients=base_clients, seconds=base_seconds, server_pid=server.pid)
        before = engine_outcomes(server.url)
        stop, seen = threading.Event(), Counter[str]()
        checker = threading.Thread(target=_check_refusals, args=(server.url, body, stop, seen))
        checker.start()
        try:
            over = run_hey(
                url,
                req,
                clients=clients,
                seconds=seconds,
                server_pid=server.pid,
                timeout_s=int(timeout_s) + 30,
            )
        finally:
            stop.set()
            checker.join()
        after = engine_outcomes(server.url)
    good_base, good_over = _samples_per_s(base, n), _samples_per_s(over, n)
    ok_lat = over.latencies  # every request's latency; the slowest 200 bounds the accepted ones
    slowest = float(ok_lat.max()) if ok_lat.size else 0.0
    ratio = good_over / good_base if good_base else 0.0
    say(f"## Goodput under overload (default model, n={n} per request)")
    say("")
    say(
        f"- within capacity ({base_clients} clients, {base_seconds:g} s): {good_base:,.0f} samples/s in 200s "
        f"(p50 {base.pct_ms(50):,.0f} ms, p99 {base.pct_ms(99):,.0f} ms)"
    )
    say(
        f"- overload ({clients} clients, {seconds:g} s): {good_over:,.0f} samples/s in 200s = {ratio:.0%} "
        f"of within capacity (target 80%): {'met' if ratio >= 0.8 else 'MISSED'}"
    )
    say(f"- overload statuses: {dict(sorted(over.statuses.items()))}; server cores busy {over.cores:.2f}")
    verdict = "met" if slowest <= timeout_s else "MISSED"
    say(f"- slowest request during overload: {slowest:.1f} s (request timeout {timeout_s:g} s): {verdict}")
    say(f"- refusals checked by a side client: {dict(seen)}")
    delta = {k: after[k] - before.get(k, 0) for k in after}
    say(f"- server counters during overload (made_engine_requests): {delta}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=REPO / "models")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--clients", type=int, default=256)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--base-clients", type=int, default=16)
    p.add_argument("--base-seconds", type=float, default=15.0)
    p.add_argument("--env", nargs="*", default=[], metavar="MADE_X=V", help="server settings for this run")
    args = p.parse_args()
    run_overload(
        args.model_dir,
        seconds=args.seconds,
        clients=args.clients,
        n=args.n,
        base_clients=args.base_clients,
        base_seconds=args.base_seconds,
        env=dict(kv.split("=", 1) for kv in args.env),
    )


if __name__ == "__main__":
    main()
