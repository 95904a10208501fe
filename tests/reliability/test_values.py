"""Bad values, shapes, types and files: always a 4xx problem naming the field, never a 5xx."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.api.conftest import Api, D, H, W, assert_problem, png_bytes

pytestmark = pytest.mark.anyio

ZEROS = np.zeros((H, W), dtype=int).tolist()


def image_with(value: str) -> bytes:
    """A raw JSON body whose first pixel is ``value`` verbatim (NaN and Infinity are not JSON)."""
    rows = [[0] * W for _ in range(H)]
    text = str(rows).replace("[[0,", f"[[{value},", 1)
    return ('{"inputs": [' + text + "]}").encode()


@pytest.mark.parametrize(
    ("model", "value", "needle"),
    [
        ("tiny", "NaN", "nan"),
        ("tiny", "Infinity", "inf"),
        ("tiny", "-Infinity", "-inf"),
        ("tiny", "1e400", "inf"),
        ("tiny", "2", "0 or 1"),
        ("tiny", "-1", "0 or 1"),
        ("tiny", "0.5", "0 or 1"),
        ("gray", "256", "0..255"),
        ("gray", "-0.5", "0..255"),
        ("gray", "3.25", "0..255"),
    ],
)
async def test_bad_values(api: Api, model: str, value: str, needle: str) -> None:
    body = image_with(value).replace(b"{", b'{"model": "%s", ' % model.encode(), 1)
    r = await api.client.post("/log-prob", content=body, headers={"content-type": "application/json"})
    problem = assert_problem(r, 422, "body.inputs[0][0][0]", needle)
    assert problem["errors"][0]["field"] == "body.inputs[0][0][0]"


@pytest.mark.parametrize(
    ("path", "body", "needles"),
    [
        ("/log-prob", {"inputs": []}, ["body.inputs"]),
        ("/log-prob", {"inputs": [[]]}, ["body.inputs", "20 values"]),
        ("/log-prob", {"inputs": [[[]]]}, ["body.inputs", "4 x 5"]),
        ("/log-prob", {"inputs": [[[]]], "resize": True}, ["at least one row"]),
        ("/log-prob", {"inputs": [[[0] * W] * (H - 1)]}, ["4 x 5", "3 x 5"]),
        ("/log-prob", {"inputs": [[0] * (D - 1)]}, ["20 values", "19"]),
        ("/log-prob", {"inputs": [ZEROS, [[0] * W] * (H - 1)]}, ["ragged"]),
        ("/log-prob", {"inputs": [[["0"] * W] * H]}, ["numbers only"]),
        ("/log-prob", {"inputs": [[[None] * W] * H]}, ["numbers only"]),
        ("/log-prob", {"inputs": [[[{}] * W] * H]}, ["numbers only"]),
        ("/log-prob", {"inputs": 7}, ["body.inputs"]),
        ("/log-prob", {"inputs": [ZEROS], "per_dim": "yes"}, ["body.per_dim"]),
        ("/log-prob", {"inputs": [ZEROS], "colour": 1}, ["body.colour"]),
        ("/log-prob", {}, ["body.inputs"]),
        ("/log-prob", [1, 2], ["body"]),
        ("/sample", {"n": 0}, ["body.n"]),
        ("/sample", {"n": -3}, ["body.n"]),
        ("/sample", {"n": "2"}, ["body.n"]),
        ("/sample", {"n": True}, ["body.n"]),
        ("/sample", {"n": 1.5}, ["body.n"]),
        ("/sample", {"seed": -1}, ["body.seed"]),
        ("/sample", {"seed": 2**64}, ["body.seed"]),
        ("/sample", {"format": "gif"}, ["body.format"]),
        ("/sample", {"model": 5}, ["body.model"]),
        ("/complete", {"inputs": [ZEROS], "known_rows": 0}, ["body.known_rows", "between 1 and 3"]),
        ("/complete", {"inputs": [ZEROS], "known_rows": H}, ["body.known_rows"]),
        ("/complete", {"inputs": [ZEROS, ZEROS]}, ["body.inputs"]),
        ("/complete", {"inputs": [ZEROS], "model": "shuffled"}, ["model", "order"]),
        ("/complete", {"inputs": [[0] * 8], "model": "flat"}, ["no image shape"]),
    ],
)
async def test_bad_bodies(api: Api, path: str, body: Any, needles: list[str]) -> None:
    r = await api.client.post(path, json=body)
    problem = assert_problem(r, 422, *needles)
    assert problem["errors"], problem


@pytest.mark.parametrize(
    ("content", "ctype", "status", "needle"),
    [
        (b"", "application/json", 422, "body"),
        (b'{"inputs": [[0, 1', "application/json", 422, "JSON"),
        (b"\xff\xfe\x00garbage", "application/json", 422, "JSON"),
        (b'{"n": 1}', "", 415, "application/json"),
        (b'{"n": 1}', "text/plain", 415, "text/plain"),
        (b"--x\r\nnot multipart", "multipart/form-data; boundary=x", 415, "application/json"),
    ],
)
async def test_bad_raw_bodies(api: Api, content: bytes, ctype: str, status: int, needle: str) -> None:
    headers = {"content-type": ctype} if ctype else {}
    r = await api.client.post("/sample", content=content, headers=headers)
    assert_problem(r, status, needle)


def truncated(fmt: str) -> bytes:
    data = png_bytes(np.random.default_rng(0).integers(0, 256, (H * 8, W * 8)).astype(np.uint8), fmt)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("data", "status", "needle"),
    [
        (b"", 422, "empty file"),
        (b"hello, I am text", 415, "not a supported image"),
        (b"\x89PNG\r\n\x1a\n", 415, "not a supported image"),  # a signature and nothing else
        (truncated("PNG"), 422, "corrupt or truncated PNG"),
        (truncated("GIF"), 422, "corrupt or truncated GIF"),
        (truncated("JPEG"), 422, "corrupt or truncated JPEG"),
    ],
)
async def test_bad_files(api: Api, data: bytes, status: int, needle: str) -> None:
    for path, field in (("/log-prob", "files"), ("/complete", "file")):
        r = await api.client.post(
            path, files=[(field, ("x.png", data, "image/png"))], params={"resize": True}
        )
        assert_problem(r, status, needle)


async def test_mislabelled_files_are_sniffed(api: Api) -> None:
    """What a file is comes from its bytes: a PNG called image/jpeg decodes, a text called PNG does not."""
    png = png_bytes(np.zeros((H, W), dtype=np.uint8))
    r = await api.client.post("/log-prob", files=[("files", ("photo.jpg", png, "image/jpeg"))])
    assert r.status_code == 200, r.text
    r = await api.client.post("/log-prob", files=[("files", ("x.png", b"<svg></svg>", "image/png"))])
    assert_problem(r, 415)
    buf = io.BytesIO()
    Image.new("L", (W, H)).save(buf, format="PNG")
    r = await api.client.post("/log-prob", files=[("wrong_field", ("x.png", buf.getvalue(), "image/png"))])
    assert_problem(r, 422, "files", "wrong_field")


_pixel = st.one_of(
    st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
_rows = st.lists(st.lists(_pixel, min_size=0, max_size=W + 1), min_size=0, max_size=H + 1)
_inputs = st.lists(st.one_of(_rows, st.lists(_pixel, max_size=D + 1), _pixel), max_size=3)


@settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    inputs=_inputs,
    model=st.sampled_from(["tiny", "gray", "flat"]),
    path=st.sampled_from(["/log-prob", "/complete"]),
)
async def test_arbitrary_inputs_never_fail_the_server(
    api: Api, inputs: list[Any], model: str, path: str
) -> None:
    body = {"model": model, "inputs": inputs}
    raw = json.dumps(body, allow_nan=True).encode()  # NaN / Infinity as Python's json writes them
    r = await api.client.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert_problem(r, 422)
