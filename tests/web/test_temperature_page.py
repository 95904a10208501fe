"""The demo page's temperature controls (issue 15, item 4) in headless Chromium against a real server:
samples and completions at temperature 0 are the client's PNGs at 0, whatever the seed; the caption says
the temperature; a negative one shows the server's problem naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.client import MadeClient
from tests.client.server import H, W, build_repo, process_server

from .test_browser import ARGS, CHROMIUM, TIMEOUT_MS, loaded, offline

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="no /usr/bin/chromium")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = build_repo(tmp_path_factory.mktemp("temperature-page-models"))
    log = tmp_path_factory.mktemp("temperature-page-log") / "server.log"
    with process_server(root, log, MADE_DEFAULT_MODEL="gray", MADE_MAX_SAMPLES_PER_REQUEST="16") as url:
        yield url


@pytest.fixture(scope="module")
def page(server: str) -> Iterator:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        pg = browser.new_page(viewport={"width": 1100, "height": 1000})
        pg.set_default_timeout(TIMEOUT_MS)
        outside = offline(pg)
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(server + "/")
        yield pg
        browser.close()
        assert errors == [] and outside == [], (errors, outside)


def shown_png(page, img_id: str) -> bytes:
    """The bytes of the PNG an <img> shows (its blob: URL, fetched in the page)."""
    data = page.evaluate(
        "async (id) => Array.from(new Uint8Array(await (await fetch(document.getElementById(id).src))"
        ".arrayBuffer()))",
        img_id,
    )
    return bytes(data)


def test_samples_and_completions_at_temperature_zero(page, server: str, tmp_path: Path) -> None:
    loaded(page, "samples-img")
    assert page.input_value("#sample-temperature") == "1" and page.input_value("#complete-temperature") == "1"
    page.fill("#sample-n", "4")
    page.fill("#sample-seed", "3")
    page.fill("#sample-temperature", "0")
    page.click("#sample-btn")
    page.wait_for_function("document.querySelector('#samples-caption').textContent.includes('temperature 0')")
    assert page.inner_text("#samples-caption") == "4 samples from gray · seed 3 · temperature 0"
    with MadeClient(server) as c:
        want = c.sample_png(4, model="gray", seed=99, temperature=0, scale=16).content  # any seed
    assert shown_png(page, "samples-img") == want

    x = (np.arange(H * W).reshape(H, W) * 11 % 256).astype(np.uint8)
    upload = tmp_path / "gray.png"
    Image.fromarray(x).save(upload)
    page.fill("#complete-seed", "5")
    page.fill("#complete-n", "2")
    page.fill("#complete-temperature", "0")
    page.set_input_files("#upload", str(upload))
    page.wait_for_function(
        "document.querySelector('#completions-caption').textContent.includes('temperature 0')"
    )
    with MadeClient(server) as c:
        want = c.complete_png(upload, model="gray", n=2, seed=6, temperature=0, scale=16).content
    assert shown_png(page, "completions-img") == want

    page.fill("#sample-temperature", "-1")
    page.click("#sample-btn")
    page.wait_for_selector("#error", state="visible")
    assert "temperature" in page.inner_text("#error")
    page.fill("#sample-temperature", "1")
    page.click("#sample-btn")
    page.wait_for_selector("#error", state="hidden")
