"""The scheduler alone (no model): admission between steps, positions, finishing, cancellation, limits."""

import numpy as np
import pytest

from service.engine import EngineFull
from service.engine.scheduler import Request, Scheduler


def req(n: int, start: int = 0, end: int = 10, deadline: float = 1e9, kind: str = "sample") -> Request:
    return Request(kind, n, start, end, deadline, 0.0)


def step(s: Scheduler, steps: int = 1):
    """What the engine does after a chunk: every active row moves ``steps`` positions (up to its end)."""
    slots = s.active_slots()
    pos = np.array([min(s.position(x) + steps, s.owner(x)[0].end) for x in slots], dtype=np.int64)
    return s.advance(slots, pos)


def test_admission_happens_between_steps_and_rows_keep_their_own_positions():
    s = Scheduler(max_active_rows=8, max_queued_rows=8)
    a = req(2)
    s.submit(a)
    assert s.queued_rows == 2 and s.active_rows == 0  # nothing runs before the scheduler is visited
    adm = s.admit(now=1.0)
    assert [(x.request, x.rows) for x in adm] == [(a, [0, 1])]
    step(s, 3)
    b = req(1, start=4)  # a completion starting at position 4
    s.submit(b)
    adm = s.admit(now=2.0)
    assert adm[0].request is b and b.first_admitted == 2.0
    step(s, 1)
    positions = {s.owner(x)[0].id: s.position(x) for x in s.active_slots()}
    assert positions == {a.id: 4, b.id: 5}
    assert s.active_rows == 3 and s.queued_rows == 0


def test_finished_rows_leave_at_once_and_request_completes_with_its_last_row():
    s = Scheduler(4, 4)
    a, b = req(1, end=3), req(2, end=5)
    s.submit(a)
    s.submit(b)
    s.admit(0.0)
    fin = step(s, 3)
    assert [r for r, _, _ in fin.rows] == [a] and fin.completed == [a]
    assert s.active_rows == 2  # a's slot is free already
    c = req(1)
    s.submit(c)
    assert s.admit(0.0)[0].slots == [fin.rows[0][2]]  # and reused at the next visit
    fin = step(s, 2)
    assert fin.completed == [b] and b.done and not c.done


def test_rows_beyond_capacity_wait_then_join_piecewise():
    s = Scheduler(max_active_rows=3, max_queued_rows=10)
    a = req(5, end=2)
    s.submit(a)
    assert sum(len(x.rows) for x in s.admit(0.0)) == 3 and s.queued_rows == 2
    step(s, 2)  # three rows finish
    adm = s.admit(0.0)
    assert adm[0].rows == [3, 4] and s.queued_rows == 0
    fin = step(s, 2)
    assert fin.completed == [a] and a.rows_done == 5


def test_queue_limit_raises_engine_full_counting_free_slots():
    s = Scheduler(max_active_rows=4, max_queued_rows=2)
    s.submit(req(4))  # fits the free slots
    s.submit(req(2))  # two queued
    with pytest.raises(EngineFull) as info:
        s.submit(req(1), retry_after_s=2.5)
    assert info.value.retry_after_s == 2.5
    assert s.queued_rows == 6
    with pytest.raises(ValueError, match="capacity"):
        s.submit(req(7))


def test_cancel_removes_waiting_rows_now_and_active_rows_at_next_reap():
    s = Scheduler(2, 4)
    a, b = req(2), req(2)
    s.submit(a)
    s.submit(b)
    s.admit(0.0)
    s.cancel(b)  # still waiting
    assert s.queued_rows == 0
    s.cancel(a)  # active
    assert s.active_rows == 2  # leaves at the next visit, not mid-chunk
    reaped = s.reap(now=0.0)
    assert sorted(reaped.slots) == [0, 1] and {r.id for r in reaped.cancelled} == {a.id, b.id}
    assert s.idle and s.admit(0.0) == []


def test_results_of_a_chunk_for_reaped_slots_are_ignored():
    s = Scheduler(2, 0)
    a = req(1, end=2)
    s.submit(a)
    s.admit(0.0)
    slots = s.active_slots()
    s.cancel(a)
    s.reap(0.0)
    fin = s.advance(slots, np.array([2]))
    assert fin.rows == [] and fin.completed == [] and not a.done


def test_deadlines_expire_waiting_and_active_requests():
    s = Scheduler(1, 4)
    a, b, c = req(1, deadline=5.0), req(1, deadline=5.0), req(1, deadline=50.0)
    for r in (a, b, c):
        s.submit(r)
    s.admit(0.0)  # a active, b and c waiting
    assert s.reap(now=4.0).expired == []
    reaped = s.reap(now=6.0)
    assert {r.id for r in reaped.expired} == {a.id, b.id} and reaped.slots == [0]
    assert s.queued_rows == 1 and s.admit(6.0)[0].request is c


def test_fail_frees_the_slots_of_the_failed_requests_only():
    s = Scheduler(4, 0)
    a, b = req(2), req(2)
    s.submit(a)
    s.submit(b)
    s.admit(0.0)
    assert sorted(s.fail([a])) == sorted(a_slots := [0, 1]) and a.closed
    assert s.active_rows == 2 and s.pending() == [b]
    assert set(s.active_slots().tolist()).isdisjoint(a_slots)
