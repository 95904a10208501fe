"""Helpers shared by the client, CLI and web tests: a tiny model repository and a real HTTP server
(uvicorn on a free loopback port, in a thread of the test process or as a separate process)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from service.api import create_app
from service.made import MADEConfig
from tests.api.conftest import make_model, settings_for

REPO = Path(__file__).resolve().parents[2]
H, W = 4, 5
D = H * W


def build_repo(root: Path) -> Path:
    """``tiny`` (binary 4x5, raster order, 2 masks) and ``gray`` (8-bit 4x5): small enough that
    loading, warming and sampling take milliseconds."""
    make_model(
        root / "tiny",
        MADEConfig(data_dim=D, hidden=(24,), distribution={"type": "bernoulli"}, num_masks=2, direct=True),
        {"name": "tiny", "description": "binary test model", "shape": [H, W], "value_range": [0, 1]},
        seed=1,
    )
    make_model(
        root / "gray",
        MADEConfig(
            data_dim=D,
            hidden=(24,),
            distribution={"type": "discretized_logistic", "n_bins": 256, "n_components": 2},
        ),
        {"name": "gray", "description": "8-bit test model", "shape": [H, W], "value_range": [0, 255]},
        seed=2,
    )
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def thread_server(repo: Path, **overrides: Any) -> Iterator[str]:
    """The app served by uvicorn in a background thread of this process; yields its base URL."""
    app = create_app(settings_for(repo, **overrides))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def process_server(repo: Path, log_path: Path, **env: str) -> Iterator[str]:
    """``python -m service serve`` as a real process on a free loopback port; yields its base URL once
    ready, stops it with SIGTERM and raises if it did not shut down gracefully."""
    port = free_port()
    environ = {
        **os.environ,
        "MADE_DEVICE": "cpu",
        "MADE_LOG_JSON": "false",
        "MADE_MODEL_DIR": str(repo),
        "OMP_NUM_THREADS": "1",
        **env,
    }
    environ.pop("MADE_API_KEY", None)
    cmd = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=environ, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while not _ready(url):
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready within 180 s:\n{log_path.read_text()}")
                time.sleep(0.25)
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code: int | None = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                code = None
    # reached only when the body raised nothing: uvicorn shuts down gracefully, then re-raises SIGTERM
    if code not in (0, -signal.SIGTERM) or "Application shutdown complete" not in log_path.read_text():
        raise RuntimeError(f"server did not stop gracefully (exit {code}):\n{log_path.read_text()}")


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
