"""Admission under load: refusals before any allocation, deadline-aware admission from the measured
drain rate, Retry-After within its bounds, preemption deferred by ``min_chunk_ms``, and the one-timer
deadline of an awaited request. No wall-clock assertions: rates and timers are set or fired by hand."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from service.engine import EngineConfig, EngineFull
from service.engine.engine import _await_until
from service.engine.scheduler import Request, Scheduler

from .conftest import make_model, reference, run_engine


def _request(n: int) -> Request:
    return Request("sample", n, 0, 16, 1e9, 0.0, None)


def test_check_refuses_past_the_queue_and_past_the_deadline_horizon():
    s = Scheduler(max_active_rows=4, max_queued_rows=8)
    s.check(4 + 8)  # fills free slots and the queue: admitted
    with pytest.raises(ValueError, match="capacity"):
        s.check(13)
    s.submit(_request(6))  # 4 placed at the next step, 2 queued
    with pytest.raises(EngineFull, match="queue is full"):
        s.check(7)
    # the engine drains 5 rows before a deadline: 6 waiting + 1 more is past it, but an idle engine
    # always admits up to its active capacity (a low early estimate never starves it)
    with pytest.raises(EngineFull, match="deadline") as info:
        s.check(1, retry_after_s=2.5, horizon_rows=5)
    assert info.value.retry_after_s == 2.5
    s.check(1, horizon_rows=7)
    idle = Scheduler(max_active_rows=4, max_queued_rows=8)
    idle.check(4, horizon_rows=0)


def test_retry_after_is_backlog_over_drain_rate_within_bounds():
    model = make_model()

    async def body(engine):
        loop = engine._loop
        assert loop.retry_after() == 1.5  # no rate measured yet: the lower bound
        loop.counters.rows_per_s = 2.0
        for n in (3, 3, 3):
            engine._sched.submit(_request(n))
        assert loop.retry_after() == pytest.approx(9 / 2.0)
        loop.counters.rows_per_s = 1000.0
        assert loop.retry_after() == 1.5
        loop.counters.rows_per_s = 0.01
        assert loop.retry_after() == 6.0
        assert loop.horizon_rows(10.0) == 0
        engine._sched.fail(engine._sched.pending())  # the queued rows are fakes: drop them unrun
        return True

    assert run_engine(model, body, retry_after_min_s=1.5, retry_after_max_s=6.0)


def test_rows_per_second_is_row_steps_over_dimension_time():
    model = make_model()

    async def body(engine):
        loop = engine._loop
        before, after = np.array([0, 0, 0, 0]), np.array([4, 4, 4, 4])  # 4 rows x 4 steps of D=16
        loop.counters.rows_per_s = None
        loop._record_chunk(2.0, before, after)
        return loop.counters.rows_per_s

    assert run_engine(model, body) == pytest.approx(16 / (16 * 2.0))  # one row's worth per 2 s


def test_refused_request_is_counted_once_and_allocates_nothing():
    model = make_model()
    counts: list[str] = []

    async def body(engine):
        engine.metrics.request_done = lambda kind, q, t, outcome: counts.append(outcome)
        engine._sched.check = lambda *a: (_ for _ in ()).throw(EngineFull("full", 2.0))
        with pytest.raises(EngineFull):
            await engine.sample(3, 0)
        with pytest.raises(EngineFull):
            engine.check_capacity(3)
        return engine._sched.queued_rows

    assert run_engine(model, body) == 0
    assert counts == ["rejected", "rejected"]


def test_preemption_waits_for_min_chunk_ms_and_then_fires():
    model = make_model()

    async def body(engine):
        loop = engine._loop
        runner = loop.runner
        loop._chunk_started = time.perf_counter()  # a chunk in flight, just begun
        runner.preempt[0] = 0
        loop.wake()
        assert runner.preempt[0] == 0 and loop._preempt_timer is not None  # deferred, not dropped
        timer = loop._preempt_timer
        loop.wake()
        assert loop._preempt_timer is timer  # one timer however many arrivals
        timer._run()  # what the event loop does when it is due
        assert runner.preempt[0] == 1
        loop._chunk_started = None
        runner.preempt[0] = 0
        loop.wake()
        assert runner.preempt[0] == 1  # no chunk in flight: at once
        return True

    assert run_engine(model, body, backend="numba", min_chunk_ms=60_000.0)


def test_min_chunk_ms_keeps_samples_exact_among_arrivals():
    model = make_model(data_dim=32)

    async def body(engine):
        outs = await asyncio.gather(*(engine.sample(2, s) for s in range(6)))
        return [o.x for o in outs]

    for cfg in ({"min_chunk_ms": 0.0}, {"min_chunk_ms": 5.0}):
        xs = run_engine(model, body, **cfg)
        for s, x in enumerate(xs):
            np.testing.assert_array_equal(x, reference(model, 2, s))


def test_await_until_times_out_once_and_passes_other_cancellations():
    async def main() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with pytest.raises(TimeoutError):
            await _await_until(fut, 0.0)
        timed_out = fut.cancelled()
        fut2 = loop.create_future()
        task = asyncio.ensure_future(_await_until(fut2, 60.0))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        fut3 = loop.create_future()
        loop.call_soon(fut3.set_result, 7)
        assert await _await_until(fut3, 60.0) == 7
        return timed_out, fut2.cancelled()

    assert asyncio.run(main()) == (True, True)


def test_config_rejects_inverted_retry_bounds():
    with pytest.raises(ValueError, match="retry_after"):
        EngineConfig(retry_after_min_s=5.0, retry_after_max_s=1.0)
