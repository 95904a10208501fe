"""Metrics shared by several front-end processes (``MADE_WORKERS``): each process writes its values to
prometheus-client's multiprocess folder and any of them answers the sum. Each process here is a fresh
interpreter, since prometheus-client picks its mode when it is first imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from service.api import metrics as api_metrics
from service.config import MULTIPROC_ENV

# a front-end's figures: route requests, engine outcomes, the row gauges and readiness, then maybe close()
# (the module is loaded from its file: importing the service.api package would start torch, seconds each)
FRONT_END = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("made_metrics", sys.argv[5])
metrics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(metrics)
assert metrics.multiprocess_mode()
n, queued, ready, close = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "close"
m = metrics.ApiMetrics()
for _ in range(n):
    m.observe_http("/sample", "POST", 200, 0.01)
    m.engine("tiny").request_done("sample", 0.0, 0.1, "ok")
m.engine("tiny").gauges(queued, 1)
m.models_ready.labels("tiny").set(ready)
if close:
    m.close()
sys.stdout.write(m.render().decode())
"""


def _run(code: str, folder: Path, *args: object) -> str:
    env = {**os.environ, MULTIPROC_ENV: str(folder)}
    argv = [sys.executable, "-c", code, *map(str, args), api_metrics.__file__]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return out.stdout


def _values(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("route") == "/sample" or s.labels.get("model") == "tiny":
                if s.name.endswith(("_bucket", "_created", "_sum")):
                    continue
                out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def test_any_front_end_answers_the_sum_of_all(tmp_path: Path) -> None:
    _run(FRONT_END, tmp_path, 3, 5, 1, "live")  # still serving
    _run(FRONT_END, tmp_path, 2, 2, 0, "close")  # stopped: its counts stay, its gauges leave the sums
    values = _values(_run(FRONT_END, tmp_path, 1, 4, 1, "live"))  # this one answers the scrape
    assert values["made_http_requests_total"] == 6
    assert values["made_http_request_duration_seconds_count"] == 6
    assert values["made_engine_requests_total"] == 6
    assert values["made_engine_queued_rows"] == 9  # summed over the live front-ends (each its own engine)
    assert values["made_engine_active_rows"] == 2
    assert values["made_model_ready"] == 1  # the least over live front-ends: the stopped one's 0 is gone
