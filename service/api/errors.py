"""RFC 9457 problem details for every error the service returns, and the handlers that produce them.

A problem body is ``{"type", "title", "status", "detail", "instance"}`` (``type`` is ``about:blank`` for
plain HTTP errors, a ``tag:`` URI for the service's own kinds) plus extensions: ``errors`` (one
entry per invalid field: ``field``, ``message``, ``input``) for 4xx about the request, ``retry_after_s``
for 503. Responses never carry stack traces; unexpected exceptions are logged and answered with 500.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.engine import EngineError, EngineFull, EngineStopped, EngineTimeout

__all__ = [
    "PROBLEM_JSON",
    "ClientClosedRequest",
    "ProblemError",
    "install_error_handlers",
    "invalid",
    "problem_response",
]

log = logging.getLogger("service.api")

PROBLEM_JSON = "application/problem+json"
REQUEST_ID_SCOPE_KEY = "made.request_id"  # set by middleware.ServingMiddleware
_TAG = "tag:made-service,2026:problem/"  # RFC 4151 tag URIs name our own problem types


class ProblemError(Exception):
    """An error that becomes one problem+json response (raise it anywhere below a route)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title
        self.errors = list(errors) if errors else None
        self.headers = headers or {}
        self.extensions = extensions


class ClientClosedRequest(Exception):
    """The client went away before its answer was ready; its engine work has been cancelled."""


def invalid(field: str, message: str, value: Any = None, status: int = 422) -> ProblemError:
    """A 4xx naming the offending ``field`` (dotted, e.g. ``body.n``), the limit and what came."""
    entry: dict[str, Any] = {"field": field, "message": message}
    if value is not None:
        entry["input"] = value
    return ProblemError(status, f"{field}: {message}", errors=[entry])


def _slug(title: str) -> str:
    return "-".join(title.lower().replace("'", "").split())


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    title: str | None = None,
    errors: Sequence[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """Build the problem+json response; ``type`` is a stable URI per status, ``instance`` the request path,
    ``request_id`` the id to quote when reporting it (also in the ``X-Request-ID`` header)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    # Plain HTTP errors are "about:blank" with the status phrase as title (RFC 9457 section 4.2.1);
    # service-specific ones (engine full, unknown model, ...) get their own type.
    kind = "about:blank" if title is None or title == phrase else _TAG + _slug(title)
    body: dict[str, Any] = {
        "type": kind,
        "title": title or phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if errors:
        body["errors"] = list(errors)
    body.update(extensions)
    rid = request.scope.get(REQUEST_ID_SCOPE_KEY)
    if rid:
        body["request_id"] = rid
        headers = {**(headers or {}), "X-Request-ID": rid}
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _loc_to_field(loc: Sequence[Any]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int) and parts:
            parts[-1] += f"[{p}]"
        else:
            parts.append(str(p))
    return ".".join(parts) or "body"


def _short_input(value: Any) -> Any:
    """Echo small inputs back; summarise large ones (a whole image is no help in an error). A NaN or
    infinity (``{"temperature": NaN}``) is echoed as its text: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value if not isinstance(value, str) or len(value) <= 200 else value[:200] + "..."
    if isinstance(value, list | dict) and len(repr(value)) <= 200:
        return value
    return f"<{type(value).__name__}>"


def validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic / FastAPI error dicts -> ``{"field", "message", "input"}`` entries."""
    out = []
    for e in errors:
        entry: dict[str, Any] = {"field": _loc_to_field(e.get("loc", ())), "message": e.get("msg", "invalid")}
        if "input" in e and e.get("type") != "missing":
            entry["input"] = _short_input(e["input"])
        out.append(entry)
    return out


async def _problem_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        request,
        exc.status,
        exc.detail,
        title=exc.title,
        errors=exc.errors,
        headers=exc.headers,
        **exc.extensions,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc.errors())
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return problem_response(request, 422, detail or "invalid request", errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = str(exc.detail)
    if status == 404 and detail == "Not Found":
        detail = f"no route {request.url.path!r}; see /docs for the API"
    elif status == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        detail = f"method {request.method} is not allowed on {request.url.path}" + (
            f"; allowed: {allowed}" if allowed else ""
        )
    return problem_response(request, status, detail, headers=exc.headers)


def _retry_after(request: Request, exc: EngineError) -> int:
    seconds = getattr(exc, "retry_after_s", None)
    if not isinstance(seconds, int | float) or seconds <= 0:
        seconds = request.app.state.settings.retry_after_s
    return max(1, math.ceil(seconds))


async def _engine_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EngineError)
    if isinstance(exc, EngineFull):
        wait = _retry_after(request, exc)
        loop = asyncio.get_running_loop()
        hold = request.app.state.pacer.delay(request.scope.get("client"), loop.time(), wait)
        if hold > 0:  # back before its Retry-After: held, at the cost of a timer (see pacing.py)
            await asyncio.sleep(hold)
        return problem_response(
            request,
            503,
            f"the model is at capacity, try again in {wait} s ({exc})",
            title="Engine Full",
            headers={"Retry-After": str(wait)},
            retry_after_s=wait,
        )
    if isinstance(exc, EngineTimeout):
        return problem_response(
            request, 504, f"the request missed its deadline ({exc})", title="Deadline Exceeded"
        )
    if isinstance(exc, EngineStopped):
        wait = request.app.state.settings.retry_after_s
        return problem_response(
            request,
            503,
            "the model is not running (starting up or shutting down)",
            title="Engine Stopped",
            headers={"Retry-After": str(wait)},
            retry_after_s=wait,
        )
    log.error("engine error on %s: %s", request.url.path, exc)
    return problem_response(request, 500, "the inference engine failed on this request", title="Engine Error")


async def _client_closed(request: Request, exc: Exception) -> JSONResponse:
    # Nobody reads this; nginx's 499 keeps the access log and metrics honest.
    return problem_response(request, 499, "client closed the request", title="Client Closed Request")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    rid = request.scope.get(REQUEST_ID_SCOPE_KEY)
    log.exception("unhandled error on %s %s", request.method, request.url.path, extra={"request_id": rid})
    return problem_response(request, 500, "internal error; the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error type to a problem+json answer."""
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(ClientClosedRequest, _client_closed)
    app.add_exception_handler(ClientDisconnect, _client_closed)
    app.add_exception_handler(Exception, _unexpected)
