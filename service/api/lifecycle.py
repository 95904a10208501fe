"""Process-wide serving state the readiness probe reads: whether the server has begun to drain.

The connection guard (:mod:`service.api.connections`) marks it when uvicorn starts its graceful
shutdown, and the registry when the engines stop, so ``/v2/health/ready`` answers 503 from the first
moment of a drain rather than only once the listener is gone.
"""

from __future__ import annotations

import threading

__all__ = ["draining", "mark_draining", "reset"]

_draining = threading.Event()


def mark_draining() -> None:
    """The server stopped taking work: readiness reports not-ready from now on."""
    _draining.set()


def draining() -> bool:
    return _draining.is_set()


def reset() -> None:
    """Back to serving (tests that start a second app in the same process)."""
    _draining.clear()
