"""The engine process (:mod:`service.engine.process`) behind its client (:mod:`service.engine.client`):
the same outputs as a local engine for a seed, errors by type, cancellation carried across, a dead
engine process failing calls at once, and a clean exit (also when its parent goes away)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from service.engine import Engine, EngineConfig, EngineFull, EngineStopped, EngineTimeout
from service.engine.client import EngineClient, EngineConnection
from service.engine.ipc import (
    CALL,
    MessageProtocol,
    decode_error,
    decode_result,
    encode_error,
    encode_result,
    frame,
    pack,
    unpack,
)
from service.engine.process import EngineProcess, EngineProcessSpec
from service.engine.types import LogProbOutput, SampleOutput
from service.made import load_model, save_model
from tests.waiting import UNTIL, until

from .conftest import make_model

T = TypeVar("T")
CONFIG = EngineConfig(
    admission_window_ms=250.0
)  # an idle engine holds a request that long: cancelled in time


class Recorder:
    """Engine metric hooks that keep what the beats replay."""

    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []
        self.steps = 0
        self.batches = 0

    def step(self, latency_s: float, rows: int) -> None:
        self.steps += 1

    def logprob_batch(self, rows: int) -> None:
        self.batches += 1

    def request_done(self, kind: str, queue_s: float, total_s: float, outcome: str) -> None:
        self.done.append((kind, outcome))

    def gauges(self, queued_rows: int, active_rows: int) -> None:
        pass


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    save_model(root / "tiny", make_model(0, num_masks=1).float(), {"name": "tiny", "value_range": [0, 1]})
    return root / "tiny"


def spawn(folder: Path) -> EngineProcess:
    proc = EngineProcess(EngineProcessSpec(address="", folders=(str(folder),), config=CONFIG, grace_s=2.0))
    info = proc.start()
    assert info == {"models": ["tiny"], "failed": {}}
    return proc


@pytest.fixture(scope="module")
def engine_process(folder: Path) -> Iterator[EngineProcess]:
    proc = spawn(folder)
    yield proc
    assert proc.stop(2.0) == 0  # drained and exited cleanly
    assert not proc.alive


def with_client(proc: EngineProcess, body: Callable[[EngineClient, Recorder], Awaitable[T]]) -> T:
    """A fresh connection and client in a fresh event loop around ``body``."""

    async def main() -> T:
        conn = EngineConnection(proc.address)
        welcome = await conn.connect()
        (desc,) = welcome["models"]
        rec = Recorder()
        client = EngineClient(conn, desc["name"], CONFIG, desc["backend"], rec)
        await until(lambda: client.running)  # the first beat
        try:
            return await body(client, rec)
        finally:
            await conn.close()

    return asyncio.run(main())


# --- the wire format ---------------------------------------------------------------------------------
def test_messages_keep_arrays_and_types() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    kind, header, payload = unpack(pack(CALL, {"id": 7}, {"x": x, "n": np.int64(3), "t": None}))
    assert (kind, header, payload["n"], payload["t"]) == (CALL, {"id": 7}, 3, None)
    assert (
        payload["x"].dtype == np.float32 and np.array_equal(payload["x"], x) and payload["x"].flags.writeable
    )
    out = SampleOutput(x, np.array([1.5, 2.5]), 2**63 + 5)
    _, header, payload = unpack(encode_result(1, out))
    back = decode_result(header, payload)
    assert isinstance(back, SampleOutput) and back.seed == 2**63 + 5 and np.array_equal(back.x, x)
    lp = decode_result(*unpack(encode_result(2, LogProbOutput(np.zeros(2), None)))[1:])
    assert isinstance(lp, LogProbOutput) and lp.per_dim is None


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (EngineFull("full", 7.0), EngineFull),
        (EngineTimeout("late"), EngineTimeout),
        (EngineStopped("off"), EngineStopped),
        (ValueError("bad n"), ValueError),
        (ZeroDivisionError("boom"), Exception),
    ],
)
def test_errors_keep_their_type(exc: Exception, cls: type[Exception]) -> None:
    back = decode_error(unpack(encode_error(1, exc))[1])
    assert type(back) is cls or (cls is Exception and type(back).__name__ == "EngineError")
    if isinstance(exc, EngineFull):
        assert isinstance(back, EngineFull) and back.retry_after_s == 7.0


def test_stream_is_cut_into_messages_however_it_arrives() -> None:
    got: list[list[bytes]] = []
    proto = MessageProtocol(lambda _p, frames: got.append(frames), lambda _p, _e: None)
    msgs = [[b"a", b"", b"xyz"], [b"b" * 1000], [b"c", b"d"]]
    stream = b"".join(frame(m) for m in msgs)
    for i in range(0, len(stream), 7):  # a few bytes at a time
        proto.data_received(stream[i : i + 7])
    proto.data_received(b"")
    assert got == msgs


# --- against the engine process -------------------------------------------------------------------------
def test_same_seed_same_output_as_a_local_engine(engine_process: EngineProcess, folder: Path) -> None:
    model, _ = load_model(folder, "cpu", False)
    known = np.array([1, 0] * 8, dtype=np.float32)

    async def local() -> list[Any]:
        engine = Engine(model, CONFIG, "tiny")
        await engine.start()
        try:
            return await asyncio.gather(
                engine.sample(5, 11),
                engine.complete(known, 6, 3, 12),
                engine.log_prob(known[None], per_dim=True),
            )
        finally:
            await engine.stop(1.0)

    async def remote(c: EngineClient, _: Recorder) -> list[Any]:
        return await asyncio.gather(
            c.sample(5, 11), c.complete(known, 6, 3, seed=12), c.log_prob(known[None], True)
        )

    mine, theirs = asyncio.run(local()), with_client(engine_process, remote)
    for a, b in zip(mine, theirs, strict=True):
        assert type(a) is type(b)
        for name in vars(a):
            assert np.array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name))), name


def test_errors_and_bad_calls(engine_process: EngineProcess) -> None:
    async def body(c: EngineClient, _: Recorder) -> None:
        with pytest.raises(ValueError, match="n must be a positive integer"):
            await c.sample(0, 1)  # the engine's own check, raised there, arrives as the same type
        with pytest.raises(TypeError):
            await c.sample(1, 1, no_such_field=3)  # bound against Engine.sample's signature, here
        stats = c.stats()
        assert stats.name == "tiny" and stats.running and stats.requests_ok >= 1

    with_client(engine_process, body)


def test_cancelling_the_caller_cancels_in_the_engine(engine_process: EngineProcess) -> None:
    async def body(c: EngineClient, rec: Recorder) -> None:
        task = asyncio.create_task(c.sample(4, 3))
        await until(lambda: bool(c.conn._pending))  # the call is sent; it waits out the admission window
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await until(lambda: ("sample", "cancelled") in rec.done)
        await until(lambda: c.stats().queued_rows + c.stats().active_rows == 0)
        assert rec.done.count(("sample", "cancelled")) == 1  # (a beat may also carry earlier tests' "ok"s)

    with_client(engine_process, body)


def test_a_dead_engine_process_fails_calls_at_once(folder: Path) -> None:
    proc = spawn(folder)

    async def body(c: EngineClient, _: Recorder) -> None:
        waiting = asyncio.create_task(c.sample(4, 3))
        await until(lambda: c.stats().queued_rows + c.stats().active_rows > 0)
        proc.proc.kill()
        with pytest.raises(EngineStopped, match="not reachable"):
            await waiting  # not a hang: the closed socket fails it
        assert not c.running and not c.conn.alive
        with pytest.raises(EngineStopped):
            await c.sample(1, 1)
        with pytest.raises(EngineStopped):
            c.check_capacity(1)

    try:
        with_client(proc, body)
    finally:
        proc.stop(0.0)


def test_one_front_end_exports_the_engine_metrics(folder: Path) -> None:
    """Summed over front-ends, the engine's counters count each request once: the oldest front-end
    gets the metric events (whoever sent the call), and the next one once it has gone."""
    proc = spawn(folder)

    async def main() -> None:
        conns, clients, recs = [], [], []
        for _ in range(2):
            conn = EngineConnection(proc.address)
            (desc,) = (await conn.connect())["models"]
            rec = Recorder()
            client = EngineClient(conn, desc["name"], CONFIG, desc["backend"], rec)
            await until(lambda c=client: c.running)  # type: ignore[misc]
            conns.append(conn)
            clients.append(client)
            recs.append(rec)
        await clients[1].sample(2, 1)  # through the younger front-end
        await until(lambda: ("sample", "ok") in recs[0].done)
        await clients[1].log_prob(np.zeros((1, 16), np.float32))
        await until(lambda: ("log_prob", "ok") in recs[0].done)
        assert recs[1].done == [] and recs[1].steps == 0
        assert recs[0].done.count(("sample", "ok")) == 1
        await conns[0].close()  # the owner goes: the other front-end takes over
        await clients[1].sample(1, 2)
        await until(lambda: ("sample", "ok") in recs[1].done)
        assert recs[1].done.count(("sample", "ok")) == 1
        await conns[1].close()

    try:
        asyncio.run(main())
    finally:
        assert proc.stop(2.0) == 0


def test_the_engine_process_exits_when_its_parent_goes(folder: Path) -> None:
    proc = spawn(folder)
    proc._conn.close()  # what the parent's death does to the pipe
    proc.proc.join(UNTIL)
    assert proc.proc.exitcode == 0
    proc.stop(0.0)


def test_early_refusal_and_metrics_come_from_the_beats() -> None:
    """No process needed: a beat's state and events, as the engine process sends them."""
    conn = EngineConnection("/nonexistent")
    rec = Recorder()
    cfg = EngineConfig(max_active_rows=4, max_queued_rows=8)
    client = EngineClient(conn, "m", cfg, "numba", rec)
    state = {
        "name": "m", "backend": "numba", "running": True, "queued_rows": 6, "active_rows": 4,
        "active_requests": 2, "logprob_queued_rows": 0, "steps_run": 10, "chunks_run": 2,
        "rows_sampled": 3, "requests_ok": 3, "requests_failed": 0, "gauges": [6, 4], "retry_after_s": 3.5,
    }  # fmt: skip
    conn._beat(
        {
            "models": {"m": state},
            "events": [["s", "m", 1e-4, 4], ["b", "m", 16], ["r", "m", "sample", 0.0, 0.1, "ok"]],
        }
    )
    assert client.running and rec.steps == 1 and rec.batches == 1 and rec.done == [("sample", "ok")]
    client.check_capacity(2)  # 6 + 4 + 2 rows fit in 4 active + 8 queued
    with pytest.raises(EngineFull) as full:
        client.check_capacity(3)
    assert full.value.retry_after_s == 3.5  # the engine's drain-rate estimate
    assert rec.done[-1] == ("sample", "rejected")
    assert client.stats().queued_rows == 6 and client.stats().requests_ok == 3
    conn._beat({"models": {"m": {**state, "running": False}}, "events": []})
    assert not client.running
    with pytest.raises(EngineStopped):
        client.check_capacity(1)
