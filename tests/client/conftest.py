from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .server import build_repo, thread_server


@pytest.fixture(scope="session")
def client_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repo(tmp_path_factory.mktemp("client-models"))


@pytest.fixture(scope="module")
def server_url(client_repo: Path) -> Iterator[str]:
    with thread_server(client_repo) as url:
        yield url


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"
