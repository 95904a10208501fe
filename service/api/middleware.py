"""The one pure-ASGI middleware in front of every request: an ``X-Request-ID`` on every response and
log line, one access line (queued, see :mod:`.access`) and one metrics observation per request, and a
last-resort 500 problem for anything unhandled (no stack trace, no internal path, in the answer).

One layer does all four because each ASGI layer costs a coroutine frame and a wrapped ``send`` per
request (measured in ``bench/http.py``). A sane incoming ``X-Request-ID`` (1-128 characters from
``[A-Za-z0-9._:-]``, e.g. nginx's ``$request_id`` or a UUID) is kept, so one id follows a request
through a proxy into these logs; anything else is replaced by a fresh id.

Metrics are labelled by route template (``/models/{name}``), never by the raw path, and by a fixed set
of methods: requests that match no route, and unknown methods, share one label each, so no client
can grow the label set.
"""

from __future__ import annotations

import logging
import os
import re
import time

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logging import request_context

from .access import AccessLog
from .errors import REQUEST_ID_SCOPE_KEY, problem_response
from .metrics import ApiMetrics

__all__ = ["KNOWN_METHODS", "REQUEST_ID_HEADER", "UNMATCHED", "ServingMiddleware", "request_id_of"]

REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED = "<unmatched>"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_ID_HEADER = REQUEST_ID_HEADER.lower().encode()

log = logging.getLogger("service.api")


def request_id_of(scope: Scope) -> str | None:
    """The id the middleware gave this request (``None`` outside it)."""
    return scope.get(REQUEST_ID_SCOPE_KEY)


def _incoming_id(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id":
            return value.decode("ascii") if _SANE_ID.fullmatch(value) else None
    return None


def route_label(scope: Scope) -> str:
    """The matched route's template, or :data:`UNMATCHED` (404s, slash redirects, preflights...)."""
    return getattr(scope.get("route"), "path", None) or UNMATCHED


def method_label(scope: Scope) -> str:
    method = scope.get("method", "")
    return method if method in KNOWN_METHODS else "OTHER"


class ServingMiddleware:
    """Outermost middleware: request id, access log, metrics, and 500s for unhandled exceptions."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, access: AccessLog | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.access = access if access is not None else AccessLog()
        self._prefix = os.urandom(8).hex()  # fresh ids: 32 hex digits, a per-process prefix and a counter
        self._count = 0

    def _new_id(self) -> str:
        self._count += 1
        return f"{self._prefix}{self._count:016x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope) or self._new_id()
        scope[REQUEST_ID_SCOPE_KEY] = rid
        rid_header = (_ID_HEADER, rid.encode())
        start = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                if not any(k == _ID_HEADER for k, _ in headers):  # problem responses carry it already
                    headers.append(rid_header)
                message["headers"] = headers
            await send(message)

        with request_context(rid):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
                if status:  # the response had started: all we can do is drop the connection
                    raise
                response = problem_response(
                    Request(scope), 500, "internal error; the server log has the details"
                )
                await response(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - start
                route, method = route_label(scope), method_label(scope)
                self.metrics.observe_http(route, method, status or 500, elapsed)
                if self.access.enabled():
                    self.access.add(scope, status, elapsed, rid)
