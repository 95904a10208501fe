"""Cost of one JSON access line: ``python -m bench.logline``.

The service writes one access line per request (``service.access``), so its cost is paid on the event
loop for every request. Measured in one run: the whole ``logger.info`` call through the service's
handler (record, request-id filter, format, write to a file) and the format alone, with
:class:`service.logging.JsonFormatter` and with the straightforward formatter it replaced (stdlib
``json.dumps`` and a ``datetime`` per line), which is kept here as the baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
import sys
import tempfile
import timeit
from datetime import UTC, datetime
from typing import Any

from service.logging import EXTRA_FIELDS, JsonFormatter, log_config

__all__ = ["StdlibJsonFormatter", "main"]


class StdlibJsonFormatter(logging.Formatter):
    """The baseline: the same fields, a ``datetime`` and ``json.dumps`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key in EXTRA_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        return json.dumps(out, default=str)


def _access_line(logger: logging.Logger) -> None:
    logger.info(
        "%s %s %s %.1f ms",
        "POST",
        "/sample",
        200,
        1.234,
        extra={
            "method": "POST",
            "path": "/sample",
            "status": 200,
            "duration_ms": 1.23,
            "client": "127.0.0.1:5",
        },
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=20_000, help="lines per timing")
    p.add_argument("--repeat", type=int, default=5, help="timings per figure (the best is reported)")
    args = p.parse_args()
    with tempfile.TemporaryFile("w") as sink:
        sys.stderr = sink  # the service's handler writes to stderr: here, to a file
        logging.config.dictConfig(log_config("info", True))
        logger = logging.getLogger("service.access")
        handler = logging.getLogger("service").handlers[0]
        record = logging.LogRecord("service.access", logging.INFO, __file__, 1, "%s %s", ("POST", "/s"), None)
        record.request_id, record.status, record.duration_ms = "0123456789abcdef", 200, 1.23
        rows = []
        for formatter in (StdlibJsonFormatter(), JsonFormatter()):
            handler.setFormatter(formatter)
            whole = min(timeit.repeat(lambda: _access_line(logger), number=args.lines, repeat=args.repeat))
            fmt = min(timeit.repeat(lambda: handler.format(record), number=args.lines, repeat=args.repeat))
            rows.append((type(formatter).__name__, whole / args.lines * 1e6, fmt / args.lines * 1e6))
        sys.stderr = sys.__stderr__
    print("| formatter | access line (us) | format alone (us) |\n| --- | --- | --- |")
    for name, whole_us, fmt_us in rows:
        print(f"| {name} | {whole_us:.1f} | {fmt_us:.1f} |")


if __name__ == "__main__":
    main()
