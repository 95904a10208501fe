"""``bench.closed_loop`` runs: callers in a closed loop against a small engine get answers."""

from __future__ import annotations

from pathlib import Path

import uvloop

from bench.closed_loop import closed_loop
from bench.server import make_model


def test_closed_loop_serves_requests(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "tiny", (4, 4), (16,), seed=0)
    rate, cores, chunks = uvloop.run(closed_loop(folder, clients=4, seconds=0.3, python_ms=0.1))
    assert rate > 0 and chunks > 0 and cores > 0
