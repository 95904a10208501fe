"""Faults against a real server process: a client that hangs up, SIGTERM while requests run, and bad
model folders (skipped when configured, never served; otherwise start-up fails naming the file)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.server import REPO, Server, free_port, make_model

ROWS = 64  # rows per long request
HANGUP_ROWS = 256  # the request whose client leaves: long enough to leave it surely mid-way
SLOW = {  # few active rows, so a 64-row request on a 64 x 64 model runs for a while
    "MADE_DEFAULT_MODEL": "slow",
    "MADE_MAX_ACTIVE_ROWS": 2,
    "MADE_MAX_QUEUED_ROWS": 1024,
    "MADE_MAX_SAMPLES_PER_REQUEST": HANGUP_ROWS,
    "MADE_SKIP_BAD_MODELS": "true",
    "MADE_SHUTDOWN_GRACE_S": 60,
}


def break_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fault-models")
    make_model(root / "slow", (64, 64), (1000,), seed=1)
    make_model(root / "broken", (4, 4), (8,), seed=2)
    break_weights(root / "broken")
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(repo, tmp_path_factory.mktemp("fault-log") / "server.log", SLOW) as s:
        yield s


def gauges(url: str) -> dict[str, float]:
    """The engine's row gauges and request outcomes for the ``slow`` model."""
    out: dict[str, float] = {}
    text = httpx.get(f"{url}/metrics", timeout=10, trust_env=False).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("model") != "slow":
                continue
            if s.name in ("made_engine_active_rows", "made_engine_queued_rows"):
                out[s.name] = s.value
            elif s.name == "made_engine_requests_total":
                key = f"{s.labels['kind']}:{s.labels['outcome']}"
                out[key] = out.get(key, 0) + s.value
    return out


def wait_for(predicate: object, timeout_s: float = 30.0, every_s: float = 0.02) -> float:
    """Poll until ``predicate()`` is true; returns the seconds it took."""
    t0 = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(every_s)
    return time.monotonic() - t0


def test_bad_folder_is_skipped_and_never_served(server: Server, repo: Path) -> None:
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as c:
        listing = c.get("/models").json()
        assert [m["name"] for m in listing["models"]] == ["slow"]
        reason = listing["failed"]["broken"]
        assert "broken/model.safetensors" in reason and "checksum" in reason
        assert str(repo) not in json.dumps(listing)  # no server paths in answers
        r = c.post("/sample", json={"model": "broken", "n": 1})
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert c.get("/v2/health/ready").status_code == 200  # the others still serve


def test_client_that_hangs_up_frees_its_rows(server: Server) -> None:
    before = gauges(server.url)
    body = json.dumps({"n": HANGUP_ROWS, "seed": 3}).encode()
    head = (
        f"POST /sample HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Request-ID: hangup-1\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(head + body)
    wait_for(lambda: gauges(server.url).get("made_engine_active_rows", 0) > 0)
    sock.close()  # gone mid-request
    freed_s = wait_for(
        lambda: (
            (g := gauges(server.url)).get("sample:cancelled", 0) > before.get("sample:cancelled", 0)
            and g.get("made_engine_active_rows", 1) == 0
            and g.get("made_engine_queued_rows", 1) == 0
        )
    )
    assert freed_s < 5
    after = gauges(server.url)
    assert after.get("sample:ok", 0) == before.get("sample:ok", 0)  # it was never finished
    # The access log has the request, answered 499, under the id the client sent.
    wait_for(lambda: '"request_id":"hangup-1"' in server.log(), timeout_s=5)
    line = next(json.loads(x) for x in server.log().splitlines() if '"request_id":"hangup-1"' in x)
    assert line["logger"] == "service.access" and line["status"] == 499
    # A full request right after gets its rows.
    r = httpx.post(f"{server.url}/sample", json={"n": 2, "seed": 1}, timeout=60, trust_env=False)
    assert r.status_code == 200 and len(r.json()["images"]) == 2


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except OSError:
        return True


def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(server: Server) -> None:
    """Runs last: it stops the module's server."""

    def long_request(i: int) -> httpx.Response:
        return httpx.post(
            f"{server.url}/sample",
            json={"n": ROWS, "seed": i},
            headers={"X-Request-ID": f"drain-{i}"},
            timeout=120,
            trust_env=False,
        )

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(long_request, i) for i in range(6)]
        wait_for(lambda: gauges(server.url).get("made_engine_queued_rows", 0) >= 4 * ROWS)
        assert server.proc is not None
        server.proc.terminate()  # SIGTERM
        wait_for(lambda: _refused(server.port), timeout_s=10, every_s=0.05)
        # New connections are refused while the accepted requests are still running ...
        running = sum(not f.done() for f in futures)
        assert running >= 1, "requests finished before the listener closed; make them longer"
        # ... and every accepted request completes with its full answer.
        responses = [f.result(timeout=120) for f in futures]
    assert [r.status_code for r in responses] == [200] * 6
    assert all(len(r.json()["images"]) == ROWS for r in responses)
    assert server.proc.wait(timeout=60) in (0, -15)
    log = server.log()
    assert "Application shutdown complete" in log
    assert all(json.loads(line) for line in log.splitlines())  # every line JSON
    drained = [json.loads(x) for x in log.splitlines() if '"request_id":"drain-' in x]
    assert sorted(x["request_id"] for x in drained if x["logger"] == "service.access") == [
        f"drain-{i}" for i in range(6)
    ]


@pytest.mark.parametrize("damage", ["truncated weights", "architecture mismatch"])
def test_bad_folder_fails_start_up_naming_the_file(tmp_path: Path, damage: str) -> None:
    """Without MADE_SKIP_BAD_MODELS the process exits non-zero; the log names the file."""
    bad = make_model(tmp_path / "models" / "bad", (4, 4), (8,), seed=2)
    if damage == "truncated weights":
        break_weights(bad)
        needle = "checksum"
    else:
        card = json.loads((bad / "card.json").read_text())
        card["config"]["hidden"] = [9]  # the weights were saved for 8 hidden units
        (bad / "card.json").write_text(json.dumps(card))
        needle = "shape"
    env = Server(tmp_path / "models", tmp_path / "log").env
    cmd = [sys.executable, "-m", "service", "serve", "--port", str(free_port())]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"{bad / 'model.safetensors'}" in out and needle in out, out[-3000:]
    assert "Application startup failed" in out
