"""503 handling: retried after Retry-After (seconds or HTTP date), bounded, capped; nothing else retried.
Scripted answers (httpx.MockTransport) make the counts exact; one test fills a real engine."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from service.client import ApiError, AsyncMadeClient, MadeClient
from service.client.calls import retry_delay

from .server import thread_server

OK = {"model": "m", "seed": 1, "images": [[0, 1]], "log_prob": [-1.0]}
BUSY = {"type": "tag:x", "title": "Engine Full", "status": 503, "detail": "full", "retry_after_s": 1}


def script(*answers: tuple[int, dict[str, str]]) -> tuple[list[httpx.Request], Callable]:
    """A handler answering with ``answers`` in turn (the last one repeats); records every request."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        status, headers = answers[min(len(seen), len(answers) - 1)]
        seen.append(request)
        body = OK if status == 200 else BUSY
        return httpx.Response(status, json=body, headers=headers)

    return seen, handle


def test_503_retried_as_retry_after_says() -> None:
    seen, handle = script((503, {"Retry-After": "0.2"}), (503, {"Retry-After": "0"}), (200, {}))
    with MadeClient("http://x", transport=httpx.MockTransport(handle)) as c:
        t0 = time.monotonic()
        out = c.sample(1, seed=1)
        assert time.monotonic() - t0 >= 0.2
    assert out.images == [[0, 1]] and c.retries == 2 and len(seen) == 3
    assert seen[0].content == seen[2].content  # the same body is sent again


def test_retries_are_bounded_and_waits_capped() -> None:
    seen, handle = script((503, {"Retry-After": "3600"}))
    with MadeClient(
        "http://x", max_retries=2, max_retry_wait_s=0.01, transport=httpx.MockTransport(handle)
    ) as c:
        t0 = time.monotonic()
        with pytest.raises(ApiError) as e:
            c.sample(1)
        assert time.monotonic() - t0 < 5
    assert e.value.status == 503 and e.value.problem["retry_after_s"] == 1 and len(seen) == 3


def test_other_errors_and_readiness_are_not_retried() -> None:
    seen, handle = script((500, {}))
    with MadeClient("http://x", transport=httpx.MockTransport(handle)) as c, pytest.raises(ApiError):
        c.models()
    assert len(seen) == 1
    seen, handle = script((503, {"Retry-After": "0"}))
    with MadeClient("http://x", transport=httpx.MockTransport(handle)) as c:
        assert c.model_ready("m") is False
    assert len(seen) == 1


def test_retry_delay_formats() -> None:
    def busy(**headers: str) -> httpx.Response:
        return httpx.Response(503, json=BUSY, headers=headers)

    assert retry_delay(busy(**{"Retry-After": "2"})) == 2.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_delay(busy(**{"Retry-After": later})) <= 31
    assert retry_delay(busy()) == 1.0  # the problem's retry_after_s
    assert retry_delay(httpx.Response(503, text="busy"), default=0.5) == 0.5


def test_async_client_retries_too() -> None:
    seen, handle = script((503, {"Retry-After": "0"}), (200, {}))

    async def go() -> None:
        async with AsyncMadeClient("http://x", transport=httpx.MockTransport(handle)) as c:
            assert (await c.sample(1)).seed == 1
            assert c.retries == 1

    asyncio.run(go())
    assert len(seen) == 2


def test_full_engine_answers_503_and_the_client_gets_through(client_repo: Path) -> None:
    # One row of capacity and nothing queued: while the first request waits out the admission window,
    # the others are refused with 503 + Retry-After and succeed on their retry.
    with thread_server(client_repo, max_active_rows=1, max_queued_rows=0, admission_window_ms=300) as url:

        async def go() -> tuple[list[int], int]:
            async with AsyncMadeClient(url, max_retries=10) as c:
                out = await asyncio.gather(*(c.sample(1, seed=s) for s in range(3)))
                return [o.seed for o in out], c.retries

        seeds, retries = asyncio.run(go())
        assert seeds == [0, 1, 2] and retries >= 1
        with MadeClient(url, max_retries=0) as c:
            assert "made_http_requests_total" in c.metrics()
