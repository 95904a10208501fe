"""The model-free scheduler: requests become rows, rows get slots, slots advance one position per step.

Iteration-level scheduling (as in vLLM, with a row in place of a sequence): between chunks the engine
asks the scheduler to reap cancelled and expired work, admit waiting rows into free slots (FIFO, a
request's rows may be admitted over several visits), and after a chunk it reports each slot's new
position; a row whose position reaches its request's ``end`` leaves at once and frees its slot. All
calls are synchronous and happen on the event-loop thread, so no locks are needed.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .types import EngineFull

__all__ = ["Admission", "Finished", "Reaped", "Request", "Scheduler"]

_ids = itertools.count()


@dataclass(eq=False)
class Request:
    """A unit of sampling work: ``n_rows`` independent rows, each drawing positions ``start..end-1``."""

    kind: str
    n_rows: int
    start: int
    end: int
    deadline: float
    submitted: float
    payload: Any = None
    id: int = field(default_factory=lambda: next(_ids))
    next_row: int = 0  # rows [0, next_row) have been admitted
    rows_done: int = 0
    first_admitted: float | None = None
    cancelled: bool = False
    closed: bool = False  # finished, failed, expired or cancelled: no more bookkeeping
    slots: dict[int, int] = field(default_factory=dict)  # row index -> slot, for active rows

    @property
    def waiting_rows(self) -> int:
        return 0 if self.closed else self.n_rows - self.next_row

    @property
    def done(self) -> bool:
        return self.rows_done == self.n_rows


@dataclass
class Admission:
    """Rows ``rows`` of ``request`` now occupy ``slots`` (same length), starting at ``request.start``."""

    request: Request
    rows: list[int]
    slots: list[int]


@dataclass
class Finished:
    """Rows that reached their end in the last chunk (their slots are already free) and the requests
    that thereby completed."""

    rows: list[tuple[Request, int, int]]  # (request, row index, former slot)
    completed: list[Request]


@dataclass
class Reaped:
    """Work removed at a scheduler visit: freed slots, cancelled requests, expired requests."""

    slots: list[int]
    cancelled: list[Request]
    expired: list[Request]


class Scheduler:
    """Waiting queue, slot table and per-row positions for at most ``max_active_rows`` active rows."""

    def __init__(self, max_active_rows: int, max_queued_rows: int) -> None:
        if max_active_rows < 1 or max_queued_rows < 0:
            raise ValueError("need max_active_rows >= 1 and max_queued_rows >= 0")
        self.max_active_rows = max_active_rows
        self.max_queued_rows = max_queued_rows
        self._waiting: deque[Request] = deque()
        self._running: dict[int, Request] = {}  # id -> request with active rows
        self._owner: list[tuple[Request, int] | None] = [None] * max_active_rows
        self._pos = np.zeros(max_active_rows, dtype=np.int64)
        self._end = np.zeros(max_active_rows, dtype=np.int64)
        self._occupied = np.zeros(max_active_rows, dtype=bool)
        self._active: np.ndarray | None = None  # cached sorted occupied slots
        self._free: list[int] = list(range(max_active_rows - 1, -1, -1))  # pop() gives lowest slot
        self._queued_rows = 0

    # --- counts ----------------------------------------------------------------------------------
    @property
    def queued_rows(self) -> int:
        """Rows submitted but not yet admitted."""
        return self._queued_rows

    @property
    def active_rows(self) -> int:
        return self.max_active_rows - len(self._free)

    @property
    def active_requests(self) -> int:
        return len(self._running)

    @property
    def idle(self) -> bool:
        return self._queued_rows == 0 and self.active_rows == 0

    def pending(self) -> list[Request]:
        """Every request still waiting or running (for shutdown)."""
        seen = {r.id: r for r in self._waiting if not r.closed}
        seen.update(self._running)
        return list(seen.values())

    def position(self, slot: int) -> int:
        return int(self._pos[slot])

    def positions(self, slots: np.ndarray) -> np.ndarray:
        return self._pos[slots].copy()

    def ends(self, slots: np.ndarray) -> np.ndarray:
        """The position at which each slot's row is done."""
        return self._end[slots].copy()

    # --- submission and admission ----------------------------------------------------------------
    def check(self, n_rows: int, retry_after_s: float = 1.0, horizon_rows: int | None = None) -> None:
        """Raise :class:`EngineFull` if ``n_rows`` more rows would overflow the waiting queue (rows that
        fit into free slots at the next step do not count as queued), or would wait behind more rows
        than the engine drains before the request's deadline (``horizon_rows``: the measured drain
        rate times the timeout; never below the active capacity, so an idle engine admits).
        ``ValueError`` if they could never fit."""
        if n_rows > self.max_active_rows + self.max_queued_rows:
            raise ValueError(
                f"n={n_rows} exceeds the engine capacity of {self.max_active_rows + self.max_queued_rows} rows"
            )
        overflow = max(0, self._queued_rows + n_rows - len(self._free))
        if overflow > self.max_queued_rows:
            raise EngineFull(
                f"engine queue is full ({self._queued_rows} rows waiting, {self.active_rows} active, "
                f"limit {self.max_queued_rows} queued)",
                retry_after_s,
            )
        if horizon_rows is not None:
            backlog = self._queued_rows + self.active_rows + n_rows
            if backlog > max(horizon_rows, self.max_active_rows):
                raise EngineFull(
                    f"the engine would not reach this request before its deadline ({backlog} rows "
                    f"ahead of and in it; about {horizon_rows} drain in time)",
                    retry_after_s,
                )

    def submit(self, req: Request, retry_after_s: float = 1.0, horizon_rows: int | None = None) -> None:
        """Queue ``req``, or raise :class:`EngineFull` as :meth:`check` says."""
        if req.n_rows < 1:
            raise ValueError("a request needs at least one row")
        if not 0 <= req.start < req.end:
            raise ValueError("need 0 <= start < end")
        self.check(req.n_rows, retry_after_s, horizon_rows)
        self._waiting.append(req)
        self._queued_rows += req.n_rows

    def admit(self, now: float) -> list[Admission]:
        """Move waiting rows into free slots, oldest request first."""
        out: list[Admission] = []
        while self._waiting and self._free:
            req = self._waiting[0]
            if req.closed or req.cancelled:
                self._waiting.popleft()
                continue
            take = min(req.n_rows - req.next_row, len(self._free))
            rows = list(range(req.next_row, req.next_row + take))
            slots = [self._free.pop() for _ in rows]
            for r, s in zip(rows, slots, strict=True):
                self._owner[s] = (req, r)
                self._occupied[s] = True
                self._pos[s] = req.start
                self._end[s] = req.end
                req.slots[r] = s
            req.next_row += take
            self._queued_rows -= take
            if req.first_admitted is None:
                req.first_admitted = now
            self._running[req.id] = req
            self._active = None
            if req.next_row == req.n_rows:
                self._waiting.popleft()
            out.append(Admission(req, rows, slots))
        return out

    def active_slots(self) -> np.ndarray:
        """Occupied slots in increasing order."""
        if self._active is None:
            self._active = np.flatnonzero(self._occupied).astype(np.int64)
        return self._active

    def owner(self, slot: int) -> tuple[Request, int] | None:
        return self._owner[slot]

    # --- progress ----------------------------------------------------------------------------------
    def advance(self, slots: np.ndarray, positions: np.ndarray) -> Finished:
        """Record new positions after a chunk; rows at their end leave and free their slots."""
        rows: list[tuple[Request, int, int]] = []
        completed: list[Request] = []
        self._pos[slots] = positions
        done = slots[positions >= self._end[slots]]
        for s in done.tolist():
            owner = self._owner[s]
            if owner is None:  # reaped while the chunk ran
                continue
            req, r = owner
            if not req.closed and not req.cancelled:  # cancelled rows leave at the next reap
                self._release(s)
                del req.slots[r]
                req.rows_done += 1
                rows.append((req, r, s))
                if req.done:
                    req.closed = True
                    self._running.pop(req.id, None)
                    completed.append(req)
        return Finished(rows, completed)

    def withhold(self, slots: list[int]) -> None:
        """Keep freed ``slots`` out of admission until :meth:`restore` (a runner is still letting go of
        them); they count as active meanwhile."""
        held = set(slots)
        self._free = [s for s in self._free if s not in held]

    def restore(self, slots: list[int]) -> None:
        """Return withheld ``slots`` to the free list."""
        self._free.extend(slots)

    # --- removal ---------------------------------------------------------------------------------
    def cancel(self, req: Request) -> None:
        """Mark ``req`` cancelled; its waiting rows leave now, its active rows at the next :meth:`reap`."""
        if req.closed:
            return
        req.cancelled = True
        self._queued_rows -= req.waiting_rows
        req.next_row = req.n_rows

    def reap(self, now: float) -> Reaped:
        """Free the slots of cancelled requests and of requests past their deadline."""
        slots: list[int] = []
        cancelled: list[Request] = []
        expired: list[Request] = []
        for req in self.pending():
            if req.cancelled:
                cancelled.append(req)
            elif req.deadline <= now:
                expired.append(req)
            else:
                continue
            slots.extend(self._close(req))
        return Reaped(slots, cancelled, expired)

    def fail(self, reqs: list[Request]) -> list[int]:
        """Remove ``reqs`` at once (their step failed); returns the freed slots."""
        slots: list[int] = []
        for req in reqs:
            slots.extend(self._close(req))
        return slots

    def _close(self, req: Request) -> list[int]:
        if req.closed:
            return []
        self._queued_rows -= req.waiting_rows
        req.next_row = req.n_rows
        freed = list(req.slots.values())
        for s in freed:
            self._release(s)
        req.slots.clear()
        req.closed = True
        self._running.pop(req.id, None)
        return freed

    def _release(self, slot: int) -> None:
        self._owner[slot] = None
        self._occupied[slot] = False
        self._end[slot] = 0
        self._active = None
        self._free.append(slot)
