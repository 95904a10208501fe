"""Metrics labels stay bounded whatever clients send (issue: junk paths grew /metrics to 229 MB)."""

from __future__ import annotations

import random

import pytest

from .conftest import Api

pytestmark = pytest.mark.anyio

JUNK_METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW", "X-JUNK", "HEAD")


async def _junk(api: Api, rng: random.Random, count: int) -> None:
    for i in range(count):
        token = f"{rng.getrandbits(48):x}"
        path = rng.choice(
            [
                f"/{token}",
                f"/models/{token}/",  # a slash that once redirected
                f"/models/{token}/examples/{i}",
                f"/v2/{token}",
                f"/sample/{token}",
            ]
        )
        method = rng.choice(JUNK_METHODS)
        headers = {"origin": f"http://{token}.example", "access-control-request-method": "POST"}
        r = await api.client.request(method, path, headers=headers)
        assert r.status_code < 500, (method, path, r.status_code)


async def test_junk_requests_do_not_grow_the_scrape(api: Api) -> None:
    rng = random.Random(0)
    await _junk(api, rng, 200)  # every label combination junk can reach now exists
    await api.client.get("/metrics")  # and the scrape's own series
    before = (await api.client.get("/metrics")).text
    await _junk(api, rng, 2000)
    after = (await api.client.get("/metrics")).text
    series = lambda text: {ln.rsplit(" ", 1)[0] for ln in text.splitlines() if ln and ln[0] != "#"}  # noqa: E731
    assert series(after) == series(before)  # the same series, only their counts moved
    assert "<unmatched>" in after and 'method="OTHER"' in after
    assert "/models/{name}" in after or "/models" in after


async def test_matched_routes_are_labelled_by_template(api: Api) -> None:
    await api.client.get("/models/tiny")
    await api.client.get("/models/nope")
    text = (await api.client.get("/metrics")).text
    assert 'route="/models/{name}"' in text
    assert "/models/tiny" not in text and "/models/nope" not in text
