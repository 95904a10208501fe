"""A front-end's side of the engine process (:mod:`.process`): :class:`EngineClient` has the async
interface of :class:`~service.engine.Engine` (``sample``, ``complete``, ``log_prob``, ``check_capacity``,
``running``, ``stats``, ``stop``), so the API's routes call it exactly as they call a local engine.

One :class:`EngineConnection` per front-end process carries every model's calls over one Unix
socket. A call's arguments are bound against the local ``Engine`` method's signature and sent as
they are (:mod:`.ipc`), so a field added to a request method crosses without a change here. When
the awaiting coroutine is cancelled (the HTTP client went away) a ``CANCEL`` follows the call and the
engine process cancels it there, where it is counted. If the engine process goes away, the socket's
end is seen at once: every call in flight fails with
:class:`EngineStopped` (HTTP 503) and ``running`` turns false, so readiness fails; a process that
hangs is caught by its missing beats.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from typing import Any

from service.logging import current_request_id

from .engine import Engine
from .ipc import (
    BEAT,
    BYE,
    CALL,
    CANCEL,
    ERROR,
    HELLO,
    RESULT,
    WELCOME,
    MessageProtocol,
    decode_error,
    decode_result,
    pack,
    unpack,
)
from .types import (
    EngineConfig,
    EngineFull,
    EngineMetrics,
    EngineStats,
    EngineStopped,
    EngineTimeout,
    NullMetrics,
)

__all__ = ["EngineClient", "EngineConnection"]

log = logging.getLogger("service.engine")

_DEADLINE = "made-ipc-deadline"
_GUARD_S = 1.0  # past the engine's own deadline, the front-end stops waiting on its own
_SIGNATURES = {m: inspect.signature(getattr(Engine, m)) for m in ("sample", "complete", "log_prob")}
_STATS_FIELDS = tuple(inspect.signature(EngineStats).parameters)


class EngineConnection:
    """One front-end process's link to the engine process: the socket, the calls awaiting an answer,
    the engines' latest state (from the beats)."""

    def __init__(self, address: str, beat_timeout_s: float = 5.0) -> None:
        self.address = address
        self.beat_timeout_s = beat_timeout_s
        self.clients: dict[str, EngineClient] = {}
        self.state: dict[str, dict[str, Any]] = {}
        self._proto: MessageProtocol | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._welcome: asyncio.Future[dict[str, Any]] | None = None
        self._last_beat = 0.0
        self.gone: str | None = None  # why the engine process is unreachable (None while it serves)

    async def connect(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Connect and wait for the engine's models: ``{"models": [...], "failed": {...}}``."""
        loop = asyncio.get_running_loop()
        self._welcome = loop.create_future()
        _, self._proto = await loop.create_unix_connection(
            lambda: MessageProtocol(self._on_message, self._on_lost), self.address
        )
        self._proto.send(pack(HELLO, {}))
        try:
            welcome = await asyncio.wait_for(self._welcome, timeout_s)
        except TimeoutError:
            raise RuntimeError(
                f"no answer from the engine process at {self.address} in {timeout_s:g} s"
            ) from None
        self._last_beat = time.monotonic()
        self.state = welcome["state"]
        return welcome

    @property
    def alive(self) -> bool:
        """Connected, and the engine process has beaten recently (a hung one stops beating)."""
        return self.gone is None and time.monotonic() - self._last_beat < self.beat_timeout_s

    async def call(
        self, model: str, method: str, kwargs: dict[str, Any], timeout_s: float, track: set[Any] | None = None
    ) -> Any:
        """Run ``Engine.<method>(**kwargs)`` of ``model`` in the engine process and return its output.
        ``track`` holds the call's future while it waits (so its engine client can fail it on stop)."""
        if self.gone is not None:
            raise EngineStopped(f"the engine process is not reachable ({self.gone})")
        rid = next(self._ids)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending[rid] = fut
        header = {"id": rid, "model": model, "method": method, "request_id": current_request_id()}
        handle = loop.call_later(timeout_s, fut.cancel, _DEADLINE)
        if track is not None:
            track.add(fut)
        try:
            assert self._proto is not None
            self._proto.send(pack(CALL, header, kwargs))
            return await fut
        except asyncio.CancelledError as e:
            if e.args == (_DEADLINE,) and fut.cancelled():
                raise EngineTimeout(f"no answer from the engine process within {timeout_s:g} s") from None
            raise
        finally:
            handle.cancel()
            if track is not None:
                track.discard(fut)
            if self._pending.pop(rid, None) is not None and self.gone is None:
                # not answered (the caller went away, a deadline, a stop): the engine process drops it too
                assert self._proto is not None
                self._proto.send(pack(CANCEL, {"id": rid}))

    def _on_message(self, _peer: MessageProtocol, frames: list[bytes]) -> None:
        kind, header, payload = unpack(frames)
        if kind in (RESULT, ERROR):
            fut = self._pending.pop(header["id"], None)
            if fut is not None and not fut.done():
                if kind == RESULT:
                    fut.set_result(decode_result(header, payload))
                else:
                    fut.set_exception(decode_error(header))
        elif kind == BEAT:
            self._beat(header)
        elif kind == WELCOME and self._welcome is not None and not self._welcome.done():
            self._welcome.set_result(header)

    def _beat(self, header: dict[str, Any]) -> None:
        self._last_beat = time.monotonic()
        self.state = header["models"]
        if not header.get("owner", True):  # another front-end exports the engine's metrics
            return
        for ev in header["events"]:  # the engine's metric hooks, replayed into this process's registry
            client = self.clients.get(ev[1])
            if client is None:
                continue
            if ev[0] == "s":
                client.metrics.step(ev[2], ev[3])
            elif ev[0] == "b":
                client.metrics.logprob_batch(ev[2])
            else:
                client.metrics.request_done(ev[2], ev[3], ev[4], ev[5])
        for name, state in self.state.items():
            client = self.clients.get(name)
            if client is not None:
                client.metrics.gauges(*state["gauges"])

    def _on_lost(self, _peer: MessageProtocol, exc: Exception | None) -> None:
        """The engine process closed its end (exit, crash, kill): fail everything at once."""
        self.lost("the engine process closed its connection" if self.gone is None else self.gone)

    def lost(self, why: str) -> None:
        """The engine process is gone: fail every call in flight with a 503, report not running."""
        if self.gone is None:
            log.error("engine process at %s lost: %s", self.address, why)
        self.gone = why
        err = EngineStopped(f"the engine process is not reachable ({why})")
        for fut in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()
        if self._welcome is not None and not self._welcome.done():
            self._welcome.set_exception(RuntimeError(f"engine process: {why}"))

    async def close(self) -> None:
        """Say goodbye and close the socket (the engine process itself is stopped by its owner)."""
        if self._proto is not None:
            if self.gone is None:
                self.gone = "closed"
                self._proto.send(pack(BYE, {}))
            self._proto.close()
            await asyncio.sleep(0)


class EngineClient:
    """One model's engine in the engine process, behind :class:`Engine`'s interface."""

    def __init__(
        self,
        conn: EngineConnection,
        name: str,
        config: EngineConfig,
        backend: str,
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.conn = conn
        self.name = name
        self.config = config
        self.backend = backend
        self.metrics: EngineMetrics = metrics or NullMetrics()
        self._accepting = True
        self._waiting: set[asyncio.Future[Any]] = set()  # this model's calls awaiting an answer
        conn.clients[name] = self

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        state = self.conn.state.get(self.name)
        return self._accepting and self.conn.alive and state is not None and bool(state["running"])

    async def start(self) -> None:
        """Nothing to start here: the engine runs in the engine process once its welcome arrived."""

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop admitting; let this front-end's calls finish within ``grace_s``, then fail the rest
        with :class:`EngineStopped` (the engine process drops them too)."""
        self._accepting = False
        end = time.monotonic() + grace_s
        while self._waiting and time.monotonic() < end:
            await asyncio.sleep(0.002)
        stopped = EngineStopped(f"engine {self.name!r} stopped")
        for fut in list(self._waiting):
            if not fut.done():
                fut.set_exception(stopped)

    def stats(self) -> EngineStats:
        state = self.conn.state.get(self.name, {})
        values = {k: state.get(k, 0) for k in _STATS_FIELDS}
        return EngineStats(**{**values, "name": self.name, "backend": self.backend, "running": self.running})

    # --- requests --------------------------------------------------------------------------------
    async def sample(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`Engine.sample`, run in the engine process."""
        return await self._call("sample", args, kwargs)

    async def complete(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`Engine.complete`, run in the engine process."""
        return await self._call("complete", args, kwargs)

    async def log_prob(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`Engine.log_prob`, run in the engine process."""
        return await self._call("log_prob", args, kwargs)

    def check_capacity(self, n: int, kind: str = "sample") -> None:
        """Refuse early, from the last beat, what the engine process would surely refuse: a stopped
        engine, or ``n`` rows beyond what it can hold (its own admission decides the rest)."""
        try:
            if not self.running:
                raise EngineStopped(f"engine {self.name!r} is not running")
            state = self.conn.state[self.name]
            cfg = self.config
            if kind == "log_prob":
                full = state["logprob_queued_rows"] + n > cfg.max_queued_rows + cfg.logprob_max_batch
            else:
                full = (
                    state["queued_rows"] + state["active_rows"] + n
                    > cfg.max_active_rows + cfg.max_queued_rows
                )
            if full:
                raise EngineFull(f"engine {self.name!r} is full", float(state.get("retry_after_s") or 1.0))
        except (EngineStopped, EngineFull):
            self.metrics.request_done(kind, 0.0, 0.0, "rejected")
            raise

    async def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self._accepting:
            raise EngineStopped(f"engine {self.name!r} is not running")
        bound = _SIGNATURES[method].bind(None, *args, **kwargs).arguments  # a bad call fails here, as locally
        bound.pop(next(iter(bound)))  # self
        timeout = bound.get("timeout_s") or self.config.request_timeout_s
        return await self.conn.call(self.name, method, bound, timeout + _GUARD_S, self._waiting)
