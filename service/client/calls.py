"""One description per endpoint call, shared by the sync and async clients (which only send them).

A :class:`Call` says what to send (method, path, JSON body or multipart files, query) and how to read
the answer; :func:`retry_delay` reads how long a 503 asks the client to wait.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar

import httpx
import numpy as np

from .errors import ApiError
from .types import Examples, Heatmap, LogProb, ModelInfo, ModelList, Png, Readiness, Samples

__all__ = [
    "Call",
    "FileLike",
    "ImageLike",
    "complete",
    "complete_png",
    "example",
    "examples",
    "finish",
    "heatmap",
    "is_file",
    "live",
    "log_prob",
    "metrics",
    "model",
    "model_ready",
    "models",
    "ready",
    "retry_delay",
    "sample",
    "sample_png",
]

T = TypeVar("T")

#: An image sent as JSON: an ``H x W`` nested list / array, or a flat ``D``-vector, in the model's levels.
ImageLike = np.ndarray | Sequence[Any]
#: An image file sent as a multipart upload: its bytes, a path, or an open binary file.
FileLike = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO
Upload = tuple[str, tuple[str, bytes, str]]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer; ``accept`` lists error statuses ``parse`` handles itself."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, Any] | None = None
    files: list[Upload] | None = None
    retry: bool = True
    accept: tuple[int, ...] = ()


def finish(call: Call[T], r: httpx.Response) -> T:
    """Parse a final answer, or raise :class:`ApiError` for an error status."""
    if r.is_success or r.status_code in call.accept:
        return call.parse(r)
    raise ApiError.from_response(r)


def retry_delay(r: httpx.Response, default: float = 1.0) -> float:
    """Seconds a 503 asks for: ``Retry-After`` (seconds or an HTTP date), else the problem's
    ``retry_after_s``, else ``default``."""
    value = r.headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    try:
        body = r.json()
        seconds = body.get("retry_after_s") if isinstance(body, dict) else None
        if isinstance(seconds, int | float) and seconds >= 0:
            return float(seconds)
    except ValueError:
        pass
    return default


# --- inputs --------------------------------------------------------------------------------------


def is_file(x: Any) -> bool:
    """True for what is sent as an upload (bytes, a path, an open file); arrays and lists go as JSON."""
    return isinstance(x, bytes | bytearray | memoryview | str | os.PathLike) or hasattr(x, "read")


def _upload(field: str, x: FileLike, i: int) -> Upload:
    if isinstance(x, str | os.PathLike):
        path = Path(x)
        data, name = path.read_bytes(), path.name
    elif isinstance(x, bytes | bytearray | memoryview):
        data, name = bytes(x), f"image{i}"
    else:
        raw = x.read()
        data = raw if isinstance(raw, bytes) else bytes(raw)
        name = Path(str(getattr(x, "name", f"image{i}"))).name
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return field, (name, data, kind)


def _json_image(x: ImageLike) -> Any:
    """Nested lists of numbers; integral float arrays are sent as integers."""
    arr = np.asarray(x)
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.array_equal(arr, np.rint(arr)):
        arr = arr.astype(np.int64)
    return arr.tolist()


def _options(**kw: Any) -> dict[str, Any]:
    """Drop unset options, so the server's defaults apply."""
    return {k: v for k, v in kw.items() if v is not None}


def _upload_options(threshold: int | None, invert: bool) -> dict[str, Any]:
    return _options(threshold=threshold, invert=invert or None)


def _no_upload_options(threshold: int | None, invert: bool) -> None:
    if threshold is not None or invert:
        raise ValueError("threshold and invert apply to image files only; arrays are sent as model values")


# --- parsing -------------------------------------------------------------------------------------


def _int_header(r: httpx.Response, name: str) -> int | None:
    value = r.headers.get(name)
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def _float_header(r: httpx.Response, name: str) -> float | None:
    try:
        return float(r.headers[name])
    except (KeyError, ValueError):
        return None


def _png(r: httpx.Response) -> Png:
    return Png(
        r.content,
        r.headers.get("x-model"),
        _int_header(r, "x-seed"),
        _int_header(r, "x-known-rows"),
        _float_header(r, "x-temperature"),
    )


def _heatmap(r: httpx.Response) -> Heatmap:
    h = r.headers
    return Heatmap(
        r.content,
        h.get("x-model"),
        float(h["x-log-prob"]),
        float(h["x-bits-per-dim"]),
        float(h["x-heatmap-max-nats"]),
    )


def _readiness(r: httpx.Response) -> Readiness:
    body = r.json()
    return Readiness(
        ready=bool(body.get("ready")), models=body.get("models") or {}, detail=body.get("detail")
    )


# --- endpoints -----------------------------------------------------------------------------------


def live() -> Call[bool]:
    return Call("GET", "/v2/health/live", lambda r: bool(r.json().get("live")))


def ready() -> Call[Readiness]:
    return Call("GET", "/v2/health/ready", _readiness, retry=False, accept=(503,))


def model_ready(name: str) -> Call[bool]:
    return Call(
        "GET", f"/v2/models/{name}/ready", lambda r: bool(r.json().get("ready")), retry=False, accept=(503,)
    )


def models() -> Call[ModelList]:
    return Call("GET", "/models", lambda r: ModelList.model_validate_json(r.content))


def model(name: str) -> Call[ModelInfo]:
    return Call("GET", f"/models/{name}", lambda r: ModelInfo.model_validate_json(r.content))


def examples(name: str) -> Call[Examples]:
    return Call("GET", f"/models/{name}/examples", lambda r: Examples.model_validate_json(r.content))


def example(name: str, index: int) -> Call[bytes]:
    return Call("GET", f"/models/{name}/examples/{index}", lambda r: r.content)


def metrics() -> Call[str]:
    return Call("GET", "/metrics", lambda r: r.text)


def _samples(r: httpx.Response) -> Samples:
    return Samples.model_validate_json(r.content)


def sample(n: int, model: str | None, seed: int | None, temperature: float | None = None) -> Call[Samples]:
    body = _options(model=model, n=n, seed=seed, temperature=temperature, format="json")
    return Call("POST", "/sample", _samples, json=body)


def sample_png(
    n: int, model: str | None, seed: int | None, scale: int | None = None, temperature: float | None = None
) -> Call[Png]:
    body = _options(model=model, n=n, seed=seed, temperature=temperature, format="png", scale=scale)
    return Call("POST", "/sample", _png, json=body)


def _complete(
    parse: Callable[[httpx.Response], T],
    fmt: str,
    image: ImageLike | FileLike,
    n: int,
    model: str | None,
    seed: int | None,
    known_rows: int | None,
    resize: bool,
    threshold: int | None,
    invert: bool,
    scale: int | None = None,
    temperature: float | None = None,
) -> Call[T]:
    common = dict(model=model, n=n, seed=seed, temperature=temperature, known_rows=known_rows, format=fmt)
    if is_file(image):
        params = _options(**common, resize=resize or None, scale=scale)
        params.update(_upload_options(threshold, invert))
        return Call("POST", "/complete", parse, params=params, files=[_upload("file", image, 0)])  # type: ignore[arg-type]
    _no_upload_options(threshold, invert)
    body = _options(**common, resize=resize, scale=scale)
    body["inputs"] = [_json_image(image)]  # type: ignore[arg-type]
    return Call("POST", "/complete", parse, json=body)


def complete(
    image: ImageLike | FileLike,
    *,
    n: int,
    model: str | None,
    seed: int | None,
    known_rows: int | None,
    resize: bool,
    threshold: int | None,
    invert: bool,
    temperature: float | None = None,
) -> Call[Samples]:
    return _complete(
        _samples, "json", image, n, model, seed, known_rows, resize, threshold, invert, None, temperature
    )


def complete_png(
    image: ImageLike | FileLike,
    *,
    n: int,
    model: str | None,
    seed: int | None,
    known_rows: int | None,
    resize: bool,
    threshold: int | None,
    invert: bool,
    scale: int | None = None,
    temperature: float | None = None,
) -> Call[Png]:
    return _complete(
        _png, "png", image, n, model, seed, known_rows, resize, threshold, invert, scale, temperature
    )


def _log_prob(r: httpx.Response) -> LogProb:
    return LogProb.model_validate_json(r.content)


def _split_inputs(inputs: np.ndarray | Sequence[Any]) -> tuple[list[Any], bool]:
    """``(items, as_files)``: every input is a file, or none is."""
    if isinstance(inputs, np.ndarray):
        if inputs.ndim < 2:
            raise ValueError("inputs: an array of shape (B, D) or (B, H, W); wrap one image as [image]")
        return list(inputs), False
    if is_file(inputs):
        raise ValueError("inputs: a list of images or files; wrap one as [x]")
    items = list(inputs)
    if not items:
        raise ValueError("inputs: at least one image")
    files = [is_file(x) for x in items]
    if any(files) and not all(files):
        raise ValueError("inputs: all files (uploads) or all arrays (JSON), not a mixture")
    return items, all(files)


def log_prob(
    inputs: np.ndarray | Sequence[Any],
    *,
    model: str | None,
    per_dim: bool,
    resize: bool,
    threshold: int | None,
    invert: bool,
) -> Call[LogProb]:
    items, as_files = _split_inputs(inputs)
    if as_files:
        params = _options(model=model, per_dim=per_dim or None, resize=resize or None)
        params.update(_upload_options(threshold, invert))
        files = [_upload("files", x, i) for i, x in enumerate(items)]
        return Call("POST", "/log-prob", _log_prob, params=params, files=files)
    _no_upload_options(threshold, invert)
    body = _options(model=model, per_dim=per_dim, resize=resize)
    body["inputs"] = [_json_image(x) for x in items]
    return Call("POST", "/log-prob", _log_prob, json=body)


def heatmap(
    image: ImageLike | FileLike,
    *,
    model: str | None,
    resize: bool,
    threshold: int | None,
    invert: bool,
    scale: int | None = None,
) -> Call[Heatmap]:
    if is_file(image):
        params = _options(model=model, format="png", resize=resize or None, scale=scale)
        params.update(_upload_options(threshold, invert))
        return Call("POST", "/log-prob", _heatmap, params=params, files=[_upload("files", image, 0)])  # type: ignore[arg-type]
    _no_upload_options(threshold, invert)
    body = _options(model=model, format="png", resize=resize, scale=scale)
    body["inputs"] = [_json_image(image)]  # type: ignore[arg-type]
    return Call("POST", "/log-prob", _heatmap, json=body)


def file_bytes(x: FileLike) -> bytes:
    """The bytes of a file-like input (for callers that need them, e.g. to show the upload)."""
    return _upload("file", x, 0)[1][1]
