"""The user docs work as written: in README.md and docs/usage.md, every ```bash block that calls curl runs
(in order, in one folder per file) against a real ``python -m service serve`` on a free port, and each
curl answers 200 with the content type its URL asks for; the ```python blocks run too. Their pictures
exist, and the README stays a newcomer's page (at most 250 lines).

The committed models serve (the examples name them); ``MADE_DOCS_MODEL_DIR`` points elsewhere.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.server import REPO, process_server

README = REPO / "README.md"
DOCS = [README, REPO / "docs" / "usage.md"]
MODELS = Path(os.environ.get("MADE_DOCS_MODEL_DIR", REPO / "models"))
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
# curl's own report of each answer, on stderr so it never mixes with a body written to stdout
PREAMBLE = """set -euo pipefail
curl() { command curl -sS -w '%{stderr}CURL %{http_code} %{content_type}\\n' "$@"; }
"""
ENDPOINTS = {"/sample", "/complete", "/log-prob", "/models", "/metrics"}


def blocks(doc: Path, lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(doc.read_text()) if kind == lang]


def curl_blocks(doc: Path) -> list[str]:
    return [b for b in blocks(doc, "bash") if re.search(r"^curl ", b, re.M)]


def commands(block: str) -> list[str]:
    """The curl command lines of a block, continuation lines joined."""
    return [c for c in block.replace("\\\n", " ").splitlines() if c.startswith("curl ")]


def expected_type(cmd: str) -> str:
    if "format=png" in cmd or '"format": "png"' in cmd or re.search(r"/examples/\d", cmd):
        return "image/png"
    if "/metrics" in cmd:
        return "text/plain"
    return "application/json"


def models_named() -> set[str]:
    found: set[str] = set()
    for doc in DOCS:
        text = doc.read_text()
        found |= set(re.findall(r'model(?:=|": "|=")(\w+)', text) + re.findall(r"/models/(\w+)", text))
    return found - {"name"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = sorted(m for m in models_named() if not (MODELS / m / "card.json").is_file())
    if missing:
        pytest.skip(f"the docs use models {missing} that are not in {MODELS} yet")
    log = tmp_path_factory.mktemp("doc-server") / "server.log"
    with process_server(MODELS, log, MADE_VERIFY_ON_LOAD="false") as url:  # checked by tests/made
        yield url


def test_readme_is_short_and_has_an_example_per_endpoint() -> None:
    assert len(README.read_text().splitlines()) <= 250
    curls, pythons = curl_blocks(README), blocks(README, "python")
    assert len(curls) >= 5 and len(pythons) >= 5
    assert {p for b in curls for p in re.findall(r"localhost:8000(/[a-z-]+)", b)} >= ENDPOINTS
    calls = {"/models": ".models(", "/sample": ".sample", "/log-prob": ".log_prob(", "/complete": ".complete"}
    for path, call in {**calls, "/metrics": ".metrics("}.items():
        assert any(call in b for b in pythons), f"README has no Python example for {path}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_pictures_exist(doc: Path) -> None:
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc.read_text()):
        assert (doc.parent / link).resolve().is_file(), f"{doc.name} shows {link}, which does not exist"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_curl_examples_run_as_written(doc: Path, server: str, tmp_path: Path) -> None:
    host = server.removeprefix("http://")
    written = []
    for block in curl_blocks(doc):
        script = PREAMBLE + block.replace("localhost:8000", host)
        r = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{block}\n--- stderr:\n{r.stderr[-2000:]}"
        answers = [line.split(" ", 2)[1:] for line in r.stderr.splitlines() if line.startswith("CURL ")]
        cmds = commands(block)
        assert len(answers) == len(cmds), (block, r.stderr)
        for cmd, (status, ctype) in zip(cmds, answers, strict=True):
            assert status == "200", f"{cmd}\n-> {status} {r.stdout[-1000:]}"
            assert ctype.startswith(expected_type(cmd)), f"{cmd}\n-> {ctype}"
            written += re.findall(r"-o (\S+\.png)", cmd)
    assert written
    for name in written:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_python_examples_run_as_written(doc: Path, server: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for block in blocks(doc, "python"):
        code = block.replace("http://localhost:8000", server)
        r = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert r.returncode == 0, f"{block}\n--- stderr:\n{r.stderr[-2000:]}"
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "heatmap.png").is_file()
