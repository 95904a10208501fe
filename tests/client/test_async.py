"""The async client against the same real server: concurrent calls, and answers identical to the
blocking client's for the same seeds."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.client import ApiError, AsyncMadeClient, MadeClient

from .server import H, W


def test_async_matches_sync(server_url: str) -> None:
    async def go() -> tuple:
        async with AsyncMadeClient(server_url, timeout=30) as c:
            assert await c.live() and (await c.ready()).ready and await c.model_ready("tiny")
            await c.wait_ready(5)
            names = (await c.models()).names
            card = await c.model("tiny")
            samples = await asyncio.gather(*(c.sample(2, seed=s) for s in range(4)))
            png = await c.sample_png(2, seed=1, scale=2)
            x = samples[0].array()
            done = await c.complete(x[0], n=2, seed=4)
            done_png = await c.complete_png(x[0], n=2, seed=4, scale=3)
            lp = await c.log_prob(x, model="tiny")
            heat = await c.heatmap(x[0], scale=4)
            with pytest.raises(ApiError) as e:
                await c.sample(1, model="nope")
            assert e.value.status == 404
            assert "made_" in await c.metrics()
            listing = await c.examples("gray")
            assert (await c.example("gray", 1))[:4] == b"\x89PNG" and listing.source == "model sample"
            return names, card, samples, png, done, done_png, lp, heat

    names, card, samples, png, done, done_png, lp, heat = asyncio.run(go())
    assert sorted(names) == ["gray", "tiny"] and card.shape == [H, W]
    with MadeClient(server_url) as c:
        for s, got in enumerate(samples):
            assert got.images == c.sample(2, seed=s).images
        assert png.content == c.sample_png(2, seed=1, scale=2).content
        x = samples[0].array()
        assert done.images == c.complete(x[0], n=2, seed=4).images
        assert done_png.content == c.complete_png(x[0], n=2, seed=4, scale=3).content
        np.testing.assert_allclose(lp.log_prob, samples[0].log_prob, rtol=1e-5)
        assert heat.content == c.heatmap(x[0], scale=4).content
