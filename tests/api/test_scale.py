"""``scale``: PNG answers (sample grids, completions, heat maps) enlarged by whole-pixel repetition, bounded
by 1..16 in the request schema; out of range, or on a JSON answer, it is a 422 naming the field and the limit."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.api.conftest import Api, H, W, assert_problem, png_bytes

pytestmark = pytest.mark.anyio

DIGIT = (np.arange(H * W).reshape(H, W) % 3 == 0).astype(int)


def pixels(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def enlarged(small: np.ndarray, s: int) -> np.ndarray:
    return small.repeat(s, axis=0).repeat(s, axis=1)


async def test_sample_grid_scaled(api: Api) -> None:
    body = {"n": 5, "seed": 3, "format": "png"}
    one = await api.client.post("/sample", json=body)
    three = await api.client.post("/sample", json={**body, "scale": 3})
    assert one.status_code == three.status_code == 200, three.text
    assert three.headers["x-seed"] == "3"
    small, big = pixels(one.content), pixels(three.content)
    assert big.shape == (3 * small.shape[0], 3 * small.shape[1])
    assert np.array_equal(big, enlarged(small, 3))
    same = await api.client.post("/sample", json={**body, "scale": 1})
    assert same.content == one.content


async def test_complete_scaled_json_and_upload(api: Api) -> None:
    body = {"inputs": [DIGIT.tolist()], "n": 2, "seed": 4, "format": "png"}
    one = await api.client.post("/complete", json=body)
    two = await api.client.post("/complete", json={**body, "scale": 2})
    assert two.status_code == 200, two.text
    assert np.array_equal(pixels(two.content), enlarged(pixels(one.content), 2))
    files = {"file": ("d.png", png_bytes(DIGIT * 255))}
    options = {"n": "2", "seed": "4", "format": "png", "scale": "2"}
    by_query = await api.client.post("/complete", params=options, files=files)
    by_form = await api.client.post("/complete", data=options, files=files)
    assert by_query.status_code == by_form.status_code == 200, by_form.text
    assert by_query.content == by_form.content == two.content


async def test_heatmap_scaled(api: Api) -> None:
    body = {"inputs": [DIGIT.tolist()], "format": "png"}
    one = await api.client.post("/log-prob", json=body)
    four = await api.client.post("/log-prob", json={**body, "scale": 4})
    assert four.status_code == 200, four.text
    big = pixels(four.content)
    assert big.shape == (4 * H, 4 * W, 3)
    assert np.array_equal(big, enlarged(pixels(one.content), 4))
    for h in ("x-log-prob", "x-heatmap-max-nats"):
        assert four.headers[h] == one.headers[h]
    files = [("files", ("d.png", png_bytes(DIGIT * 255)))]
    up = await api.client.post("/log-prob", params={"format": "png", "scale": "4"}, files=files)
    assert up.status_code == 200, up.text
    assert np.array_equal(pixels(up.content), big)


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        ("/sample", {}),
        ("/complete", {"inputs": [DIGIT.tolist()]}),
        ("/log-prob", {"inputs": [DIGIT.tolist()]}),
    ],
)
async def test_json_scale_out_of_range(api: Api, path: str, extra: dict) -> None:
    r = await api.client.post(path, json={**extra, "format": "png", "scale": 17})
    body = assert_problem(r, 422, "body.scale", "16")
    assert body["errors"][0]["field"] == "body.scale" and body["errors"][0]["input"] == 17
    r = await api.client.post(path, json={**extra, "format": "png", "scale": 0})
    assert_problem(r, 422)
    assert r.json()["errors"][0]["field"] == "body.scale"
    r = await api.client.post(path, json={**extra, "format": "png", "scale": 1.5})
    assert_problem(r, 422)
    r = await api.client.post(path, json={**extra, "scale": 2})  # a JSON answer has no pixels to enlarge
    assert_problem(r, 422, "body.scale", "format=png")


@pytest.mark.parametrize(("path", "field"), [("/complete", "file"), ("/log-prob", "files")])
async def test_upload_scale_out_of_range_names_its_place(api: Api, path: str, field: str) -> None:
    files = [(field, ("d.png", png_bytes(DIGIT * 255)))]
    r = await api.client.post(path, params={"format": "png"}, data={"scale": "40"}, files=files)
    assert_problem(r, 422, "form.scale", "16")
    r = await api.client.post(path, params={"format": "png", "scale": "40"}, files=files)
    assert_problem(r, 422, "query.scale", "16")
    r = await api.client.post(path, params={"format": "png", "scale": "0"}, files=files)
    assert_problem(r, 422)
    assert r.json()["errors"][0]["field"] == "query.scale"
    r = await api.client.post(path, params={"scale": "2"}, files=files)
    assert_problem(r, 422, "query.scale", "format=png")


def test_client_and_server_share_the_bound() -> None:
    from service.api.schemas import MAX_PNG_SCALE
    from service.cli import _MAX_SCALE

    assert _MAX_SCALE == MAX_PNG_SCALE == 16
