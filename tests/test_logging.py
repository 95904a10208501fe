"""The JSON log line (:class:`service.logging.JsonFormatter`): one object per line with the fields log
readers rely on, and its cached timestamp written as ``datetime.isoformat`` writes it."""

from __future__ import annotations

import json
import logging
import random
from datetime import UTC, datetime
from decimal import Decimal

from service.logging import JsonFormatter


def test_timestamp_matches_isoformat_across_seconds() -> None:
    fmt = JsonFormatter()
    rng = random.Random(0)
    base = 1_764_556_800.0
    # in order and out of order, within a second and across: the cached second must never leak
    stamps = [base + i * 0.2503 for i in range(40)] + [base + rng.uniform(-1e6, 1e6) for _ in range(500)]
    stamps += [base + 0.9994, base + 0.9999996, base + 1.0, base + 59.001, 0.0, 1.5]
    for t in stamps:
        assert fmt._timestamp(t) == datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds"), t


def test_access_line_is_one_json_object_with_its_fields() -> None:
    record = logging.LogRecord(
        "service.access", logging.INFO, __file__, 1, "%s %s", ("POST", "/sample"), None
    )
    record.request_id = "abc-1"
    record.method, record.path, record.status, record.duration_ms = "POST", "/sample", 200, 1.25
    record.client = Decimal("1.5")  # not JSON: written as its str
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "POST /sample" and out["level"] == "info" and out["logger"] == "service.access"
    assert out["request_id"] == "abc-1" and out["status"] == 200 and out["duration_ms"] == 1.25
    assert out["client"] == "1.5"
    assert out["ts"] == datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
