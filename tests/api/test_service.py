"""Model cards, health, metrics, docs, routing errors, API key and engine error mapping."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.engine import EngineFull, EngineStopped, EngineTimeout

from .conftest import Api, H, W, assert_problem, hang_up, serve, settings_for

pytestmark = pytest.mark.anyio


async def test_model_cards(api: Api) -> None:
    r = await api.client.get("/models")
    assert r.status_code == 200
    body = r.json()
    assert body["default_model"] == "tiny"
    assert sorted(m["name"] for m in body["models"]) == ["flat", "gray", "shuffled", "tiny"]
    tiny = (await api.client.get("/models/tiny")).json()
    assert tiny["shape"] == [H, W] and tiny["value_range"] == [0, 1] and tiny["binary"]
    assert tiny["device"] == "cpu" and tiny["ready"]
    assert tiny["architecture"]["num_masks"] == 2 and tiny["metrics"] == {"test_nll": 1.0}
    assert tiny["ordering"]["raster"] and tiny["completion"] == {
        "supported": True,
        "default_known_rows": H // 2,
    }
    shuffled = (await api.client.get("/models/shuffled")).json()
    assert not shuffled["ordering"]["raster"] and not shuffled["completion"]["supported"]
    flat = (await api.client.get("/models/flat")).json()
    assert flat["shape"] is None and flat["data_dim"] == 8
    gray = (await api.client.get("/models/gray")).json()
    assert gray["value_range"] == [0, 255] and not gray["binary"]
    assert_problem(await api.client.get("/models/nope"), 404, "'nope'")


async def test_health(api: Api) -> None:
    assert (await api.client.get("/v2/health/live")).json() == {"live": True}
    r = await api.client.get("/v2/health/ready")
    assert r.status_code == 200 and r.json()["ready"] is True
    assert (await api.client.get("/v2/models/gray/ready")).json() == {"name": "gray", "ready": True}
    assert_problem(await api.client.get("/v2/models/nope/ready"), 404)


async def test_routing_errors_are_problems(api: Api) -> None:
    assert_problem(await api.client.get("/nowhere"), 404, "/nowhere")
    body = assert_problem(await api.client.get("/sample"), 405, "GET", "POST")
    assert body["instance"] == "/sample"
    assert_problem(
        await api.client.post("/sample", content=b"n=1", headers={"content-type": "text/plain"}), 415
    )


async def test_openapi_has_every_endpoint_with_examples(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    for path in (
        "/log-prob",
        "/sample",
        "/complete",
        "/models",
        "/models/{name}",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}/ready",
        "/metrics",
    ):
        assert path in spec["paths"], path
    for path in ("/log-prob", "/sample", "/complete"):
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        assert content["application/json"]["schema"]["examples"], path
    assert "multipart/form-data" in spec["paths"]["/complete"]["post"]["requestBody"]["content"]
    assert (await api.client.get("/docs")).status_code == 200


async def test_metrics_show_requests_and_batched_steps(api: Api) -> None:
    # 6 one-row requests at once: the admission window (20 ms) gathers them into shared steps.
    rs = await asyncio.gather(*(api.client.post("/sample", json={"n": 1, "seed": i}) for i in range(6)))
    assert all(r.status_code == 200 for r in rs)
    text = (await api.client.get("/metrics")).text
    assert 'made_http_requests_total{method="POST",route="/sample",status="200"}' in text
    assert "made_http_request_duration_seconds_bucket" in text
    for name in (
        "made_engine_queued_rows",
        "made_engine_active_rows",
        "made_engine_step_seconds_count",
        "made_engine_queue_seconds_count",
    ):
        assert name in text, name
    buckets = {}
    for line in text.splitlines():
        if line.startswith('made_engine_rows_per_step_bucket{le="1.0",model="tiny"}'):
            buckets["le1"] = float(line.rsplit(" ", 1)[1])
        if line.startswith('made_engine_rows_per_step_count{model="tiny"}'):
            buckets["count"] = float(line.rsplit(" ", 1)[1])
    assert buckets["count"] > buckets["le1"], "no step advanced more than one row"


async def _logprob_batches(api: Api, model: str = "tiny") -> list[float]:
    """``[count, sum]`` of ``made_engine_logprob_batch_rows`` for ``model`` (zeros before any batch)."""
    text = (await api.client.get("/metrics")).text
    found = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        if family.name == "made_engine_logprob_batch_rows"
        for s in family.samples
        if s.labels.get("model") == model
    }
    return [found.get(f"made_engine_logprob_batch_rows_{k}", 0.0) for k in ("count", "sum")]


async def test_metrics_show_the_rows_of_each_log_prob_batch(api: Api) -> None:
    before = await _logprob_batches(api)
    r = await api.client.post("/log-prob", json={"inputs": [[[0] * 5] * 4] * 3})  # one request, 3 rows
    assert r.status_code == 200, r.text
    after = await _logprob_batches(api)
    assert [a - b for a, b in zip(after, before, strict=True)] == [1.0, 3.0]  # one forward pass of 3 rows


@pytest.mark.parametrize(
    ("error", "status", "retry"),
    [
        (EngineFull("queue full", retry_after_s=2.5), 503, "3"),
        (EngineTimeout("late"), 504, None),
        (EngineStopped("stopping"), 503, "1"),
    ],
)
async def test_engine_errors_map_to_http(
    api: Api, monkeypatch: pytest.MonkeyPatch, error: Exception, status: int, retry: str | None
) -> None:
    async def fail(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(api.registry.get("tiny").engine, "sample", fail)
    r = await api.client.post("/sample", json={"n": 1})
    assert_problem(r, status)
    assert r.headers.get("Retry-After") == retry


async def test_constrained_app(model_repo: Path) -> None:
    """API key, CORS, a full engine (503 + Retry-After), the capacity cap on n, and a hidden 500."""
    settings = settings_for(
        model_repo,
        api_key="s3cret",
        cors_origins=["http://example.org"],
        max_active_rows=2,
        max_queued_rows=0,
        admission_window_ms=100.0,
    )
    key = {"X-API-Key": "s3cret"}
    async with serve(settings, raise_app_exceptions=False) as a:
        assert_problem(await a.client.get("/models"), 401, "X-API-Key")
        assert_problem(await a.client.get("/models", headers={"X-API-Key": "wrong"}), 401)
        assert (await a.client.get("/models", headers=key)).status_code == 200
        assert (await a.client.get("/v2/health/ready")).status_code == 200  # probes stay open
        r = await a.client.get("/v2/health/live", headers={"Origin": "http://example.org"})
        assert r.headers["access-control-allow-origin"] == "http://example.org"

        # Two 2-row requests inside one admission window: the second would have to queue, and may not.
        rs = await asyncio.gather(*(a.client.post("/sample", json={"n": 2}, headers=key) for _ in range(2)))
        assert sorted(r.status_code for r in rs) == [200, 503]
        full = next(r for r in rs if r.status_code == 503)
        assert assert_problem(full, 503, "capacity")["type"] == "tag:made-service,2026:problem/engine-full"
        assert int(full.headers["Retry-After"]) >= 1
        assert_problem(await a.client.post("/sample", json={"n": 3}, headers=key), 422, "at most 2")

        async def boom(*args: object, **kwargs: object) -> None:
            raise RuntimeError("secret internals")

        a.registry.get("tiny").engine.sample = boom  # type: ignore[method-assign]
        r = await a.client.post("/sample", json={"n": 1}, headers=key)
        assert_problem(r, 500)
        assert "secret internals" not in r.text


async def test_disconnect_cancels_engine_rows(api: Api) -> None:
    """The client leaves while its request waits in the admission window: its rows are cancelled."""
    body = json.dumps({"n": 4, "seed": 1}).encode()
    engine = api.registry.get("tiny").engine
    before = engine.stats().rows_sampled
    assert await hang_up(api.app, "/sample", body) == 499
    line = 'made_engine_requests_total{kind="sample",model="tiny",outcome="cancelled"}'
    for _ in range(200):
        text = (await api.client.get("/metrics")).text
        if line in text:
            break
        await asyncio.sleep(0.01)
    assert line in text
    stats = engine.stats()
    assert stats.queued_rows == 0 and stats.active_rows == 0 and stats.rows_sampled == before

    # Gone before the body arrived: no engine work at all, and no 500 in the log.
    assert await hang_up(api.app, "/sample", None) == 499
