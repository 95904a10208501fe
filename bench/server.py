"""A real ``python -m service serve`` process on a free loopback port, for load and fault tests.

The server's log (JSON lines) goes to a file; :meth:`Server.rss_bytes` reads its resident memory from
``/proc``; :meth:`Server.terminate` sends SIGTERM and waits for the graceful drain. Also builds small
model repositories with seeded random weights, so nothing here needs data files.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from service.made import MADE, MADEConfig, save_model

__all__ = ["REPO", "Server", "free_port", "make_model", "rss_of"]

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(folder: Path, shape: tuple[int, int], hidden: tuple[int, ...], seed: int = 0) -> Path:
    """A binary MADE on ``shape`` images with random (seeded) weights, saved as a servable folder."""
    torch.manual_seed(seed)
    d = shape[0] * shape[1]
    model = MADE(MADEConfig(data_dim=d, hidden=hidden, distribution={"type": "bernoulli"}, mask_seed=seed))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)  # sharper than the init, so samples are not all coin flips
    return save_model(folder, model, {"name": folder.name, "shape": list(shape), "value_range": [0, 1]})


def rss_of(pid: int) -> int:
    """Resident set size of a process in bytes (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Server:
    """``python -m service serve`` with ``MADE_*`` settings from ``env``; a context manager."""

    def __init__(self, model_dir: Path, log_path: Path, env: dict[str, Any] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **os.environ,
            "MADE_MODEL_DIR": str(model_dir),
            "MADE_DEVICE": "cpu",
            "MADE_LOG_JSON": "true",
            "OMP_NUM_THREADS": "1",
            "NUMBA_NUM_THREADS": "1",
        }
        self.env.pop("MADE_API_KEY", None)
        self.env.update({k: str(v) for k, v in (env or {}).items()})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 180.0) -> Server:
        """Start and wait until ``/v2/health/ready`` answers 200 (or the process exits)."""
        cmd = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server not ready within {timeout_s:.0f} s:\n{self.log()}")
            time.sleep(0.2)
        return self

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/health/ready", timeout=2, trust_env=False).status_code == 200
        except httpx.TransportError:
            return False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_bytes(self) -> int:
        return rss_of(self.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then wait for the graceful shutdown; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.terminate()
        finally:
            self.kill()
