"""The streaming sampling loop: kernel threads that stay off the GIL, and an event loop that only
admits and settles (``backend="stream"``, the numba kernels on x86-64).

The chunked loop (:mod:`.loop`) runs one chunk at a time and goes back to Python between chunks, so the
sampling and the HTTP work around it take turns on the GIL (measured: the engine's work hid almost
none of the requests' Python time). Here the kernel threads of :mod:`.stream_kernel` advance every
active row until none is left, without the GIL, and an eventfd tells the event loop when rows finish.
The event loop's part, :meth:`StreamLoop._service`, runs on an arrival, a cancellation, a finished row
or the nearest deadline: free what the kernel let go, settle finished requests, drop cancelled and
expired rows, admit waiting rows (their start states written into free slots, then marked active).
Requests join the moving batch at once, at no cost to the rows already in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Iterator

import numpy as np

from .loop import Job, SamplingLoop
from .prefill import Prepared
from .runner_numba import NumbaRunner
from .scheduler import Admission, Request
from .stream_kernel import ACTIVE, DONE, DROP, DROPPED, FREE, stream_rows
from .types import EngineError

__all__ = ["StreamLoop"]

log = logging.getLogger(__name__)

_STEPS_PER_SWEEP = (
    16  # positions a run advances per call: amortises the call (measured: 1 -> 8 = 2x, 8 -> 16 +5%)
)
_INLINE_PREPARE = 65_536  # uniforms drawn on the event loop at most; larger requests, prefills: worker
_RATE_WINDOW_S = 0.01  # shortest interval over which the drain rate is measured


def _sched_idle(name: str) -> None:
    """Put the calling thread under ``SCHED_IDLE``: it runs whenever a CPU would otherwise idle, but a
    wake-up of it never preempts a normal thread. Waking a kernel thread (the eventfd write of
    :meth:`StreamLoop._kick`) otherwise let it preempt the event loop on the event loop's own CPU: the
    write took 130-160 us of wall time under load, 12-13 us with this (``docs/serving.md``)."""
    policy = getattr(os, "SCHED_IDLE", None)
    if policy is None:
        return
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))  # 0: the calling thread (Linux)
    except OSError as e:
        log.warning("engine %s: kernel thread stays at normal priority (SCHED_IDLE refused: %s)", name, e)


class StreamLoop(SamplingLoop):
    """Admission and settlement on the event loop; the sampling itself in GIL-free kernel threads."""

    runner: NumbaRunner

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        n = max(1, self.runner.threads)
        self._ctl = np.zeros(2, dtype=np.int64)  # stop flag, slots to scan
        self._kcount = np.zeros((n, 2), dtype=np.int64)  # per thread: sweeps, row-steps
        self._wake_fds: list[int] = []  # per kernel thread: the eventfd it sleeps on when idle
        self._threads: list[threading.Thread] = []
        self._locks = [threading.Lock() for _ in range(n)]  # each held by its thread while in the kernel
        self._efd = -1
        self._closing = False
        self._scheduled = False  # a visit is queued on the event loop
        self._paused = 0  # depth of paused() on the event-loop thread
        self._preparing: dict[int, list[Admission]] = {}  # request id -> admissions awaiting it
        self._dropping: set[int] = set()  # slots freed by the scheduler that the kernel still holds
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._next_deadline = math.inf  # no pending request's deadline is earlier
        self._reap_due = False  # a cancellation or a deadline since the last reap
        self._seen = np.zeros(2, dtype=np.int64)  # kernel counters at the last service
        self._last = time.perf_counter()
        self._rate = (0.0, 0)  # drain-rate window: busy seconds, rows finished
        self._gather: asyncio.TimerHandle | bool | None = None  # an idle engine's admission window

    def warmup(self) -> None:
        """The runner's kernels, then the streaming kernel on slots that are all free (it returns at
        once), so neither compiles while requests wait."""
        super().warmup()
        r = self.runner
        stream_rows(
            np.zeros(1, dtype=np.int64), np.zeros(2, dtype=np.int64), np.zeros((1, 2), dtype=np.int64),
            0, 1, 1, 1, -1, -1, *r._args(),
        )  # fmt: skip

    # --- kernel threads ------------------------------------------------------------------------------
    def _kernel_thread(self, stripe: int) -> None:
        """Stay in the kernel (asleep on this stripe's eventfd when idle) until stopped; leave it only
        while the slot arrays grow (:meth:`_grow` holds every thread's lock meanwhile)."""
        r, lock = self.runner, self._locks[stripe]
        if self.config.kernel_sched_idle:
            _sched_idle(self.name)
        while not self._closing:
            with lock:
                if self._ctl[0] == 0 and not self._closing:
                    stream_rows(
                        r.state, self._ctl, self._kcount, stripe, len(self._locks), self._stripe_rows(),
                        _STEPS_PER_SWEEP, self._efd, self._wake_fds[stripe], *r._args(),
                    )  # fmt: skip
            time.sleep(0)  # let _grow take the lock

    def _start_threads(self) -> None:
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_fds = [os.eventfd(0, os.EFD_CLOEXEC) for _ in self._locks]
        self._ctl[:] = (0, self.runner._cap)
        self._closing = False
        self._threads = [
            threading.Thread(
                target=self._kernel_thread, args=(i,), name=f"made-stream-{self.name}-{i}", daemon=True
            )
            for i in range(len(self._locks))
        ]
        for t in self._threads:
            t.start()

    def _stop_threads(self) -> None:
        self._closing = True
        self._ctl[0] = 1
        self._kick()
        for t in self._threads:
            t.join()
        self._threads = []
        for fd in [self._efd, *self._wake_fds]:
            os.close(fd)
        self._efd, self._wake_fds = -1, []

    def _stripe_rows(self) -> int:
        """Consecutive slots per stripe block: the runner's block size shared among the threads, so the
        rows of one request (consecutive slots) spread over every thread (measured: a 16-row faces
        completion took 143 ms on one thread of two, against 85 ms for the chunked loop)."""
        return max(1, self.runner.block_rows // len(self._locks))

    def _kick(self, slots: list[int] | None = None) -> None:
        """Wake the kernel threads whose stripes hold ``slots`` (all: None); a sleeping thread
        re-sweeps, a busy one sweeps once more later."""
        fds = self._wake_fds
        if slots is None or len(fds) == 1:
            stripes = range(len(fds))
        else:
            stripes = {(s // self._stripe_rows()) % len(fds) for s in slots}
        for i in stripes:
            os.eventfd_write(fds[i], 1)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold every kernel thread outside the kernel (each ends its current step first), e.g. while
        the slot arrays are reallocated; rows keep their state and go on afterwards."""
        self._paused += 1
        if self._paused > 1:  # already held (a growth inside a pause)
            try:
                yield
            finally:
                self._paused -= 1
            return
        self._ctl[0] = 1
        self._kick()
        for lock in self._locks:
            lock.acquire()
        try:
            yield
        finally:
            self._paused -= 1
            self._ctl[0] = 0
            for lock in self._locks:
                lock.release()
            self._kick()

    def _grow(self, max_slot: int) -> None:
        """Reallocate the slot arrays to hold ``max_slot`` (rare: capacity doubles, up to
        ``max_active_rows``)."""
        with self.paused():
            self.runner._ensure(max_slot)
            self._ctl[1] = self.runner._cap

    # --- signals from the request side -----------------------------------------------------------
    def wake(self, req: Request | None = None) -> None:
        """New work or a cancellation (of ``req``): serve it at the event loop's next turn, once for
        everything that arrived in this turn. Rows admitted together start at the same position and
        share the kernel's weight loads (measured: admitting each request on its own at once was no
        faster than the chunked loop). A visit reaps only after a cancellation or once the earliest
        deadline may have passed."""
        if req is not None:
            if req.cancelled or req.closed:
                self._reap_due = True
            elif req.deadline < self._next_deadline:
                self._next_deadline = req.deadline
                self._arm_deadline()
        if not self._scheduled and self.event is not None:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._visit)

    def _on_eventfd(self) -> None:
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            return
        self.wake()

    def _visit(self) -> None:
        self._scheduled = False
        try:
            self._service()
        except Exception:
            log.exception("engine %s: stream service failed", self.name)

    async def run(self) -> None:
        """Start the kernel threads and serve until cancelled; stop them on the way out."""
        self.event = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._start_threads()
        loop.add_reader(self._efd, self._on_eventfd)
        try:
            self.wake()
            await asyncio.Future()  # everything happens in callbacks
        finally:
            try:
                loop.remove_reader(self._efd)
            finally:
                if self._deadline_timer is not None:
                    self._deadline_timer.cancel()
                self._stop_threads()

    # --- the event loop's part -------------------------------------------------------------------
    def _service(self) -> None:
        self._account()
        self._settle()
        self._reap()
        sched = self.sched
        if self._admission_open():
            admitted = sched.admit(time.monotonic())
            if admitted:
                self._admit(admitted)
        self.metrics.gauges(sched.queued_rows, sched.active_rows)
        self._arm_deadline()

    def _admission_open(self) -> bool:
        """False while waiting rows are held back so that arrivals close together start together (they
        then share the kernel's weight loads): for ``admission_window_ms`` after work reaches an idle
        engine, and, with ``join_next_turn``, until the event loop's next turn while rows are running.

        The second is a timer of zero delay: uvloop and asyncio run it only after the I/O already read
        has been handled, so every request of that batch joins at one position. Measured with ``hey``
        on ``/sample`` (``docs/serving.md``): rows per kernel call 4.1 -> 7.3, 8% more requests per
        second. A window ends when its timer fires, not by the clock: uvloop may fire a timer a little
        before ``time.monotonic()`` reaches its due time, and a clock check would then leave the
        queue waiting with no timer."""
        sched, gather = self.sched, self._gather
        busy = sched.active_rows > 0
        window = 0.0 if busy else self.config.admission_window_ms / 1000.0
        if sched.queued_rows == 0 or (window <= 0 and not (busy and self.config.join_next_turn)):
            if isinstance(gather, asyncio.TimerHandle):
                gather.cancel()
            self._gather = None
            return True
        if gather is True:  # the window has passed
            self._gather = None
            return True
        if gather is None:
            self._gather = asyncio.get_running_loop().call_later(window, self._window_passed)
        return False

    def _window_passed(self) -> None:
        self._gather = True
        self.wake()

    def _settle(self) -> None:
        """Free slots the kernel let go of; settle rows that reached the end."""
        r, sched = self.runner, self.sched
        st = r.state[: r._cap]
        let_go = np.flatnonzero((st == DONE) | (st == DROPPED))
        if len(let_go) == 0:
            return
        dropped = [s for s in let_go.tolist() if s in self._dropping]
        if dropped:
            self._dropping.difference_update(dropped)
            st[dropped] = FREE
            sched.restore(dropped)
        done = let_go[st[let_go] == DONE]
        if len(done) == 0:
            return
        fin = sched.advance(done, np.full(len(done), self.model.data_dim, dtype=np.int64))
        if fin.rows:
            freed = [s for _, _, s in fin.rows]
            x, lp = r.read(freed)
            for j, (req, row, _) in enumerate(fin.rows):
                job: Job = req.payload
                job.x[row] = x[j]
                job.lp[row] = lp[j]
            st[freed] = FREE
            self.counters.rows_sampled += len(freed)
            busy, rows = self._rate
            self._rate = (busy, rows + len(freed))
        for req in fin.completed:
            self._finish(req)

    def _reap(self) -> None:
        """Cancelled and expired requests leave; their slots are freed as :meth:`_free` says."""
        now = time.monotonic()
        if not self._reap_due and now < self._next_deadline:
            return
        self._reap_due = False
        reaped = self.sched.reap(now)
        self._next_deadline = min((r.deadline for r in self.sched.pending()), default=math.inf)
        self._free(reaped.slots)
        self._close_reaped(reaped)

    def _free(self, slots: list[int]) -> None:
        """Slots the scheduler freed: idle ones are free now; the kernel's are asked to drop and kept
        from admission until it lets go of them (:meth:`_settle`)."""
        if not slots:
            return
        st, cap = self.runner.state, self.runner._cap
        slots = [s for s in slots if s < cap]  # beyond the arrays: never handed to the kernel
        held = [s for s in slots if st[s] in (ACTIVE, DROP)]
        if held:
            st[held] = DROP
            self._dropping.update(held)
            self.sched.withhold(held)
            self._kick(held)
        st[[s for s in slots if s not in self._dropping]] = FREE

    def _account(self) -> None:
        """Counters, step metrics and the drain rate from the kernel's counters since the last visit."""
        now = time.perf_counter()
        dt, self._last = now - self._last, now
        totals = self._kcount.sum(axis=0)
        sweeps, row_steps = (totals - self._seen).tolist()
        self._seen = totals
        active = self.sched.active_rows
        c = self.counters
        c.chunks_run += sweeps
        if row_steps > 0 and active > 0:
            steps = max(1, round(row_steps / active))
            c.steps_run += steps
            self.metrics.step(dt / steps, active)
            busy, rows = self._rate
            busy += dt
            if busy >= _RATE_WINDOW_S:
                if rows:
                    rate = rows / busy
                    c.rows_per_s = rate if c.rows_per_s is None else 0.8 * c.rows_per_s + 0.2 * rate
                busy, rows = 0.0, 0
            self._rate = (busy, rows)

    def _admit(self, admitted: list[Admission]) -> None:
        """Write the start states of admitted rows and hand them to the kernel; a request whose
        preparation is costly (a prefill, many uniforms) is prepared on the worker thread first."""
        ready: list[Admission] = []
        for adm in admitted:
            req = adm.request
            job: Job = req.payload
            if job.prepared is None and (job.n_known or req.n_rows * self.model.data_dim > _INLINE_PREPARE):
                self._prepare_aside(adm)
                continue
            try:
                if job.prepared is None:
                    job.prepared = self._prepare(job, req.n_rows)
                ready.append(adm)
            except Exception as e:
                self._fail_admission(adm, e)
        if ready:
            self._activate(ready)

    def _prepare(self, job: Job, n: int) -> Prepared:
        return self.runner.prepare(n, job.seed, job.known, job.n_known, job.temperature)

    def _prepare_aside(self, adm: Admission) -> None:
        """Prepare on the worker thread; rows of the request admitted meanwhile wait for the same result."""
        req = adm.request
        waiting = self._preparing.get(req.id)
        if waiting is not None:
            waiting.append(adm)
            return
        self._preparing[req.id] = [adm]
        job: Job = req.payload
        assert self.executor is not None
        fut = asyncio.get_running_loop().run_in_executor(self.executor, self._prepare, job, req.n_rows)

        def prepared(f: asyncio.Future[Prepared]) -> None:
            adms = self._preparing.pop(req.id, [])
            if req.closed or f.cancelled():  # reaped meanwhile: its slots were never handed out
                return
            exc = f.exception()
            if exc is not None:
                self._fail_admission(adms[0], exc)
                return
            job.prepared = f.result()
            self._activate(adms)

        fut.add_done_callback(prepared)

    def _activate(self, ready: list[Admission]) -> None:
        r = self.runner
        top = max(s for adm in ready for s in adm.slots)
        if top >= r._cap:
            self._grow(top)
        try:
            r.admit_many([(a.request.payload.prepared, a.rows, a.slots) for a in ready])
        except Exception as e:
            for adm in ready:
                self._fail_admission(adm, e)
            return
        slots = [s for a in ready for s in a.slots]
        r.state[slots] = ACTIVE
        self._kick(slots)

    def _fail_admission(self, adm: Admission, exc: BaseException) -> None:
        if adm.request.closed:
            return
        log.error("engine %s: admission failed: %s", self.name, exc)
        self._free(self.sched.fail([adm.request]))
        self.close(adm.request, EngineError(f"prefill failed: {exc}"), "error")

    def _arm_deadline(self) -> None:
        """Keep one timer at ``_next_deadline``, a lower bound of the pending requests' deadlines (it
        falls on arrivals and is recomputed only when reached), so expiry needs no other event."""
        timer, when = self._deadline_timer, self._next_deadline
        if timer is not None and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._deadline_timer = None
        if when != math.inf:
            loop = asyncio.get_running_loop()
            self._deadline_timer = loop.call_later(max(0.0, when - time.monotonic()), self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_timer = None
        self._reap_due = True
        self.wake()
