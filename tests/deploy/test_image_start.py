"""The image's start command, run without Docker: wheel -> fresh venv -> CMD with the image's ENV.

Two replicas start exactly as the container would (only bind address, port, model path and device are
changed, for loopback and CPU), pass the image's HEALTHCHECK, answer one request of each kind, and then
sit behind the shipped nginx config: requests are spread over both, a stopped replica is routed around.
All traffic stays on 127.0.0.1; every process is stopped in teardown, also when a test fails.
"""

from __future__ import annotations

import math
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from service.made import MADE, MADEConfig, save_model

from . import nginx
from .conftest import free_port
from .dockerfile import Stage
from .image import Replica, Runtime, build_runtime, in_root

pytestmark = pytest.mark.slow

H, W = 4, 5
START_TIMEOUT_S = 120.0


def tiny_model(folder: Path) -> None:
    """A binary 4x5 MADE with random weights, saved with the card fields the service reads."""
    torch.manual_seed(0)
    model = MADE(MADEConfig(data_dim=H * W, hidden=(24,), num_masks=2, direct=True))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    save_model(folder, model, {"name": "tiny", "shape": [H, W], "value_range": [0, 1]})


@pytest.fixture(scope="module")
def runtime(stages: list[Stage], tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    rt = build_runtime(stages, tmp_path_factory.mktemp("image"))
    tiny_model(in_root(rt.root, rt.env["MADE_MODEL_DIR"]) / "tiny")  # the "baked" models
    return rt


@pytest.fixture(scope="module")
def replicas(runtime: Runtime) -> Iterator[list[Replica]]:
    """Two replicas, started together; stopped (SIGTERM, then SIGKILL) whatever happens."""
    overrides = {
        "MADE_HOST": "127.0.0.1",  # the image binds 0.0.0.0; tests stay on loopback
        "MADE_DEVICE": "cpu",
        "MADE_DEFAULT_MODEL": "tiny",
    }
    reps = [Replica(runtime, free_port(), overrides, runtime.root / f"replica{i}.log") for i in range(2)]
    try:
        for r in reps:
            r.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        for r in reps:
            r.wait_ready(deadline)
        yield reps
    finally:
        for r in reps:
            r.stop()


def client() -> httpx.Client:
    return httpx.Client(timeout=30.0, trust_env=False)  # no proxy for loopback


def test_the_wheel_is_what_runs(runtime: Runtime, replicas: list[Replica]) -> None:
    out = replicas[0].healthy()
    assert out.returncode == 0, out.stderr
    where = subprocess.run(
        [str(runtime.python), "-c", "import service; print(service.__file__)"],
        cwd=runtime.workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(runtime.root / "venv"), f"service imported from {where}, not the wheel"


def test_healthcheck_fails_without_a_server(runtime: Runtime, replicas: list[Replica]) -> None:
    ghost = Replica(runtime, free_port(), {}, runtime.root / "ghost.log")
    ghost.env = {**replicas[0].env, "MADE_PORT": str(ghost.port)}
    out = ghost.healthy()
    assert out.returncode == 1 and "not ready" in out.stderr


def test_one_request_of_each_kind(replicas: list[Replica]) -> None:
    url = replicas[0].url
    image = [[(r + c) % 2 for c in range(W)] for r in range(H)]
    with client() as c:
        models = c.get(f"{url}/models")
        assert models.status_code == 200 and "tiny" in models.text

        lp = c.post(f"{url}/log-prob", json={"inputs": [image, image]})
        assert lp.status_code == 200, lp.text
        values = lp.json()["log_prob"]
        assert len(values) == 2 and values[0] == values[1] and math.isfinite(values[0]) and values[0] < 0

        s = c.post(f"{url}/sample", json={"n": 3, "seed": 5})
        assert s.status_code == 200, s.text
        imgs = s.json()["images"]
        assert len(imgs) == 3 and all(len(i) == H and all(len(row) == W for row in i) for i in imgs)
        assert {v for i in imgs for row in i for v in row} <= {0, 1}
        again = c.post(f"{url}/sample", json={"n": 3, "seed": 5}).json()["images"]
        assert again == imgs, "same seed, same samples"

        comp = c.post(f"{url}/complete", json={"inputs": [image], "n": 2, "seed": 1, "known_rows": 2})
        assert comp.status_code == 200, comp.text
        assert all(done[:2] == image[:2] for done in comp.json()["images"])

        bad = c.post(f"{url}/sample", json={"n": 0})
        assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")


def served_logprob(url: str) -> float:
    """This replica's count of successful POST /log-prob, from its own /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10.0, trust_env=False).text
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "made_http_requests_total"
        and s.labels.get("route") == "/log-prob"
        and s.labels.get("method") == "POST"
        and s.labels.get("status") == "200"
    )


@pytest.mark.skipif(nginx.NGINX is None, reason="nginx not installed (.ci/system-deps.sh installs it)")
def test_nginx_spreads_requests_and_routes_around_a_stopped_replica(
    replicas: list[Replica], tmp_path: Path
) -> None:
    port = free_port()
    nginx.render(tmp_path, [f"127.0.0.1:{r.port}" for r in replicas], port)
    proc = nginx.start(tmp_path)
    body = {"inputs": [[[1] * W] * H]}
    try:
        nginx.wait_listening(port, proc)
        front = f"http://127.0.0.1:{port}"
        before = [served_logprob(r.url) for r in replicas]
        with client() as c:
            for _ in range(12):
                assert c.post(f"{front}/log-prob", json=body).status_code == 200
            spread = [served_logprob(r.url) - b for r, b in zip(replicas, before, strict=True)]
            assert sum(spread) == 12 and min(spread) >= 3, f"requests per replica: {spread}"

            too_big = c.post(f"{front}/log-prob", content=b"0" * (8 * 1024 * 1024 + 1))
            assert too_big.status_code == 413
            assert too_big.headers["content-type"].startswith("application/problem+json")
            assert too_big.json()["errors"][0]["field"] == "body"

            # docker stop: SIGTERM; the service drains and shuts down cleanly (uvicorn then exits by the
            # signal it caught, as docker expects: status 143); nginx routes around it.
            assert replicas[1].stop(timeout_s=30.0) in {0, -signal.SIGTERM}, replicas[1].tail()
            assert "Application shutdown complete" in replicas[1].tail(), replicas[1].tail()
            alive_before = served_logprob(replicas[0].url)
            for _ in range(8):
                r = c.post(f"{front}/log-prob", json=body)
                assert r.status_code == 200, r.text
            assert served_logprob(replicas[0].url) - alive_before == 8
    finally:
        nginx.stop(proc)
