"""``bench.logprob_forward`` and ``bench.app_cost`` run on a small model and print their figures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import uvloop

from bench import app_cost, logprob_forward
from bench.server import make_model
from service.config import Settings


def test_forward_bench_prints_both_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    folder = make_model(tmp_path / "tiny", (4, 4), (16,), seed=0)
    monkeypatch.setattr(
        sys, "argv", ["logprob_forward", "--model", str(folder), "--rows", "1,5", "--repeats", "2"]
    )
    logprob_forward.main()
    out = capsys.readouterr().out
    assert "| 1 |" in out and "| 5 |" in out and "beside a spinning main thread" in out
    assert torch.is_grad_enabled()  # the bench leaves the process's grad mode as it found it


@pytest.mark.parametrize("path", app_cost.PATHS)
def test_app_cost_drives_the_app(tmp_path: Path, path: str, capsys: pytest.CaptureFixture[str]) -> None:
    make_model(tmp_path / "tiny", (4, 4), (16,), seed=0)
    settings = Settings(model_dir=tmp_path, default_model="tiny")
    rate = uvloop.run(app_cost.drive(settings, path, app_cost.body(path, "tiny", (4, 4)), 4, 40))
    assert rate > 0 and f"{path}: " in capsys.readouterr().out
