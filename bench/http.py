"""The serving path against its floor: ``python -m bench.http`` (or ``make bench-http``).

In one run, on this machine: the service (``python -m service serve`` on the committed ``models/``,
default settings) and the floor app of :mod:`bench.floor` (same body validation, canned responses,
the same uvicorn settings) are both started, and ``hey`` drives each case against the floor and then
the service, alternately, so both see the same machine. Printed per case: requests/s, p50 and p99,
the service's share of the floor's rate, the cores the server process kept busy, and the share of one core
its busiest thread kept (the event loop, holding the GIL: near 1.0, that thread sets the rate).

Cases: ``/sample`` n=1 on a fast model and on the default model, ``/log-prob`` of one image as JSON,
``/complete`` of a face (n=1) answered as PNG, ``/log-prob`` of one uploaded PNG, all with
``--clients`` concurrent clients, and ``/sample`` n=1 from one client alone. The engine's own
one-sample time (sequential ``Engine.sample(1)`` in this process) is measured in the same run: a lone
client's p50 target is the floor's p50 plus that time plus 1 ms.

``--overload`` adds the goodput check (:mod:`bench.overload`). ``--out FILE`` writes Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from PIL import Image

from .hey import Body, HeyResult, ensure_hey, run_hey
from .server import REPO, Server, free_port

__all__ = ["Case", "cases", "engine_one_sample_ms", "main"]

JSON = "application/json"


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: Body
    clients: int


def _multipart(field: str, filename: str, data: bytes) -> Body:
    boundary = "made-bench-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return Body(head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}")


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def cases(fast_model: str, clients: int) -> list[Case]:
    """The measured requests (bodies built from seeded random images of the models' sizes)."""
    rng = np.random.default_rng(0)
    digit = rng.integers(0, 2, (28, 28))
    face = rng.integers(0, 256, (64, 64))

    def js(obj: object) -> Body:
        return Body(orjson.dumps(obj), JSON)

    one = js({"model": fast_model, "n": 1})
    return [
        Case(f"/sample n=1 ({fast_model})", "/sample", one, clients),
        Case("/sample n=1 (default model)", "/sample", js({"n": 1}), clients),
        Case(
            f"/log-prob, 1 image as JSON ({fast_model})",
            "/log-prob",
            js({"model": fast_model, "inputs": [digit.tolist()]}),
            clients,
        ),
        Case(
            "/log-prob, 1 image as JSON (default model)",
            "/log-prob",
            js({"inputs": [digit.tolist()]}),
            clients,
        ),
        Case(
            "/complete faces n=1 as PNG",
            "/complete",
            js({"model": "faces", "inputs": [face.tolist()], "n": 1, "seed": 1, "format": "png"}),
            clients,
        ),
        Case(
            f"/log-prob, 1 PNG upload ({fast_model})",
            f"/log-prob?model={fast_model}",
            _multipart("files", "d.png", _png(digit * 255)),
            clients,
        ),
        Case(f"/sample n=1 ({fast_model}), 1 client", "/sample", one, 1),
    ]


def engine_one_sample_ms(model_dir: Path, name: str, requests: int = 300, device: str = "cpu") -> float:
    """p50 of sequential ``Engine.sample(1)`` calls on one model, in this process (default config)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from service.engine import Engine, EngineConfig
    from service.made import load_model

    torch.set_grad_enabled(False)
    model, _ = load_model(model_dir / name, verify=False)
    model = model.to(device)

    async def go() -> float:
        engine = Engine(model, EngineConfig(), name)
        await engine.start()
        try:
            for s in range(20):
                await engine.sample(1, s)
            lat = []
            for s in range(requests):
                t0 = time.perf_counter()
                await engine.sample(1, 100 + s)
                lat.append(time.perf_counter() - t0)
        finally:
            await engine.stop()
        return float(np.median(lat) * 1e3)

    return asyncio.run(go())


class Floor:
    """``python -m bench.floor`` on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Floor:
        cmd = [sys.executable, "-m", "bench.floor", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import httpx

        for _ in range(300):
            try:
                httpx.post(f"{self.url}/sample", content=b"{}", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("floor app did not start")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def _check_ok(name: str, who: str, r: HeyResult) -> None:
    bad = {s: c for s, c in r.statuses.items() if s != 200}
    if bad:
        raise SystemExit(f"{who} answered {bad} (not 200) on {name}")


def measure(
    args: argparse.Namespace, server_env: dict[str, str] | None = None
) -> list[tuple[Case, HeyResult, HeyResult]]:
    """Every case against the floor, then the service, in turn (``server_env``: extra ``MADE_*``
    settings, e.g. ``MADE_DEVICE=cuda``)."""
    ensure_hey()
    rows = []
    env = {"OMP_NUM_THREADS": str(os.cpu_count()), "NUMBA_NUM_THREADS": str(os.cpu_count())}
    env.update(server_env or {})
    with (
        tempfile.TemporaryDirectory() as tmp,
        Floor() as floor,
        Server(args.model_dir, Path(tmp) / "server.log", env=env) as server,
    ):
        for case in cases(args.fast_model, args.clients):
            if args.only and not any(k in case.name for k in args.only.split(",")):
                continue
            for who, url, pid in (("floor", floor.url, floor.pid), ("service", server.url, server.pid)):
                run_hey(url + case.path, case.body, clients=case.clients, seconds=2)  # warm
                r = run_hey(
                    url + case.path, case.body, clients=case.clients, seconds=args.seconds, server_pid=pid
                )
                _check_ok(case.name, who, r)
                if who == "floor":
                    f = r
            rows.append((case, f, r))
            print(table_line(case, f, r), flush=True)
    return rows


def table_line(case: Case, f: HeyResult, s: HeyResult) -> str:
    """One case's row of :data:`HEADER`'s table."""
    return (
        f"| {case.name} | {case.clients} | {s.rate:,.0f} | {s.pct_ms(50):.2f} / {s.pct_ms(99):.2f} | "
        f"{f.rate:,.0f} | {f.pct_ms(50):.2f} / {f.pct_ms(99):.2f} | {s.rate / f.rate:.0%} | "
        f"{s.cores:.2f} / {f.cores:.2f} | {s.busiest_thread_cores:.2f} / {f.busiest_thread_cores:.2f} |"
    )


HEADER = (
    "| case | clients | service req/s | service p50 / p99 ms | floor req/s | floor p50 / p99 ms | "
    "service / floor | cores busy (service / floor) | busiest thread (service / floor) |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def targets(rows: list[tuple[Case, HeyResult, HeyResult]], engine_ms: float, fast: str) -> list[str]:
    """The issue's targets, each with its verdict."""
    out = []
    by = {c.name: (f, s) for c, f, s in rows}
    for name in (f"/sample n=1 ({fast})", f"/log-prob, 1 image as JSON ({fast})"):
        f, s = by[name]
        share = s.rate / f.rate
        out.append(
            f"- {name}: {share:.1%} of the floor's req/s (target 40%): {'met' if share >= 0.4 else 'MISSED'}"
        )
    f, s = by[f"/sample n=1 ({fast}), 1 client"]
    bound = f.pct_ms(50) + engine_ms + 1.0
    verdict = "met" if s.pct_ms(50) <= bound else "MISSED"
    out.append(
        f"- one client alone: p50 {s.pct_ms(50):.2f} ms against floor {f.pct_ms(50):.2f} ms + engine "
        f"{engine_ms:.2f} ms + 1 ms = {bound:.2f} ms: {verdict}"
    )
    return out


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=REPO / "models")
    p.add_argument("--fast-model", default="mnist-fast")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each hey run")
    p.add_argument("--only", help="comma-separated substrings: run only the cases whose name has one")
    p.add_argument("--overload", action="store_true", help="also run bench.overload's goodput check")
    p.add_argument("--out", type=Path, help="also write the figures as Markdown here")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="MADE_X=V",
        help="a server setting (repeatable), e.g. MADE_ENGINE_PROCESS=true for the split",
    )
    args = p.parse_args()
    server_env = dict(kv.split("=", 1) for kv in args.env)
    engine_ms = engine_one_sample_ms(args.model_dir, args.fast_model)
    print(f"engine alone, {args.fast_model}, one sample: p50 {engine_ms:.3f} ms")
    print(HEADER, flush=True)
    rows = measure(args, server_env)
    verdicts = targets(rows, engine_ms, args.fast_model) if not args.only else []
    print("\n".join(verdicts))
    extra: list[str] = []
    if args.overload:
        from .overload import run_overload

        extra = run_overload(args.model_dir, seconds=30.0)
    if args.out:
        lines = [
            "# Serving path: the service against its floor",
            "",
            f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
            f"- machine: {cpu_name()}, {os.cpu_count()} CPUs",
            f"- command: `python -m bench.http {' '.join(sys.argv[1:])}`",
            f"- engine alone ({args.fast_model}, one sample, sequential): p50 {engine_ms:.3f} ms",
            "",
            HEADER,
            *(table_line(c, f, s) for c, f, s in rows),
            "",
            *verdicts,
            *extra,
            "",
        ]
        args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
