"""The engine's public face: lifecycle, request validation and submission, stats.

``sample`` / ``complete`` turn a request into scheduler rows and await the sampling loop's result
(:mod:`.loop`); ``log_prob`` goes to the micro-batcher (:mod:`.logprob`). Cancelling the awaiting
coroutine (the client went away) cancels the request: its rows leave at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from service.made import MADE, check_temperature

from .logprob import LogProbBatcher, inline_rows, validate_data
from .logprob_kernel import NogilLogProb, nogil_unsupported
from .loop import Job, SamplingLoop, sampling_thread
from .runner_numba import NumbaRunner
from .runner_torch import TorchRunner
from .scheduler import Request, Scheduler
from .stream import StreamLoop
from .stream_kernel import streaming_supported
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


async def _await_until(fut: asyncio.Future[T], timeout: float) -> T:
    """``await fut``, or :class:`TimeoutError` after ``timeout`` seconds (``fut`` is then cancelled).

    One timer per request: :func:`asyncio.wait_for` adds a waiter future and two callbacks, which
    showed in the serving path's profile."""

    def expire() -> None:
        if not fut.done():
            fut.cancel(_EXPIRED)

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await fut
    except asyncio.CancelledError as e:
        if e.args == (_EXPIRED,) and fut.cancelled():
            raise TimeoutError from None
        raise
    finally:
        handle.cancel()


_SEED_RANGE = 2**64
_DEFAULT_CONFIG = EngineConfig()
_DEADLINE_SLACK_S = 0.5  # the awaiting coroutine's own guard, should the loop itself be stuck
_EXPIRED = "made-engine-deadline"
T = TypeVar("T")


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
        model.keep_masked_weights()  # log-prob batches then cost their matmuls alone
        self.config = config
        self.name = name
        self.metrics: EngineMetrics = metrics or NullMetrics()
        backend = config.backend
        cpu = model.output_layer.weight.device.type == "cpu"
        if backend == "auto":
            backend = ("stream" if streaming_supported() else "numba") if cpu else "torch"
        if backend == "stream" and not streaming_supported():
            raise ValueError("the stream backend needs Linux on x86-64 (see service.engine.stream_kernel)")
        self.backend = backend
        self._runner: NumbaRunner | TorchRunner = (
            TorchRunner(model) if backend == "torch" else NumbaRunner(model)
        )
        self._sched = Scheduler(config.max_active_rows, config.max_queued_rows)
        loop_type = StreamLoop if backend == "stream" else SamplingLoop
        self._loop = loop_type(model, self._runner, self._sched, config, self.metrics, name)
        self._exec: ThreadPoolExecutor | None = None
        self._lp_exec: ThreadPoolExecutor | None = None
        self._batcher: LogProbBatcher | None = None
        self._lp_kernel = self._logprob_kernel()
        self._task: asyncio.Task[None] | None = None
        self._accepting = False

    # --- lifecycle ---------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._accepting and self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the loop tasks on the running event loop after warming up (numba compilation)."""
        if self.running:
            return
        self._exec = ThreadPoolExecutor(
            1, thread_name_prefix=f"engine-{self.name}", initializer=sampling_thread
        )
        self._lp_exec = ThreadPoolExecutor(1, thread_name_prefix=f"logprob-{self.name}")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._exec, self._loop.warmup)
        cfg = self.config
        kernel = self._lp_kernel
        if kernel is not None:
            await loop.run_in_executor(self._lp_exec, kernel.warmup)
        inline = await loop.run_in_executor(
            self._lp_exec, inline_rows, self.model, cfg.logprob_inline_ms / 1000.0, 3, kernel
        )
        self._batcher = LogProbBatcher(
            self.model,
            self._lp_exec,
            cfg.logprob_max_batch,
            cfg.logprob_max_wait_ms / 1000.0,
            cfg.max_queued_rows,
            self.metrics,
            inline,
            kernel,
            cfg.logprob_split,
        )
        self._loop.executor, self._loop.batcher = self._exec, self._batcher
        self._accepting = True
        self._task = asyncio.create_task(self._loop.run(), name=f"engine-{self.name}")

    def _logprob_kernel(self) -> NogilLogProb | None:
        """The log-prob forward pass without the GIL where ``logprob_backend`` allows and it serves the
        model (``auto``), else None (torch)."""
        choice = self.config.logprob_backend
        why = nogil_unsupported(self.model)
        if choice == "torch" or (choice == "auto" and why is not None):
            return None
        if why is not None:
            raise ValueError(f"logprob_backend nogil does not serve a model with {why}")
        return NogilLogProb(self.model)

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
        pending = self._sched.pending()
        for req in pending:
            self._loop.close(req, stopped, "stopped")
        self._runner.release(self._sched.fail(pending))
        if self._batcher is not None:
            self._batcher.close(stopped)
        tasks = [t for t in (self._task, *self._loop.counters.side_tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        self._runner.preempt[0] = 1  # end a chunk still running in the worker after its current step
        for ex in (self._exec, self._lp_exec):
            if ex is not None:  # wait for the worker, so a restart never shares the runner with it
                await asyncio.to_thread(ex.shutdown, wait=True, cancel_futures=True)
        close = getattr(self._runner, "close", None)
        if close is not None:  # the numba runner's kernel threads
            await asyncio.to_thread(close)
        self._exec = self._lp_exec = None

    def _drained(self) -> bool:
        busy_lp = self._batcher is not None and self._batcher.busy
        return self._loop.drained and not busy_lp

    def stats(self) -> EngineStats:
        c = self._loop.counters
        return EngineStats(
            name=self.name,
            backend=self.backend,
            running=self.running,
            queued_rows=self._sched.queued_rows,
            active_rows=self._sched.active_rows,
            active_requests=self._sched.active_requests,
            logprob_queued_rows=self._batcher.queued_rows if self._batcher else 0,
            steps_run=c.steps_run,
            chunks_run=c.chunks_run,
            rows_sampled=c.rows_sampled,
            requests_ok=c.ok,
            requests_failed=c.failed,
        )

    # --- public requests ---------------------------------------------------------------------------
    async def sample(
        self, n: int, seed: int, timeout_s: float | None = None, temperature: float = 1.0
    ) -> SampleOutput:
        """``n`` unconditional samples drawn with the request's own seed, at ``temperature`` (0: the
        most probable value at each step; ``log_prob`` stays the model's own, see
        :mod:`service.made.sampling`)."""
        return await self._sampling("sample", n, seed, None, 0, timeout_s, temperature)

    async def complete(
        self,
        known: np.ndarray,
        n_known: int,
        n: int,
        seed: int,
        timeout_s: float | None = None,
        temperature: float = 1.0,
    ) -> SampleOutput:
        """``n`` completions keeping the first ``n_known`` positions of the ordering from ``known``
        (``(D,)``, raster order); the mask is drawn from its posterior given that prefix (its most
        probable one at ``temperature`` 0)."""
        temperature = check_temperature(temperature)
        d = self.model.data_dim
        if not 0 <= n_known <= d:
            raise ValueError(f"n_known must be in 0..{d}, got {n_known}")
        arr = validate_data(self.model, np.asarray(known), "known")
        if arr.ndim != 1:
            raise ValueError(f"known must be one vector of {d} values")
        if n_known > 0 and not self.model.shares_ordering():
            raise ValueError("completion needs a model whose masks share one ordering")
        if n_known == d:  # nothing to draw
            self._check_n_seed(n, seed)
            out = await self.log_prob(arr[None], timeout_s=timeout_s)
            x = np.repeat(arr[None].astype(np.float32), n, axis=0)
            return SampleOutput(x, np.repeat(out.log_prob, n), seed)
        return await self._sampling("complete", n, seed, arr, n_known, timeout_s, temperature)

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
            return await _await_until(fut, timeout)
        except TimeoutError:
            self.metrics.request_done("log_prob", time.monotonic() - t0, time.monotonic() - t0, "timeout")
            raise EngineTimeout(f"log-prob request exceeded its {timeout:g} s deadline") from None
        except asyncio.CancelledError:
            if fut.cancelled():  # the caller went away before the batch answered (else it counted)
                spent = time.monotonic() - t0
                self.metrics.request_done("log_prob", spent, spent, "cancelled")
            raise

    def check_capacity(self, n: int, kind: str = "sample") -> None:
        """Raise what :meth:`sample` (or ``kind="log_prob"``: :meth:`log_prob`) would raise now for ``n``
        rows because the engine is stopped or full, so a caller can refuse before any costly work
        (decoding an upload); the refusal is counted then."""
        self._check_accepting()
        try:
            if kind == "log_prob":
                assert self._batcher is not None
                self._batcher.check(n)
            else:
                timeout = self.config.request_timeout_s
                self._sched.check(n, self._loop.retry_after(), self._loop.horizon_rows(timeout))
        except EngineError:
            self.metrics.request_done(kind, 0.0, 0.0, "rejected")
            raise

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

    async def _sampling(
        self,
        kind: str,
        n: int,
        seed: int,
        known: np.ndarray | None,
        n_known: int,
        timeout_s: float | None,
        temperature: float = 1.0,
    ) -> SampleOutput:
        self._check_accepting()
        self._check_n_seed(n, seed)
        temperature = check_temperature(temperature)
        n, seed = int(n), int(seed)
        d = self.model.data_dim
        timeout = timeout_s if timeout_s is not None else self.config.request_timeout_s
        if timeout <= 0:
            raise ValueError("timeout_s must be > 0")
        now = time.monotonic()
        req = Request(kind, n, n_known, d, now + timeout, now)
        try:
            self._sched.submit(req, self._loop.retry_after(), self._loop.horizon_rows(timeout))
        except EngineError:
            self.metrics.request_done(kind, 0.0, 0.0, "rejected")
            raise
        # queued: only now its result buffers (a refusal allocates nothing); nothing runs in between
        fut: asyncio.Future[SampleOutput] = asyncio.get_running_loop().create_future()
        req.payload = Job(
            seed,
            known,
            n_known,
            fut,
            np.zeros((n, d), np.float32),
            np.zeros(n, np.float64),
            temperature=temperature,
        )
        self._loop.wake(req)
        try:
            return await _await_until(fut, timeout + _DEADLINE_SLACK_S)
        except TimeoutError:
            if not req.closed:
                self._sched.cancel(req)
                self._loop.wake(req)
            self._loop.close(req, None, "timeout")
            raise EngineTimeout(f"request exceeded its {timeout:g} s deadline") from None
        except asyncio.CancelledError:
            if not req.closed:
                self._sched.cancel(req)
                self._loop.wake(req)
            raise
