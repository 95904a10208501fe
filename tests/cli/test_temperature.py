"""``made sample|complete --temperature`` (issue 15, item 4): the same files as the client's at that
temperature, remote and in-process alike; a negative or non-numeric value is refused before any request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.cli import main
from service.client import MadeClient
from tests.client.server import H, W


def test_sample_and_complete_at_a_temperature(url: str, repo: Path, tmp_path: Path) -> None:
    grid, local = tmp_path / "grid.png", tmp_path / "local.png"
    args = ["sample", "--model", "gray", "--n", "4", "--seed", "2", "--temperature", "0.5", "-q"]
    assert main([*args, "-o", str(grid), "--url", url]) == 0
    assert main([*args, "-o", str(local), "--model-dir", str(repo)]) == 0
    assert grid.read_bytes() == local.read_bytes()
    src = tmp_path / "x.png"
    Image.fromarray(np.arange(H * W, dtype=np.uint8).reshape(H, W) * 9).save(src)
    out = tmp_path / "out.png"
    args = ["complete", str(src), "-o", str(out), "--model", "gray", "--n", "2", "--seed", "4"]
    assert main([*args, "--temperature", "0", "--url", url, "-q"]) == 0
    with MadeClient(url) as c:
        assert out.read_bytes() == c.complete_png(src, model="gray", n=2, seed=4, temperature=0).content
        assert out.read_bytes() == c.complete_png(src, model="gray", n=2, seed=5, temperature=0).content


@pytest.mark.parametrize("bad", ["-1", "warm", "nan", "inf"])
def test_bad_temperature_is_a_usage_error(bad: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["sample", "--temperature", bad])
    assert "--temperature" in capsys.readouterr().err
