"""``python -m service serve`` with MADE_ENGINE_PROCESS and two front-ends: SIGTERM drains the requests in
flight (answered in full), the engine process stops after the front-ends, the server exits 0 and leaves
no process behind."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bench.hey import _descendants
from bench.server import Server, make_model

from .test_faults import _refused, gauges, wait_for

ROWS = 32


@pytest.mark.slow
def test_sigterm_drains_through_the_engine_process(tmp_path: Path) -> None:
    # wide enough that 4 x 32 rows drawn one at a time outlast the engine's 50 ms reports by far (with
    # 500 units they could all finish before a front-end's /metrics ever showed a queued row)
    make_model(tmp_path / "models" / "slow", (32, 32), (4000,), seed=1)
    settings = {
        "MADE_DEFAULT_MODEL": "slow",
        "MADE_ENGINE_PROCESS": "true",
        "MADE_WORKERS": 2,
        "MADE_MAX_ACTIVE_ROWS": 1,  # one row at a time: the requests are still running at SIGTERM
        "MADE_SHUTDOWN_GRACE_S": 60,
    }
    with Server(tmp_path / "models", tmp_path / "server.log", settings) as server:
        below = _descendants(server.pid)
        assert len(below) >= 3  # the engine process and two front-ends (and multiprocessing's helper)

        def request(i: int) -> httpx.Response:
            return httpx.post(
                f"{server.url}/sample", json={"n": ROWS, "seed": i}, timeout=120, trust_env=False
            )

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(request, i) for i in range(4)]
            # a front-end reports the engine's queue (the front-ends share one multiprocess registry)
            wait_for(lambda: gauges(server.url).get("made_engine_queued_rows", 0) >= 1, timeout_s=60)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: _refused(server.port), timeout_s=30, every_s=0.05)
            responses = [f.result(timeout=120) for f in futures]
        assert [r.status_code for r in responses] == [200] * 4
        assert all(len(r.json()["images"]) == ROWS for r in responses)
        assert server.proc is not None and server.proc.wait(timeout=90) == 0
        # no orphan: every process below the server ends (multiprocessing's helper right after it)
        wait_for(lambda: not [p for p in below if Path(f"/proc/{p}").exists()])
        assert '"engine process: stopped"' in server.log()
