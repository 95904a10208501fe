"""``python -m service serve`` with two worker processes, each loading the models: they stay up through
start-up (uvicorn's health check allows
MADE_WORKER_HEALTHCHECK_S, not its 5 s default, which killed workers still loading models), whichever
worker answers ``/metrics`` reports the whole service's counts, and the metrics folder they share is
removed when the server exits. (Front-ends of one engine process report its counters once:
``tests/engine/test_process.py``.)"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.server import Server, make_model

from .test_faults import wait_for

REQUESTS = 12


def _counts(url: str) -> tuple[float, float]:
    """``/sample`` answers with status 200, and the engine's sampling requests that ended ok."""
    http = engine = 0.0
    text = httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "made_http_requests_total" and s.labels["route"] == "/sample":
                http += s.value if s.labels["status"] == "200" else 0.0
            elif s.name == "made_engine_requests_total" and s.labels["kind"] == "sample":
                engine += s.value if s.labels["outcome"] == "ok" else 0.0
    return http, engine


@pytest.mark.slow
def test_two_workers_stay_up_and_report_together(tmp_path: Path) -> None:
    make_model(tmp_path / "models" / "tiny", (8, 8), (32,), seed=1)
    shared = Path(tempfile.gettempdir())
    before = set(shared.glob("made-metrics-*"))
    settings = {"MADE_DEFAULT_MODEL": "tiny", "MADE_WORKERS": 2}
    with Server(tmp_path / "models", tmp_path / "server.log", settings) as server:
        (folder,) = set(shared.glob("made-metrics-*")) - before
        wait_for(lambda: server.log().count("Application startup complete") == 2, timeout_s=120)
        http0, engine0 = _counts(server.url)  # the warm-up requests of each worker's engines
        for i in range(REQUESTS):
            r = httpx.post(f"{server.url}/sample", json={"n": 1, "seed": i}, timeout=30, trust_env=False)
            assert r.status_code == 200
        # each scrape reaches either worker: every one reports both workers' requests, each once
        for _ in range(6):
            assert _counts(server.url) == (http0 + REQUESTS, engine0 + REQUESTS)
        assert "died" not in server.log()  # no worker was killed and replaced
        assert server.terminate() == 0
    assert not folder.exists()
