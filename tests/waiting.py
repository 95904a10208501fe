"""Waiting for a condition in tests: polled, with a bound against hangs that is never a measurement."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

UNTIL = 30.0  # longest wait for a condition, seconds


async def until(cond: Callable[[], bool], step: float = 0.01) -> None:
    """Return once ``cond()`` holds; fail the test if it has not held after :data:`UNTIL` seconds."""
    for _ in range(int(UNTIL / step)):
        if cond():
            return
        await asyncio.sleep(step)
    raise AssertionError("condition never held")
