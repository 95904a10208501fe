"""Refusal pacing: clients that honour Retry-After are never held; one that comes straight back is
held until its wait has passed, within the cap; the table stays bounded."""

from __future__ import annotations

import pytest

from service.api.pacing import RefusalPacer


def test_first_refusal_and_a_client_that_waited_are_answered_at_once():
    p = RefusalPacer(max_delay_s=2.0)
    assert p.delay(("10.0.0.1", 5), now=100.0, retry_after_s=3.0) == 0.0
    assert p.delay(("10.0.0.1", 5), now=103.5, retry_after_s=3.0) == 0.0  # came back after 3 s


def test_a_client_back_too_soon_is_held_for_what_is_left_within_the_cap():
    p = RefusalPacer(max_delay_s=2.0)
    key = ("10.0.0.1", 5)
    p.delay(key, now=100.0, retry_after_s=1.5)
    assert p.delay(key, now=100.5, retry_after_s=1.5) == pytest.approx(1.0)  # told to wait until 101.5
    # held until 101.5, then told 1.5 s more: back at once again -> held the whole cap of 2 s
    assert p.delay(key, now=101.5, retry_after_s=30.0) == pytest.approx(1.5)
    assert p.delay(key, now=101.5, retry_after_s=30.0) == pytest.approx(2.0)
    assert p.delay(("10.0.0.2", 5), now=101.5, retry_after_s=1.0) == 0.0  # another connection


def test_off_and_unknown_peers_never_hold():
    assert RefusalPacer(max_delay_s=0.0).delay(("a", 1), 0.0, 5.0) == 0.0
    p = RefusalPacer(max_delay_s=2.0)
    assert p.delay(None, 0.0, 5.0) == 0.0 and p.delay(None, 0.1, 5.0) == 0.0


def test_the_table_is_bounded_oldest_first():
    p = RefusalPacer(max_delay_s=2.0, max_entries=3)
    for port in range(5):
        p.delay(("h", port), now=0.0, retry_after_s=10.0)
    assert len(p._until) == 3
    assert p.delay(("h", 0), now=0.1, retry_after_s=10.0) == 0.0  # forgotten: treated as new
    assert p.delay(("h", 4), now=0.1, retry_after_s=10.0) == pytest.approx(2.0)
