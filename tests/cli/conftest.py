"""A server over the tiny test models for the ``made`` command's tests, and no ``MADE_*`` from outside."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.client.server import build_repo, thread_server


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repo(tmp_path_factory.mktemp("cli-models"))


@pytest.fixture(scope="module")
def url(repo: Path) -> Iterator[str]:
    with thread_server(repo) as u:
        yield u


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MADE_URL", "MADE_API_KEY", "MADE_MODEL_DIR", "MADE_DEFAULT_MODEL"):
        monkeypatch.delenv(name, raising=False)
