"""The load test's short form (``python -m bench.loadtest --short``): a real server under concurrent mixed
traffic loses nothing and errs nowhere below its queue limit; past it, callers get 503 + Retry-After."""

from __future__ import annotations

from pathlib import Path

from bench import loadtest


def test_short_load_test(tmp_path: Path) -> None:
    result = loadtest.run(loadtest.Config.short(), tmp_path)
    loadtest.print_report(result)
    assert result["failures"] == []
    steady, over = result["steady"], result["overload"]
    assert set(steady["statuses"]) == {"200"} and not steady["transport_errors"]
    assert set(steady["per_op"]) == {"log-prob", "sample", "complete"}
    assert steady["p50_ms"] is not None and steady["p99_ms"] >= steady["p50_ms"]
    assert set(over["statuses"]) == {"200", "503"} and over["bad_503"] == 0
    assert result["engine_outcomes"]["overload"]["rejected"] == over["statuses"]["503"]
    assert result["rss_mib"]["growth_steady"] < 64
