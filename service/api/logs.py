"""Logging for the server: one JSON object per line (``MADE_LOG_JSON``) or plain text, as a
``logging.config`` dict that uvicorn applies to its own loggers and ours."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "log_config"]


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...}``; uvicorn access records add method, path, status."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _, status = record.args
            out.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def log_config(level: str = "info", as_json: bool = True) -> dict[str, Any]:
    """A ``dictConfig`` for uvicorn's ``log_config``: its loggers and ``service.*`` share one handler."""
    fmt = {"()": JsonFormatter} if as_json else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    lvl = level.upper()
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": fmt},
        "handlers": {"default": handler},
        "loggers": {
            name: {"handlers": ["default"], "level": lvl, "propagate": False}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "service")
        },
    }
