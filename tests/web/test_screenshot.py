"""The screenshot command (tests/web/screenshot.py, ``make screenshot``) against the tiny test models: it
starts a server, drives the page to a held-out example's completions and heat map, writes a full-page PNG
of the viewport's width and stops the server gracefully (take_screenshot raises otherwise). Skips as
test_browser.py does, without Playwright or Debian's chromium."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.client.server import H, W, build_repo

from .screenshot import CHROMIUM, Shot, take_screenshot

playwright = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
)
pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason="no /usr/bin/chromium (.ci/system-deps.sh installs Debian's chromium)"
)


def test_screenshot_of_the_tiny_models(tmp_path: Path) -> None:
    repo = build_repo(tmp_path / "models")
    examples = repo / "gray" / "examples"
    examples.mkdir()
    for i in range(3):
        ramp = (np.arange(H * W, dtype=np.uint8).reshape(H, W) * (4 + 4 * i)).astype(np.uint8)
        Image.fromarray(ramp).save(examples / f"ramp{i}.png")
    out = tmp_path / "shots" / "demo-page.png"  # a folder that does not exist yet

    # "gray" is not the server's default model, so the page switches to it as it does to faces
    shot = Shot(model="gray", n_samples=4, sample_temperature=0.5, example=1, width=1000, height=700)
    written = take_screenshot(out, repo, shot, server_env={"MADE_DEFAULT_MODEL": "tiny"})

    assert written == out and out.is_file()
    with Image.open(out) as img:
        assert img.format == "PNG"
        width, height = img.size
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert width == 1000  # the viewport's width, no horizontal overflow
    assert height >= 700  # the whole page: samples, examples, heat map and completions below the fold
    assert colours is not None and len(colours) > 50  # pictures and text, not a blank page
