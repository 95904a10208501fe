"""The access log: lines queued during a turn of the event loop are written together at its end, in
order, through the logger (level, filters, handlers), each with its request's id and end time; the
app's shutdown writes what is still queued."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from service.api.access import AccessLog
from service.logging import RequestIdFilter, request_context

from .conftest import serve, settings_for

pytestmark = pytest.mark.anyio


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def access() -> Iterator[tuple[AccessLog, Records]]:
    logger = logging.getLogger("test.access")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = Records()
    handler.addFilter(RequestIdFilter())
    logger.addHandler(handler)
    yield AccessLog(logger), handler
    logger.removeHandler(handler)


def scope(method: str, path: str, port: int) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "client": ("10.0.0.7", port)}


async def test_lines_of_a_turn_are_written_together_at_its_end(
    access: tuple[AccessLog, Records], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, handler = access
    ends = iter([1000.25, 1000.5, 1001.125])
    monkeypatch.setattr(
        "service.api.access.time", SimpleNamespace(time=lambda: next(ends))
    )  # this module's only
    with request_context("context-id"):  # the line's own id wins over whatever context writes it
        log.add(scope("POST", "/sample", 1), 200, 0.0123, "first")
        log.add(scope("GET", "/models", 2), 404, 0.001, "second")
        log.add(scope("POST", "/log-prob", 3), 0, 0.5, "third")
    assert handler.records == []  # nothing written inside the turn
    await asyncio.sleep(0)
    recs = handler.records
    assert [r.request_id for r in recs] == ["first", "second", "third"]  # type: ignore[attr-defined]
    assert [r.getMessage() for r in recs] == [
        "POST /sample 200 12.3 ms",
        "GET /models 404 1.0 ms",
        "POST /log-prob - 500.0 ms",
    ]
    first = recs[0]
    assert (first.method, first.path, first.status, first.duration_ms, first.client) == (  # type: ignore[attr-defined]
        "POST",
        "/sample",
        200,
        12.3,
        "10.0.0.7:1",
    )
    assert recs[2].status is None  # type: ignore[attr-defined]  # no answer was sent
    assert [(r.created, r.msecs) for r in recs] == [(1000.25, 250.0), (1000.5, 500.0), (1001.125, 125.0)]
    assert all(r.name == "test.access" and r.levelno == logging.INFO for r in recs)


async def test_each_turn_writes_its_own_lines(access: tuple[AccessLog, Records]) -> None:
    log, handler = access
    log.add(scope("GET", "/a", 1), 200, 0.0, "a")
    await asyncio.sleep(0)
    log.add(scope("GET", "/b", 1), 200, 0.0, "b")
    assert [r.request_id for r in handler.records] == ["a"]  # type: ignore[attr-defined]
    await asyncio.sleep(0)
    assert [r.request_id for r in handler.records] == ["a", "b"]  # type: ignore[attr-defined]
    log.flush()  # nothing queued: nothing written twice
    assert len(handler.records) == 2


async def test_an_explicit_flush_writes_at_once_and_the_turn_then_writes_nothing(
    access: tuple[AccessLog, Records],
) -> None:
    log, handler = access
    log.add(scope("GET", "/a", 1), 200, 0.0, "a")
    log.flush()
    assert len(handler.records) == 1
    await asyncio.sleep(0)
    assert len(handler.records) == 1


def test_enabled_follows_the_loggers_level(access: tuple[AccessLog, Records]) -> None:
    log, _ = access
    assert log.enabled()
    log.logger.setLevel(logging.WARNING)
    assert not log.enabled()


async def test_a_request_through_the_app_has_one_line_under_its_id_by_the_time_the_app_stops(
    model_repo: Path,
) -> None:
    handler = Records()
    logger = logging.getLogger("service.access")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with serve(settings_for(model_repo)) as api:
            r = await api.client.post("/sample", json={"n": 1, "seed": 3}, headers={"X-Request-ID": "mine"})
            assert r.status_code == 200
        lines = [x for x in handler.records if getattr(x, "request_id", None) == "mine"]
        assert [x.getMessage().split()[:3] for x in lines] == [["POST", "/sample", "200"]]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
