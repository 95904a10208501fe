"""The engine process: every model's :class:`Engine` in a process of its own, behind a Unix socket.

vLLM's v1 split: HTTP front-ends (one or more processes) parse and answer requests, and one engine
process holds the batch, so request handling and the sampling loop run on different cores (two
Python interpreters, two GILs) while calls from every front-end still share the same steps.

The engine process loads the model folders it is given, starts and warms their engines, then listens on
the Unix socket ``spec.address``. A front-end (:mod:`.client`) sends ``CALL`` messages (model, engine
method, keyword arguments) and ``CANCEL`` when its caller goes away; each call runs as a task here and
is answered with ``RESULT`` or ``ERROR``. Every ``beat_s`` each front-end gets a ``BEAT``: the engines'
state, and for one front-end (the *owner*: the longest connected) the metric events since the last beat
and the gauges, which it applies to its own Prometheus registry. So the engine's counters are exported
once across all front-ends and add up when their ``/metrics`` are summed (``MADE_WORKERS`` front-ends
share one multiprocess registry, see :mod:`service.api.metrics`; separate services are summed by
Prometheus).

The process ignores SIGINT and SIGTERM: its parent (:class:`EngineProcess`) decides when it stops,
after the front-ends have drained. It stops on the parent's ``"stop"``, or when the parent is gone (the
pipe between them closes), so it never outlives the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import logging.config
import multiprocessing
import multiprocessing.connection
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.logging import request_context
from service.memory import freeze_startup

from .engine import Engine
from .ipc import (
    BEAT,
    BYE,
    CALL,
    CANCEL,
    HELLO,
    WELCOME,
    MessageProtocol,
    encode_error,
    encode_result,
    pack,
    unpack,
)
from .types import EngineConfig

__all__ = ["REQUEST_METHODS", "EngineProcess", "EngineProcessSpec", "main"]

log = logging.getLogger("service.engine")

REQUEST_METHODS = frozenset({"sample", "complete", "log_prob"})  # what a front-end may call
_MAX_EVENTS = 100_000  # metric events kept between beats (dropped beyond: no front-end is listening)


@dataclass(frozen=True)
class EngineProcessSpec:
    """What the engine process serves and how: the model folders, the device, the engines' config."""

    address: str  # path of the Unix socket the engine process listens on
    folders: tuple[str, ...]
    device: str = "cpu"
    verify: bool = True
    config: EngineConfig = field(default_factory=EngineConfig)
    grace_s: float = 20.0  # drain time when stopped
    gc_freeze: bool = True  # freeze start-up's objects once the engines are warm (service.memory)
    beat_s: float = 0.05  # state and metric events to the front-ends this often
    log_config: dict[str, Any] | None = None  # ``logging.config.dictConfig`` for this process


class _EventMetrics:
    """The engine's metrics hooks, recorded as events for the next beat (the front-ends own Prometheus)."""

    def __init__(self, name: str, events: list[list[Any]]) -> None:
        self.name = name
        self._events = events
        self.latest: tuple[int, int] = (0, 0)

    def step(self, latency_s: float, rows: int) -> None:
        self._events.append(["s", self.name, latency_s, rows])

    def logprob_batch(self, rows: int) -> None:
        self._events.append(["b", self.name, rows])

    def request_done(self, kind: str, queue_s: float, total_s: float, outcome: str) -> None:
        self._events.append(["r", self.name, kind, queue_s, total_s, outcome])

    def gauges(self, queued_rows: int, active_rows: int) -> None:
        self.latest = (queued_rows, active_rows)


def _describe(
    name: str, folder: Path, card: dict[str, Any], engine: Engine, device: str, t0: float
) -> dict[str, Any]:
    """What a front-end needs to build its model entry without loading the network."""
    model = engine.model
    return {
        "name": name,
        "folder": str(folder),
        "card": card,
        "device": device,
        "backend": engine.backend,
        "data_dim": model.data_dim,
        "n_bins": model.dist.n_bins,
        "ordering": model.ordering(0).cpu().numpy().tolist(),
        "shared_ordering": model.shares_ordering(),
        "num_masks": model.num_masks,
        "load_seconds": time.perf_counter() - t0,
    }


class EngineServer:
    """The engine process's state: its engines, the socket, the calls in flight, the front-ends."""

    def __init__(self, spec: EngineProcessSpec) -> None:
        self.spec = spec
        self.engines: dict[str, Engine] = {}
        self.sinks: dict[str, _EventMetrics] = {}
        self.models: list[dict[str, Any]] = []
        self.failed: dict[str, dict[str, str]] = {}
        self.events: list[list[Any]] = []
        self.peers: dict[MessageProtocol, None] = {}  # front-ends that said hello, oldest (the owner) first
        self.tasks: dict[tuple[MessageProtocol, int], asyncio.Task[None]] = {}
        self.server: asyncio.Server | None = None

    async def load(self) -> None:
        """Load, start and warm every folder's engine; a folder that fails is reported, not fatal here
        (the front-end applies ``skip_bad_models``)."""
        from service.made import load_model  # the network and its checkpoint code: this process only

        for folder_text in self.spec.folders:
            folder = Path(folder_text)
            t0 = time.perf_counter()
            try:
                model, card = await asyncio.to_thread(load_model, folder, self.spec.device, self.spec.verify)
                sink = _EventMetrics(folder.name, self.events)
                engine = Engine(model, self.spec.config, folder.name, sink)
                await engine.start()
                try:
                    x = np.zeros((1, model.data_dim), np.float32)  # level 0: valid for every model
                    await engine.log_prob(x, per_dim=model.num_masks == 1 or model.shares_ordering())
                    await engine.sample(1, 0)
                except BaseException:
                    await engine.stop(0.0)
                    raise
            except Exception as e:
                log.error("engine process: model %s failed: %s", folder.name, e)
                self.failed[folder.name] = {"type": type(e).__name__, "message": str(e)}
                continue
            self.engines[folder.name], self.sinks[folder.name] = engine, sink
            self.models.append(_describe(folder.name, folder, card, engine, self.spec.device, t0))
        self.events.clear()  # the warm-up requests are not the clients'

    def welcome(self) -> list[bytes]:
        """The models (and failed folders) for a new front-end, with their state: ready at once."""
        return pack(WELCOME, {"models": self.models, "failed": self.failed, "state": self.state()})

    async def listen(self) -> None:
        """Accept front-ends on the Unix socket; each connection is a :class:`MessageProtocol`."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_unix_server(
            lambda: MessageProtocol(self.on_message, self.on_lost), self.spec.address
        )

    def on_message(self, peer: MessageProtocol, frames: list[bytes]) -> None:
        kind, header, payload = unpack(frames)
        if kind == CALL:
            self._call(peer, header, payload)
        elif kind == CANCEL:
            task = self.tasks.get((peer, header["id"]))
            if task is not None:  # after the task's first step (scheduled before this): it has reached
                asyncio.get_running_loop().call_soon(task.cancel)  # the engine, which counts it cancelled
        elif kind == HELLO:
            self.peers[peer] = None
            peer.send(self.welcome())
        elif kind == BYE:
            self.peers.pop(peer, None)

    def on_lost(self, peer: MessageProtocol, exc: Exception | None) -> None:
        """A front-end went away: nobody waits for its calls any more."""
        self.peers.pop(peer, None)
        for (p, _), task in list(self.tasks.items()):
            if p is peer:
                task.cancel()

    def _call(self, peer: MessageProtocol, header: dict[str, Any], payload: dict[str, Any]) -> None:
        rid = header["id"]
        engine = self.engines.get(header.get("model", ""))
        method = header.get("method", "")
        if engine is None or method not in REQUEST_METHODS:
            err = ValueError(f"no model {header.get('model')!r} or method {method!r} in the engine process")
            peer.send(encode_error(rid, err))
            return
        task = asyncio.get_running_loop().create_task(
            self._run(peer, rid, getattr(engine, method), payload, header.get("request_id"))
        )
        key = (peer, rid)
        self.tasks[key] = task
        task.add_done_callback(lambda _t: self.tasks.pop(key, None))

    async def _run(
        self, peer: MessageProtocol, rid: int, method: Any, kwargs: dict[str, Any], request_id: str | None
    ) -> None:
        with request_context(request_id):  # engine log lines carry the front-end's request id
            try:
                out = await method(**kwargs)
            except asyncio.CancelledError:
                return  # the caller went away: the engine has counted it, nobody waits for an answer
            except Exception as e:
                peer.send(encode_error(rid, e))
                return
            peer.send(encode_result(rid, out))

    def send_beat(self, running: bool = True) -> None:
        """Each engine's state to every front-end, with the metric events since the last beat (then
        forgotten) for the oldest only."""
        peers = list(self.peers)
        models = self.state(running)
        events = self.events[:] if peers else []
        self.events.clear()
        if peers:
            peers[0].send(pack(BEAT, {"models": models, "events": events, "owner": True}))
        if len(peers) > 1:
            others = pack(BEAT, {"models": models, "events": [], "owner": False})
            for peer in peers[1:]:
                peer.send(others)

    def state(self, running: bool = True) -> dict[str, dict[str, Any]]:
        """Each engine's statistics, gauges and Retry-After estimate, by model."""
        models = {}
        for name, engine in self.engines.items():
            state = dataclasses.asdict(engine.stats())
            state["running"] = running and state["running"]
            state["gauges"] = self.sinks[name].latest
            state["retry_after_s"] = engine._loop.retry_after()  # the drain-rate estimate 503s carry
            models[name] = state
        return models

    async def beat(self) -> None:
        while True:
            await asyncio.sleep(self.spec.beat_s)
            if len(self.events) > _MAX_EVENTS:
                self.events.clear()
            self.send_beat()

    async def drain(self) -> None:
        """Drain every engine (calls still in flight finish within ``grace_s``), then tell the
        front-ends the engines are gone."""
        await asyncio.gather(
            *(e.stop(self.spec.grace_s) for e in self.engines.values()), return_exceptions=True
        )
        self.send_beat(running=False)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for peer in list(self.peers):
            peer.close()
        await asyncio.sleep(0)  # let the transports flush and close


async def _amain(spec: EngineProcessSpec, conn: multiprocessing.connection.Connection) -> None:
    server = EngineServer(spec)
    await server.load()
    if spec.gc_freeze:
        freeze_startup()
    await server.listen()
    conn.send(("ready", {"models": [m["name"] for m in server.models], "failed": server.failed}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_parent() -> None:  # "stop", or end of file: the parent is gone
        with contextlib.suppress(EOFError, OSError):
            conn.recv()
        loop.remove_reader(conn.fileno())
        stop.set()

    loop.add_reader(conn.fileno(), on_parent)
    tasks = [loop.create_task(server.beat())]
    await stop.wait()
    log.info("engine process: draining")
    await server.drain()  # the socket still answers meanwhile: results go out, cancels come in
    for t in tasks:
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
    await server.close()
    log.info("engine process: stopped")


def main(spec: EngineProcessSpec, conn: multiprocessing.connection.Connection) -> None:
    """The engine process's entry point (a ``multiprocessing`` spawn target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops this process, after the front-ends
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if spec.log_config is not None:
        logging.config.dictConfig(spec.log_config)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    try:
        runner(_amain(spec, conn))
    except Exception as e:
        log.exception("engine process failed")
        with contextlib.suppress(OSError):
            conn.send(("failed", f"{type(e).__name__}: {e}"))
        raise SystemExit(1) from e


class EngineProcess:
    """The parent's handle on an engine process: spawn it, wait until its models are loaded, stop it."""

    def __init__(self, spec_without_address: EngineProcessSpec) -> None:
        self._dir = tempfile.mkdtemp(prefix="made-engine-")
        self.address = f"{self._dir}/engine.sock"
        self.spec = dataclasses.replace(spec_without_address, address=self.address)
        ctx = multiprocessing.get_context("spawn")  # never fork a process that holds torch and threads
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=main, args=(self.spec, child), name="made-engine", daemon=True)
        self._child = child

    def start(self, timeout_s: float = 600.0) -> dict[str, Any]:
        """Spawn the process and wait until it serves: ``{"models": [...], "failed": {...}}``. Raises
        ``RuntimeError`` if it fails or exits first."""
        self.proc.start()
        self._child.close()  # the parent keeps one end: its closing tells the child the parent is gone
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self._conn.poll(0.1):
                try:
                    what, info = self._conn.recv()
                except EOFError:
                    break
                if what == "ready":
                    return info
                raise RuntimeError(f"the engine process failed to start: {info}")
            if not self.proc.is_alive():
                break
        self.stop(0.0)
        raise RuntimeError(f"the engine process exited during start-up (exit code {self.proc.exitcode})")

    @property
    def alive(self) -> bool:
        return self.proc.is_alive()

    def stop(self, grace_s: float = 20.0) -> int | None:
        """Ask the process to drain and exit (within ``grace_s`` plus a margin, else it is killed);
        its exit code."""
        if self.proc.pid is not None and self.proc.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send("stop")
            self.proc.join(grace_s + 10.0)
            if self.proc.is_alive():
                log.error("engine process did not stop within %.0f s; killing it", grace_s + 10.0)
                self.proc.kill()
                self.proc.join(5.0)
        self._conn.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        return self.proc.exitcode
