"""The demo page and the API docs in headless Chromium (Debian's /usr/bin/chromium driven by Playwright)
against a real ``python -m service serve`` process with tiny models, with the network cut off (only the
server on 127.0.0.1 answers): load, draw samples, upload an image and see its completions and heat map
render, pick a held-out example, show an error, take a screenshot; /docs and /redoc list the operations."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from service.client import MadeClient
from tests.client.server import H, W, build_repo, process_server
from tests.web.screenshot import CHROMIUM_ARGS

CHROMIUM = Path("/usr/bin/chromium")
ARGS = CHROMIUM_ARGS
TIMEOUT_MS = 60_000

playwright = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
)
pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason="no /usr/bin/chromium (.ci/system-deps.sh installs Debian's chromium)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = build_repo(tmp_path_factory.mktemp("browser-models"))
    examples = root / "gray" / "examples"
    examples.mkdir()
    Image.fromarray(np.arange(H * W, dtype=np.uint8).reshape(H, W) * 12).save(examples / "ramp.png")
    log = tmp_path_factory.mktemp("browser-log") / "server.log"
    with process_server(root, log, MADE_DEFAULT_MODEL="tiny", MADE_MAX_SAMPLES_PER_REQUEST="16") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


def offline(pg) -> list[str]:
    """Abort every request that would leave this machine (the server is on 127.0.0.1); returns the list
    of URLs that were tried, which must stay empty."""
    tried: list[str] = []

    def handle(route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            tried.append(url)
            route.abort()

    pg.route("**/*", handle)
    return tried


@pytest.fixture(scope="module")
def page(browser, server: str) -> Iterator:
    pg = browser.new_page(viewport={"width": 1100, "height": 1000})
    pg.set_default_timeout(TIMEOUT_MS)
    outside = offline(pg)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server + "/")
    yield pg
    pg.close()
    assert errors == [], errors  # no uncaught JavaScript errors anywhere in the module
    assert outside == [], outside  # the page needs nothing from the internet


def loaded(page, img_id: str) -> None:
    page.wait_for_selector(f"#{img_id}[data-loaded='1']", state="visible")


def natural_size(page, img_id: str) -> tuple[int, int]:
    return tuple(page.eval_on_selector(f"#{img_id}", "i => [i.naturalWidth, i.naturalHeight]"))


def test_upload_shows_completions_and_heatmap(page, server: str, tmp_path: Path) -> None:
    loaded(page, "samples-img")
    assert page.input_value("#model") == "tiny"
    assert "seed" in page.inner_text("#samples-caption")
    page.wait_for_selector("#examples img")
    assert "model sample" in page.inner_text("#examples-note")  # tiny ships no held-out images

    x = (np.arange(H * W).reshape(H, W) % 3 == 0).astype(np.uint8)
    upload = tmp_path / "digit.png"
    Image.fromarray(x * 255).save(upload)
    page.fill("#complete-seed", "7")
    page.fill("#complete-n", "3")
    page.set_input_files("#upload", str(upload))
    loaded(page, "completions-img")
    loaded(page, "heatmap-img")
    loaded(page, "input-img")
    page.wait_for_function("document.querySelector('#heatmap-caption').textContent.includes('bits/dim')")
    assert page.inner_text("#completions-caption") == f"3 completions · top {H // 2} rows kept · seed 7"

    assert page.is_checked("#resize") is False and page.inner_text("#resize-note") == ""  # same size
    with MadeClient(server) as c:
        # the page asks for PNGs enlarged to fit its columns: at most 16x for these 4 x 5 models
        want = c.complete_png(upload, n=3, seed=7, scale=16)
        lp = c.log_prob([upload]).log_prob[0]
    assert natural_size(page, "completions-img") == Image.open(io.BytesIO(want.content)).size
    assert natural_size(page, "heatmap-img") == (16 * W, 16 * H)
    assert natural_size(page, "samples-img") == (16 * (4 * (W + 2) + 2), 16 * (4 * (H + 2) + 2))  # 16 samples
    assert f"log p(x) = {lp:.2f} nats" in page.inner_text("#heatmap-caption")
    assert page.is_visible("#colorbar") and "nats" in page.inner_text("#colorbar-max")
    assert page.is_hidden("#error")

    # an image of another size: the page asks the server to resize it (the API's default is not to)
    big = tmp_path / "big.png"
    Image.fromarray(np.kron(x, np.ones((3, 3), dtype=np.uint8)) * 255).save(big)
    page.set_input_files("#upload", str(big))
    page.wait_for_function("document.querySelector('#resize-note').textContent.includes('resized')")
    assert page.is_checked("#resize")
    assert f"is {3 * W}×{3 * H}" in page.inner_text("#resize-note")
    page.wait_for_function("document.querySelector('#completions-caption').textContent.includes('seed 7')")
    assert page.is_hidden("#error")
    page.uncheck("#resize")  # then the server's refusal shows
    page.click("#run-btn")
    page.wait_for_selector("#error", state="visible")
    assert "resize" in page.inner_text("#error")
    page.check("#resize")
    page.click("#run-btn")
    page.wait_for_selector("#error", state="hidden")

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] >= 1000
    keep = os.environ.get("MADE_SCREENSHOT_DIR")
    if keep:  # CI keeps the screenshot as an artifact
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "demo-page.png")


def test_held_out_example_and_errors(page) -> None:
    page.select_option("#model", "gray")
    page.wait_for_function("document.querySelector('#examples-note').textContent.includes('held-out')")
    assert page.is_hidden("#threshold-box")  # gray-level model: no binarisation threshold
    page.click("#examples button")
    loaded(page, "completions-img")
    loaded(page, "heatmap-img")
    assert "seed" in page.inner_text("#completions-caption")

    page.fill("#sample-n", "1000")  # over MADE_MAX_SAMPLES_PER_REQUEST: the problem detail is shown
    page.click("#sample-btn")
    page.wait_for_selector("#error", state="visible")
    assert "at most 16" in page.inner_text("#error")
    page.fill("#sample-n", "4")
    page.click("#sample-btn")
    page.wait_for_selector("#error", state="hidden")


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_api_docs_render_offline(browser, server: str, path: str) -> None:
    """Swagger UI and ReDoc come from the server itself: with the network cut, they list the operations."""
    pg = browser.new_page(viewport={"width": 1280, "height": 1000})
    pg.set_default_timeout(TIMEOUT_MS)
    try:
        outside = offline(pg)
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(server + path)
        if path == "/docs":
            pg.wait_for_selector(".opblock-summary-path")
            shown = {p.get_attribute("data-path") for p in pg.query_selector_all(".opblock-summary-path")}
            assert {"/sample", "/log-prob", "/complete", "/models", "/models/{name}"} <= shown
        else:
            pg.wait_for_function("document.body.innerText.includes('Exact log-likelihood of images')")
            text = pg.inner_text("body")
            for op in ("/sample", "/log-prob", "/complete", "Exact log-likelihood of images"):
                assert op in text, op
        assert errors == [], errors
        assert outside == [], outside
    finally:
        pg.close()
