"""API key on everything but health, CORS only when configured, nothing internal in answers, a request
id on every response and every log line, structured JSON logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.api.logs import log_config
from service.logging import JsonFormatter, RequestIdFilter, request_context
from tests.api.conftest import Api, assert_problem, serve, settings_for

pytestmark = pytest.mark.anyio

KEY = "k3y-for-tests"
HEX_ID = re.compile(r"[0-9a-f]{32}")


def concrete(path: str) -> str:
    return path.replace("{name}", "tiny").replace("{index}", "0")


async def test_api_key_guards_everything_but_health(model_repo: Path) -> None:
    async with serve(settings_for(model_repo, api_key=KEY)) as a:
        spec = (await a.client.get("/openapi.json")).json()
        checked = 0
        for path, ops in spec["paths"].items():
            for method in ops:
                url = concrete(path)
                r = await a.client.request(method, url)
                if path.startswith("/v2/"):  # liveness / readiness probes stay open
                    assert r.status_code == 200, (method, path, r.text)
                    continue
                assert_problem(r, 401, "X-API-Key")
                assert r.headers["WWW-Authenticate"].startswith("APIKey")
                assert "401" in ops[method]["responses"], (method, path)  # and the schema says so
                wrong = await a.client.request(method, url, headers={"X-API-Key": KEY + "x"})
                assert wrong.status_code == 401
                right = await a.client.request(method, url, headers={"X-API-Key": KEY})
                assert right.status_code != 401, (method, path)
                checked += 1
        assert checked >= 7  # log-prob, sample, complete, models, model card, metrics, examples...


async def test_cors_is_off_unless_configured(api: Api, model_repo: Path) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    r = await api.client.get("/models", headers=origin)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    r = await api.client.options("/sample", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    assert_problem(r, 405)
    async with serve(settings_for(model_repo, cors_origins=["https://app.example"])) as a:
        ok = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        r = await a.client.options("/sample", headers=ok)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        r = await a.client.post("/sample", json={"n": 1}, headers={"Origin": "https://app.example"})
        assert "X-Request-ID" in r.headers["access-control-expose-headers"]
        r = await a.client.options("/sample", headers=preflight)
        assert "access-control-allow-origin" not in r.headers


async def test_no_internals_in_answers(model_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    shutil.copytree(model_repo / "tiny", repo / "tiny")
    shutil.copytree(model_repo / "tiny", repo / "broken")
    (repo / "broken" / "card.json").write_text("{not json")
    async with serve(settings_for(repo, skip_bad_models=True), raise_app_exceptions=False) as a:
        text = (await a.client.get("/models")).text
        assert "broken/card.json" in text and str(tmp_path) not in text, text

        async def boom(*args: object, **kwargs: object) -> None:
            raise RuntimeError(f"failure in {repo}/secret.py line 3")

        a.registry.get("tiny").engine.sample = boom  # type: ignore[method-assign]
        r = await a.client.post("/sample", json={"n": 1})
        body = assert_problem(r, 500, "server log")
        assert str(repo) not in r.text and "secret.py" not in r.text and "Traceback" not in r.text
        assert body["request_id"] == r.headers["X-Request-ID"]
    shutil.rmtree(repo / "tiny")
    async with serve(settings_for(repo, skip_bad_models=True)) as a:
        r = await a.client.get("/v2/health/ready")
        assert assert_problem(r, 503)["failed"]["broken"].startswith("broken/card.json: not valid JSON")
        assert str(tmp_path) not in r.text


async def test_request_id_on_every_response(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    c = api.client
    responses = [
        await c.get("/v2/health/live"),
        await c.get("/models"),
        await c.get("/nowhere"),
        await c.post("/sample", json={"n": 999}),
        await c.post("/sample", content=b"x" * (65 * 1024), headers={"content-type": "application/json"}),
        await c.post("/sample", content=b"{}", headers={"content-type": "text/plain"}),
        await c.post("/sample", json={"n": 1, "format": "png"}),
    ]
    assert [r.status_code for r in responses] == [200, 200, 404, 422, 413, 415, 200]
    ids = [r.headers["X-Request-ID"] for r in responses]
    assert all(HEX_ID.fullmatch(i) for i in ids) and len(set(ids)) == len(ids)
    for r in responses[2:6]:
        assert r.json()["request_id"] == r.headers["X-Request-ID"]


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc-123", True),
        ("5f0c1d2e-9a8b-4c7d-8e6f-0a1b2c3d4e5f", True),
        ("a" * 128, True),
        ("nginx:7f3a.1_x", True),
        ("a" * 129, False),
        ("has space", False),
        ("semi;colon", False),
        ("<script>", False),
        ("", False),
    ],
)
async def test_incoming_request_id(api: Api, sent: str, kept: bool) -> None:
    r = await api.client.get("/models/nope", headers={"X-Request-ID": sent})
    got = r.headers["X-Request-ID"]
    assert got == sent if kept else HEX_ID.fullmatch(got)
    assert r.json()["request_id"] == got


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """``service.*`` records, formatted as the server formats them, collected in memory."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("service")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


async def test_log_lines_are_json_with_the_request_id(
    api: Api, json_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaput")

    monkeypatch.setattr(api.registry.get("tiny").engine, "sample", boom)
    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.post("/sample", json={"n": 1}, headers={"X-Request-ID": "trace-me"})
        assert r.status_code == 500
        await c.get("/models", headers={"X-Request-ID": "second"})
    await asyncio.sleep(0)  # access lines are written at the end of the event loop's turn
    lines = [json.loads(x) for x in json_log.getvalue().splitlines()]
    mine = [x for x in lines if x["request_id"] == "trace-me"]
    error = next(x for x in mine if x["level"] == "error")
    assert "kaput" in error["exc"] and error["logger"] == "service.api"  # the traceback is in the log only
    access = next(x for x in mine if x["logger"] == "service.access")
    assert access["status"] == 500 and access["method"] == "POST" and access["path"] == "/sample"
    assert access["duration_ms"] >= 0
    assert any(x["request_id"] == "second" and x.get("status") == 200 for x in lines)
    for x in lines:
        assert {"ts", "level", "logger", "message", "request_id"} <= set(x)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """dictConfig rewires global loggers: put them back afterwards."""
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "service")
    saved = {n: (list(lg.handlers), lg.level, lg.propagate) for n in names if (lg := logging.getLogger(n))}
    yield
    for name, (handlers, level, propagate) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


def test_log_config_is_valid_and_tags_lines(restore_logging: None) -> None:
    stream = io.StringIO()
    for as_json in (True, False):
        config = log_config("info", as_json)
        config["handlers"]["default"]["stream"] = stream
        logging.config.dictConfig(config)
        with request_context("ctx-1"):
            logging.getLogger("service.test").info("hello %s", "there")
        logging.getLogger("service.test").info("outside")
    out = stream.getvalue().splitlines()
    first = json.loads(out[0])
    assert first["message"] == "hello there" and first["request_id"] == "ctx-1"
    assert json.loads(out[1])["request_id"] is None
    assert "[ctx-1] hello there" in out[2] and "[None] outside" in out[3]
