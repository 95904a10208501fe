"""POST /sample and POST /complete: shapes, seeds, PNG forms, byte-exact known rows, and their errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import Api, D, H, W, assert_problem, png_bytes

pytestmark = pytest.mark.anyio


async def test_sample_json_is_reproducible(api: Api) -> None:
    r1 = await api.client.post("/sample", json={"n": 3, "seed": 11})
    r2 = await api.client.post("/sample", json={"n": 3, "seed": 11})
    assert r1.status_code == r2.status_code == 200, r1.text
    b1 = r1.json()
    assert b1 == r2.json()
    assert b1["model"] == "tiny" and b1["seed"] == 11
    x = np.array(b1["images"])
    assert x.shape == (3, H, W) and set(np.unique(x)) <= {0, 1}
    model = api.registry.get("tiny").model
    with torch.no_grad():
        ref = model.log_prob(torch.as_tensor(x.reshape(3, D), dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(b1["log_prob"], ref, rtol=1e-4, atol=1e-4)


async def test_sample_without_seed_returns_one_that_reproduces(api: Api) -> None:
    r = await api.client.post("/sample", json={"model": "gray", "n": 2})
    body = r.json()
    assert isinstance(body["seed"], int) and 0 <= body["seed"] < 2**53
    again = await api.client.post("/sample", json={"model": "gray", "n": 2, "seed": body["seed"]})
    assert again.json()["images"] == body["images"]
    assert np.array(body["images"]).max() <= 255


async def test_sample_png_grid_and_flat_model(api: Api) -> None:
    r = await api.client.post("/sample", json={"n": 4, "format": "png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    seed = int(r.headers["X-Seed"])
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert img.shape == (2 * (H + 2) + 2, 2 * (W + 2) + 2)  # 2 x 2 grid with 2-pixel separators
    js = (await api.client.post("/sample", json={"n": 4, "seed": seed})).json()
    first = np.array(js["images"][0]) * 255
    np.testing.assert_array_equal(img[2 : 2 + H, 2 : 2 + W], first)
    flat = (await api.client.post("/sample", json={"model": "flat", "n": 2, "seed": 1})).json()
    assert np.array(flat["images"]).shape == (2, 8)


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"n": 17}, 422, "body.n"),
        ({"n": 0}, 422, "body.n"),
        ({"seed": -1}, 422, "body.seed"),
        ({"format": "gif"}, 422, "body.format"),
        ({"model": "nope"}, 404, "model"),
    ],
)
async def test_sample_errors(api: Api, payload: dict, status: int, field: str) -> None:
    body = assert_problem(await api.client.post("/sample", json=payload), status)
    assert body["errors"][0]["field"] == field


def digit() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 2, size=(H, W))


async def test_complete_keeps_known_rows_exactly(api: Api) -> None:
    x = digit()
    payload = {"inputs": [x.tolist()], "n": 5, "seed": 3}
    r = await api.client.post("/complete", json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    out = np.array(body["images"])
    assert body["known_rows"] == H // 2 and out.shape == (5, H, W)
    assert (out[:, : H // 2] == x[None, : H // 2]).all()
    assert body == (await api.client.post("/complete", json=payload)).json()
    r = await api.client.post(
        "/complete", json={**payload, "known_rows": 3, "model": "gray", "inputs": [(x * 200 + 17).tolist()]}
    )
    out = np.array(r.json()["images"])
    assert (out[:, :3] == (x * 200 + 17)[None, :3]).all()


async def test_complete_upload_and_png(api: Api) -> None:
    gray = (digit() * 255).astype(np.uint8)
    files = {"file": ("d.png", png_bytes(gray), "image/png")}
    r = await api.client.post(
        "/complete", params={"n": 3, "seed": 5, "format": "png", "known_rows": 1}, files=files
    )
    assert r.status_code == 200, r.text
    assert r.headers["X-Seed"] == "5" and r.headers["X-Known-Rows"] == "1"
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    assert img.shape == (H + 4, 4 * (W + 2) + 2 + 4)  # input, wider gap, then 3 completions in one row
    np.testing.assert_array_equal(img[2 : 2 + H, 2 : 2 + W], gray)
    js = await api.client.post("/complete", params={"n": 3, "seed": 5, "known_rows": 1}, files=files)
    out = np.array(js.json()["images"])
    for i in range(3):
        x0 = 2 + (i + 1) * (W + 2) + 4
        np.testing.assert_array_equal(img[2 : 2 + H, x0 : x0 + W], out[i] * 255)


@pytest.mark.parametrize(
    ("payload", "status", "needles"),
    [
        ({"known_rows": H}, 422, ["body.known_rows", f"between 1 and {H - 1}"]),
        ({"known_rows": 1, "model": "shuffled"}, 422, ["body.known_rows", "'random' order"]),
        ({"model": "flat", "inputs": [[0] * 8]}, 422, ["no image shape"]),
        ({"inputs": [[[0] * W] * H] * 2}, 422, ["body.inputs"]),
        ({"inputs": [[[0] * (W + 1)] * H]}, 422, [f"expects {H} x {W}", "resize=true"]),
        ({"n": 17}, 422, ["body.n", "at most 16"]),
    ],
)
async def test_complete_errors(api: Api, payload: dict, status: int, needles: list[str]) -> None:
    body = {"inputs": [digit().tolist()], **payload}
    assert_problem(await api.client.post("/complete", json=body), status, *needles)


async def test_complete_upload_errors(api: Api) -> None:
    files = {"file": ("d.png", png_bytes(np.zeros((H + 1, W))), "image/png")}
    assert_problem(await api.client.post("/complete", files=files), 422, "file", f"expects {W}x{H}")
    r = await api.client.post("/complete", params={"resize": "true"}, files=files)
    assert r.status_code == 200, r.text
    r = await api.client.post(
        "/complete", params={"n": 17}, files={"file": ("d.png", png_bytes(np.zeros((H, W))))}
    )
    assert_problem(r, 422, "query.n")
