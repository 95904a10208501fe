"""Reading request bodies: JSON into a pydantic model, multipart uploads into bytes, and running
engine work so that a client who disconnects cancels it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .charset import json_as_utf8
from .connections import DISCONNECT_EXTENSION
from .errors import ClientClosedRequest, ProblemError, invalid
from .limits import bracket_depth, json_structure
from .offload import INLINE_BYTES, run_cpu

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


def check_json_limits(body: bytes, max_depth: int, max_array: int) -> None:
    """422 when the raw JSON nests deeper than ``max_depth`` or holds an array or object of more
    than ``max_array`` items (``MADE_MAX_JSON_DEPTH``, ``MADE_MAX_JSON_ARRAY``)."""
    if len(body) <= INLINE_BYTES and body.count(b",") < max_array:
        # small body, and no array can hold more items than there are commas: only the depth to measure
        depth, longest = bracket_depth(body), 0
    else:
        depth, longest = json_structure(body, depth_limit=max_depth)
    _refuse(depth, longest, max_depth, max_array)


def _refuse(depth: int, longest: int, max_depth: int, max_array: int) -> None:
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
    body = json_as_utf8(await request.body(), request.headers.get("content-type", ""))
    settings = request.app.state.settings
    await run_cpu(check_json_limits, body, settings.max_json_depth, settings.max_json_array, size=len(body))
    try:
        return await run_cpu(schema.model_validate_json, body, size=len(body))
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err.get("loc", ()))} for err in e.errors(include_url=False)]
        raise RequestValidationError(errors) from None


async def read_uploads(
    request: Request, field: str, max_files: int
) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """The files under multipart ``field``, as ``("field[i]", bytes)`` (at most ``max_files``), and
    the form's text fields (the request's options) as ``(name, value)``. A file under another name
    is a 422 naming it."""
    try:
        form = await request.form(max_files=max_files + 1, max_fields=64)
    except StarletteHTTPException as e:
        if e.status_code != 400:
            raise
        if "Too many files" in str(e.detail):
            raise invalid(field, f"at most {max_files} files per request") from None
        raise ProblemError(400, f"malformed multipart body: {e.detail}") from None
    try:
        items = form.multi_items()
        uploads = [v for k, v in items if k == field and isinstance(v, UploadFile)]
        others = sorted({k for k, v in items if k != field and isinstance(v, UploadFile)})
        if not uploads:
            hint = f"; got file fields {others}" if others else ""
            raise invalid(field, f"no file uploaded: send the image(s) as multipart field {field!r}{hint}")
        if others:
            raise invalid(f"form.{others[0]}", f"unexpected file field; send the image(s) as {field!r}")
        if len(uploads) > max_files:
            raise invalid(field, f"at most {max_files} files per request, got {len(uploads)}")
        texts = [(k, v) for k, v in items if isinstance(v, str)]
        names = [f"{field}[{i}]" if max_files > 1 else field for i in range(len(uploads))]
        return [(name, await u.read()) for name, u in zip(names, uploads, strict=True)], texts
    finally:
        await form.close()


async def run_cancellable(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await engine ``work`` while watching the connection: if the client disconnects first the work is
    cancelled (its rows leave the engine) and :class:`ClientClosedRequest` is raised.

    The work runs in the request's own task. Under the service's protocol the scope's disconnect hook
    (:class:`~service.api.connections.DisconnectWatch`) cancels it when the connection is lost, with
    no task or wake-up per request. Under any other server one watcher task waits for
    ``http.disconnect`` and cancels it; call this after the body has been read, as the next ASGI
    message is then ``http.disconnect``.
    """
    task = asyncio.current_task()
    assert task is not None
    gone = False

    def cancel() -> None:
        nonlocal gone
        gone = True
        task.cancel()

    watch = request.scope.get("extensions", {}).get(DISCONNECT_EXTENSION)
    watcher: asyncio.Task[None] | None = None
    if watch is not None:
        if not watch(cancel):  # gone already: the work never starts
            work.close()
            raise ClientClosedRequest()
    else:

        async def wait_for_disconnect() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            cancel()

        watcher = asyncio.get_running_loop().create_task(wait_for_disconnect())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:  # our own cancellation: the client left
            raise ClientClosedRequest() from None
        raise
    finally:
        if watcher is not None:
            watcher.cancel()
        else:
            watch(None)
