"""Logging for the server (kept for existing imports): the implementation lives in :mod:`service.logging`,
shared with the engine and the CLI."""

from __future__ import annotations

from service.logging import JsonFormatter, log_config

__all__ = ["JsonFormatter", "log_config"]
