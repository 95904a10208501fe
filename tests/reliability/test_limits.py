"""Request limits: each is a setting, answered with a problem naming the field and the limit, and checked
before any heavy work (decoding, array building, the engine)."""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.api import codecs, inputs
from service.api.limits import json_structure
from tests.api.conftest import Api, H, W, assert_problem, png_bytes, serve, settings_for

pytestmark = pytest.mark.anyio


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` pixels but holds almost no data (a decompression bomb's
    header: it costs nothing to send and gigabytes to decode)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if any image is decoded or any JSON input turned into an array."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("heavy work ran before the limit check")

    monkeypatch.setattr(codecs, "decode_gray", forbidden)
    monkeypatch.setattr(inputs, "from_json", forbidden)
    yield


async def test_body_size_declared_and_streamed(api: Api) -> None:
    limit = 64 * 1024
    big = b"0" * (limit + 1)
    r = await api.client.post("/sample", content=big, headers={"content-type": "application/json"})
    assert_problem(r, 413, str(limit), "MADE_MAX_BODY_BYTES")

    async def chunks() -> Any:  # no Content-Length: counted while it streams
        for _ in range(20):
            yield b" " * 8192

    r = await api.client.post("/log-prob", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "MADE_MAX_BODY_BYTES")


async def test_image_pixels_are_checked_from_the_header(api: Api) -> None:
    # over MADE_MAX_IMAGE_PIXELS (64 x 64 here): refused from the header, nothing decoded
    r = await api.client.post(
        "/log-prob", files=[("files", ("a.png", png_header_only(100, 100), "image/png"))]
    )
    assert_problem(r, 422, "100x100", "4096", "MADE_MAX_IMAGE_PIXELS")
    # a real bomb (10^10 pixels): Pillow's guard fires before any allocation
    bomb = png_header_only(100_000, 100_000)
    assert len(bomb) < 200
    r = await api.client.post("/log-prob", files=[("files", ("bomb.png", bomb, "image/png"))])
    assert_problem(r, 422, "too many pixels", "MADE_MAX_IMAGE_PIXELS")


async def test_only_allowed_formats_are_decoded(api: Api) -> None:
    gray = np.zeros((H, W), dtype=np.uint8)
    for fmt in ("TIFF", "ICO", "PPM"):
        r = await api.client.post(
            "/log-prob", files=[("files", ("x.png", png_bytes(gray, fmt), "image/png"))]
        )
        body = assert_problem(r, 415, "PNG, JPEG, BMP, GIF, WEBP")
        assert body["errors"][0]["field"] == "files[0]"


async def test_counts_per_request(api: Api, no_decoding: None) -> None:
    png = png_bytes(np.zeros((H, W), dtype=np.uint8))
    files = [("files", (f"{i}.png", png, "image/png")) for i in range(4)]
    assert_problem(await api.client.post("/log-prob", files=files), 422, "files", "at most 3")
    assert_problem(await api.client.post("/sample", json={"n": 17}), 422, "body.n", "at most 16")
    # n is checked before the upload is decoded
    one = [("file", ("x.png", png, "image/png"))]
    assert_problem(await api.client.post("/complete", params={"n": 17}, files=one), 422, "query.n")
    x = np.zeros((9, H, W), dtype=int).tolist()
    assert_problem(await api.client.post("/log-prob", json={"inputs": x}), 422, "body.inputs", "at most 8")


async def test_json_nesting_and_array_limits(api: Api, no_decoding: None) -> None:
    deep = {"inputs": [[[[[[[[0]]]]]]]]}  # 9 levels with the body object
    body = assert_problem(
        await api.client.post("/log-prob", json=deep), 422, "9 levels", "MADE_MAX_JSON_DEPTH"
    )
    assert body["errors"][0]["field"] == "body"
    hostile = b'{"inputs": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # would blow a recursive parser
    r = await api.client.post("/log-prob", content=hostile, headers={"content-type": "application/json"})
    assert_problem(r, 422, "30001 levels")


async def test_array_limit_is_a_setting(model_repo: Path) -> None:
    async with serve(settings_for(model_repo, max_json_array=16)) as a:
        flat = np.zeros((1, H * W), dtype=int).tolist()  # 20 values in one array
        r = await a.client.post("/log-prob", json={"inputs": flat})
        assert_problem(r, 422, "20 items", "16", "MADE_MAX_JSON_ARRAY")
        rows = np.zeros((1, H, W), dtype=int).tolist()  # the same image as rows of 5
        assert (await a.client.post("/log-prob", json={"inputs": rows})).status_code == 200


def reference_structure(value: Any, depth: int = 0) -> tuple[int, int]:
    """Deepest nesting and most items per container, by walking the parsed value."""
    if isinstance(value, list | dict):
        items = list(value.values()) if isinstance(value, dict) else value
        subs = [reference_structure(v, depth + 1) for v in items]
        return max([depth + 1, *(s[0] for s in subs)]), max([max(len(items), 1), *(s[1] for s in subs)])
    return depth, 0


_scalars = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(alphabet='[]{},"\\ab:', max_size=8),  # strings full of JSON's own punctuation
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.text(alphabet='[]{},"\\k', max_size=4), inner, max_size=4)
    ),
    max_leaves=40,
)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(value=_json.filter(lambda v: isinstance(v, list | dict)), spaces=st.booleans())
def test_json_structure_matches_a_parse(value: Any, spaces: bool) -> None:
    text = json.dumps(value, separators=(", ", ": ") if spaces else (",", ":")).encode()
    assert json_structure(text) == reference_structure(value)


def test_json_structure_is_fast_on_hostile_bodies() -> None:
    """8 MB bodies of brackets, commas or escaped quotes are measured quickly (about 0.3 s on a busy
    2-core machine); a body nested past the limit is not grouped at all."""
    bodies = [
        b"[" + b"0," * 4_000_000 + b"0]",
        b"[1" + b",[1]" * 1_500_000 + b"]",
        b'["' + b'\\"' * 4_000_000 + b'"]',
        b"[" * 4_000_000 + b"]" * 4_000_000,
        json.dumps({"inputs": np.random.default_rng(0).integers(0, 2, (1024, 28, 28)).tolist()}).encode(),
    ]
    results = []
    for body in bodies:
        t0 = time.perf_counter()
        results.append(json_structure(body, depth_limit=8))
        assert time.perf_counter() - t0 < 2.0, body[:20]
    assert results == [(1, 4_000_001), (2, 1_500_001), (1, 1), (4_000_000, 0), (4, 1024)]
