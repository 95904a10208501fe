"""Connections (issue 16, items 5 and 6) against a real server process on loopback: stalled and idle
sockets are closed after the header deadline, open connections are bounded without locking out health
probes, readiness turns off when a drain begins, and a clean SIGTERM drain exits 0.

Bounded: a few hundred sockets, deadlines of a couple of seconds, every wait capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from bench.server import Server, free_port, make_model
from service.api import lifecycle
from service.api.connections import GuardedHttpToolsProtocol, _OneWrite, connection_cap
from tests.api.conftest import Api, assert_problem

STALLED = 300  # sockets per test: a third silent, a third stopped mid-header, a third trickling
CAP = 32


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("conn-models")
    make_model(root / "m", (4, 4), (8,), seed=1)
    return root


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def stalled_sockets(port: int, count: int) -> list[socket.socket]:
    out = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 3 == 1:
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never the blank line
        elif i % 3 == 2:
            s.sendall(b"GET /v2/hea")
        s.setblocking(False)
        out.append(s)
    return out


def closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def count_closed(socks: list[socket.socket], timeout_s: float) -> int:
    """Wait (at most ``timeout_s``) until the server has closed every socket; returns how many it closed."""
    deadline = time.monotonic() + timeout_s
    open_ = list(socks)
    while open_ and time.monotonic() < deadline:
        ready, _, _ = select.select(open_, [], [], 0.2)
        open_ = [s for s in open_ if s not in ready or not closed_by_server(s)]
    return len(socks) - len(open_)


def probe(url: str) -> int:
    return httpx.get(f"{url}/v2/health/ready", timeout=5, trust_env=False).status_code


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def test_stalled_and_idle_connections_are_closed(
    repo: Path, tmp_path: Path, sockets: list[socket.socket]
) -> None:
    env = {"MADE_DEFAULT_MODEL": "m", "MADE_HEADER_TIMEOUT_S": 2, "MADE_KEEP_ALIVE_S": 1}
    with Server(repo, tmp_path / "server.log", env) as server:
        before = open_fds(server.pid)
        sockets += stalled_sockets(server.port, STALLED)
        trickling = sockets[2::3]
        for _ in range(3):  # probes answer while the sockets are held; bytes trickled in extend nothing
            assert probe(server.url) == 200
            for s in trickling:
                with contextlib.suppress(OSError):
                    s.send(b"l")
            time.sleep(0.4)
        assert count_closed(sockets, timeout_s=30) == STALLED
        assert open_fds(server.pid) <= before + 2
        # A keep-alive connection left idle after a response is closed too (MADE_KEEP_ALIVE_S).
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            s.setblocking(False)
            assert count_closed([s], timeout_s=15) == 1


def test_open_connections_are_bounded_and_probes_still_answer(
    repo: Path, tmp_path: Path, sockets: list[socket.socket]
) -> None:
    env = {"MADE_DEFAULT_MODEL": "m", "MADE_HEADER_TIMEOUT_S": 120, "MADE_MAX_CONNECTIONS": CAP}
    with Server(repo, tmp_path / "server.log", env) as server:
        before = open_fds(server.pid)
        sockets += stalled_sockets(server.port, STALLED)
        statuses = [probe(server.url) for _ in range(5)]  # each evicts the longest-waiting stalled socket
        assert statuses == [200] * 5
        closed = count_closed(sockets, timeout_s=10)
        assert closed >= STALLED - CAP
        assert open_fds(server.pid) <= before + CAP + 2


def test_clean_drain_exits_0(repo: Path, tmp_path: Path) -> None:
    with Server(repo, tmp_path / "server.log", {"MADE_DEFAULT_MODEL": "m"}) as server:
        with httpx.Client(base_url=server.url, trust_env=False) as c:  # a keep-alive connection
            assert c.post("/sample", json={"n": 2, "seed": 1}).status_code == 200
            assert server.terminate() == 0
        assert "Application shutdown complete" in server.log()


def test_connection_cap_stays_below_the_file_limit() -> None:
    assert connection_cap(1000, 20000) == 1000
    assert connection_cap(5000, 1024) == 1024 - 64
    assert connection_cap(1000, -1) == 1000  # unlimited


# --- readiness during a drain (in-process) ----------------------------------------------------------------


@pytest.mark.anyio
async def test_readiness_is_off_while_draining(api: Api) -> None:
    assert (await api.client.get("/v2/health/ready")).status_code == 200
    lifecycle.mark_draining()
    try:
        r = await api.client.get("/v2/health/ready")
        assert_problem(r, 503, "shutting down")
        assert (await api.client.get("/v2/health/live")).status_code == 200  # alive, just not taking work
    finally:
        lifecycle.reset()
    assert (await api.client.get("/v2/health/ready")).status_code == 200


@pytest.mark.anyio
async def test_uvicorn_drain_marks_the_process_draining() -> None:
    """uvicorn calls ``shutdown()`` on every open connection when its drain begins."""

    async def app(scope: dict, receive: object, send: object) -> None:  # never reached
        raise AssertionError(scope)

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        http=GuardedHttpToolsProtocol,
        lifespan="off",
        log_level="error",
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        _, writer = await asyncio.open_connection("127.0.0.1", config.port)
        await asyncio.sleep(0.1)
        assert not lifecycle.draining()
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
        assert lifecycle.draining()
        writer.close()
    finally:
        lifecycle.reset()
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


class _Transport:
    """Records what reaches the socket: one entry per system call (``write`` or ``writelines``)."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.calls.append(bytes(data))

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.calls.append(b"".join(parts))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class _Cycle:
    response_started = False


def test_a_response_head_leaves_with_its_first_body_write() -> None:
    t, cycle = _Transport(), _Cycle()
    w = _OneWrite(t, cycle)  # type: ignore[arg-type]
    w.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the response starts: at once
    cycle.response_started = True
    w.write(b"HEAD\r\n\r\n")
    assert t.calls == [b"HTTP/1.1 100 Continue\r\n\r\n"]  # the head is held
    w.write(b"body-1")
    w.write(b"body-2")
    assert t.calls[1:] == [b"HEAD\r\n\r\nbody-1", b"body-2"]
    assert not w.is_closing()  # the rest is the transport's own


def test_closing_sends_a_held_head_first() -> None:
    t, cycle = _Transport(), _Cycle()
    w = _OneWrite(t, cycle)  # type: ignore[arg-type]
    cycle.response_started = True
    w.write(b"HEAD\r\n\r\n")
    w.close()
    assert t.calls == [b"HEAD\r\n\r\n"] and t.closed


def test_pipelined_and_100_continue_requests_get_whole_answers(repo: Path, tmp_path: Path) -> None:
    with (
        Server(repo, tmp_path / "server.log", {"MADE_DEFAULT_MODEL": "m"}) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as s,
    ):
        get = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        s.sendall(get * 3)  # pipelined: three heads, three bodies, in order
        data = b""
        while data.count(b"HTTP/1.1 200") < 3 or not data.endswith(b"}"):
            chunk = s.recv(65536)
            assert chunk, "connection closed early"
            data += chunk
        assert data.count(b"HTTP/1.1 200 OK") == 3
        body = b'{"n": 1, "seed": 3}'
        s.sendall(
            b"POST /sample HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert s.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"  # not held behind the answer
        s.sendall(body)
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 OK") and b'"seed":3' in answer
