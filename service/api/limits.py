"""Request limits enforced before any parsing: body size (``MADE_MAX_BODY_BYTES``, 413) and the
structure of JSON bodies (``MADE_MAX_JSON_DEPTH``, ``MADE_MAX_JSON_ARRAY``, 422).

A declared ``Content-Length`` over the limit is refused before the app runs; a body without one
(chunked) is counted while it streams and refused as soon as it passes the limit, before any of it
is decoded. A JSON body's nesting and longest array are measured on the raw bytes (vectorised, no
Python objects built), so a hostile body never reaches the parser.
"""

from __future__ import annotations

import re

import numpy as np
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import problem_response

__all__ = ["BodyLimitMiddleware", "BodyTooLarge", "bracket_depth", "json_structure"]


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once the streamed body passes the limit (handled as any HTTP 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large: the limit is {limit} bytes (MADE_MAX_BODY_BYTES)")


class BodyLimitMiddleware:
    """Pure ASGI middleware: cheap for every request, no buffering."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        if declared is not None and declared > self.max_bytes:
            err = BodyTooLarge(self.max_bytes)
            response = problem_response(Request(scope), 413, str(err.detail), headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def bracket_depth(body: bytes) -> int:
    """Deepest nesting of a JSON text, for small bodies: strings are cut out and every byte but the
    brackets dropped at C speed, so Python only walks the brackets (tens for an image as nested lists).

    >>> bracket_depth(b'{"a": [[1, 2], "[[["], "b": {}}')
    3
    """
    depth = best = 0
    for c in _STRING.sub(b"", body).translate(None, _NOT_BRACKETS):
        if c == 0x5B or c == 0x7B:
            depth += 1
            best = max(best, depth)
        else:
            depth -= 1
    return best


def _unescaped_quotes(a: np.ndarray) -> np.ndarray:
    """Positions of the ``"`` that open or close strings (not those escaped by an odd backslash run)."""
    quotes = np.flatnonzero(a == 0x22)
    backslash = (a == 0x5C).view(np.int8)
    if quotes.size == 0 or not backslash.any():
        return quotes
    edges = np.diff(backslash, prepend=np.int8(0), append=np.int8(0))
    run_start, run_end = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # [start, end)
    k = np.minimum(np.searchsorted(run_end, quotes), run_end.size - 1)
    run = np.where(run_end[k] == quotes, quotes - run_start[k], 0)  # backslashes right before the quote
    return quotes[run % 2 == 0]


def json_structure(body: bytes, depth_limit: int = 64) -> tuple[int, int]:
    """``(deepest nesting, most items in one array or object)`` of a JSON text, from its bytes alone.

    Brackets and commas inside strings are ignored. The commas between two consecutive brackets all
    belong to one container, so only brackets are grouped into containers, one pass per nesting level.
    Past ``depth_limit`` levels the items are not counted (returned as 0): such a body is refused on its
    depth alone. Malformed JSON gives some bound; the parser rejects it.

    >>> json_structure(b'{"inputs": [[0, 1, 1], [1, 0, 0]], "model": "a[,]"}')
    (3, 3)
    >>> json_structure(b"[]"), json_structure(b"7"), json_structure(b"[[[[1, 2]]]]", depth_limit=3)
    ((1, 1), (0, 0), (4, 0))
    """
    a = np.frombuffer(body, dtype=np.uint8)
    quotes = _unescaped_quotes(a)

    def outside_strings(pos: np.ndarray) -> np.ndarray:
        return pos if quotes.size == 0 else pos[np.searchsorted(quotes, pos) % 2 == 0]

    brackets = outside_strings(np.flatnonzero((a == 0x5B) | (a == 0x7B) | (a == 0x5D) | (a == 0x7D)))
    if brackets.size == 0:
        return 0, 0
    is_open = (a[brackets] == 0x5B) | (a[brackets] == 0x7B)
    depth = np.cumsum(np.where(is_open, 1, -1))  # nesting just after each bracket
    deepest = int(depth.max())
    if deepest > depth_limit:
        return deepest, 0
    # segment j lies between bracket j and j+1, at nesting depth[j]: count its commas
    commas = outside_strings(np.flatnonzero(a == 0x2C))
    seg = np.diff(np.searchsorted(commas, brackets), append=commas.size)
    longest = 0
    for level in range(1, deepest + 1):
        # a segment at this level belongs to the last container opened at this level
        at = depth == level
        container = np.cumsum(is_open & at)
        mine = at & (container > 0)
        longest = max(longest, int(np.bincount(container[mine], weights=seg[mine]).max()))
    return deepest, longest + 1
