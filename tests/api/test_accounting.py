"""Through the app: every request that reaches an engine ends in exactly one outcome counter, for each
route, including clients that hang up mid-request (answered 499 in the access log)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Api, D, hang_up, serve, settings_for

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
async def api(model_repo: Path, anyio_backend: str) -> AsyncIterator[Api]:
    """Requests wait 20 ms (sampling) or 50 ms (log-prob batches) before any work starts, so a client
    that hangs up right after its body is gone while its request is still queued, on any machine."""
    async with serve(settings_for(model_repo, logprob_max_wait_ms=50.0)) as a:
        yield a


BODIES = {
    "/sample": ("sample", {"n": 2, "seed": 1}),
    "/complete": ("complete", {"inputs": [[0, 1] * (D // 2)], "n": 2, "seed": 1, "known_rows": 2}),
    "/log-prob": ("log_prob", {"inputs": [[0, 1] * (D // 2)] * 3}),
}


async def outcomes(api: Api) -> Counter[tuple[str, str]]:
    text = (await api.client.get("/metrics")).text
    out: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "made_engine_requests":
            for s in family.samples:
                if s.name.endswith("_total") and s.labels["model"] == "tiny":
                    out[(s.labels["kind"], s.labels["outcome"])] += int(s.value)
    return out


@pytest.mark.parametrize("path", list(BODIES))
async def test_every_request_ends_in_one_counter(api: Api, path: str) -> None:
    kind, payload = BODIES[path]
    body = json.dumps(payload).encode()
    before = await outcomes(api)
    answered = await asyncio.gather(
        *(api.client.post(path, content=body, headers={"content-type": "application/json"}) for _ in range(4))
    )
    assert [r.status_code for r in answered] == [200] * 4
    statuses = [await hang_up(api.app, path, body) for _ in range(10)]
    assert statuses == [499] * 10
    await api.client.post(path, content=body, headers={"content-type": "application/json"})
    after = await outcomes(api)
    delta = {o: after[(kind, o)] - before[(kind, o)] for (k, o) in after if k == kind}
    delta = {o: n for o, n in delta.items() if n}
    assert sum(delta.values()) == 15, delta  # 5 answered + 10 gone: each counted once
    assert delta.get("ok", 0) == 5 and delta.get("cancelled", 0) == 10, delta
