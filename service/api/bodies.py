"""Reading request bodies: JSON into a pydantic model, multipart uploads into bytes, and running
engine work so that a client who disconnects cancels it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import ClientClosedRequest, ProblemError, invalid
from .limits import json_structure

__all__ = [
    "JSON",
    "MULTIPART",
    "check_json_limits",
    "media_type",
    "read_json",
    "read_uploads",
    "run_cancellable",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

JSON = "application/json"
MULTIPART = "multipart/form-data"


def media_type(request: Request, allowed: tuple[str, ...]) -> str:
    """The request's media type, or 415 naming the accepted ones."""
    raw = request.headers.get("content-type", "")
    kind = raw.split(";", 1)[0].strip().lower()
    if kind not in allowed:
        got = kind or "no Content-Type"
        raise ProblemError(
            415,
            f"Content-Type must be {' or '.join(allowed)}; got {got}",
            errors=[
                {"field": "header.Content-Type", "message": f"expected {' or '.join(allowed)}", "input": got}
            ],
        )
    return kind


_INLINE_SCAN_BYTES = 64 * 1024  # larger bodies are measured off the event loop


def check_json_limits(body: bytes, max_depth: int, max_array: int) -> None:
    """422 when the raw JSON nests deeper than ``max_depth`` or holds an array or object of more
    than ``max_array`` items (``MADE_MAX_JSON_DEPTH``, ``MADE_MAX_JSON_ARRAY``)."""
    depth, longest = json_structure(body, depth_limit=max_depth)
    if depth > max_depth:
        raise invalid(
            "body", f"JSON nested {depth} levels deep; the limit is {max_depth} (MADE_MAX_JSON_DEPTH)"
        )
    if longest > max_array:
        raise invalid(
            "body",
            f"a JSON array or object holds {longest} items; the limit is {max_array} (MADE_MAX_JSON_ARRAY)",
        )


async def read_json(request: Request, schema: type[M]) -> M:
    """Validate the JSON body against ``schema``; errors become the usual 422 (fields under ``body``).
    Its nesting and array sizes are checked on the raw bytes first, before anything is parsed."""
    body = await request.body()
    settings = request.app.state.settings
    limits = (body, settings.max_json_depth, settings.max_json_array)
    if len(body) <= _INLINE_SCAN_BYTES:
        check_json_limits(*limits)
    else:
        await run_in_threadpool(check_json_limits, *limits)
    try:
        return schema.model_validate_json(body)
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err.get("loc", ()))} for err in e.errors(include_url=False)]
        raise RequestValidationError(errors) from None


async def read_uploads(request: Request, field: str, max_files: int) -> list[tuple[str, bytes]]:
    """The files under multipart ``field``, as ``("field[i]", bytes)``; at most ``max_files``."""
    try:
        form = await request.form(max_files=max_files + 1, max_fields=64)
    except StarletteHTTPException as e:
        if e.status_code != 400:
            raise
        if "Too many files" in str(e.detail):
            raise invalid(field, f"at most {max_files} files per request") from None
        raise ProblemError(400, f"malformed multipart body: {e.detail}") from None
    try:
        uploads = [v for v in form.getlist(field) if isinstance(v, UploadFile)]
        if not uploads:
            seen = sorted({k for k, v in form.multi_items() if isinstance(v, UploadFile)})
            hint = f"; got file fields {seen}" if seen else ""
            raise invalid(field, f"no file uploaded: send the image(s) as multipart field {field!r}{hint}")
        if len(uploads) > max_files:
            raise invalid(field, f"at most {max_files} files per request, got {len(uploads)}")
        names = [f"{field}[{i}]" if max_files > 1 else field for i in range(len(uploads))]
        return [(name, await u.read()) for name, u in zip(names, uploads, strict=True)]
    finally:
        await form.close()


async def run_cancellable(request: Request, work: Awaitable[T]) -> T:
    """Await engine ``work`` while watching the connection: if the client disconnects first the work is
    cancelled (its rows leave the engine) and :class:`ClientClosedRequest` is raised.

    Call it after the body has been read: the next ASGI message is then ``http.disconnect``.
    """
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientClosedRequest()
