"""The access log: one line per request (``service.access``), written in batches at the end of the
event loop's turn.

A request's line is queued when the request ends (a tuple) and every line queued during a
turn of the event loop is written by one callback at the end of that turn, through the logger as usual
(its level, filters and handlers apply; the line's time is the request's end, its request id the
request's). Lines are no later than the turn that ended their requests. Written one at a time, in the
middle of each request's own work, an access line cost 32-40 us of event-loop CPU on ``POST /sample``
(against 9 us in a loop of lines, ``bench.logline``); in batches, the service answered 7% more
requests per second (``hey`` on ``/sample``, three alternating pairs; ``docs/serving.md``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.types import Scope

__all__ = ["ACCESS_FORMAT", "AccessLog", "access_log"]

access_log = logging.getLogger("service.access")

ACCESS_FORMAT = "%s %s %s %.1f ms"  # method, path, status, milliseconds

_Line = tuple[float, str | None, str | None, str | None, int, float, str | None]


class AccessLog:
    """Queue of access lines for ``logger``, written at the end of the event loop's current turn."""

    def __init__(self, logger: logging.Logger = access_log) -> None:
        self.logger = logger
        self._pending: list[_Line] = []

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def add(self, scope: Scope, status: int, seconds: float, request_id: str | None) -> None:
        """Queue the line of a request that ended now, answered ``status`` (0: none) in ``seconds``."""
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        client = scope.get("client")
        self._pending.append(
            (
                time.time(),
                request_id,
                scope.get("method"),
                scope.get("path"),
                status,
                seconds * 1000.0,
                f"{client[0]}:{client[1]}" if client else None,
            )
        )

    def flush(self) -> None:
        """Write every queued line (also called when the app shuts down)."""
        pending, self._pending = self._pending, []
        logger = self.logger
        for created, rid, method, path, status, ms, client in pending:
            record = logger.makeRecord(
                logger.name,
                logging.INFO,
                __file__,
                0,
                ACCESS_FORMAT,
                (method, path, status or "-", ms),
                None,
                "access",
                {
                    "request_id": rid,
                    "method": method,
                    "path": path,
                    "status": status or None,
                    "duration_ms": round(ms, 2),
                    "client": client,
                },
            )
            record.created = created  # the request's end, not the time of writing
            record.msecs = int((created - int(created)) * 1000) + 0.0
            logger.handle(record)
