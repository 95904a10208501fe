"""``python -m bench.logline`` runs (a few lines only) and its baseline writes the same fields."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from bench.logline import StdlibJsonFormatter
from service.logging import JsonFormatter


def test_baseline_and_service_formatters_write_the_same_object() -> None:
    record = logging.LogRecord("service.access", logging.INFO, __file__, 1, "%s %s", ("GET", "/x"), None)
    record.request_id, record.status, record.duration_ms = "id-1", 200, 0.5
    assert json.loads(StdlibJsonFormatter().format(record)) == json.loads(JsonFormatter().format(record))


def test_command_prints_both_rows() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.logline", "--lines", "50", "--repeat", "1"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| StdlibJsonFormatter |" in out and "| JsonFormatter |" in out
