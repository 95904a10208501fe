"""The wire format between HTTP front-end processes and the engine process (:mod:`.process`).

A message is a list of frames: its kind (``b"call"``, ``b"result"``, ...), one JSON header
(orjson) and then the raw bytes of each numpy array it carries, so an image crosses the process
boundary as one ``memcpy``, never as a JSON list. :func:`pack` moves every ``ndarray`` value of a
``payload`` mapping into such a frame (its dtype and shape go in the header) and :func:`unpack`
puts them back. Nothing here knows which fields a request has: a call is a method name and its
keyword arguments, a result a dataclass's fields, so a new request field (a ``temperature``)
crosses unchanged. :class:`MessageProtocol` carries messages over a Unix socket.
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from .types import EngineError, EngineFull, EngineStopped, EngineTimeout, LogProbOutput, SampleOutput

__all__ = [
    "BEAT",
    "BYE",
    "CALL",
    "CANCEL",
    "ERROR",
    "HELLO",
    "RESULT",
    "WELCOME",
    "MessageProtocol",
    "decode_error",
    "decode_result",
    "encode_error",
    "encode_result",
    "frame",
    "pack",
    "unpack",
]

CALL = b"call"  # front-end -> engine: {"id", "model", "method"} + keyword arguments
CANCEL = b"cancel"  # front-end -> engine: {"id"}: the caller went away
HELLO = b"hello"  # front-end -> engine: announce this front-end (answered by WELCOME once loaded)
BYE = b"bye"  # front-end -> engine: this front-end stops (no more beats for it)
RESULT = b"result"  # engine -> front-end: {"id", "type"} + the output dataclass's fields
ERROR = b"error"  # engine -> front-end: {"id", "type", "message", "retry_after_s"}
WELCOME = b"welcome"  # engine -> front-end: the models it serves (or why a folder failed)
BEAT = b"beat"  # engine -> every front-end: per-model state and metric events since the last one

_RESULT_TYPES: dict[str, type] = {t.__name__: t for t in (SampleOutput, LogProbOutput)}
_ERROR_TYPES: dict[str, type[Exception]] = {
    t.__name__: t for t in (EngineFull, EngineTimeout, EngineStopped, EngineError, ValueError, TypeError)
}
_ND = "__nd__"  # marks a payload value that travels as an array frame


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones (orjson encodes ``np.int64`` only with an option; be explicit)."""
    return value.item() if isinstance(value, np.generic) else value


def pack(kind: bytes, header: Mapping[str, Any], payload: Mapping[str, Any] | None = None) -> list[bytes]:
    """Frames of one message: ``kind``, the JSON header (with ``payload`` under ``"p"``), and one raw
    frame per ``ndarray`` in ``payload``.

    >>> f = pack(CALL, {"id": 1}, {"n": 2, "x": np.arange(3, dtype=np.int8)})
    >>> kind, header, payload = unpack(f)
    >>> kind, header["id"], payload["n"], payload["x"].tolist()
    (b'call', 1, 2, [0, 1, 2])
    """
    frames: list[bytes] = []
    body: dict[str, Any] = {}
    for key, value in (payload or {}).items():
        if isinstance(value, np.ndarray):
            arr = np.ascontiguousarray(value)
            body[key] = {_ND: len(frames), "dtype": arr.dtype.str, "shape": list(arr.shape)}
            frames.append(arr.tobytes())
        else:
            body[key] = _plain(value)
    head = orjson.dumps({**header, "p": body}, option=orjson.OPT_SERIALIZE_NUMPY)
    return [kind, head, *frames]


def unpack(frames: Sequence[bytes]) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """``(kind, header, payload)`` of a message made by :func:`pack`; arrays come back writable."""
    kind, head, *raw = frames
    header = orjson.loads(head)
    payload: dict[str, Any] = header.pop("p", {})
    for key, value in payload.items():
        if isinstance(value, dict) and _ND in value:
            buf = raw[value[_ND]]
            payload[key] = np.frombuffer(buf, dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    return bytes(kind), header, payload


def encode_result(rid: int, out: Any) -> list[bytes]:
    """A result message: the output dataclass (``SampleOutput``, ``LogProbOutput``) by its fields."""
    fields = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    return pack(RESULT, {"id": rid, "type": type(out).__name__}, fields)


def decode_result(header: Mapping[str, Any], payload: dict[str, Any]) -> Any:
    """The output dataclass back from :func:`encode_result`'s header and payload."""
    return _RESULT_TYPES[header["type"]](**payload)


def encode_error(rid: int, exc: BaseException) -> list[bytes]:
    """An error message. Engine errors, ``ValueError`` and ``TypeError`` keep their type (and a full
    engine's ``retry_after_s``); anything else arrives as an :class:`EngineError` (HTTP 500)."""
    name = type(exc).__name__ if type(exc).__name__ in _ERROR_TYPES else "EngineError"
    message = (
        str(exc) if name != "EngineError" or isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
    )
    header = {
        "id": rid,
        "type": name,
        "message": message,
        "retry_after_s": getattr(exc, "retry_after_s", None),
    }
    return pack(ERROR, header)


def decode_error(header: Mapping[str, Any]) -> Exception:
    """The exception an :func:`encode_error` message stands for, raised in the front-end.

    >>> e = decode_error(unpack(encode_error(3, EngineFull("full", 4.0)))[1])
    >>> type(e).__name__, str(e), e.retry_after_s
    ('EngineFull', 'full', 4.0)
    """
    cls = _ERROR_TYPES.get(header.get("type", ""), EngineError)
    if cls is EngineFull:
        return EngineFull(header["message"], header.get("retry_after_s") or 1.0)
    return cls(header["message"])


# --- framing over a Unix socket -----------------------------------------------------------------------
# One message on the stream: its length (u32), its frame count (u16), then each frame's length (u32) and
# bytes. Under load many messages arrive in one read and are parsed in one pass: no per-message wake-up.
_LEN = struct.Struct("<I")
_HEAD = struct.Struct("<IH")


def frame(frames: Sequence[bytes]) -> bytes:
    """One message's bytes on the stream (see :class:`MessageProtocol`)."""
    parts = [b""]
    size = 2
    for f in frames:
        parts.append(_LEN.pack(len(f)))
        parts.append(f)
        size += 4 + len(f)
    parts[0] = _HEAD.pack(size, len(frames))
    return b"".join(parts)


class MessageProtocol(asyncio.Protocol):
    """An asyncio protocol that cuts the byte stream into messages and hands each to ``on_message``;
    ``on_lost`` is called once when the connection ends (the peer process exited, crashed or closed)."""

    def __init__(
        self,
        on_message: Callable[[MessageProtocol, list[bytes]], None],
        on_lost: Callable[[MessageProtocol, Exception | None], None],
    ) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a write transport (uvloop's is no subclass)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, end = 0, len(buf)
        while end - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if end - pos - 4 < size:
                break
            (count,) = struct.unpack_from("<H", buf, pos + 4)
            at = pos + 6
            frames = []
            for _ in range(count):
                (n,) = _LEN.unpack_from(buf, at)
                frames.append(bytes(buf[at + 4 : at + 4 + n]))
                at += 4 + n
            pos += 4 + size
            self._on_message(self, frames)
        del buf[:pos]

    def send(self, frames: Sequence[bytes]) -> bool:
        """Queue one message (never blocks); False when the connection is already closed."""
        t = self.transport
        if t is None or t.is_closing():
            return False
        t.write(frame(frames))
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(self, exc)
