"""Run the shipped nginx config (docker/nginx/made.conf) under a temporary prefix, without root paths.

The test prefix gets a minimal ``nginx.conf`` that includes the shipped file inside ``http``, and a
``made-upstream.inc`` rendered from ``docker/nginx/upstream.compose.inc`` with the compose service
address replaced by loopback replicas (same ``max_fails`` / ``fail_timeout`` parameters).
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .conftest import REPO

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
SHIPPED = REPO / "docker/nginx/made.conf"
UPSTREAM = REPO / "docker/nginx/upstream.compose.inc"
COMPOSE_SERVER = "made:8000"


def render(prefix: Path, replicas: list[str], listen_port: int) -> Path:
    """Write ``prefix/conf/nginx.conf`` (+ upstream list) for ``replicas`` (``host:port``); returns it."""
    conf = prefix / "conf"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf.mkdir(parents=True, exist_ok=True)
    template = [ln for ln in UPSTREAM.read_text().splitlines() if ln.strip().startswith("server ")]
    assert len(template) == 1 and COMPOSE_SERVER in template[0], "one server line naming the compose service"
    (conf / "made-upstream.inc").write_text(
        "".join(template[0].replace(COMPOSE_SERVER, r) + "\n" for r in replicas)
    )
    site = SHIPPED.read_text()
    assert len(re.findall(r"^\s*listen\s+8080;", site, flags=re.M)) == 1
    (conf / "made.conf").write_text(re.sub(r"listen\s+8080;", f"listen 127.0.0.1:{listen_port};", site))
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""  # workers must reach the temp prefix
    (conf / "nginx.conf").write_text(
        f"""daemon off;
{user}
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/logs/access.log;
    include made.conf;
}}
"""
    )
    return conf / "nginx.conf"


def command(prefix: Path, *extra: str) -> list[str]:
    """nginx with every path under ``prefix`` (``-e`` keeps it off the compiled-in error log too)."""
    assert NGINX is not None
    return [
        NGINX,
        "-p",
        f"{prefix}/",
        "-e",
        f"{prefix}/logs/error.log",
        "-c",
        str(prefix / "conf/nginx.conf"),
        *extra,
    ]


def check(prefix: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on the rendered config."""
    return subprocess.run(command(prefix, "-t"), capture_output=True, text=True, timeout=30, check=False)


def start(prefix: Path) -> subprocess.Popen[bytes]:
    """Start nginx in the foreground (own process group, so teardown reaches its workers)."""
    return subprocess.Popen(
        command(prefix), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Fast shutdown of the master and its workers (their process group), then reap."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the master is not reaped yet: the group is ours
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Block until nginx answers its own health location."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}")
        try:
            if (
                httpx.get(f"http://127.0.0.1:{port}/nginx-health", timeout=1.0, trust_env=False).status_code
                == 200
            ):
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError("nginx did not start listening")
