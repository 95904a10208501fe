"""Driving a server with ``hey`` (Debian's package, a Go load generator) and reading back its figures.

``hey`` is installed with apt when missing. Its CSV output (``-o csv``: one row per request with its
latency and status) gives exact percentiles and status counts; the request rate is requests over the
wall time of the run. The server's CPU time is read from ``/proc`` around each run, so a figure says
how many cores the server kept busy.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Body", "HeyResult", "cpu_seconds", "ensure_hey", "run_hey"]


def ensure_hey() -> str:
    """The path of ``hey``, installing Debian's package first if it is missing (needs root)."""
    path = shutil.which("hey")
    if path:
        return path
    print("hey not found: installing Debian's package 'hey'")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "hey"], check=True, env=env)
    path = shutil.which("hey")
    if not path:
        raise RuntimeError("hey is still missing after apt-get install hey")
    return path


@dataclass(frozen=True)
class Body:
    """A request body and its Content-Type."""

    data: bytes
    content_type: str


@dataclass
class HeyResult:
    """One ``hey`` run: wall seconds, per-request latencies (s) and statuses, server CPU seconds."""

    seconds: float
    latencies: np.ndarray
    statuses: Counter[int] = field(default_factory=Counter)
    server_cpu_s: float = 0.0
    busiest_thread_s: float = 0.0  # CPU seconds of the server's busiest thread (its event loop, mostly)

    @property
    def requests(self) -> int:
        return int(self.latencies.size)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def pct_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1e3) if self.latencies.size else float("nan")

    @property
    def cores(self) -> float:
        """Cores the server kept busy on average during the run."""
        return self.server_cpu_s / self.seconds if self.seconds > 0 else 0.0

    @property
    def busiest_thread_cores(self) -> float:
        """Share of one core the server's busiest thread kept during the run: near 1.0, that thread
        (the event loop holding the GIL) is what limits the rate."""
        return self.busiest_thread_s / self.seconds if self.seconds > 0 else 0.0

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)


def _stat(pid: int, tid: int | None = None) -> list[str]:
    """The fields after the command name of ``/proc/PID/stat`` (or of one thread's, ``task/TID``)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    return Path(path).read_text().rsplit(")", 1)[1].split()


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the engine process and front-ends of a split server)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int(_stat(int(d.name))[1])
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        found += kids
        todo += kids
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads and every process below it
    (``/proc/PID/stat``)."""
    total = 0
    for p in (pid, *_descendants(pid)):
        try:
            fields = _stat(p)
        except OSError:  # gone meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[tuple[int, int], float]:
    """User + system CPU seconds of every thread of a process and of every process below it, keyed by
    ``(process, thread)`` (``/proc/PID/task/TID/stat``)."""
    out: dict[tuple[int, int], float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for p in (pid, *_descendants(pid)):
        try:
            tids = [int(t.name) for t in Path(f"/proc/{p}/task").iterdir()]
        except OSError:
            continue
        for t in tids:
            try:
                fields = _stat(p, t)
            except OSError:
                continue
            out[(p, t)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def busiest_delta(before: dict[tuple[int, int], float], after: dict[tuple[int, int], float]) -> float:
    """CPU seconds of the thread that used the most between two :func:`thread_cpu_seconds` readings.

    >>> busiest_delta({(1, 1): 2.0, (1, 2): 1.0}, {(1, 1): 2.5, (1, 2): 1.9, (1, 3): 0.1})
    0.9
    """
    return max((round(v - before.get(k, 0.0), 9) for k, v in after.items()), default=0.0)


def run_hey(
    url: str,
    body: Body,
    *,
    clients: int,
    seconds: float,
    server_pid: int | None = None,
    timeout_s: int = 120,
) -> HeyResult:
    """POST ``body`` to ``url`` from ``clients`` concurrent keep-alive connections for ``seconds``."""
    hey = ensure_hey()
    with tempfile.NamedTemporaryFile(suffix=".body") as f:
        f.write(body.data)
        f.flush()
        cmd = [
            hey, "-z", f"{seconds}s", "-c", str(clients), "-m", "POST", "-T", body.content_type,
            "-D", f.name, "-t", str(timeout_s), "-o", "csv", url,
        ]  # fmt: skip
        cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
        threads0 = thread_cpu_seconds(server_pid) if server_pid else {}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        cpu1 = cpu_seconds(server_pid) if server_pid else 0.0
        threads1 = thread_cpu_seconds(server_pid) if server_pid else {}
    rows = list(csv.DictReader(io.StringIO(out)))
    lat = np.array([float(r["response-time"]) for r in rows])
    # offset = when the request started, from the start of the run: the wall time is the last finish
    ends = [float(r["offset"]) + float(r["response-time"]) for r in rows]
    wall = max(ends) if ends else seconds
    statuses = Counter(int(r["status-code"]) for r in rows)
    return HeyResult(wall, lat, statuses, cpu1 - cpu0, busiest_delta(threads0, threads1))
