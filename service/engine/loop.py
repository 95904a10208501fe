"""The sampling loop: one asyncio task that alternates scheduler visits with compiled chunks.

Each iteration (on the event-loop thread) reaps cancelled and expired requests and admits waiting
rows, then hands one chunk to a dedicated worker thread: place the admitted rows (prefill for
completions), advance every active row, read out the rows that finished. The event loop stays
responsive meanwhile, and requests join at the next chunk. A chunk lasts at least ``steps_per_chunk``
steps and otherwise until its first row finishes, within about ``chunk_budget_ms`` of estimated
compute; a submission or a cancellation preempts it after the current step once it has run
``min_chunk_ms`` (a flag the kernel polls), so long chunks cost little admission latency and a stream
of arrivals cannot cut every chunk to one step. A chunk estimated below ``inline_chunk_ms`` (a lone
small request) runs on the event-loop thread instead of paying two thread hand-offs, and one below
``parallel_chunk_ms`` on one kernel thread. A step that raises fails the requests whose rows were in
it, and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import torch

from service.made import MADE

from .logprob import LogProbBatcher
from .prefill import Prepared
from .runner_numba import NumbaRunner
from .runner_torch import TorchRunner
from .scheduler import Admission, Reaped, Request, Scheduler
from .types import EngineConfig, EngineError, EngineMetrics, EngineStopped, EngineTimeout, SampleOutput

__all__ = ["Job", "SamplingLoop", "sampling_thread"]

log = logging.getLogger(__name__)

# new positions, compute seconds, slots that finished, their values (raster order) and log p_k
_ChunkResult = tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]


def _work_units(pos: np.ndarray, steps: int, ends: np.ndarray, d: int) -> float:
    """Relative compute of advancing rows at ``pos`` by ``steps`` (not past ``ends``). A step at
    position ``i`` costs about ``1 + (D - i) / D``: the hidden units and outputs it updates are those of
    degree or position above ``i`` (measured: the first steps cost about twice the last). Summed over
    ``i`` in ``[a, b)``: ``n + n (2D - a - b + 1) / (2D)`` with ``n = b - a``."""
    b = np.minimum(pos + steps, ends)
    n = np.maximum(b - pos, 0)
    return float((n + n * (2 * d - pos - b + 1) / (2 * d)).sum())


def sampling_thread() -> None:
    """Initialiser of the sampling worker: its torch work is single-row prefill, where intra-op
    threads only add waits (the setting is per thread; the log-prob worker keeps torch's default)."""
    torch.set_num_threads(1)


@dataclass(eq=False)
class Job:
    """Engine-side payload of a sampling request: inputs, the awaited future, the rows' results."""

    seed: int
    known: np.ndarray | None
    n_known: int
    future: asyncio.Future[SampleOutput]
    x: np.ndarray
    lp: np.ndarray
    prepared: Prepared | None = None
    settled: bool = False
    temperature: float = 1.0  # sampling temperature of every row (0: the most probable values)


@dataclass
class _Counters:
    steps_run: int = 0
    chunks_run: int = 0
    chunks_inline: int = 0  # of which run on the event-loop thread
    rows_sampled: int = 0
    ok: int = 0
    failed: int = 0
    unit_s: float | None = None  # EMA of compute per work unit (see _work_units)
    rows_per_s: float | None = None  # EMA of finished rows per second
    side_tasks: set[asyncio.Task[None]] = field(default_factory=set)


class SamplingLoop:
    """Scheduler visits, worker hand-offs and request settlement for one engine."""

    def __init__(
        self,
        model: MADE,
        runner: NumbaRunner | TorchRunner,
        sched: Scheduler,
        config: EngineConfig,
        metrics: EngineMetrics,
        name: str,
    ) -> None:
        self.model, self.runner, self.sched = model, runner, sched
        self.config, self.metrics, self.name = config, metrics, name
        self.counters = _Counters()
        self.executor: Executor | None = None
        self.batcher: LogProbBatcher | None = None
        self.event: asyncio.Event | None = None
        self._chunk_started: float | None = None  # perf_counter when the chunk in flight was handed out
        self._preempt_timer: asyncio.TimerHandle | None = None

    def warmup(self) -> None:
        """Compile (or load) what the loop runs, before the first request (on the worker thread)."""
        self.runner.warmup()

    # --- signals from the request side ---------------------------------------------------------------
    def wake(self, req: Request | None = None) -> None:
        """New work or a cancellation (of ``req``): wake the idle loop and preempt the chunk in flight, once it has
        run ``min_chunk_ms`` (so a stream of arrivals cannot cut chunks to a step each: every chunk
        pays a scheduler visit and two thread hand-offs)."""
        if self.event is not None:
            self.event.set()
        started = self._chunk_started
        if started is None:
            self.runner.preempt[0] = 1
            return
        wait = started + self.config.min_chunk_ms / 1000.0 - time.perf_counter()
        if wait <= 0:
            self.runner.preempt[0] = 1
        elif self._preempt_timer is None:
            self._preempt_timer = asyncio.get_running_loop().call_later(wait, self._preempt)

    def _preempt(self) -> None:
        self._preempt_timer = None
        self.runner.preempt[0] = 1

    def retry_after(self) -> float:
        """Seconds until the current backlog should have drained at the measured rate (queued and
        active rows over recent finished rows per second), within the configured bounds (for
        ``Retry-After``)."""
        cfg, rate = self.config, self.counters.rows_per_s
        if not rate:
            return cfg.retry_after_min_s
        backlog = self.sched.queued_rows + self.sched.active_rows
        return float(min(cfg.retry_after_max_s, max(cfg.retry_after_min_s, backlog / rate)))

    def horizon_rows(self, timeout_s: float) -> int | None:
        """Rows the engine drains within ``timeout_s`` at the measured rate (None before any chunk)."""
        rate = self.counters.rows_per_s
        return None if not rate else int(rate * timeout_s)

    @property
    def drained(self) -> bool:
        return self.sched.idle and not self.counters.side_tasks

    # --- settlement ------------------------------------------------------------------------------------
    def close(self, req: Request, exc: BaseException | None, outcome: str) -> None:
        """Settle a request that did not succeed (its slots are freed by the caller)."""
        job: Job = req.payload
        if exc is not None and not job.future.done():
            job.future.set_exception(exc)
        if job.settled:
            return
        job.settled = True
        self.counters.failed += outcome != "cancelled"
        now = time.monotonic()
        self.metrics.request_done(
            req.kind, (req.first_admitted or now) - req.submitted, now - req.submitted, outcome
        )

    def succeed(self, req: Request, lp: np.ndarray) -> None:
        job: Job = req.payload
        if not job.future.done():
            job.future.set_result(SampleOutput(job.x, lp, job.seed))
        job.settled = True
        self.counters.ok += 1
        now = time.monotonic()
        self.metrics.request_done(
            req.kind, (req.first_admitted or now) - req.submitted, now - req.submitted, "ok"
        )

    # --- the loop ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until cancelled; an unexpected error in one iteration is logged and the loop goes on."""
        self.event = asyncio.Event()
        while True:
            try:
                await self._iteration()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("engine %s: iteration failed", self.name)
                await asyncio.sleep(0.001)

    async def _iteration(self) -> None:
        assert self.event is not None and self.executor is not None
        sched = self.sched
        self._reap()
        if sched.idle:
            self.metrics.gauges(0, 0)
            self.event.clear()
            await self.event.wait()
            if self.config.admission_window_ms > 0:
                await asyncio.sleep(self.config.admission_window_ms / 1000.0)
            return
        admitted = sched.admit(time.monotonic())
        slots = sched.active_slots()
        self.metrics.gauges(sched.queued_rows, len(slots))
        if len(slots) == 0:
            return
        ends = sched.ends(slots)
        before = sched.positions(slots)
        steps, units = self._chunk_steps(before, ends)
        self.runner.preempt[0] = 0  # a submission or cancellation from now on ends the chunk early
        if self._inline(admitted, units):
            self.counters.chunks_inline += 1
            failures, slots, result = self._work(admitted, slots, ends, steps, False)
        else:  # one hand-off to the worker per chunk: place admitted rows, advance all, read finished
            loop = asyncio.get_running_loop()
            self._chunk_started = time.perf_counter()
            try:
                failures, slots, result = await loop.run_in_executor(
                    self.executor, self._work, admitted, slots, ends, steps, self._parallel(units)
                )
            finally:
                self._chunk_started = None
                if self._preempt_timer is not None:
                    self._preempt_timer.cancel()
                    self._preempt_timer = None
        for adm, exc in failures:
            self.runner.release(sched.fail([adm.request]))
            self.close(adm.request, EngineError(f"prefill failed: {exc}"), "error")
        if len(slots) == 0:
            return
        if isinstance(result, Exception):
            self._fail_slots(slots, EngineError(f"sampling step failed: {result}"))
            return
        pos, elapsed, done, x, lp = result
        self._record_chunk(elapsed, sched.positions(slots), pos)
        fin = sched.advance(slots, pos)
        if fin.rows:
            at = {s: j for j, s in enumerate(done.tolist())}
            freed = [s for _, _, s in fin.rows]
            for req, r, s in fin.rows:
                job: Job = req.payload
                job.x[r] = x[at[s]]
                job.lp[r] = lp[at[s]]
            self.runner.release(freed)
            self.counters.rows_sampled += len(freed)
        for req in fin.completed:
            self._finish(req)

    def _work(
        self, admitted: list[Admission], slots: np.ndarray, ends: np.ndarray, steps: int, parallel: bool
    ) -> tuple[list[tuple[Admission, Exception]], np.ndarray, _ChunkResult | Exception]:
        """Worker thread: place admitted rows, advance ``slots`` (minus rows that failed to place) and
        read out the rows that reached their ``ends``."""
        failures = self._place(admitted) if admitted else []
        if failures:
            keep = ~np.isin(slots, [s for adm, _ in failures for s in adm.slots])
            slots, ends = slots[keep], ends[keep]
        if len(slots) == 0:
            return failures, slots, Exception("no rows")
        t0 = time.perf_counter()
        try:
            pos = self.runner.advance(slots, steps, parallel)
            elapsed = time.perf_counter() - t0
            done = slots[pos >= ends]
            x, lp = self.runner.read(done.tolist())
        except Exception as e:
            log.exception("engine %s: sampling step failed", self.name)
            return failures, slots, e
        return failures, slots, (pos, elapsed, done, x, lp)

    def _parallel(self, units: float) -> bool:
        """Spread this chunk over the kernel threads? Only when its estimated compute reaches
        ``parallel_chunk_ms`` (or before any estimate): a small chunk runs faster on one thread than
        it takes to wake the others."""
        per = self.counters.unit_s
        return per is None or per * units >= self.config.parallel_chunk_ms / 1000.0

    def _inline(self, admitted: list[Admission], units: float) -> bool:
        """Run this chunk (``units`` of work, see :func:`_work_units`) on the event-loop thread? Only a
        CPU chunk estimated below ``inline_chunk_ms`` with no prefill: two thread hand-offs (about
        0.3 ms) would cost more than the compute, and the event loop is held no longer than that."""
        per, limit = self.counters.unit_s, self.config.inline_chunk_ms / 1000.0
        if per is None or limit <= 0 or self.runner.backend != "numba":
            return False
        if any(adm.request.payload.n_known for adm in admitted):
            return False
        return per * units <= limit

    def _chunk_steps(self, pos: np.ndarray, ends: np.ndarray) -> tuple[int, float]:
        """Steps until the first row finishes (so its request returns at once), at least
        ``steps_per_chunk``, and fewer if the estimated compute exceeds ``chunk_budget_ms`` (or the time
        to the nearest deadline); with their work units (:func:`_work_units`)."""
        cfg, d = self.config, self.model.data_dim
        steps = min(d, max(cfg.steps_per_chunk, int((ends - pos).min())))
        per = self.counters.unit_s
        if per is None:  # the first chunk calibrates the estimate
            steps = min(steps, cfg.steps_per_chunk)
            return steps, _work_units(pos, steps, ends, d)
        units = _work_units(pos, steps, ends, d)
        if per > 0:
            nearest = min((r.deadline for r in self.sched.pending()), default=math.inf)
            budget = min(cfg.chunk_budget_ms / 1000.0, nearest - time.monotonic()) / per
            if units > budget:  # the largest step count within the budget
                lo, hi = min(steps, cfg.steps_per_chunk), steps
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    lo, hi = (mid, hi) if _work_units(pos, mid, ends, d) <= budget else (lo, mid - 1)
                steps, units = lo, _work_units(pos, lo, ends, d)
        return steps, units

    def _record_chunk(self, elapsed: float, before: np.ndarray, after: np.ndarray) -> None:
        c, d = self.counters, self.model.data_dim
        done = after - before
        steps = max(1, int(done.max()))
        units = _work_units(before, steps, after, d)
        c.steps_run += steps
        c.chunks_run += 1
        if units > 0 and elapsed > 0:
            per = elapsed / units
            c.unit_s = per if c.unit_s is None else 0.8 * c.unit_s + 0.2 * per
        row_steps = int(done.sum())
        if row_steps > 0 and elapsed > 0:
            rate = row_steps / (d * elapsed)  # rows finished per second at this chunk's pace
            c.rows_per_s = rate if c.rows_per_s is None else 0.8 * c.rows_per_s + 0.2 * rate
        self.metrics.step(elapsed / steps, len(before))

    def _reap(self) -> None:
        reaped = self.sched.reap(time.monotonic())
        self.runner.release(reaped.slots)
        self._close_reaped(reaped)

    def _close_reaped(self, reaped: Reaped) -> None:
        """Settle the requests a scheduler visit reaped: cancelled, or past their deadline."""
        for req in reaped.cancelled:
            self.close(req, None, "cancelled")
        for req in reaped.expired:
            self.close(
                req,
                EngineTimeout(f"request exceeded its {req.deadline - req.submitted:g} s deadline"),
                "timeout",
            )

    def _fail_slots(self, slots: np.ndarray, exc: EngineError) -> None:
        reqs = {}
        for s in slots.tolist():
            owner = self.sched.owner(s)
            if owner is not None:
                reqs[owner[0].id] = owner[0]
        self.runner.release(self.sched.fail(list(reqs.values())))
        for req in reqs.values():
            self.close(req, exc, "error")

    def _place(self, admitted: list[Admission]) -> list[tuple[Admission, Exception]]:
        """Prepare each admitted request (a failure fails only that request), then give all their rows
        their start states in one runner call."""
        failures: list[tuple[Admission, Exception]] = []
        ready: list[Admission] = []
        for adm in admitted:
            job: Job = adm.request.payload
            try:
                if job.prepared is None:
                    job.prepared = self.runner.prepare(
                        adm.request.n_rows, job.seed, job.known, job.n_known, job.temperature
                    )
                ready.append(adm)
            except Exception as e:
                log.exception("engine %s: admission failed", self.name)
                failures.append((adm, e))
        if ready:
            try:
                self.runner.admit_many([(a.request.payload.prepared, a.rows, a.slots) for a in ready])
            except Exception as e:
                log.exception("engine %s: admission failed", self.name)
                failures.extend((adm, e) for adm in ready)
        return failures

    def _finish(self, req: Request) -> None:
        job: Job = req.payload
        job.prepared = None
        if self.model.num_masks == 1:
            self.succeed(req, job.lp)
            return
        # K > 1: the rows carry log p_k of their own mask; the mixture needs every mask (one pass)
        assert self.batcher is not None
        fut = self.batcher.submit(job.x, False, internal=True)

        async def settle() -> None:
            try:
                out = await fut
            except EngineStopped as e:
                self.close(req, e, "stopped")
                return
            except asyncio.CancelledError:
                self.close(req, EngineStopped(f"engine {self.name!r} stopped"), "stopped")
                raise
            except Exception as e:
                self.close(req, EngineError(f"log-prob of the samples failed: {e}"), "error")
                return
            self.succeed(req, out.log_prob)

        task = asyncio.create_task(settle())
        self.counters.side_tasks.add(task)
        task.add_done_callback(self.counters.side_tasks.discard)
