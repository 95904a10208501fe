"""The disconnect hook of the service's HTTP protocol (``service.disconnect``): a request whose client
hangs up has its engine work cancelled with no watcher task, under a real uvicorn on loopback."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace

import pytest
import uvicorn
from starlette.requests import Request

from bench.server import free_port
from service.api.bodies import run_cancellable
from service.api.connections import DISCONNECT_EXTENSION, DisconnectWatch, GuardedHttpToolsProtocol
from service.api.errors import ClientClosedRequest


def test_a_watch_calls_back_once_and_only_while_the_response_is_unfinished() -> None:
    calls: list[str] = []
    cycle = SimpleNamespace(disconnected=False)
    watch = DisconnectWatch(cycle)
    assert watch(lambda: calls.append("a"))
    watch.lost()  # the response completed first: uvicorn leaves `disconnected` false
    assert calls == []
    assert watch(lambda: calls.append("b"))
    cycle.disconnected = True
    watch.lost()
    watch.lost()
    assert calls == ["b"]
    assert not watch(lambda: calls.append("c"))  # lost already: nothing registered
    watch.lost()
    assert calls == ["b"]
    removed = DisconnectWatch(SimpleNamespace(disconnected=False))
    removed(lambda: calls.append("d"))
    removed(None)
    removed._cycle.disconnected = True
    removed.lost()
    assert calls == ["b"]


@pytest.mark.anyio
async def test_work_of_a_client_gone_already_never_starts() -> None:
    started = False

    async def work() -> int:
        nonlocal started
        started = True
        return 1

    scope = {"type": "http", "extensions": {DISCONNECT_EXTENSION: lambda callback: callback is None}}
    with pytest.raises(ClientClosedRequest):
        await run_cancellable(Request(scope), work())
    assert not started


@pytest.mark.anyio
async def test_a_hang_up_cancels_the_work_through_the_hook() -> None:
    """The app's ``receive`` fails if called, so only the hook can end the never-ending work."""
    started, outcome = asyncio.Event(), asyncio.get_running_loop().create_future()

    async def forbidden() -> dict:
        raise AssertionError("run_cancellable watched receive() under the service's protocol")

    async def app(scope: dict, receive: object, send: object) -> None:
        if scope["type"] != "http":
            return
        assert isinstance(scope["extensions"][DISCONNECT_EXTENSION], DisconnectWatch)
        started.set()
        try:
            await run_cancellable(Request(scope, forbidden), asyncio.Event().wait())
        except ClientClosedRequest:
            outcome.set_result("client left")
            raise

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        http=GuardedHttpToolsProtocol,
        lifespan="off",
        log_level="critical",
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        sock = socket.create_connection(("127.0.0.1", config.port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(started.wait(), timeout=10)
        sock.close()
        assert await asyncio.wait_for(outcome, timeout=10) == "client left"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
