"""bench/http.py's cases are valid requests, answered 200 both by the floor app and by the service's
own validation (so the two are compared on the same work); no load generator runs here."""

from __future__ import annotations

import httpx
import pytest

from bench.floor import create_floor_app
from bench.http import cases

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


async def test_the_floor_answers_every_case() -> None:
    app = create_floor_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://floor") as client:
        for case in cases("mnist-fast", 32):
            r = await client.post(
                case.path, content=case.body.data, headers={"content-type": case.body.content_type}
            )
            assert r.status_code == 200, (case.name, r.text)
        r = await client.post("/sample", content=b'{"n": "x"}', headers={"content-type": "application/json"})
        assert r.status_code == 422  # the floor validates the body as the service does


def test_cases_cover_the_issue() -> None:
    names = [c.name for c in cases("mnist-fast", 32)]
    assert "/sample n=1 (mnist-fast)" in names
    assert any("default model" in n and "/sample" in n for n in names)
    assert any("/log-prob" in n and "JSON" in n for n in names)
    assert any("/complete faces" in n and "PNG" in n for n in names)
    assert any("upload" in n for n in names)
    assert [c.clients for c in cases("mnist-fast", 32)].count(1) == 1  # one lone client
