"""Service logging: one JSON object per line (``MADE_LOG_JSON``) or plain text, every line tagged with
the request id of the request it belongs to.

The id lives in a context variable that the API's request middleware sets for the life of a request;
a handler filter copies it onto each record, so lines from any module (uvicorn's too) carry it without
passing it around. Lines outside a request (start-up, the engine loop) have ``request_id: null``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import orjson

__all__ = [
    "EXTRA_FIELDS",
    "JsonFormatter",
    "RequestIdFilter",
    "current_request_id",
    "log_config",
    "request_context",
]

_request_id: ContextVar[str | None] = ContextVar("made_request_id", default=None)

# Attributes passed with ``logger.info(..., extra={...})`` that the JSON formatter emits as fields.
EXTRA_FIELDS = ("method", "path", "status", "duration_ms", "client", "model", "error")


def current_request_id() -> str | None:
    """The id of the request being served in this context, if any."""
    return _request_id.get()


@contextmanager
def request_context(request_id: str | None) -> Iterator[None]:
    """Tag every log line written inside the block with ``request_id``."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` from the context (an explicit ``extra={"request_id": ...}`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id", ...}``; access lines add method, path,
    status, duration_ms; exceptions add ``exc`` (logs only: responses never carry tracebacks).

    There is one access line per request, so it is kept cheap: orjson encodes it (a value it cannot
    encode is written as its ``str``), and the date and time are formatted once per second
    (``python -m bench.logline``: 22-25 us a line against 30-35 us with ``json`` and a ``datetime``)."""

    _second = -1
    _prefix = ""

    def _timestamp(self, created: float) -> str:
        """ISO 8601 UTC with milliseconds, as ``datetime.isoformat(timespec="milliseconds")`` writes it."""
        frac, whole = math.modf(created)
        us = round(frac * 1e6)  # rounded to microseconds first, as datetime.fromtimestamp does
        second = int(whole) + us // 1_000_000
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{us % 1_000_000 // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _, status = record.args
            out.update(client=client, method=method, path=path, status=status)
        for key in EXTRA_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def log_config(level: str = "info", as_json: bool = True) -> dict[str, Any]:
    """A ``dictConfig`` (uvicorn's ``log_config``): uvicorn's loggers and ``service.*`` share one
    handler that tags lines with the request id. uvicorn's own access line is dropped: the service
    writes a richer one (``service.access``, with the duration and request id)."""
    fmt: dict[str, Any] = (
        {"()": JsonFormatter}
        if as_json
        else {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    )
    lvl = level.upper()
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "filters": ["request_id"],
        "stream": "ext://sys.stderr",
    }
    loggers: dict[str, Any] = {
        name: {"handlers": ["default"], "level": lvl, "propagate": False}
        for name in ("uvicorn", "uvicorn.error", "service")
    }
    loggers["uvicorn.access"] = {"handlers": [], "level": "WARNING", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"default": fmt},
        "handlers": {"default": handler},
        "loggers": loggers,
    }
