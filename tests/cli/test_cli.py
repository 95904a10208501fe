"""``made`` against a real server (``--url``) and in-process (``--model-dir``): the same seed gives the
same files either way, outputs match the client's, errors exit 1 with the problem, and ``serve`` /
``train`` / ``eval`` hand over to their own commands."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.cli import main
from service.client import MadeClient
from service.client.images import tile
from tests.client.server import REPO, H, W


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def face(tmp_path: Path, name: str = "x.png", seed: int = 0) -> Path:
    x = np.random.default_rng(seed).integers(0, 2, size=(H, W)).astype(np.uint8)
    path = tmp_path / name
    Image.fromarray(x * 255).save(path)
    return path


def test_sample_remote_chunks_and_in_process_agree(url: str, repo: Path, tmp_path: Path) -> None:
    grid, record = tmp_path / "grid.png", tmp_path / "s.json"
    args = ["sample", "--n", "5", "--batch", "2", "--seed", "3", "-o", str(grid), "--json", str(record), "-q"]
    assert main([*args, "--url", url]) == 0
    body = json.loads(record.read_text())
    assert body["model"] == "tiny" and body["seeds"] == [3, 4, 5] and len(body["log_prob"]) == 5
    with MadeClient(url) as c:
        first = c.sample(2, seed=3)
    assert body["images"][:2] == first.images
    assert pixels(grid).shape == (2 * (H + 2) + 2, 3 * (W + 2) + 2)  # 3 columns, 2 rows, 2-px gaps
    assert np.array_equal(pixels(grid), np.asarray(tile(np.array(body["images"]), (0, 1))))

    local = tmp_path / "local.png"
    args = ["sample", "--n", "5", "--batch", "2", "--seed", "3", "-o", str(local), "-q"]
    assert main([*args, "--model-dir", str(repo), "--model", "tiny"]) == 0
    assert local.read_bytes() == grid.read_bytes()


def test_complete_matches_the_server_png(url: str, repo: Path, tmp_path: Path, capsys) -> None:
    src = face(tmp_path)
    out = tmp_path / "out.png"
    assert main(["complete", str(src), "-o", str(out), "--n", "3", "--seed", "4", "--url", url]) == 0
    assert f"-> {out}: 3 completions (tiny, seed 4, top {H // 2} rows kept)" in capsys.readouterr().out
    with MadeClient(url) as c:
        assert out.read_bytes() == c.complete_png(src, n=3, seed=4).content
        want = c.complete(src, n=3, seed=4, known_rows=1).images
    local = tmp_path / "local.png"
    args = ["complete", str(src), "-o", str(local), "--n", "3", "--seed", "4", "--model-dir", str(repo)]
    assert main([*args, "--model", "tiny", "-q"]) == 0
    assert local.read_bytes() == out.read_bytes()
    # several images: -o is a folder; --json records the completions
    second = face(tmp_path, "y.png", seed=1)
    record = tmp_path / "c.json"
    args = ["complete", str(src), str(second), "-o", str(tmp_path / "done"), "--known-rows", "1"]
    assert main([*args, "--n", "3", "--seed", "4", "--json", str(record), "--url", url, "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == ["x-completions.png", "y-completions.png"]
    got = json.loads(record.read_text())
    assert got[0]["images"] == want and got[0]["known_rows"] == 1 and got[1]["image"] == str(second)


def test_log_prob_table_json_and_heatmaps(url: str, tmp_path: Path, capsys) -> None:
    files = [face(tmp_path, f"f{i}.png", seed=i) for i in range(3)]
    with MadeClient(url) as c:
        want = c.log_prob(files)
    capsys.readouterr()
    assert main(["log-prob", *map(str, files), "--batch", "2", "--url", url, "--json", "-q"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in rows] == [str(f) for f in files]
    np.testing.assert_allclose([r["log_prob"] for r in rows], want.log_prob, rtol=1e-6)
    maps = tmp_path / "maps"
    assert main(["log-prob", *map(str, files), "--url", url, "--heatmap", str(maps)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "log p (nats)" in table[0] and "model tiny" in table[0] and len(table) == 4
    assert f"{want.log_prob[1]:14.3f}" in table[2]
    heat = Image.open(maps / "f0-heatmap.png")
    assert heat.size == (W, H) and heat.mode == "RGB"


def test_scale(url: str, repo: Path, tmp_path: Path) -> None:
    """``--scale`` enlarges the sample grid (tiled locally), the completions and the heat maps."""
    grid, big = tmp_path / "g.png", tmp_path / "g3.png"
    args = ["sample", "--n", "4", "--seed", "2", "--url", url, "-q"]
    assert main([*args, "-o", str(grid)]) == 0 and main([*args, "-o", str(big), "--scale", "3"]) == 0
    assert np.array_equal(pixels(big), pixels(grid).repeat(3, axis=0).repeat(3, axis=1))
    local = tmp_path / "local3.png"
    args = ["sample", "--n", "4", "--seed", "2", "--model-dir", str(repo), "--model", "tiny", "-q"]
    assert main([*args, "-o", str(local), "--scale", "3"]) == 0
    assert local.read_bytes() == big.read_bytes()
    src = face(tmp_path)
    out = tmp_path / "c.png"
    args = ["complete", str(src), "-o", str(out), "--n", "2", "--seed", "4", "--scale", "2", "-q"]
    assert main([*args, "--url", url]) == 0
    with MadeClient(url) as c:
        assert out.read_bytes() == c.complete_png(src, n=2, seed=4, scale=2).content
    maps = tmp_path / "maps"
    assert main(["log-prob", str(src), "--url", url, "--heatmap", str(maps), "--scale", "4", "-q"]) == 0
    assert Image.open(maps / "x-heatmap.png").size == (4 * W, 4 * H)
    for bad in ("0", "17"):
        with pytest.raises(SystemExit):
            main(["sample", "--scale", bad])


def test_models_listing(url: str, capsys) -> None:
    assert main(["models", "--url", url]) == 0
    out = capsys.readouterr().out
    assert "* tiny" in out and "4x5" in out and "values 0..255" in out
    assert main(["models", "--url", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["default_model"] == "tiny"


def test_errors_exit_1_with_the_problem(url: str, repo: Path, tmp_path: Path, capsys) -> None:
    assert main(["sample", "--model", "nope", "--url", url, "-q"]) == 1
    assert "choose --model from: gray, tiny" in capsys.readouterr().err
    assert (
        main(["sample", "--n", "1000", "--batch", "1000", "-o", str(tmp_path / "g.png"), "--url", url]) == 1
    )
    err = capsys.readouterr().err
    assert "error: 422" in err and "body.n: at most 16" in err
    assert main(["complete", str(tmp_path / "missing.png"), "--url", url]) == 1
    assert "missing.png" in capsys.readouterr().err
    assert main(["models", "--url", "http://127.0.0.1:9", "-q"]) == 1
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err
    assert main(["sample", "--model-dir", str(repo), "-q"]) == 1  # two models, no default among them
    assert "choose --model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sample", "--n", "0"])


def test_hands_over_to_serve_train_and_eval(repo: Path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0 and "--model-dir" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0 and "--preset" in capsys.readouterr().out
    assert main(["eval", str(repo / "tiny")]) == 2  # the training CLI: the tiny card names no data set
    assert "data set" in capsys.readouterr().err


def test_runs_as_a_program(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MADE_DEFAULT_MODEL": "gray"}
    cmd = [sys.executable, "-m", "service.cli", "sample", "--n", "2", "--seed", "1", "-o", str(out)]
    r = subprocess.run([*cmd, "--model-dir", str(repo)], cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "2 samples of gray, seed 1" in r.stdout and "in-process" in r.stderr
    assert Image.open(io.BytesIO(out.read_bytes())).size == (2 * (W + 2) + 2, H + 4)
