"""The server URL may be given as ``host:port``: the client (and so ``made --url``) adds ``http://``."""

from __future__ import annotations

import pytest

from service.cli import main
from service.client import AsyncMadeClient, MadeClient
from service.client.sync import base_url


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("localhost:8000", "http://localhost:8000"),
        ("127.0.0.1:8000/", "http://127.0.0.1:8000"),
        (" made.internal ", "http://made.internal"),
        ("http://localhost:8000", "http://localhost:8000"),
        ("HTTPS://made.example/api/", "HTTPS://made.example/api"),
        ("[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_base_url(given: str, used: str) -> None:
    assert base_url(given) == used


@pytest.mark.parametrize("bad", ["", "   ", "ftp://host:21", "ws://host:8000"])
def test_other_schemes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="server URL"):
        MadeClient(bad)


def test_host_port_reaches_the_server(server_url: str) -> None:
    host = server_url.removeprefix("http://")
    with MadeClient(host) as c:
        assert c.url == server_url and "tiny" in c.models().names


@pytest.mark.anyio
async def test_async_client_takes_host_port(server_url: str) -> None:
    async with AsyncMadeClient(server_url.removeprefix("http://")) as c:
        assert "tiny" in (await c.models()).names


def test_cli_url_without_scheme(server_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--url", server_url.removeprefix("http://")]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["models", "--url", "ftp://nowhere"]) == 1
    assert "http:// or https://" in capsys.readouterr().err
