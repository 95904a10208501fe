"""CPU-heavy request work (large JSON bodies, image decoding and resizing, PNG encoding) on a bounded
pool of worker threads, so the event loop keeps accepting and answering requests meanwhile.

The pool's size is ``MADE_CPU_WORKERS`` (default: the CPUs this process may use): more threads than
cores only queue inside the OS while each holds its memory. Small work runs inline: a thread hand-off
costs about as much as validating a few kilobytes (measured in ``bench/http.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar

from service.cpu import available_cpus

__all__ = ["INLINE_BYTES", "configure", "run_cpu"]

T = TypeVar("T")

INLINE_BYTES = 64 * 1024  # bodies up to this size are parsed on the event loop
_size = available_cpus()
_limiter: RunVar[CapacityLimiter] = RunVar("made_cpu_limiter")


def configure(workers: int) -> None:
    """Set the pool size (``MADE_CPU_WORKERS``; 0 = the CPUs this process may use)."""
    global _size
    _size = workers if workers > 0 else available_cpus()


def _get_limiter() -> CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = CapacityLimiter(_size)
        _limiter.set(limiter)
        return limiter


async def run_cpu(fn: Callable[..., T], *args: object, size: int | None = None) -> T:
    """``fn(*args)`` on the bounded pool; inline when ``size`` (bytes of input) is at most
    :data:`INLINE_BYTES`."""
    if size is not None and size <= INLINE_BYTES:
        return fn(*args)
    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=_get_limiter())
