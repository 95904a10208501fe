"""Every request the engine is asked for ends in exactly one outcome counter (ok, cancelled, error,
rejected, timeout, stopped), for each kind: samples, completions and log-probs, including callers
that go away while queued or mid-batch (the issue: ten abandoned /log-prob requests, two counted)."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest

from service.engine import Engine, EngineConfig, EngineError
from service.engine.types import NullMetrics

from .conftest import make_model


class Recording(NullMetrics):
    """The engine's metrics sink, keeping every outcome."""

    def __init__(self) -> None:
        self.outcomes: Counter[tuple[str, str]] = Counter()

    def request_done(self, kind: str, queue_s: float, total_s: float, outcome: str) -> None:
        self.outcomes[(kind, outcome)] += 1


async def _settle(tasks: list[asyncio.Task[object]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


def run(model, body, **cfg) -> Counter[tuple[str, str]]:
    rec = Recording()

    async def main() -> None:
        engine = Engine(model, EngineConfig(**cfg), metrics=rec)
        await engine.start()
        try:
            await body(engine)
        finally:
            await engine.stop(1.0)

    asyncio.run(main())
    return rec.outcomes


@pytest.mark.parametrize("kind", ["sample", "complete", "log_prob"])
def test_each_request_ends_in_one_counter(kind):
    model = make_model(data_dim=32)
    rng = np.random.default_rng(0)
    known = rng.integers(0, 2, 32).astype(np.float32)
    calls = {"n": 0}

    def call(engine: Engine, i: int, timeout_s: float | None = None):
        calls["n"] += 1
        if kind == "sample":
            return engine.sample(2, i, timeout_s=timeout_s)
        if kind == "complete":
            return engine.complete(known, 8, 2, i, timeout_s=timeout_s)
        return engine.log_prob(rng.integers(0, 2, (3, 32)).astype(np.float32), timeout_s=timeout_s)

    async def body(engine: Engine) -> None:
        done = [asyncio.ensure_future(call(engine, i)) for i in range(6)]
        await _settle(done)  # six answered
        gone_at_once = [asyncio.ensure_future(call(engine, 100 + i)) for i in range(5)]
        await asyncio.sleep(0)
        for t in gone_at_once:  # clients that went away while queued
            t.cancel()
        later = [asyncio.ensure_future(call(engine, 200 + i)) for i in range(5)]
        await asyncio.sleep(0.002)
        for t in later[::2]:  # and some mid-way
            t.cancel()
        expired = [asyncio.ensure_future(call(engine, 300 + i, timeout_s=1e-6)) for i in range(3)]
        await _settle(gone_at_once + later + expired)
        for j in range(3):  # later work: whatever was in flight has settled its outcome
            await call(engine, 900 + j)

    # requests wait 50 ms before admission (a batch), so the five cancelled at once are still queued
    # whatever the machine's speed; the later ones may finish or not: either way, one counter each
    outcomes = run(model, body, logprob_max_wait_ms=50.0, admission_window_ms=50.0)
    mine = {o: n for (k, o), n in outcomes.items() if k == kind}
    assert sum(mine.values()) == calls["n"], (calls, outcomes)  # one counter per request, no more
    assert set(mine) <= {"ok", "cancelled", "timeout"}, mine
    assert mine["ok"] >= 9 and mine.get("cancelled", 0) >= 5, mine


def test_refused_and_stopped_requests_are_counted_once():
    model = make_model(data_dim=32)

    async def body(engine: Engine) -> None:
        with pytest.raises(ValueError, match="capacity"):
            engine.check_capacity(40)  # can never fit: a bad request, not an outcome
        queued = [asyncio.ensure_future(engine.log_prob(np.zeros((2, 32), np.float32))) for _ in range(4)]
        await asyncio.sleep(0)
        engine._batcher.fail_all(EngineError("stopping"))
        await _settle(queued)

    outcomes = run(model, body, max_active_rows=8, max_queued_rows=8, logprob_max_wait_ms=50.0)
    assert outcomes[("log_prob", "stopped")] == 4
    assert sum(outcomes.values()) == 4, outcomes
