"""POST /log-prob: JSON and uploads, per-pixel values, heat maps, and every input error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import Api, D, H, W, assert_problem, png_bytes

pytestmark = pytest.mark.anyio


def reference_log_prob(api: Api, name: str, x: np.ndarray) -> np.ndarray:
    model = api.registry.get(name).model
    with torch.no_grad():
        return model.log_prob(torch.as_tensor(x, dtype=torch.float32)).double().numpy()


def binary_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(n, H, W))


async def test_json_images_match_the_model(api: Api) -> None:
    x = binary_images(3)
    r = await api.client.post("/log-prob", json={"inputs": x.tolist()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny" and body["log_prob_per_dim"] is None
    ref = reference_log_prob(api, "tiny", x.reshape(3, D))
    np.testing.assert_allclose(body["log_prob"], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(body["bits_per_dim"], -ref / (D * math.log(2)), rtol=1e-5)


async def test_flat_vectors_and_per_dim_in_raster_order(api: Api) -> None:
    x = binary_images(2, seed=1)
    r1 = await api.client.post("/log-prob", json={"inputs": x.tolist(), "per_dim": True})
    r2 = await api.client.post("/log-prob", json={"inputs": x.reshape(2, D).tolist(), "per_dim": True})
    assert r1.status_code == r2.status_code == 200
    b1, b2 = r1.json(), r2.json()
    np.testing.assert_allclose(b1["log_prob"], b2["log_prob"], rtol=1e-6)
    per = np.array(b1["log_prob_per_dim"])
    assert per.shape == (2, D)
    np.testing.assert_allclose(per.sum(1), b1["log_prob"], rtol=1e-5, atol=1e-5)
    model = api.registry.get("tiny").model
    with torch.no_grad():
        ref = model.ensemble_log_prob_per_dim(torch.as_tensor(x.reshape(2, D), dtype=torch.float32))
    np.testing.assert_allclose(per, ref.double().numpy(), rtol=1e-4, atol=1e-5)  # pixel d at index d


async def test_gray_model_takes_levels_0_to_255(api: Api) -> None:
    x = np.random.default_rng(2).integers(0, 256, size=(2, H, W))
    r = await api.client.post("/log-prob", json={"model": "gray", "inputs": x.tolist()})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(
        r.json()["log_prob"], reference_log_prob(api, "gray", x.reshape(2, D)), rtol=1e-4
    )
    x[1, 2, 3] = 256
    r = await api.client.post("/log-prob", json={"model": "gray", "inputs": x.tolist()})
    body = assert_problem(r, 422, "body.inputs[1][2][3]", "0..255", "256")
    assert body["errors"][0]["field"] == "body.inputs[1][2][3]"


async def test_uploads_are_thresholded_and_match_json(api: Api) -> None:
    gray = np.random.default_rng(3).integers(0, 256, size=(2, H, W)).astype(np.uint8)
    files = [("files", (f"{i}.png", png_bytes(g), "image/png")) for i, g in enumerate(gray)]
    r = await api.client.post("/log-prob", files=files)
    assert r.status_code == 200, r.text
    ref = reference_log_prob(api, "tiny", (gray >= 128).reshape(2, D).astype(np.float32))
    np.testing.assert_allclose(r.json()["log_prob"], ref, rtol=1e-5, atol=1e-5)
    # A settable threshold and inversion (dark ink on white paper).
    r = await api.client.post("/log-prob", params={"threshold": 50, "invert": "true"}, files=files)
    ref = reference_log_prob(api, "tiny", ((255 - gray) >= 50).reshape(2, D).astype(np.float32))
    np.testing.assert_allclose(r.json()["log_prob"], ref, rtol=1e-5, atol=1e-5)
    # JPEG, BMP, GIF and WebP decode too (JPEG is lossy, so only the status is checked).
    for fmt in ("JPEG", "BMP", "GIF", "WEBP"):
        one = [("files", ("x", png_bytes(gray[0], fmt), "application/octet-stream"))]
        r = await api.client.post("/log-prob", files=one)
        assert r.status_code == 200, (fmt, r.text)


async def test_upload_colour_and_resize(api: Api) -> None:
    rgb = np.zeros((2 * H, 2 * W, 3), dtype=np.uint8)
    rgb[:, :, 1] = 255  # bright green: luma 150 >= 128
    buf = png_bytes(np.asarray(Image.fromarray(rgb).convert("L")))
    r = await api.client.post("/log-prob", files=[("files", ("big.png", buf, "image/png"))])
    assert_problem(r, 422, f"expects {W}x{H}", "resize=true")
    r = await api.client.post(
        "/log-prob", params={"resize": "true"}, files=[("files", ("big.png", buf, "image/png"))]
    )
    assert r.status_code == 200, r.text
    ones = reference_log_prob(api, "tiny", np.ones((1, D), dtype=np.float32))
    np.testing.assert_allclose(r.json()["log_prob"], ones, rtol=1e-5)


async def test_heatmap_png(api: Api) -> None:
    x = binary_images(1, seed=4)
    r = await api.client.post("/log-prob", json={"inputs": x.tolist(), "format": "png"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    img = Image.open(__import__("io").BytesIO(r.content))
    assert img.size == (W, H) and img.mode == "RGB"
    ref = reference_log_prob(api, "tiny", x.reshape(1, D))
    assert float(r.headers["X-Log-Prob"]) == pytest.approx(ref[0], abs=1e-4)
    assert float(r.headers["X-Heatmap-Max-Nats"]) > 0
    r = await api.client.post("/log-prob", json={"inputs": binary_images(2).tolist(), "format": "png"})
    assert_problem(r, 422, "exactly one input")


@pytest.mark.parametrize(
    ("payload", "status", "needles"),
    [
        ({"inputs": [[[0, 1]]]}, 422, ["expects 4 x 5", "got 1 x 2", "resize=true"]),
        ({"inputs": [[0.5] * D]}, 422, ["body.inputs[0][0]", "0 or 1", "0.5"]),
        ({"inputs": [[0] * (D - 1) + [2]]}, 422, [f"body.inputs[0][{D - 1}]", "0 or 1", "got 2"]),
        ({"inputs": [[0, -1] + [0] * (D - 2)]}, 422, ["body.inputs[0][1]", "0 or 1", "got -1"]),
        ({"inputs": [[[0] * W] * H, [[0] * W] * (H - 1)]}, 422, ["ragged"]),
        ({"inputs": [["a"] * D]}, 422, ["numbers only"]),
        ({"inputs": [[0] * D] * 9}, 422, ["at most 8 inputs"]),
        ({"inputs": []}, 422, ["body.inputs"]),
        ({"inputs": [[0] * D], "per-dim": True}, 422, ["body.per-dim"]),
        ({"inputs": [[0] * D], "model": "nope"}, 404, ["'nope'", "tiny"]),
        ({"inputs": [[0] * 7]}, 422, ["flat list of 20 values", "got 7"]),
    ],
)
async def test_bad_json_inputs(api: Api, payload: dict, status: int, needles: list[str]) -> None:
    r = await api.client.post("/log-prob", json=payload)
    assert_problem(r, status, *needles)


async def test_json_resize_fits_images(api: Api) -> None:
    big = np.kron(binary_images(1, seed=5)[0], np.ones((2, 2), dtype=np.int64))  # 8 x 10
    r = await api.client.post("/log-prob", json={"inputs": [big.tolist()], "resize": True})
    assert r.status_code == 200, r.text
    ref = reference_log_prob(api, "tiny", binary_images(1, seed=5).reshape(1, D))
    np.testing.assert_allclose(r.json()["log_prob"], ref, rtol=1e-5, atol=1e-5)


async def test_bad_requests(api: Api) -> None:
    c = api.client
    assert_problem(
        await c.post("/log-prob", content=b"x", headers={"content-type": "text/plain"}), 415, "text/plain"
    )
    assert_problem(await c.post("/log-prob", content=b"{", headers={"content-type": "application/json"}), 422)
    not_image = [("files", ("a.txt", b"hello, world", "image/png"))]
    assert_problem(await c.post("/log-prob", files=not_image), 415, "files[0]", "PNG")
    truncated = [("files", ("t.png", png_bytes(np.zeros((H, W)))[:-20], "image/png"))]
    assert_problem(await c.post("/log-prob", files=truncated), 422, "files[0]")
    huge = [("files", ("h.png", png_bytes(np.zeros((65, 64))), "image/png"))]
    assert_problem(await c.post("/log-prob", files=huge), 422, "4160 pixels", "4096")
    four = [("files", (f"{i}.png", png_bytes(np.zeros((H, W))), "image/png")) for i in range(4)]
    assert_problem(await c.post("/log-prob", files=four), 422, "at most 3 files")
    wrong_field = [("image", ("a.png", png_bytes(np.zeros((H, W))), "image/png"))]
    assert_problem(await c.post("/log-prob", files=wrong_field), 422, "'files'", "image")
    bad_threshold = [("files", ("a.png", png_bytes(np.zeros((H, W))), "image/png"))]
    body = assert_problem(await c.post("/log-prob", params={"threshold": 300}, files=bad_threshold), 422)
    assert body["errors"][0]["field"] == "query.threshold"


async def test_body_limit_from_header_and_stream(api: Api) -> None:
    big = b"[" + b"0," * 40_000 + b"0]"  # > 64 KiB
    r = await api.client.post("/log-prob", content=big, headers={"content-type": "application/json"})
    assert_problem(r, 413, "65536 bytes")

    async def chunks():  # no Content-Length: counted while streaming
        for _ in range(100):
            yield b" " * 1024

    r = await api.client.post("/log-prob", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "65536 bytes")
