"""Continuous batching of log-prob work: an idle batcher starts at the end of the event loop's turn
(or after its fill window), rows that arrive while a batch runs form the next batch as it ends, and
stopping fails the running batch's callers. The worker is held on a gate, so the order of events is explicit, not timed."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from service.engine.logprob import INLINE_SIZES, NOGIL_MAX_ROWS, LogProbBatcher, inline_rows, log_prob_batch
from service.engine.logprob_kernel import NogilLogProb
from service.engine.types import EngineStopped, NullMetrics

from .conftest import BERN, make_model

_GATE_S = 60.0  # longest a held batch waits: a test that fails while one is held must not hang the run


class Gated(NullMetrics):
    """A batcher whose worker records each batch's rows and waits for :meth:`release` before it computes
    (batches run on the event loop are recorded apart and not held); also its metrics sink, keeping the
    batch sizes reported."""

    def __init__(
        self,
        max_wait_s: float = 0.0,
        max_batch: int = 64,
        inline: int = 0,
        kernel: bool = False,
        split: bool = True,
    ) -> None:
        self.model = make_model(distribution=BERN, hidden=(24,), direct=True)
        self.pool = ThreadPoolExecutor(1)
        self.batcher = LogProbBatcher(
            self.model,
            self.pool,
            max_batch,
            max_wait_s,
            1000,
            self,
            inline_rows=inline,
            kernel=NogilLogProb(self.model) if kernel else None,
            split=split,
        )
        self.batches: list[int] = []  # rows of each batch the worker ran
        self.reported: list[int] = []  # rows of each batch, as the metrics hook saw them
        self.inline: list[int] = []  # rows of each batch run on the event loop
        self.started = threading.Semaphore(0)  # one release per batch that reached the worker
        self.gate = threading.Semaphore(0)
        compute = self.batcher._compute

        def gated(x: np.ndarray, per_dim: bool) -> tuple[np.ndarray, np.ndarray | None]:
            if threading.current_thread() is threading.main_thread():  # inline, on the event loop
                self.inline.append(x.shape[0])
                return compute(x, per_dim)
            self.batches.append(x.shape[0])
            self.started.release()
            if not self.gate.acquire(timeout=_GATE_S):  # a failed test never releases it: do not hang
                raise TimeoutError("the test never released this batch")
            return compute(x, per_dim)

        self.batcher._compute = gated  # type: ignore[method-assign]

    def logprob_batch(self, rows: int) -> None:
        self.reported.append(rows)

    def rows(self, b: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 2, (b, self.model.data_dim)).astype(np.float64)

    async def started_batch(self) -> None:
        await asyncio.to_thread(self.started.acquire)

    def release(self) -> None:
        self.gate.release()


def _expected(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    return log_prob_batch(model, x, False)[0]  # type: ignore[arg-type]


def test_an_idle_batcher_starts_after_this_turn_and_arrivals_meanwhile_form_the_next_batch():
    g = Gated()

    async def body() -> None:
        xa, xb, xc = g.rows(1, 1), g.rows(2, 2), g.rows(3, 3)
        fa = g.batcher.submit(xa, False)  # idle, no window: starts when this turn of the loop ends
        assert g.batches == [] and g.batcher.busy
        await g.started_batch()
        fb, fc = g.batcher.submit(xb, False), g.batcher.submit(xc, False)
        assert g.batches == [1] and g.batcher.queued_rows == 5 and g.batcher.busy
        g.release()
        await g.started_batch()  # the two queued requests: one batch, started as the first ended
        assert fa.done() and not fb.done() and g.batches == [1, 5]
        g.release()
        outs = await asyncio.gather(fa, fb, fc)
        for x, out in zip((xa, xb, xc), outs, strict=True):
            np.testing.assert_allclose(out.log_prob, _expected(g.model, x), atol=1e-12)
        assert not g.batcher.busy and g.batcher.batches_run == 2

    asyncio.run(body())
    g.pool.shutdown()


def test_requests_submitted_in_one_turn_share_a_batch():
    g = Gated()

    async def body() -> None:
        futs = [g.batcher.submit(g.rows(1, i), False) for i in range(3)]  # one turn: no await between
        await g.started_batch()
        assert g.batches == [3]
        g.release()
        await asyncio.gather(*futs)

    asyncio.run(body())
    g.pool.shutdown()


def test_the_fill_window_applies_to_an_idle_batcher_only():
    g = Gated(max_wait_s=3600.0, max_batch=4)  # a window no test outlives: only a full batch starts one

    async def body() -> None:
        f1 = g.batcher.submit(g.rows(1, 1), False)
        await asyncio.sleep(0)
        assert g.batches == []  # waiting for the window
        f2 = g.batcher.submit(g.rows(3, 2), False)  # four rows: a full batch starts at once
        await g.started_batch()
        f3 = g.batcher.submit(g.rows(2, 3), False)
        g.release()
        await g.started_batch()  # queued while the first ran: no window before it
        assert g.batches == [4, 2]
        g.release()
        await asyncio.gather(f1, f2, f3)

    asyncio.run(body())
    g.pool.shutdown()


def test_with_the_kernel_a_batch_takes_half_the_rows_in_play():
    g = Gated(kernel=True)

    async def body() -> None:
        xs = [g.rows(1, i) for i in range(12)]
        futs = [g.batcher.submit(x, False) for x in xs[:8]]  # one turn: 8 rows in play
        await g.started_batch()
        assert g.batches == [4] and g.batcher.queued_rows == 4  # half; the event loop answers the rest
        futs += [g.batcher.submit(x, False) for x in xs[8:]]  # 4 queued + 4 arriving + 4 running
        g.release()
        await g.started_batch()  # half of the 12 in play as the first batch ended
        assert g.batches == [4, 6] and g.batcher.queued_rows == 2
        g.release()
        await g.started_batch()
        assert g.batches == [4, 6, 2] == g.reported  # the last 2 (half of 8 in play is 4)
        g.release()
        outs = await asyncio.gather(*futs)
        for x, out in zip(xs, outs, strict=True):
            np.testing.assert_allclose(out.log_prob, _expected(g.model, x), atol=1e-9)

    asyncio.run(body())
    g.pool.shutdown()


@pytest.mark.parametrize("kernel, split", [(True, False), (False, True)])
def test_without_split_or_without_the_kernel_a_batch_takes_every_queued_row(kernel: bool, split: bool):
    g = Gated(kernel=kernel, split=split)  # torch's forward pass takes the GIL: halves would not overlap
    assert g.batcher.split is False

    async def body() -> None:
        futs = [g.batcher.submit(g.rows(1, i), False) for i in range(8)]
        await g.started_batch()
        assert g.batches == [8]
        g.release()
        await asyncio.gather(*futs)

    asyncio.run(body())
    g.pool.shutdown()


def test_halves_too_large_for_the_kernel_are_not_split():
    g = Gated(kernel=True, max_batch=1024)
    half = NOGIL_MAX_ROWS + 1  # two requests of this many rows: half of them is over the kernel's limit

    async def body() -> None:
        futs = [g.batcher.submit(g.rows(half, 1), False), g.batcher.submit(g.rows(half, 2), False)]
        assert g.batcher.batch_limit() == 1024
        await g.started_batch()
        assert g.batches == [2 * half]  # to torch, as one batch
        g.release()
        await asyncio.gather(*futs)

    asyncio.run(body())
    g.pool.shutdown()


def test_closing_fails_the_running_batch_and_refuses_later_work():
    g = Gated()

    async def body() -> None:
        running = g.batcher.submit(g.rows(2, 1), False)
        await g.started_batch()
        queued = g.batcher.submit(g.rows(1, 2), False)
        g.batcher.close(EngineStopped("stopping"))
        for fut in (running, queued):
            with pytest.raises(EngineStopped):
                await fut
        with pytest.raises(EngineStopped):
            g.batcher.submit(g.rows(1, 3), False)
        g.release()  # the worker finishes; its result has no one left to answer
        await asyncio.to_thread(g.pool.shutdown)
        assert g.batches == [2] and not g.batcher.busy

    asyncio.run(body())


def test_small_batches_run_on_the_event_loop_larger_ones_in_the_worker():
    g = Gated(inline=2)

    async def body() -> None:
        xs, xl = g.rows(2, 1), g.rows(3, 2)
        small = await g.batcher.submit(xs, False)  # never reaches the gated worker
        assert g.inline == [2] and g.batches == [] and g.batcher.batches_run == 1 and g.reported == [2]
        np.testing.assert_allclose(small.log_prob, _expected(g.model, xs), atol=1e-12)
        large = g.batcher.submit(xl, False)
        await g.started_batch()
        assert g.batches == [3] and g.inline == [2]
        g.release()
        np.testing.assert_allclose((await large).log_prob, _expected(g.model, xl), atol=1e-12)

    asyncio.run(body())
    g.pool.shutdown()


def test_an_inline_failure_fails_its_batch_only():
    g = Gated(inline=4)

    def broken(x: np.ndarray, per_dim: bool) -> tuple[np.ndarray, None]:
        raise RuntimeError("boom")

    async def body() -> None:
        g.batcher._compute = broken  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="log-prob failed: boom"):
            await g.batcher.submit(g.rows(1, 1), False)
        assert not g.batcher.busy

    asyncio.run(body())
    g.pool.shutdown()


def test_the_inline_size_comes_from_timed_forward_passes():
    model = make_model(distribution=BERN, hidden=(24,), direct=True)
    assert inline_rows(model, 0.0) == 0  # off
    assert inline_rows(model, float("inf"), repeats=1) == INLINE_SIZES[-1]  # every size within the limit
