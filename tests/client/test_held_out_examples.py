"""The client's examples() and example() against a server of a committed model: its held-out test images,
byte for byte, ready to complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.client import MadeClient

from .server import thread_server

FOLDER = Path(__file__).resolve().parents[2] / "models" / "mnist-fast"


@pytest.mark.skipif(not (FOLDER / "examples").is_dir(), reason="models/mnist-fast ships no examples")
def test_client_lists_and_fetches_held_out_examples(tmp_path: Path) -> None:
    (tmp_path / "mnist-fast").symlink_to(FOLDER, target_is_directory=True)
    files = json.loads((FOLDER / "card.json").read_text())["examples"]["files"]
    with (
        thread_server(tmp_path, default_model="mnist-fast", verify_on_load=False) as url,
        MadeClient(url, timeout=30) as c,
    ):
        listing = c.examples("mnist-fast")
        assert listing.source == "held-out" and [e["name"] + ".png" for e in listing.examples] == files
        for i, name in enumerate(files):
            assert c.example("mnist-fast", i) == (FOLDER / "examples" / name).read_bytes()
        done = c.complete(c.example("mnist-fast", 3), n=2, seed=4)
        assert done.array().shape == (2, 28, 28)
