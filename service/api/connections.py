"""uvicorn's httptools protocol with deadlines and a bound on open connections.

uvicorn closes an idle keep-alive connection only after a first response, and never one that stops
half-way through its headers, so a client can hold sockets (file descriptors) without limit. This
protocol adds, per connection:

* a **header deadline** (``MADE_HEADER_TIMEOUT_S``): from the moment a connection opens, or its last
  response ends, the next request's headers must be complete within it, or the connection is closed.
  Bytes trickled in do not extend it, so a slow-header client is cut off as surely as a silent one;
  idle keep-alive connections are closed sooner, after ``MADE_KEEP_ALIVE_S`` (uvicorn's own timer);
* a **bound on open connections** (``MADE_MAX_CONNECTIONS``, capped below the process's file limit):
  a connection beyond it closes the one that has waited longest without a request in progress (an
  idle or stalled one), or, when every connection is busy with a request, is itself closed at once.
  A flood of stalled sockets therefore cannot lock out a health probe, whose headers arrive at once.

uvicorn's ``limit_concurrency`` is not used: it answers 503 only once headers are complete, and it
counts stalled connections, so under such a flood it would refuse the probes too.
Each response's head is held until its first body write and both go out in one ``writelines`` (one
system call where uvicorn makes two: ``_OneWrite``).
Each request's scope carries a **disconnect hook** (``scope["extensions"]["service.disconnect"]``,
:class:`DisconnectWatch`): a callback registered there is called when the connection is lost before
the response completes, so waiting engine work is cancelled without a task per request watching
``receive()`` (:func:`service.api.bodies.run_cancellable`; that task cost 5-13 us of event-loop
CPU per request, ``bench.app_cost``).
It also marks the process as draining (:mod:`service.api.lifecycle`) when uvicorn begins a graceful
shutdown, so the readiness probe reports not-ready from then on.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.config import get_settings

from . import lifecycle

__all__ = ["DISCONNECT_EXTENSION", "DisconnectWatch", "GuardedHttpToolsProtocol", "connection_cap"]

log = logging.getLogger("service.api")

_FD_HEADROOM = 64  # descriptors kept for model files, logs and the listener
DISCONNECT_EXTENSION = "service.disconnect"


def connection_cap(setting: int, soft_fd_limit: int) -> int:
    """Connections kept open: the setting, but never so many that accepting runs out of descriptors.

    >>> connection_cap(1000, 20000), connection_cap(1000, 1024), connection_cap(1000, -1)
    (1000, 960, 1000)
    """
    if soft_fd_limit < 0:  # RLIM_INFINITY
        return setting
    return max(16, min(setting, soft_fd_limit - _FD_HEADROOM))


@lru_cache(maxsize=1)
def _limits() -> tuple[float, int]:
    settings = get_settings()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return settings.header_timeout_s, connection_cap(settings.max_connections, soft)


class _OneWrite:
    """The transport as one request's cycle sees it: the response head (the first write once the
    response has started) is held and leaves with the first body write, in one ``writelines``.

    Writes before the response starts (``100 Continue``) pass at once; closing sends a held head first.
    Everything else is the transport's own."""

    __slots__ = ("_cycle", "_head", "_sent", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._sent = False  # the head has been written (held, then sent)

    def write(self, data: bytes) -> None:
        if self._sent or not self._cycle.response_started:
            self._transport.write(data)
        elif self._head is None:
            self._head = data
        else:
            head, self._head, self._sent = self._head, None, True
            self._transport.writelines((head, data))

    def close(self) -> None:
        if self._head is not None:
            head, self._head, self._sent = self._head, None, True
            self._transport.write(head)
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class DisconnectWatch:
    """One request's disconnect hook: ``watch(callback)`` has ``callback()`` called once if the
    connection is lost before the response completes and returns True, or returns False at once
    (registering nothing) if it is lost already; ``watch(None)`` removes the callback."""

    __slots__ = ("_callback", "_cycle")

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle
        self._callback: Callable[[], None] | None = None

    def __call__(self, callback: Callable[[], None] | None) -> bool:
        if callback is not None and self._cycle.disconnected:
            return False
        self._callback = callback
        return True

    def lost(self) -> None:
        """The connection is gone (called by the protocol)."""
        callback, self._callback = self._callback, None
        if callback is not None and self._cycle.disconnected:
            callback()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` plus the header deadline and the connection bound (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        waiting = getattr(self.server_state, "made_waiting", None)
        if waiting is None:  # connections awaiting a request, oldest first (dicts keep insertion order)
            waiting = self.server_state.made_waiting = {}  # type: ignore[attr-defined]
        self._waiting: dict[GuardedHttpToolsProtocol, None] = waiting

    # --- the header deadline -------------------------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        timeout, _ = _limits()
        self._header_timer = self.loop.call_later(timeout, self._header_timeout)
        self._waiting[self] = None

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._waiting.pop(self, None)

    def _header_timeout(self) -> None:
        self._header_timer = None
        self._waiting.pop(self, None)
        idle = self.cycle is None or self.cycle.response_complete  # never cut a request in progress
        if idle and not self.transport.is_closing():
            self.transport.close()

    # --- uvicorn's protocol callbacks ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _, cap = _limits()
        if len(self.connections) > cap:
            oldest = next(iter(self._waiting), None)
            if oldest is None:  # every open connection is serving a request: refuse this one
                self.transport.close()
                return
            oldest._disarm()
            oldest.transport.close()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not before:  # a new request (not an upgrade)
            cycle.transport = _OneWrite(self.transport, cycle)
            cycle.scope.setdefault("extensions", {})[DISCONNECT_EXTENSION] = DisconnectWatch(cycle)

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._arm()  # the next request's headers are due within the deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        if self.cycle is not None:
            watch = self.cycle.scope.get("extensions", {}).get(DISCONNECT_EXTENSION)
            if watch is not None:
                watch.lost()

    def shutdown(self) -> None:
        lifecycle.mark_draining()
        self._disarm()
        super().shutdown()
