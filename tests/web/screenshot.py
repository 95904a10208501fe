"""Regenerate the demo page's screenshot (docs/img/demo-page.png) from a model repository, repeatably.

    python -m tests.web.screenshot --out docs/img/demo-page.png      # or: make screenshot

Starts ``python -m service serve`` on a free loopback port with the committed ``models/`` (on the CPU,
without the start-up Jacobian check, which only costs time here), opens the demo page in headless
Chromium (Debian's /usr/bin/chromium driven by Playwright, as tests/web/test_browser.py does) at a fixed
viewport with the network cut off, selects the ``faces`` model, draws samples with a fixed seed, clicks
the first example (a held-out face when the model folder ships examples/), waits for its heat map and
completions (fixed seed too), takes a full-page screenshot and stops the server gracefully.

Samples and completions are drawn at temperature 1 by default, the model's own distribution, with the
temperature controls visible in the shot; ``--sample-temperature`` / ``--complete-temperature`` change
that. With the same models, seeds and options a rerun gives the same pictures (the pixels of the page
around them depend on the fonts installed). It lives under tests/ because it needs the test tools
(``.[dev]``: Playwright) and the test helpers that start a server; ``make screenshot`` runs it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.client.server import REPO, process_server

__all__ = ["CHROMIUM", "Shot", "main", "take_screenshot"]

CHROMIUM = Path("/usr/bin/chromium")
# headless chromium cut off from the network (tests/web/test_browser.py uses the same flags)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no name resolves: no way out
]
DEFAULT_OUT = REPO / "docs" / "img" / "demo-page.png"
DEFAULT_MODEL_DIR = REPO / "models"
TIMEOUT_MS = 300_000  # a 64x64 model's samples on a busy CPU take a while


@dataclass(frozen=True)
class Shot:
    """What the screenshot shows: the model, its draws (fixed seeds, so reruns agree) and the viewport."""

    model: str = "faces"
    n_samples: int = 16
    sample_seed: int = 1
    sample_temperature: float = 1.0
    n_completions: int = 4
    complete_seed: int = 7
    complete_temperature: float = 1.0
    example: int = 0  # which of the examples offered under the upload button is clicked
    width: int = 1280
    height: int = 900  # the viewport's; the shot is of the full page, however long


def _number(x: float) -> str:
    """A value as typed into the page's number fields: 1.0 as "1", 0.5 as "0.5" (the captions echo it)."""
    return f"{x:g}"


def _has_part(selector: str, part: str) -> str:
    """A JavaScript predicate: the element's text, split at " · ", has ``part`` as one of its pieces
    (so "seed 1" does not match a random seed 1234 of an earlier draw)."""
    return f"document.querySelector({selector!r}).textContent.split(' · ').includes({part!r})"


def _offline(page: Any) -> list[str]:
    """Abort every request that would leave this machine; returns the URLs tried (must stay empty)."""
    tried: list[str] = []

    def handle(route: Any) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in ("data", "blob") or url.hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            tried.append(route.request.url)
            route.abort()

    page.route("**/*", handle)
    return tried


def _drive(page: Any, url: str, shot: Shot, out: Path) -> None:
    """Bring the page into the state the picture shows, then save the full page as PNG to ``out``."""
    page.goto(url + "/")
    # the page's own start: the server's default model, its random samples and its examples
    page.wait_for_selector("#samples-img[data-loaded='1']", state="visible")
    page.wait_for_function("document.querySelector('#status').textContent === ''")

    # the options first, so that choosing the model draws with them (one draw of the big model)
    page.fill("#sample-n", str(shot.n_samples))
    page.fill("#sample-seed", str(shot.sample_seed))
    page.fill("#sample-temperature", _number(shot.sample_temperature))
    page.fill("#complete-n", str(shot.n_completions))
    page.fill("#complete-seed", str(shot.complete_seed))
    page.fill("#complete-temperature", _number(shot.complete_temperature))
    if page.input_value("#model") == shot.model:
        page.click("#sample-btn")  # already shown (its default model): redraw with the seed
    else:
        page.select_option("#model", shot.model)
    page.wait_for_function(_has_part("#samples-caption", f"seed {shot.sample_seed}"))
    page.wait_for_function(_has_part("#samples-caption", f"{shot.n_samples} samples from {shot.model}"))

    offered = httpx.get(f"{url}/models/{shot.model}/examples", timeout=60).json()["examples"]
    if shot.example >= len(offered):
        raise ValueError(f"{shot.model} offers {len(offered)} examples; --example {shot.example} is not one")
    page.wait_for_function(f"document.querySelectorAll('#examples button').length === {len(offered)}")
    page.locator("#examples button").nth(shot.example).click()
    page.wait_for_function(_has_part("#completions-caption", f"seed {shot.complete_seed}"))
    page.wait_for_function("document.querySelector('#heatmap-caption').textContent.includes('bits/dim')")
    for img in ("input-img", "heatmap-img", "completions-img"):
        page.wait_for_selector(f"#{img}[data-loaded='1']", state="visible")
    page.wait_for_function("document.querySelector('#status').textContent === ''")  # nothing in flight
    page.wait_for_function("Array.from(document.images).every((i) => i.complete)")
    if page.is_visible("#error"):
        raise RuntimeError(f"the page shows an error: {page.inner_text('#error')}")

    # no focus ring on the clicked example, no hover effect: only the chosen example's own highlight
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.mouse.move(0, 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True, animations="disabled", caret="hide")


def take_screenshot(
    out: Path,
    model_dir: Path = DEFAULT_MODEL_DIR,
    shot: Shot | None = None,
    chromium: Path = CHROMIUM,
    server_env: dict[str, str] | None = None,
) -> Path:
    """Serve ``model_dir``, drive the demo page in headless Chromium as ``shot`` says and write a
    full-page PNG to ``out``; returns ``out``. ``shot`` defaults to the docs' picture (:class:`Shot`).

    The server is a real ``python -m service serve`` process (the same start-up and static files as a
    deployment), stopped with SIGTERM afterwards; it raises if the server did not stop gracefully, if
    the page showed an error or threw, or if it tried to reach anything but the server. ``server_env``
    adds ``MADE_*`` settings (the defaults keep start-up quick: CPU, no Jacobian check).
    """
    from playwright.sync_api import sync_playwright

    shot = shot or Shot()
    if not chromium.is_file():
        raise FileNotFoundError(f"no {chromium} (.ci/system-deps.sh installs Debian's chromium)")
    env = {"MADE_VERIFY_ON_LOAD": "false", "MADE_MAX_SAMPLES_PER_REQUEST": str(max(64, shot.n_samples))}
    env.update(server_env or {})
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="made-screenshot-") as tmp:
        log = Path(tmp) / "server.log"
        with process_server(Path(model_dir).resolve(), log, **env) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": shot.width, "height": shot.height})
                page.set_default_timeout(TIMEOUT_MS)
                outside = _offline(page)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                _drive(page, url, shot, out)
            finally:
                browser.close()
            if errors or outside:
                raise RuntimeError(f"page errors {errors}, requests off this machine {outside}")
    return out


def main(argv: list[str] | None = None) -> int:
    """The command line: every field of :class:`Shot` as an option, defaults giving the docs' picture."""
    d = Shot()
    ap = argparse.ArgumentParser(
        prog="python -m tests.web.screenshot",
        description="Screenshot of the demo page (docs/img/demo-page.png) from a model repository.",
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG to write (default: %(default)s)")
    ap.add_argument(
        "--model-dir",
        type=Path,
        default=DEFAULT_MODEL_DIR,
        help="model repository served (default: the committed models/)",
    )
    ap.add_argument("--model", default=d.model, help="model selected on the page (default: %(default)s)")
    ap.add_argument("--samples", type=int, default=d.n_samples, help="samples drawn (default: %(default)s)")
    ap.add_argument(
        "--sample-seed", type=int, default=d.sample_seed, help="samples' seed (default: %(default)s)"
    )
    ap.add_argument("--sample-temperature", type=float, default=d.sample_temperature, help="(default: 1)")
    ap.add_argument("--completions", type=int, default=d.n_completions, help="(default: %(default)s)")
    ap.add_argument(
        "--complete-seed", type=int, default=d.complete_seed, help="completions' seed (default: 7)"
    )
    ap.add_argument("--complete-temperature", type=float, default=d.complete_temperature, help="(default: 1)")
    ap.add_argument(
        "--example", type=int, default=d.example, help="index of the example clicked (default: 0)"
    )
    ap.add_argument("--width", type=int, default=d.width, help="viewport width (default: %(default)s)")
    ap.add_argument("--height", type=int, default=d.height, help="viewport height (default: %(default)s)")
    ap.add_argument("--chromium", type=Path, default=CHROMIUM, help="browser binary (default: %(default)s)")
    args = ap.parse_args(argv)
    shot = Shot(
        model=args.model,
        n_samples=args.samples,
        sample_seed=args.sample_seed,
        sample_temperature=args.sample_temperature,
        n_completions=args.completions,
        complete_seed=args.complete_seed,
        complete_temperature=args.complete_temperature,
        example=args.example,
        width=args.width,
        height=args.height,
    )
    out = take_screenshot(args.out, args.model_dir, shot, args.chromium)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
