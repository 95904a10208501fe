"""Engine behaviour: cancellation, limits, deadlines, failures, log-prob batching, stop, metrics."""

import asyncio
import time

import numpy as np
import pytest
import torch

from service.engine import Engine, EngineConfig, EngineError, EngineFull, EngineStopped, EngineTimeout
from service.engine.loop import _work_units
from service.engine.types import NullMetrics

from .conftest import BERN, make_model, reference, run_engine

# one step per chunk, preempted at once: requests stay in flight a while (test_admission covers min_chunk_ms)
SLOW = dict(steps_per_chunk=1, chunk_budget_ms=0, min_chunk_ms=0)


def slow_down(engine: Engine, seconds: float) -> None:
    """Make every chunk take at least ``seconds`` (a stand-in for a big model)."""
    advance = engine._runner.advance

    def slow(slots, steps, *hint):
        time.sleep(seconds)
        return advance(slots, steps, *hint)

    engine._runner.advance = slow


async def wait_for(cond, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_cancelled_request_leaves_at_the_next_step(backend):
    model = make_model(data_dim=64)

    async def body(engine):
        slow_down(engine, 0.002)
        task = asyncio.create_task(engine.sample(5, 1))
        await wait_for(lambda: engine.stats().active_rows == 5)
        steps_before = engine.stats().steps_run
        task.cancel()
        await wait_for(lambda: engine.stats().active_rows == 0, timeout=0.5)
        assert engine.stats().steps_run - steps_before <= 2  # gone after the chunk in flight
        with pytest.raises(asyncio.CancelledError):
            await task
        return await engine.sample(2, 3)  # the engine carries on

    out = run_engine(model, body, backend=backend, **SLOW)
    np.testing.assert_array_equal(out.x, reference(model, 2, 3))


def test_engine_full_is_raised_at_once_and_counts_only_queued_rows():
    model = make_model(data_dim=64)

    async def body(engine):
        slow_down(engine, 0.002)
        first = asyncio.create_task(engine.sample(2, 0))  # fills both active rows
        second = asyncio.create_task(engine.sample(1, 1))  # the one queued row allowed
        await asyncio.sleep(0)
        t0 = time.monotonic()
        with pytest.raises(EngineFull) as info:
            await engine.sample(1, 2)
        assert time.monotonic() - t0 < 0.05 and info.value.retry_after_s > 0
        with pytest.raises(ValueError, match="capacity"):
            await engine.sample(4, 2)  # can never fit
        return await asyncio.gather(first, second)

    outs = run_engine(model, body, max_active_rows=2, max_queued_rows=1, **SLOW)
    np.testing.assert_array_equal(outs[1].x, reference(model, 1, 1))


def test_deadline_raises_engine_timeout_and_frees_rows():
    model = make_model(data_dim=64)

    async def body(engine):
        slow_down(engine, 0.003)
        t0 = time.monotonic()
        with pytest.raises(EngineTimeout):
            await engine.sample(3, 0, timeout_s=0.03)
        assert time.monotonic() - t0 < 0.3
        await wait_for(lambda: engine.stats().active_rows == 0, timeout=0.5)
        return await engine.sample(1, 5, timeout_s=30)

    out = run_engine(model, body, backend="numba", **SLOW)
    np.testing.assert_array_equal(out.x, reference(model, 1, 5))


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_failure_in_a_step_fails_only_that_steps_requests(backend):
    model = make_model(data_dim=16)

    async def body(engine):
        advance = engine._runner.advance
        calls = {"n": 0}

        def flaky(slots, steps, *hint):
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("injected")
            return advance(slots, steps, *hint)

        engine._runner.advance = flaky
        in_step = asyncio.create_task(engine.sample(2, 0))  # occupies both rows
        waiting = asyncio.create_task(engine.sample(1, 1))  # queued, not in the failing step
        results = await asyncio.gather(in_step, waiting, return_exceptions=True)
        after = await engine.sample(2, 2)
        return results, after, engine.stats()

    (failed, ok), after, stats = run_engine(model, body, backend=backend, max_active_rows=2, **SLOW)
    assert isinstance(failed, EngineError) and "injected" in str(failed)
    np.testing.assert_array_equal(ok.x, reference(model, 1, 1))
    np.testing.assert_array_equal(after.x, reference(model, 2, 2))
    assert stats.requests_failed == 1 and stats.running


@pytest.mark.parametrize("num_masks", [1, 3])
def test_log_prob_matches_model_and_is_micro_batched(num_masks):
    model = make_model(distribution=BERN, hidden=(24, 16), num_masks=num_masks, direct=True)
    xs = [reference(model, b, seed=b) for b in (1, 3, 5, 2, 4, 1, 1, 2)]

    async def body(engine):
        outs = await asyncio.gather(*(engine.log_prob(x, per_dim=i % 2 == 0) for i, x in enumerate(xs)))
        return outs, engine._batcher.batches_run

    outs, batches = run_engine(model, body, logprob_max_wait_ms=20.0)
    assert batches < len(xs)
    with torch.no_grad():
        for i, (x, out) in enumerate(zip(xs, outs, strict=True)):
            xt = torch.as_tensor(x, dtype=torch.float64)
            np.testing.assert_allclose(out.log_prob, model.log_prob(xt).numpy(), atol=1e-10)
            if i % 2:
                assert out.per_dim is None
                continue
            np.testing.assert_allclose(out.per_dim.sum(-1), out.log_prob, atol=1e-10)
            np.testing.assert_allclose(out.per_dim, model.ensemble_log_prob_per_dim(xt).numpy(), atol=1e-10)


def test_bad_inputs_are_value_errors_naming_the_field():
    model = make_model(num_masks=2, ordering="random", vary_ordering=True)
    d = model.data_dim

    async def body(engine):
        for call, match in [
            (engine.log_prob(np.zeros((2, d + 1))), "x must have 16 values"),
            (engine.log_prob(np.full((1, d), 0.5)), "integer levels in 0..1"),
            (engine.log_prob(np.full((1, d), 2.0)), "integer levels in 0..1"),
            (engine.log_prob(np.full((1, d), -1.0)), "integer levels in 0..1"),
            (engine.log_prob(np.full((1, d), np.nan)), "NaN or infinite"),
            (engine.log_prob(np.full((1, d), np.inf)), "NaN or infinite"),
            (engine.log_prob(np.zeros((1, d)), per_dim=True), "share one ordering"),
            (engine.sample(0, 1), "n must be a positive integer"),
            (engine.sample(1, -1), "seed"),
            (engine.complete(np.zeros(d), d + 1, 1, 0), "n_known"),
            (engine.complete(np.zeros(d), 3, 1, 0), "share one ordering"),
        ]:
            with pytest.raises(ValueError, match=match):
                await call

    run_engine(model, body)


def test_stop_finishes_in_flight_work_then_refuses():
    model = make_model(data_dim=32)

    async def body():
        engine = Engine(model, EngineConfig(**SLOW))
        await engine.start()
        assert engine.running
        task = asyncio.create_task(engine.sample(2, 4))
        await asyncio.sleep(0)
        await engine.stop(grace_s=5.0)
        assert not engine.running
        with pytest.raises(EngineStopped):
            await engine.sample(1, 0)
        await engine.start()  # and it can be started again
        again = await engine.sample(1, 0)
        await engine.stop()
        return await task, again

    out, again = asyncio.run(body())
    np.testing.assert_array_equal(out.x, reference(model, 2, 4))
    np.testing.assert_array_equal(again.x, reference(model, 1, 0))


def test_stop_past_its_grace_fails_what_is_left():
    model = make_model(data_dim=64)

    async def body():
        engine = Engine(model, EngineConfig(backend="numba", **SLOW))
        await engine.start()
        slow_down(engine, 0.005)
        task = asyncio.create_task(engine.sample(2, 4))
        await asyncio.sleep(0.01)
        await engine.stop(grace_s=0.0)
        with pytest.raises(EngineStopped):
            await task

    asyncio.run(body())


class Recorder(NullMetrics):
    def __init__(self) -> None:
        self.steps: list[tuple[float, int]] = []
        self.done: list[tuple[str, str]] = []
        self.gauge_calls = 0

    def step(self, latency_s: float, rows: int) -> None:
        self.steps.append((latency_s, rows))

    def request_done(self, kind: str, queue_s: float, total_s: float, outcome: str) -> None:
        assert 0 <= queue_s <= total_s
        self.done.append((kind, outcome))

    def gauges(self, queued_rows: int, active_rows: int) -> None:
        self.gauge_calls += 1


def test_metrics_hooks_see_steps_requests_and_gauges():
    model = make_model()
    rec = Recorder()

    async def body():
        engine = Engine(model, EngineConfig(max_active_rows=4, max_queued_rows=0), metrics=rec)
        await engine.start()
        await asyncio.gather(engine.sample(3, 0), engine.complete(np.zeros(16), 4, 1, 0))
        with pytest.raises(EngineFull):
            await asyncio.gather(engine.sample(4, 1), engine.sample(1, 2))
        await engine.log_prob(np.zeros((2, 16)))
        await engine.stop(1.0)

    asyncio.run(body())
    assert rec.steps and all(lat > 0 and rows >= 1 for lat, rows in rec.steps)
    assert ("sample", "ok") in rec.done and ("complete", "ok") in rec.done
    assert ("sample", "rejected") in rec.done and ("log_prob", "ok") in rec.done
    assert rec.gauge_calls > 0


def test_a_long_chunk_is_preempted_by_a_new_arrival():
    """With chunks long enough to finish a whole request, a request arriving mid-chunk still joins the
    running rows (a step with both requests' rows) instead of waiting for the others to finish."""
    model = make_model(data_dim=784, hidden=(500,))
    rec = Recorder()

    async def body():
        engine = Engine(model, EngineConfig(steps_per_chunk=784, chunk_budget_ms=10_000), metrics=rec)
        await engine.start()
        first = asyncio.create_task(engine.sample(256, 0))
        await wait_for(lambda: engine.stats().active_rows == 256)
        second = await engine.sample(1, 1)
        await first
        await engine.stop(1.0)
        return second

    second = asyncio.run(body())
    assert any(rows == 257 for _, rows in rec.steps), rec.steps
    np.testing.assert_array_equal(second.x, reference(model, 1, 1))


def test_float32_model_serves_valid_samples_with_their_log_prob():
    """Serving dtype: draws are data values and their log p agrees with the model's own (float32)."""
    model = make_model(distribution=BERN, hidden=(24,), num_masks=2).float()

    async def body(engine):
        return await engine.sample(32, 0), engine.backend

    out, backend = run_engine(model, body)
    assert backend in ("stream", "numba") and set(np.unique(out.x)) <= {0.0, 1.0}
    with torch.no_grad():
        expect = model.log_prob(torch.as_tensor(out.x)).double().numpy()
    np.testing.assert_allclose(out.log_prob, expect, rtol=1e-5, atol=1e-4)
    assert 0.2 < out.x.mean() < 0.8


def test_config_is_checked():
    for bad in [
        dict(max_active_rows=0),
        dict(max_queued_rows=-1),
        dict(backend="gpu"),
        dict(request_timeout_s=0),
    ]:
        with pytest.raises(ValueError):
            EngineConfig(**bad)


@pytest.mark.parametrize("backend", ["numba", "stream"])
def test_admission_window_gathers_arrivals_into_the_first_step(backend):
    model = make_model(data_dim=32)
    rec = Recorder()

    async def body():
        engine = Engine(model, EngineConfig(backend=backend, admission_window_ms=50.0), metrics=rec)
        await engine.start()
        first = asyncio.create_task(engine.sample(2, 0))
        await asyncio.sleep(0.01)  # arrives inside the window opened by the first request
        second = asyncio.create_task(engine.sample(3, 1))
        outs = await asyncio.gather(first, second)
        await engine.stop(1.0)
        return outs

    outs = asyncio.run(body())
    assert rec.steps[0][1] == 5  # both requests' rows in the very first step
    np.testing.assert_array_equal(outs[1].x, reference(model, 3, 1))


def test_a_chunk_ends_when_its_first_row_finishes():
    """A request with few steps left returns as soon as its rows finish, while a long one runs on
    (its rows are not held until the end of a long chunk)."""
    model = make_model(data_dim=784, hidden=(64,))
    known = reference(model, 1, 5)[0]

    async def body():
        engine = Engine(model, EngineConfig(backend="numba", steps_per_chunk=1, chunk_budget_ms=1e9))
        await engine.start()
        slow_down(engine, 0.005)
        first = asyncio.create_task(engine.sample(64, 0))
        await wait_for(lambda: engine.stats().active_rows == 64)
        short = await engine.complete(known, 781, 1, 5)
        running = engine.stats().active_rows
        await first
        await engine.stop(1.0)
        return short, running

    short, running = asyncio.run(body())
    assert running == 64  # the long request's rows are still mid-loop
    np.testing.assert_array_equal(short.x, reference(model, 1, 5, known, 781))


def test_work_units_sum_the_per_step_cost():
    """The chunk planner's cost model: a step at position i costs 1 + (D - i) / D."""
    d, steps = 10, 4
    pos, ends = np.array([0, 3, 8, 10]), np.array([10, 10, 10, 10])
    expect = sum(1 + (d - i) / d for p in pos for i in range(p, min(p + steps, d)))
    assert _work_units(pos, steps, ends, d) == pytest.approx(expect)
