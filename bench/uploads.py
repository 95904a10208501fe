"""Large uploads beside steady /sample traffic: what a burst of 4096 x 4096 PNG resize uploads costs.

    python -m bench.uploads                 # ~40 s: three phases of --seconds each
    python -m bench.uploads --seconds 5     # shorter

A real server (bench.server.Server) with a seeded random 28 x 28 binary MADE. Phase ``alone``:
``--clients`` clients loop over ``/sample`` (n=1) and the rate is measured. Phase ``burst``: the same
clients, plus ``--uploaders`` clients each posting ``--files`` copies of a 4096 x 4096 PNG to
``/log-prob?resize=true`` in a loop (the service's default pixel limits apply, so a request of more
than one such file is refused with a 422 naming MADE_MAX_DECODED_PIXELS, and one of one file is
decoded). Phase ``after``: /sample alone again. Prints the /sample rate of each phase, the upload
statuses and their mean latency, and the server's CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from .server import Server, make_model


def big_png(side: int = 4096) -> bytes:
    """A 4096 x 4096 gray PNG of a few strokes: small on the wire (tens of kB), 16.8 M pixels decoded."""
    img = np.zeros((side, side), dtype=np.uint8)
    img[side // 4 : side // 4 + side // 16, side // 8 : -side // 8] = 255
    img[:, side // 2 : side // 2 + side // 32] = 255
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sampler(client: httpx.AsyncClient, stop: float, done: Counter[str]) -> None:
    while time.monotonic() < stop:
        r = await client.post("/sample", json={"n": 1})
        done[str(r.status_code)] += 1


async def uploader(
    client: httpx.AsyncClient,
    stop: float,
    files: list[tuple[str, tuple[str, bytes, str]]],
    out: list[tuple[int, float]],
) -> None:
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        r = await client.post("/log-prob", files=files, params={"resize": True}, timeout=120)
        out.append((r.status_code, time.perf_counter() - t0))


async def phase(
    url: str, seconds: float, clients: int, uploaders: int, files: int, png: bytes
) -> dict[str, object]:
    limits = httpx.Limits(max_connections=clients + uploaders + 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, trust_env=False) as client:
        stop = time.monotonic() + seconds
        done: Counter[str] = Counter()
        uploads: list[tuple[int, float]] = []
        payload = [("files", (f"{i}.png", png, "image/png")) for i in range(files)]
        await asyncio.gather(
            *(sampler(client, stop, done) for _ in range(clients)),
            *(uploader(client, stop, payload, uploads) for _ in range(uploaders)),
        )
    statuses = Counter(s for s, _ in uploads)
    mean = sum(t for _, t in uploads) / len(uploads) if uploads else 0.0
    return {
        "sample_per_s": done["200"] / seconds,
        "sample_other": sum(done.values()) - done["200"],
        "uploads": dict(statuses),
        "upload_mean_s": mean,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--clients", type=int, default=8, help="/sample clients")
    parser.add_argument("--uploaders", type=int, default=4)
    parser.add_argument("--files", type=int, default=1, help="4096 x 4096 PNGs per upload request")
    args = parser.parse_args()
    png = big_png()
    print(f"PNG: 4096x4096, {len(png)} bytes")
    with tempfile.TemporaryDirectory() as tmp:
        make_model(Path(tmp) / "m", (28, 28), (500,), seed=0)
        with Server(Path(tmp), Path(tmp) / "server.log", {"MADE_DEFAULT_MODEL": "m"}) as server:
            for name, uploaders in (("alone", 0), ("burst", args.uploaders), ("after", 0)):
                cpu0 = cpu_seconds(server.pid)
                result = asyncio.run(
                    phase(server.url, args.seconds, args.clients, uploaders, args.files, png)
                )
                cpu = cpu_seconds(server.pid) - cpu0
                print(f"{name:>6}: {result}, server CPU {cpu:.1f} s in {args.seconds:.0f} s")


if __name__ == "__main__":
    main()
