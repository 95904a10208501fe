"""The blocking client against a real uvicorn server with tiny models: every endpoint, JSON and upload
paths agreeing, PNG metadata and problem details surfacing as ApiError."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.client import ApiError, MadeClient

from .server import H, W


@pytest.fixture(scope="module")
def client(server_url: str):
    with MadeClient(server_url, timeout=30) as c:
        yield c


def png_of(values: np.ndarray, scale: int = 255) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((values * scale).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_health_and_models(client: MadeClient) -> None:
    assert client.live() is True
    state = client.ready()
    assert state.ready and state.models == {"gray": True, "tiny": True}
    assert client.wait_ready(5).ready
    assert client.model_ready("gray") is True
    listing = client.models()
    assert listing.default_model == "tiny" and sorted(listing.names) == ["gray", "tiny"]
    gray = client.model("gray")
    assert gray.shape == [H, W] and gray.value_range == [0, 255] and not gray.binary and gray.can_complete
    assert "made_http_requests_total" in client.metrics()


def test_examples_feed_completion(client: MadeClient) -> None:
    listing = client.examples("tiny")
    assert listing.model == "tiny" and listing.source == "model sample" and len(listing.examples) == 4
    png = client.example("tiny", 0)
    x = np.asarray(Image.open(io.BytesIO(png))) // 255
    assert x.shape == (H, W)
    assert client.complete(png, n=2, seed=1).images == client.complete(x, n=2, seed=1).images


def test_sample_is_reproducible_and_scored(client: MadeClient) -> None:
    a = client.sample(3, seed=11)
    b = client.sample(3, seed=11)
    assert a.seed == 11 and a.model == "tiny" and a.images == b.images and a.temperature == 1.0
    x = a.array()
    assert x.shape == (3, H, W) and set(np.unique(x)) <= {0, 1}
    lp = client.log_prob(x)
    np.testing.assert_allclose(lp.log_prob, a.log_prob, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(lp.bits_per_dim, -np.array(lp.log_prob) / (H * W * np.log(2)), rtol=1e-9)
    fresh = client.sample(1, model="gray")
    assert fresh.model == "gray" and 0 <= fresh.seed < 2**53
    assert int(fresh.array().max()) <= 255


def test_sample_png_carries_seed(client: MadeClient, tmp_path: Path) -> None:
    png = client.sample_png(4, seed=3)
    assert png.seed == 3 and png.model == "tiny" and png.known_rows is None and png.temperature == 1.0
    assert client.sample_png(1, seed=3, temperature=0.5).temperature == 0.5
    img = Image.open(io.BytesIO(png.save(tmp_path / "g.png").read_bytes()))
    assert img.format == "PNG" and img.size[0] > 2 * W and img.size[1] > 2 * H


def test_complete_json_and_upload_agree(client: MadeClient, tmp_path: Path) -> None:
    x = client.sample(1, seed=5).array()[0]
    done = client.complete(x, n=3, seed=9, known_rows=2)
    out = done.array()
    assert done.known_rows == 2 and out.shape == (3, H, W)
    assert (out[:, :2] == x[:2]).all()
    path = tmp_path / "x.png"
    path.write_bytes(png_of(x))
    for source in (path, str(path), path.read_bytes(), path.open("rb")):
        assert client.complete(source, n=3, seed=9, known_rows=2).images == done.images
    grid = client.complete_png(x, n=2, seed=9)
    assert grid.known_rows == H // 2 and grid.seed == 9


def test_log_prob_files_per_dim_and_heatmap(client: MadeClient) -> None:
    xs = client.sample(2, seed=8).array()
    by_json = client.log_prob(xs, per_dim=True)
    by_file = client.log_prob([png_of(x) for x in xs], per_dim=True)
    np.testing.assert_allclose(by_file.log_prob, by_json.log_prob, rtol=1e-6)
    assert by_json.log_prob_per_dim is not None
    np.testing.assert_allclose(np.sum(by_json.log_prob_per_dim, axis=1), by_json.log_prob, rtol=1e-5)
    # dark ink on white: inverted upload and a custom threshold give the same image back
    inverted = client.log_prob([png_of(1 - xs[0], 200)], invert=True, threshold=100)
    np.testing.assert_allclose(inverted.log_prob, by_json.log_prob[:1], rtol=1e-6)
    heat = client.heatmap(xs[0])
    assert heat.model == "tiny"
    assert heat.log_prob == pytest.approx(by_json.log_prob[0], rel=1e-5)
    assert heat.max_nats == pytest.approx(-min(by_json.log_prob_per_dim[0]), rel=1e-4)
    img = Image.open(io.BytesIO(heat.content))
    assert img.size == (W, H) and img.mode == "RGB"
    assert client.heatmap(png_of(xs[0])).log_prob == pytest.approx(heat.log_prob, rel=1e-6)


def test_errors_are_api_errors_with_fields(client: MadeClient) -> None:
    with pytest.raises(ApiError) as e:
        client.model("nope")
    assert e.value.status == 404 and "nope" in e.value.detail and e.value.title == "Model Not Found"
    with pytest.raises(ApiError) as e:
        client.sample(1000)
    assert e.value.status == 422 and e.value.fields == ["body.n"]
    with pytest.raises(ApiError) as e:
        client.log_prob([np.zeros((H + 1, W), dtype=int)])
    assert e.value.status == 422 and "resize" in e.value.detail
    with pytest.raises(ApiError) as e:
        client.complete(b"not an image")
    assert e.value.status == 415


def test_inputs_are_checked_before_sending(client: MadeClient) -> None:
    x = np.zeros((H, W), dtype=int)
    with pytest.raises(ValueError, match="not a mixture"):
        client.log_prob([x, png_of(x)])
    with pytest.raises(ValueError, match="image files only"):
        client.complete(x, threshold=10)
    with pytest.raises(ValueError, match="wrap one"):
        client.log_prob(png_of(x))  # type: ignore[arg-type]


def test_png_scale(client: MadeClient) -> None:
    """``scale`` enlarges every PNG answer by whole-pixel repetition; the server bounds it."""
    x = client.sample(1, seed=5).array()[0]

    def px(png) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(png.content)))

    def big(a: np.ndarray, s: int) -> np.ndarray:
        return a.repeat(s, axis=0).repeat(s, axis=1)

    assert np.array_equal(px(client.sample_png(4, seed=3, scale=3)), big(px(client.sample_png(4, seed=3)), 3))
    for image in (x, png_of(x)):
        done = client.complete_png(image, n=2, seed=9, scale=2)
        assert done.seed == 9 and done.known_rows == H // 2
        assert np.array_equal(px(done), big(px(client.complete_png(image, n=2, seed=9)), 2))
        heat = client.heatmap(image, scale=5)
        assert Image.open(io.BytesIO(heat.content)).size == (5 * W, 5 * H)
        assert np.array_equal(px(heat), big(px(client.heatmap(image)), 5))
    with pytest.raises(ApiError) as e:
        client.sample_png(1, scale=17)
    assert e.value.status == 422 and e.value.fields == ["body.scale"] and "16" in e.value.detail
    with pytest.raises(ApiError) as e:
        client.heatmap(png_of(x), scale=100)
    assert e.value.fields == ["query.scale"]
