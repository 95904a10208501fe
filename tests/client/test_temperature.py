"""``temperature`` through the blocking and async clients (issue 15, item 4): sent as JSON, as a query
parameter with an upload, and refused by the server as a problem naming the field."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.client import ApiError, AsyncMadeClient, MadeClient


@pytest.fixture(scope="module")
def client(server_url: str):
    with MadeClient(server_url, timeout=30) as c:
        yield c


def test_sample_and_png_at_a_temperature(client: MadeClient) -> None:
    greedy = [client.sample(2, model="gray", seed=s, temperature=0).images for s in (1, 2)]
    assert greedy[0] == greedy[1]
    a = client.sample(2, model="gray", seed=3, temperature=0.5)
    assert a.images == client.sample(2, model="gray", seed=3, temperature=0.5).images
    assert a.images != client.sample(2, model="gray", seed=3).images
    png = client.sample_png(2, model="gray", seed=3, temperature=0.5)
    assert (
        png.seed == 3 and png.content == client.sample_png(2, model="gray", seed=3, temperature=0.5).content
    )
    assert png.content != client.sample_png(2, model="gray", seed=3).content


def test_complete_json_and_upload_agree(client: MadeClient) -> None:
    x = np.asarray(client.sample(1, model="gray", seed=9).images[0])
    buf = io.BytesIO()
    Image.fromarray(x.astype(np.uint8)).save(buf, format="PNG")
    kw = {"model": "gray", "n": 2, "seed": 1, "temperature": 0.5}
    assert client.complete(x, **kw).images == client.complete(buf.getvalue(), **kw).images
    png = client.complete_png(buf.getvalue(), scale=2, **kw)
    assert png.seed == 1


@pytest.mark.parametrize("bad", [-1.0, "hot", 1e9])
def test_bad_temperature_is_an_api_error(client: MadeClient, bad: float) -> None:
    with pytest.raises(ApiError) as e:
        client.sample(1, model="gray", temperature=bad)
    assert e.value.status == 422 and e.value.fields == ["body.temperature"]


@pytest.mark.anyio
async def test_async_client(server_url: str) -> None:
    async with AsyncMadeClient(server_url, timeout=30) as c:
        a = await c.sample(2, model="gray", seed=5, temperature=0)
        b = await c.sample_png(2, model="gray", seed=6, temperature=0)
        x = np.asarray(a.images[0])
        done = await c.complete(x, model="gray", n=1, seed=1, temperature=0)
        await c.complete_png(x, model="gray", n=1, seed=1, temperature=0)
    assert b.seed == 6 and len(done.images) == 1
