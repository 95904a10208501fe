"""The engine: one asyncio task that alternates scheduler visits with compiled sampling chunks.

Each iteration (on the event-loop thread) reaps cancelled and expired requests, admits waiting rows
(prefill for completions), then runs one chunk of steps for every active row in a dedicated worker
thread, so the event loop stays responsive and new requests join at the next chunk. A chunk lasts
at least ``steps_per_chunk`` steps and otherwise about ``chunk_budget_ms`` of estimated compute, but a
submission or a cancellation preempts it after the current step (a flag the kernel polls), so long
chunks cost no admission latency. A second task micro-batches log-prob requests on its own worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from service.made import MADE

from .logprob import LogProbBatcher, validate_data
from .prefill import Prepared
from .runner_numba import NumbaRunner
from .runner_torch import TorchRunner
from .scheduler import Admission, Request, Scheduler
from .types import (
    EngineConfig,
    EngineError,
    EngineMetrics,
    EngineStats,
    EngineStopped,
    EngineTimeout,
    LogProbOutput,
    NullMetrics,
    SampleOutput,
)

__all__ = ["Engine"]

log = logging.getLogger(__name__)

_SEED_RANGE = 2**64
_DEFAULT_CONFIG = EngineConfig()
# new positions, compute seconds, slots that finished, their values (raster order) and log p_k
_ChunkResult = tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]
_DEADLINE_SLACK_S = 0.5  # the awaiting coroutine's own guard, should the loop itself be stuck


def _sampling_thread() -> None:
    """The sampling worker's torch work is single-row prefill: intra-op threads only add waits (the
    setting is per thread; the log-prob worker keeps torch's default)."""
    torch.set_num_threads(1)


@dataclass(eq=False)
class _Job:
    """Engine-side payload of a sampling request."""

    seed: int
    known: np.ndarray | None
    n_known: int
    future: asyncio.Future[SampleOutput]
    x: np.ndarray
    lp: np.ndarray
    prepared: Prepared | None = None
    extra: dict[str, float] = field(default_factory=dict)


class Engine:
    """Batches the sequential sampling loop of one model across concurrent requests."""

    def __init__(
        self,
        model: MADE,
        config: EngineConfig = _DEFAULT_CONFIG,
        name: str = "model",
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.name = name
        self.metrics: EngineMetrics = metrics or NullMetrics()
        device = model.output_layer.weight.device
        backend = config.backend
        if backend == "auto":
            backend = "numba" if device.type == "cpu" else "torch"
        self.backend = backend
        self._runner: NumbaRunner | TorchRunner = (
            NumbaRunner(model) if backend == "numba" else TorchRunner(model)
        )
        self._sched = Scheduler(config.max_active_rows, config.max_queued_rows)
        self._exec: ThreadPoolExecutor | None = None
        self._lp_exec: ThreadPoolExecutor | None = None
        self._batcher: LogProbBatcher | None = None
        self._task: asyncio.Task[None] | None = None
        self._lp_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._accepting = False
        self._row_step_s: float | None = None  # EMA of compute per row-step
        self._rows_per_s: float | None = None  # EMA of finished rows per second
        self._steps_run = 0
        self._chunks_run = 0
        self._rows_sampled = 0
        self._ok = 0
        self._failed = 0
        self._side_tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle ---------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._accepting and self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the loop tasks on the running event loop after warming up (numba compilation)."""
        if self.running:
            return
        loop = asyncio.get_running_loop()
        self._exec = ThreadPoolExecutor(
            1, thread_name_prefix=f"engine-{self.name}", initializer=_sampling_thread
        )
        self._lp_exec = ThreadPoolExecutor(1, thread_name_prefix=f"logprob-{self.name}")
        await loop.run_in_executor(self._exec, self._runner.warmup)
        self._wake = asyncio.Event()
        cfg = self.config
        self._batcher = LogProbBatcher(
            self.model,
            self._lp_exec,
            cfg.logprob_max_batch,
            cfg.logprob_max_wait_ms / 1000.0,
            cfg.max_queued_rows,
            self.metrics,
        )
        self._accepting = True
        self._task = asyncio.create_task(self._run(), name=f"engine-{self.name}")
        self._lp_task = asyncio.create_task(self._batcher.run(), name=f"logprob-{self.name}")

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop admitting (new calls raise :class:`EngineStopped`), let in-flight work finish within
        ``grace_s``, then fail what is left."""
        if self._task is None:
            return
        self._accepting = False
        end = time.monotonic() + grace_s
        while time.monotonic() < end and not self._drained():
            await asyncio.sleep(0.002)
        stopped = EngineStopped(f"engine {self.name!r} stopped")
        for req in self._sched.pending():
            self._close(req, stopped, "stopped")
        freed = self._sched.fail(self._sched.pending())
        self._runner.release(freed)
        if self._batcher is not None:
            self._batcher.fail_all(stopped)
        for task in (self._task, self._lp_task, *self._side_tasks):
            if task is not None:
                task.cancel()
        for task in (self._task, self._lp_task, *self._side_tasks):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._lp_task = None
        for ex in (self._exec, self._lp_exec):
            if ex is not None:
                ex.shutdown(wait=False, cancel_futures=True)
        self._exec = self._lp_exec = None

    def _drained(self) -> bool:
        busy_lp = self._batcher is not None and self._batcher.queued_rows > 0
        return self._sched.idle and not busy_lp and not self._side_tasks

    def stats(self) -> EngineStats:
        return EngineStats(
            name=self.name,
            backend=self.backend,
            running=self.running,
            queued_rows=self._sched.queued_rows,
            active_rows=self._sched.active_rows,
            active_requests=self._sched.active_requests,
            logprob_queued_rows=self._batcher.queued_rows if self._batcher else 0,
            steps_run=self._steps_run,
            chunks_run=self._chunks_run,
            rows_sampled=self._rows_sampled,
            requests_ok=self._ok,
            requests_failed=self._failed,
        )

    # --- public requests ---------------------------------------------------------------------------
    async def sample(self, n: int, seed: int, timeout_s: float | None = None) -> SampleOutput:
        """``n`` unconditional samples drawn with the request's own seed."""
        return await self._sampling("sample", n, seed, None, 0, timeout_s)

    async def complete(
        self, known: np.ndarray, n_known: int, n: int, seed: int, timeout_s: float | None = None
    ) -> SampleOutput:
        """``n`` completions keeping the first ``n_known`` positions of the ordering from ``known``
        (``(D,)``, raster order)."""
        d = self.model.data_dim
        if not 0 <= n_known <= d:
            raise ValueError(f"n_known must be in 0..{d}, got {n_known}")
        arr = validate_data(self.model, np.asarray(known), "known")
        if arr.ndim != 1:
            raise ValueError(f"known must be one vector of {d} values")
        if n_known > 0 and not self.model.shares_ordering():
            raise ValueError("completion needs a model whose masks share one ordering")
        if n_known == d:
            self._check_n_seed(n, seed)
            out = await self.log_prob(arr[None], timeout_s=timeout_s)
            x = np.repeat(arr[None].astype(np.float32), n, axis=0)
            return SampleOutput(x, np.repeat(out.log_prob, n), seed)
        return await self._sampling("complete", n, seed, arr, n_known, timeout_s)

    async def log_prob(
        self, x: np.ndarray, per_dim: bool = False, timeout_s: float | None = None
    ) -> LogProbOutput:
        """Mixture log-likelihood of each row of ``x`` ``(B, D)``, micro-batched with other requests."""
        self._check_accepting()
        arr = validate_data(self.model, np.asarray(x), "x")
        if arr.ndim != 2 or arr.shape[0] < 1:
            raise ValueError(f"x must have shape (B, {self.model.data_dim}) with B >= 1")
        if per_dim and self.model.num_masks > 1 and not self.model.shares_ordering():
            raise ValueError("per-dimension conditionals of a mixture need masks that share one ordering")
        assert self._batcher is not None
        timeout = timeout_s if timeout_s is not None else self.config.request_timeout_s
        t0 = time.monotonic()
        try:
            fut = self._batcher.submit(arr, per_dim)
        except EngineError:
            self.metrics.request_done("log_prob", 0.0, 0.0, "rejected")
            raise
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            self.metrics.request_done("log_prob", time.monotonic() - t0, time.monotonic() - t0, "timeout")
            raise EngineTimeout(f"log-prob request exceeded its {timeout:g} s deadline") from None

    # --- sampling requests -------------------------------------------------------------------------
    def _check_accepting(self) -> None:
        if not self.running:
            raise EngineStopped(f"engine {self.name!r} is not running")

    @staticmethod
    def _check_n_seed(n: int, seed: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < _SEED_RANGE:
            raise ValueError(f"seed must be an integer in 0..2**64-1, got {seed!r}")

    def _retry_after(self) -> float:
        if not self._rows_per_s:
            return 1.0
        backlog = self._sched.queued_rows + self._sched.active_rows
        return float(min(30.0, max(0.1, backlog / self._rows_per_s)))

    async def _sampling(
        self, kind: str, n: int, seed: int, known: np.ndarray | None, n_known: int, timeout_s: float | None
    ) -> SampleOutput:
        self._check_accepting()
        self._check_n_seed(n, seed)
        n, seed = int(n), int(seed)
        d = self.model.data_dim
        timeout = timeout_s if timeout_s is not None else self.config.request_timeout_s
        if timeout <= 0:
            raise ValueError("timeout_s must be > 0")
        fut: asyncio.Future[SampleOutput] = asyncio.get_running_loop().create_future()
        job = _Job(seed, known, n_known, fut, np.zeros((n, d), np.float32), np.zeros(n, np.float64))
        now = time.monotonic()
        req = Request(kind, n, n_known, d, now + timeout, now, job)
        try:
            self._sched.submit(req, self._retry_after())
        except EngineError:
            self.metrics.request_done(kind, 0.0, 0.0, "rejected")
            raise
        assert self._wake is not None
        self._wake.set()
        self._interrupt()
        try:
            return await asyncio.wait_for(fut, timeout + _DEADLINE_SLACK_S)
        except TimeoutError:
            if not req.closed:
                self._sched.cancel(req)
                self._wake.set()
            self._close(req, None, "timeout")
            raise EngineTimeout(f"request exceeded its {timeout:g} s deadline") from None
        except asyncio.CancelledError:
            if not req.closed:
                self._sched.cancel(req)
                self._wake.set()
                self._interrupt()
            raise

    def _close(self, req: Request, exc: BaseException | None, outcome: str) -> None:
        """Settle a request that did not succeed (its slots are freed by the caller)."""
        job: _Job = req.payload
        if exc is not None and not job.future.done():
            job.future.set_exception(exc)
        if "closed" in job.extra:
            return
        job.extra["closed"] = 1.0
        self._failed += outcome != "cancelled"
        now = time.monotonic()
        queued = (req.first_admitted or now) - req.submitted
        self.metrics.request_done(req.kind, queued, now - req.submitted, outcome)

    def _succeed(self, req: Request, lp: np.ndarray) -> None:
        job: _Job = req.payload
        if not job.future.done():
            job.future.set_result(SampleOutput(job.x, lp, job.seed))
        job.extra["closed"] = 1.0
        self._ok += 1
        now = time.monotonic()
        self.metrics.request_done(
            req.kind, (req.first_admitted or now) - req.submitted, now - req.submitted, "ok"
        )

    # --- the loop ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        try:
            while True:
                try:
                    await self._iteration()
                except asyncio.CancelledError:
                    raise
                except Exception:  # never let one bad iteration kill the engine
                    log.exception("engine %s: iteration failed", self.name)
                    await asyncio.sleep(0.001)
        finally:
            if self._accepting:
                self._accepting = False

    async def _iteration(self) -> None:
        assert self._wake is not None and self._exec is not None
        sched = self._sched
        self._reap()
        if sched.idle:
            self.metrics.gauges(0, 0)
            self._wake.clear()
            await self._wake.wait()
            if self.config.admission_window_ms > 0:
                await asyncio.sleep(self.config.admission_window_ms / 1000.0)
            return
        admitted = sched.admit(time.monotonic())
        slots = sched.active_slots()
        self.metrics.gauges(sched.queued_rows, len(slots))
        if len(slots) == 0:
            return
        steps = self._chunk_steps(len(slots))
        ends = sched.ends(slots)
        self._runner.preempt[0] = 0  # a submission or cancellation from now on ends the chunk early
        loop = asyncio.get_running_loop()
        # one hand-off to the worker per chunk: place admitted rows, advance everyone, read finished rows
        failures, slots, result = await loop.run_in_executor(
            self._exec, self._work, admitted, slots, ends, steps
        )
        for adm, exc in failures:
            self._runner.release(sched.fail([adm.request]))
            self._close(adm.request, EngineError(f"prefill failed: {exc}"), "error")
        if len(slots) == 0:
            return
        if isinstance(result, Exception):
            self._fail_slots(slots, EngineError(f"sampling step failed: {result}"))
            return
        pos, elapsed, done, x, lp = result
        steps = max(1, int((pos - sched.positions(slots)).max()))
        self._record_chunk(elapsed, len(slots), steps)
        fin = sched.advance(slots, pos)
        if fin.rows:
            at = {s: j for j, s in enumerate(done.tolist())}
            freed = [s for _, _, s in fin.rows]
            for req, r, s in fin.rows:
                job: _Job = req.payload
                job.x[r] = x[at[s]]
                job.lp[r] = lp[at[s]]
            self._runner.release(freed)
            self._rows_sampled += len(freed)
        for req in fin.completed:
            self._finish(req)

    def _work(
        self, admitted: list[Admission], slots: np.ndarray, ends: np.ndarray, steps: int
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
            pos = self._runner.advance(slots, steps)
            elapsed = time.perf_counter() - t0
            done = slots[pos >= ends]
            x, lp = self._runner.read(done.tolist())
        except Exception as e:
            log.exception("engine %s: sampling step failed", self.name)
            return failures, slots, e
        return failures, slots, (pos, elapsed, done, x, lp)

    def _chunk_steps(self, rows: int) -> int:
        """``steps_per_chunk``, or more to fill ``chunk_budget_ms`` (capped by the nearest deadline)."""
        cfg = self.config
        steps = cfg.steps_per_chunk
        if self._row_step_s:
            budget = cfg.chunk_budget_ms / 1000.0
            nearest = min((r.deadline for r in self._sched.pending()), default=math.inf)
            budget = min(budget, nearest - time.monotonic())
            steps = max(steps, int(budget / (self._row_step_s * rows)))
        return min(steps, self.model.data_dim)

    def _interrupt(self) -> None:
        """Ask the chunk in flight (if any) to stop after its current step."""
        self._runner.preempt[0] = 1

    def _record_chunk(self, elapsed: float, rows: int, steps: int) -> None:
        self._steps_run += steps
        self._chunks_run += 1
        per = elapsed / (rows * steps)
        self._row_step_s = per if self._row_step_s is None else 0.8 * self._row_step_s + 0.2 * per
        rate = rows / (self.model.data_dim * per)
        self._rows_per_s = rate if self._rows_per_s is None else 0.8 * self._rows_per_s + 0.2 * rate
        self.metrics.step(elapsed / steps, rows)

    def _reap(self) -> None:
        reaped = self._sched.reap(time.monotonic())
        self._runner.release(reaped.slots)
        for req in reaped.cancelled:
            self._close(req, None, "cancelled")
        for req in reaped.expired:
            self._close(
                req,
                EngineTimeout(f"request exceeded its {req.deadline - req.submitted:g} s deadline"),
                "timeout",
            )

    def _fail_slots(self, slots: np.ndarray, exc: EngineError) -> None:
        reqs = {}
        for s in slots.tolist():
            owner = self._sched.owner(s)
            if owner is not None:
                reqs[owner[0].id] = owner[0]
        self._runner.release(self._sched.fail(list(reqs.values())))
        for req in reqs.values():
            self._close(req, exc, "error")

    def _place(self, admitted: list[Admission]) -> list[tuple[Admission, Exception]]:
        failures = []
        for adm in admitted:
            job: _Job = adm.request.payload
            try:
                if job.prepared is None:
                    job.prepared = self._runner.prepare(adm.request.n_rows, job.seed, job.known, job.n_known)
                self._runner.admit(job.prepared, adm.rows, adm.slots)
            except Exception as e:
                log.exception("engine %s: admission failed", self.name)
                failures.append((adm, e))
        return failures

    def _finish(self, req: Request) -> None:
        job: _Job = req.payload
        job.prepared = None
        if self.model.num_masks == 1:
            self._succeed(req, job.lp)
            return
        # K > 1: the rows carry log p_k of their own mask; the mixture needs every mask (one pass)
        assert self._batcher is not None
        fut = self._batcher.submit(job.x, False, internal=True)

        async def settle() -> None:
            try:
                out = await fut
            except EngineStopped as e:
                self._close(req, e, "stopped")
                return
            except asyncio.CancelledError:
                self._close(req, EngineStopped(f"engine {self.name!r} stopped"), "stopped")
                raise
            except Exception as e:
                self._close(req, EngineError(f"log-prob of the samples failed: {e}"), "error")
                return
            self._succeed(req, out.log_prob)

        task = asyncio.create_task(settle())
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
