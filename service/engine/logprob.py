"""Micro-batched log-likelihoods: many requests share one forward pass per mask.

Requests queue their ``(B, D)`` inputs; whenever the worker thread is free, the queued rows (up to
``max_batch``) are concatenated and the K masks run once over them there (small batches on the event
loop: :func:`inline_rows`). Mixture conditionals follow ``MADE.ensemble_log_prob_per_dim``: with cumulative component log-likelihoods ``c_k(<=d)`` along the shared ordering,
``log p(x_d | x_<d) = LSE_k c_k(<=d) - LSE_k c_k(<d)``, which telescope to ``log p(x)``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import torch

from service.made import MADE

from .logprob_kernel import NogilLogProb
from .types import EngineFull, EngineMetrics, EngineStopped, LogProbOutput

__all__ = [
    "NOGIL_MAX_ROWS",
    "LogProbBatcher",
    "inline_rows",
    "log_prob_batch",
    "mix_conditionals",
    "torch_per_mask",
    "validate_data",
]


def validate_data(model: MADE, x: np.ndarray, name: str) -> np.ndarray:
    """Check data values (shape ``(..., D)``, finite, integer levels ``0..n_bins-1``); returns float64."""
    arr = np.asarray(x, dtype=np.float64)
    d, top = model.data_dim, model.dist.n_bins - 1
    if arr.shape[-1:] != (d,):
        raise ValueError(f"{name} must have {d} values per row, got shape {tuple(arr.shape)}")
    if top == 1 and not ((arr != 0) & (arr != 1)).any():  # binary: every check below in one test
        return arr
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    if (arr < 0).any() or (arr > top).any() or (arr != np.round(arr)).any():
        raise ValueError(f"{name} values must be integer levels in 0..{top}")
    return arr


# Larger batches go to torch: its intra-op threads use every core (the kernel's BLAS runs on one), and
# its GIL waits are small beside such a batch's compute (bench.logprob_forward: even at 128 rows).
NOGIL_MAX_ROWS = 64


def mix_conditionals(
    per: np.ndarray, order: np.ndarray, per_dim: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """The mixture ``log p(x)`` ``(B,)`` and, if asked, its conditionals ``(B, D)`` from each mask's
    conditionals ``per`` ``(K, B, D)`` (float64); ``order`` is the shared ordering (for ``K > 1``)."""
    k_masks = per.shape[0]
    if k_masks == 1:
        return per[0].sum(-1), per[0] if per_dim else None
    if not per_dim:
        return np.logaddexp.reduce(per.sum(-1), axis=0) - math.log(k_masks), None
    cum = per[:, :, order].cumsum(2)  # (K, B, D) along the ordering
    mix = np.logaddexp.reduce(cum, axis=0) - math.log(k_masks)
    out = np.empty_like(mix)
    out[:, order] = np.diff(mix, axis=1, prepend=0.0)
    return mix[:, -1], out


@torch.no_grad()
def torch_per_mask(model: MADE, x: np.ndarray) -> np.ndarray:
    """Each mask's conditionals ``(K, B, D)`` float64 by the model's own forward pass (the reference)."""
    w = model.output_layer.weight
    xt = torch.as_tensor(x, dtype=w.dtype, device=w.device)
    per = [model.log_prob_per_dim(xt, k).to(torch.float64) for k in range(model.num_masks)]
    return torch.stack(per).cpu().numpy()


def log_prob_batch(
    model: MADE, x: np.ndarray, per_dim: bool, kernel: NogilLogProb | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Mixture ``log p(x)`` ``(B,)`` and, if asked, the mixture conditionals ``(B, D)``, float64: by
    ``kernel`` (one call without the GIL) when given and the batch has at most :data:`NOGIL_MAX_ROWS`
    rows, else by torch."""
    use_kernel = kernel is not None and x.shape[0] <= NOGIL_MAX_ROWS
    per = kernel.per_mask(x) if use_kernel else torch_per_mask(model, x)  # type: ignore[union-attr]
    order = model.ordering(0).cpu().numpy() if model.num_masks > 1 else np.arange(0)
    return mix_conditionals(per, order, per_dim)


INLINE_SIZES = (1, 2, 4, 8, 16)  # batch sizes tried for running on the event loop


def inline_rows(model: MADE, limit_s: float, repeats: int = 3, kernel: NogilLogProb | None = None) -> int:
    """The largest batch of :data:`INLINE_SIZES` whose forward pass (best of ``repeats``) took at most
    ``limit_s`` here, or 0. Such batches run on the event loop: in a worker thread, a forward pass
    takes the GIL back after each of its torch calls, and each time waits behind a busy event loop
    (measured: a one-row batch of ``mnist-fast`` took 10 ms of wall time for 0.8 ms of compute)."""
    best = 0
    if limit_s <= 0:
        return best
    for b in INLINE_SIZES:
        x = np.zeros((b, model.data_dim))
        spent = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            log_prob_batch(model, x, False, kernel)
            spent.append(time.perf_counter() - t0)
        if min(spent) > limit_s:
            break
        best = b
    return best


@dataclass(eq=False)
class _Item:
    x: np.ndarray
    per_dim: bool
    future: asyncio.Future[LogProbOutput]
    internal: bool = False
    submitted: float = field(default_factory=time.monotonic)


class LogProbBatcher:
    """Continuous batching of log-prob requests: a batch of up to ``max_batch`` queued rows starts as
    soon as the worker is free, and what arrives while one runs forms the next.

    With the GIL-free kernel and ``split`` on, a batch takes at most half the rows in play (those
    queued plus those of the batch that just ended), so that the event loop answers and parses one
    half while the worker computes the other: with closed-loop clients a batch of all of them
    would leave the event loop idle during its forward pass and the worker idle during the HTTP work.

    An idle batcher starts at the end of the event loop's current turn (``max_wait_s = 0``, the
    default), so the requests parsed in the same turn share the batch, or after a fill window of
    ``max_wait_s`` from the first arrival; at once when a full batch is waiting. There is never a
    window after a batch: the rows queued meanwhile start the next one as it ends
    (``docs/serving.md``)."""

    def __init__(
        self,
        model: MADE,
        executor: Executor,
        max_batch: int,
        max_wait_s: float,
        max_queued_rows: int,
        metrics: EngineMetrics,
        inline_rows: int = 0,
        kernel: NogilLogProb | None = None,
        split: bool = False,
    ) -> None:
        self.model = model
        self.kernel = kernel  # the forward pass without the GIL (logprob_kernel), else torch
        self.inline_rows = inline_rows  # batches of at most this many rows run on the event loop
        self.executor = executor
        self.max_batch = max_batch
        self.split = split and kernel is not None  # torch's forward pass needs the GIL: no overlap
        self.max_wait_s = max_wait_s
        self.max_queued_rows = max_queued_rows
        self.metrics = metrics
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._running: list[_Item] | None = None  # the batch in the worker
        self._window: asyncio.Handle | None = None  # an idle batcher's start: end of turn or window
        self._closed = False
        self.batches_run = 0

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def busy(self) -> bool:
        """Rows are queued or a batch is running."""
        return self._queued_rows > 0 or self._running is not None

    def check(self, b: int) -> None:
        """Raise :class:`EngineFull` if ``b`` more rows would overflow the queue."""
        if self._queued_rows + b > self.max_queued_rows + self.max_batch:
            raise EngineFull(f"log-prob queue is full ({self._queued_rows} rows waiting)", 1.0)

    def submit(self, x: np.ndarray, per_dim: bool, internal: bool = False) -> asyncio.Future[LogProbOutput]:
        """Queue ``x`` (validated, ``(B, D)``); ``internal`` work (the engine's own) skips the limit."""
        if self._closed:
            raise EngineStopped("log-prob batcher stopped")
        b = x.shape[0]
        if not internal:
            self.check(b)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[LogProbOutput] = loop.create_future()
        self._queue.append(_Item(x, per_dim, fut, internal))
        self._queued_rows += b
        if self._running is None:
            if self._queued_rows >= self.max_batch:
                self._launch(loop)
            elif self._window is None:  # at the end of this turn of the event loop, or after the window
                self._window = (
                    loop.call_soon(self._launch, loop)
                    if self.max_wait_s <= 0
                    else loop.call_later(self.max_wait_s, self._launch, loop)
                )
        return fut

    def _settle_error(self, item: _Item, exc: BaseException, outcome: str) -> None:
        """Fail one item that is still awaited, counting it once (the engine's own work uncounted)."""
        if item.future.done():
            return  # cancelled or timed out: the awaiting side counted it
        item.future.set_exception(exc)
        if not item.internal:
            now = time.monotonic()
            self.metrics.request_done("log_prob", now - item.submitted, now - item.submitted, outcome)

    def fail_all(self, exc: Exception) -> None:
        """Fail every queued request and the running batch's (whose result is then dropped)."""
        for item in self._running or ():
            self._settle_error(item, exc, "stopped")
        while self._queue:
            self._settle_error(self._queue.popleft(), exc, "stopped")
        self._queued_rows = 0

    def close(self, exc: Exception) -> None:
        """:meth:`fail_all`, and refuse later submissions (the engine is stopping)."""
        self._closed = True
        if self._window is not None:
            self._window.cancel()
            self._window = None
        self.fail_all(exc)

    def batch_limit(self, ended_rows: int = 0) -> int:
        """Most rows for the next batch: ``max_batch``, or with ``split`` half the rows in play (queued
        and ``ended_rows``, those of the batch that just ended), ``ceil(n / 2)``, while that half fits the
        kernel (:data:`NOGIL_MAX_ROWS`)."""
        if self.split:
            half = -(-(self._queued_rows + ended_rows) // 2)
            if half <= NOGIL_MAX_ROWS:
                return max(1, min(self.max_batch, half))
        return self.max_batch

    def _launch(self, loop: asyncio.AbstractEventLoop, ended_rows: int = 0) -> None:
        """Start a batch of the queued rows (oldest first, at most :meth:`batch_limit`) in the worker."""
        if self._window is not None:
            self._window.cancel()
            self._window = None
        if self._running is not None or self._closed:
            return
        batch: list[_Item] = []
        rows = 0
        limit = self.batch_limit(ended_rows)
        while self._queue and (not batch or rows + self._queue[0].x.shape[0] <= limit):
            item = self._queue.popleft()
            self._queued_rows -= item.x.shape[0]
            if item.future.done():  # cancelled while queued
                continue
            batch.append(item)
            rows += item.x.shape[0]
        if not batch:
            return
        self._running = batch
        self.metrics.logprob_batch(rows)
        started = time.monotonic()
        x = np.concatenate([it.x for it in batch])
        per_dim = any(it.per_dim for it in batch)
        if rows <= self.inline_rows:  # cheaper here than a worker that waits for the GIL (inline_rows)
            work: asyncio.Future[tuple[np.ndarray, np.ndarray | None]] = loop.create_future()
            try:
                work.set_result(self._compute(x, per_dim))
            except Exception as e:  # settled as a failure in the worker would be
                work.set_exception(e)
            self._finish(loop, batch, rows, started, work)
            return
        work = loop.run_in_executor(self.executor, self._compute, x, per_dim)
        work.add_done_callback(lambda w: self._finish(loop, batch, rows, started, w))

    def _finish(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Item],
        rows: int,
        started: float,
        work: asyncio.Future[tuple[np.ndarray, np.ndarray | None]],
    ) -> None:
        """Answer a finished batch (of ``rows`` rows), then start the next from what queued meanwhile."""
        self._running = None
        if work.cancelled():
            for it in batch:
                self._settle_error(it, EngineStopped("engine stopped"), "stopped")
        elif (e := work.exception()) is not None:  # a failure fails this batch only
            err = e if isinstance(e, ValueError) else RuntimeError(f"log-prob failed: {e}")
            for it in batch:
                self._settle_error(it, err, "error")
        else:
            self._answer(batch, started, *work.result())
        if self._queue:
            self._launch(loop, rows)

    def _answer(self, batch: list[_Item], started: float, lp: np.ndarray, pd: np.ndarray | None) -> None:
        self.batches_run += 1
        at = 0
        now = time.monotonic()
        for it in batch:
            b = it.x.shape[0]
            if not it.future.done():  # else cancelled or timed out meanwhile: counted by the awaiting side
                it.future.set_result(
                    LogProbOutput(
                        lp[at : at + b].copy(),
                        pd[at : at + b].copy() if it.per_dim and pd is not None else None,
                    )
                )
                if not it.internal:
                    self.metrics.request_done("log_prob", started - it.submitted, now - it.submitted, "ok")
            at += b

    def _compute(self, x: np.ndarray, per_dim: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if x.shape[0] <= self.max_batch:
            return log_prob_batch(self.model, x, per_dim, self.kernel)
        parts = [
            log_prob_batch(self.model, x[i : i + self.max_batch], per_dim, self.kernel)
            for i in range(0, len(x), self.max_batch)
        ]
        lp = np.concatenate([p[0] for p in parts])
        pd = np.concatenate([p[1] for p in parts]) if per_dim else None  # type: ignore[misc]
        return lp, pd
