"""A plain ``pip install .`` is the client and ``made`` against a URL, without torch: built as a wheel and
installed, with its dependencies, into a fresh virtual environment (no system or project packages).

The dependencies come from the package index pip is configured with; when it cannot be reached the test
skips with pip's message rather than fail for a reason outside the project.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.server import REPO, build_repo, thread_server

pytestmark = pytest.mark.slow

UNREACHABLE = ("Could not find a version", "No matching distribution", "Failed to establish", "NewConnection")


def run(cmd: list[str], timeout: float = 240, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the project wheel and its base dependencies; returns its bin folder."""
    root = tmp_path_factory.mktemp("client-only")
    ctx = root / "src"  # the sources a wheel is built from, copied so the checkout gets no build/ folder
    ctx.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, ctx / name)
    shutil.copytree(REPO / "service", ctx / "service", ignore=shutil.ignore_patterns("__pycache__"))
    dist = root / "dist"
    pip = [sys.executable, "-m", "pip"]
    built = run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ctx)])
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("made_service-*.whl")
    venv.create(root / "venv", with_pip=True, system_site_packages=False)
    bin_dir = root / "venv" / "bin"
    out = run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)], timeout=600)
    if out.returncode != 0 and any(s in out.stderr for s in UNREACHABLE):
        pytest.skip(f"the package index is not reachable: {out.stderr.strip().splitlines()[-1]}")
    assert out.returncode == 0, out.stderr
    return bin_dir


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with thread_server(build_repo(tmp_path_factory.mktemp("client-only-models"))) as u:
        yield u


def test_client_imports_without_torch(client_venv: Path) -> None:
    python = str(client_venv / "python")
    code = (
        "import importlib.util as u, service.client as c\n"
        "assert c.MadeClient and c.AsyncMadeClient\n"
        "missing = [m for m in ('torch', 'numba', 'fastapi', 'uvicorn', 'sklearn') if u.find_spec(m)]\n"
        "assert not missing, missing\n"
    )
    r = run([python, "-c", code], cwd=client_venv)
    assert r.returncode == 0, r.stderr
    assert run([python, "-c", "import torch"], cwd=client_venv).returncode != 0


def test_made_against_a_url_without_scheme(client_venv: Path, url: str, tmp_path: Path) -> None:
    made = str(client_venv / "made")
    assert run([made, "--help"]).returncode == 0
    host = url.removeprefix("http://")  # host:port, as a user types it
    r = run([made, "models", "--url", host], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "tiny" in r.stdout
    r = run([made, "sample", "--url", host, "--n", "4", "--seed", "1", "-o", "grid.png", "-q"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["serve"], "server"),
        (["eval", "models/mnist"], "train"),
        (["train", "--preset", "digits"], "train"),
        (["sample", "--n", "1"], "server"),  # no --url: the models would run in-process
    ],
)
def test_commands_needing_an_extra_name_it(client_venv: Path, argv: list[str], extra: str) -> None:
    r = run([str(client_venv / "made"), *argv], cwd=REPO)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"pip install 'made-service[{extra}]'" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2, r.stderr
