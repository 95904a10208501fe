"""The app with MADE_ENGINE_PROCESS: the same answers as in one process (images for a seed, log-likelihoods,
problem+json errors), the engine's counters in /metrics, a client hanging up cancelled in the engine
process, and a dead engine process turning readiness and requests into 503s, never a hang."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.engine.client import EngineClient
from tests.waiting import UNTIL, until

from .conftest import Api, D, assert_problem, hang_up, serve, settings_for

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def split(model_repo: Path, anyio_backend: str) -> AsyncIterator[Api]:
    async with serve(settings_for(model_repo, engine_process=True)) as a:
        yield a


@pytest.fixture(scope="module")
async def single(model_repo: Path, anyio_backend: str) -> AsyncIterator[Api]:
    async with serve(settings_for(model_repo)) as a:
        yield a


async def engine_outcomes(api: Api, model: str = "flat") -> Counter[tuple[str, str]]:
    text = (await api.client.get("/metrics")).text
    out: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "made_engine_requests":
            for s in family.samples:
                if s.name.endswith("_total") and s.labels["model"] == model:
                    out[(s.labels["kind"], s.labels["outcome"])] += int(s.value)
    return out


async def test_models_run_in_the_engine_process(split: Api) -> None:
    entry = split.registry.get("tiny")
    assert isinstance(entry.engine, EngineClient) and entry.model is None  # no network in the front-end
    r = await split.client.get("/v2/health/ready")
    assert r.status_code == 200 and r.json()["ready"] is True
    assert set(r.json()["models"]) == {"tiny", "gray", "shuffled", "flat"}
    card = (await split.client.get("/models/tiny")).json()
    assert card["ready"] is True


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/sample", {"model": "tiny", "n": 3, "seed": 5}),
        ("/sample", {"model": "gray", "n": 2, "seed": 6}),
        ("/complete", {"model": "tiny", "inputs": [[0, 1] * (D // 2)], "known_rows": 2, "n": 2, "seed": 7}),
        ("/log-prob", {"model": "shuffled", "inputs": [[1, 0] * (D // 2)] * 2, "per_dim": False}),
        ("/log-prob", {"model": "tiny", "inputs": [[0, 1] * (D // 2)], "per_dim": True}),
    ],
)
async def test_same_request_same_answer_as_one_process(
    split: Api, single: Api, path: str, body: dict
) -> None:
    a = await single.client.post(path, json=body)
    b = await split.client.post(path, json=body)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json() == b.json()


async def test_errors_are_the_same_problems(split: Api) -> None:
    assert_problem(await split.client.post("/sample", json={"model": "tiny", "n": 0}), 422)
    assert_problem(await split.client.post("/sample", json={"model": "nope", "n": 1}), 404, "not loaded")
    r = await split.client.post(
        "/sample", json={"model": "tiny", "n": 1}, headers={"X-Request-ID": "abc-123"}
    )
    assert r.headers["x-request-id"] == "abc-123"


async def test_metrics_show_the_engine_counters_and_cancellations(split: Api) -> None:
    body = json.dumps({"model": "flat", "n": 2, "seed": 1}).encode()  # a model no other test asks
    before = await engine_outcomes(split)
    for _ in range(3):
        assert (
            await split.client.post("/sample", content=body, headers={"content-type": "application/json"})
        ).is_success
    statuses = [await hang_up(split.app, "/sample", body) for _ in range(4)]
    assert statuses == [499] * 4
    goal = {("sample", "ok"): 3, ("sample", "cancelled"): 4}
    for _ in range(int(UNTIL / 0.05)):  # the engine process reports with its next beat
        after = await engine_outcomes(split)
        delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        if delta == goal:
            break
        await asyncio.sleep(0.05)
    assert delta == goal  # each request counted once, the hang-ups as cancelled in the engine process
    text = (await split.client.get("/metrics")).text
    assert 'made_engine_rows_per_step_count{model="flat"}' in text


async def test_a_dead_engine_process_means_not_ready_and_503(model_repo: Path) -> None:
    async with serve(settings_for(model_repo, engine_process=True)) as api:
        assert (await api.client.get("/v2/health/ready")).status_code == 200
        proc = api.registry.engine_process
        assert proc is not None
        proc.proc.kill()
        await until(lambda: not api.registry.ready())
        assert_problem(await api.client.get("/v2/health/ready"), 503, "not ready")
        r = await api.client.post("/sample", json={"model": "tiny", "n": 1})
        assert_problem(r, 503, "not running")
        assert r.headers["retry-after"]
