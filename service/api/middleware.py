"""Request context: an ``X-Request-ID`` on every response and log line, one access line per request, and
a last-resort 500 problem for anything unhandled (no stack trace, no internal path, in the answer).

A sane incoming ``X-Request-ID`` (1-128 characters from ``[A-Za-z0-9._:-]``, e.g. nginx's
``$request_id`` or a UUID) is kept, so one id follows a request through a proxy into these logs;
anything else is replaced by a fresh UUID.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logging import request_context

from .errors import REQUEST_ID_SCOPE_KEY, problem_response

__all__ = ["REQUEST_ID_HEADER", "RequestContextMiddleware", "request_id_of"]

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

access_log = logging.getLogger("service.access")
log = logging.getLogger("service.api")


def request_id_of(scope: Scope) -> str | None:
    """The id the middleware gave this request (``None`` outside it)."""
    return scope.get(REQUEST_ID_SCOPE_KEY)


def _incoming_id(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"x-request-id":
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                return None
            return text if _SANE_ID.fullmatch(text) else None
    return None


class RequestContextMiddleware:
    """Outermost pure-ASGI middleware: request id, access log, and 500s for unhandled exceptions."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope) or uuid.uuid4().hex
        scope[REQUEST_ID_SCOPE_KEY] = rid
        start = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
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
                ms = (time.perf_counter() - start) * 1000.0
                client = scope.get("client")
                access_log.info(
                    "%s %s %s %.1f ms",
                    scope.get("method"),
                    scope.get("path"),
                    status or "-",
                    ms,
                    extra={
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "status": status or None,
                        "duration_ms": round(ms, 2),
                        "client": f"{client[0]}:{client[1]}" if client else None,
                    },
                )
