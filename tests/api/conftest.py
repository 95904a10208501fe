"""Tiny models in a temporary model repository, and the app (with its lifespan) behind an httpx client."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from PIL import Image

from service.api import create_app
from service.api.registry import Registry
from service.config import Settings
from service.made import MADE, MADEConfig, save_model

H, W = 4, 5  # not square, so rows/columns mix-ups show
D = H * W


def make_model(folder: Path, config: MADEConfig, card: dict[str, Any], seed: int) -> None:
    """A small MADE with random (seeded) weights, saved with the card fields the service reads."""
    torch.manual_seed(seed)
    model = MADE(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    save_model(folder, model, card)


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny`` (binary 4x5, 2 masks sharing an ordering), ``gray`` (8-bit 4x5), ``shuffled`` (binary,
    random ordering) and ``flat`` (binary vectors, no image shape)."""
    root = tmp_path_factory.mktemp("models")
    binary = {"type": "bernoulli"}
    make_model(
        root / "tiny",
        MADEConfig(data_dim=D, hidden=(24,), distribution=binary, num_masks=2, direct=True),
        {
            "name": "tiny",
            "description": "binary test model",
            "shape": [H, W],
            "value_range": [0, 1],
            "data": {"name": "none"},
            "metrics": {"test_nll": 1.0},
        },
        seed=1,
    )
    make_model(
        root / "gray",
        MADEConfig(
            data_dim=D,
            hidden=(24,),
            distribution={"type": "discretized_logistic", "n_bins": 256, "n_components": 2},
        ),
        {"name": "gray", "shape": [H, W], "value_range": [0, 255]},
        seed=2,
    )
    make_model(
        root / "shuffled",
        MADEConfig(data_dim=D, hidden=(24,), distribution=binary, ordering="random", ordering_seed=3),
        {"name": "shuffled", "shape": [H, W], "value_range": [0, 1]},
        seed=3,
    )
    make_model(
        root / "flat",
        MADEConfig(data_dim=8, hidden=(16,), distribution=binary),
        {"name": "flat", "value_range": [0, 1]},
        seed=4,
    )
    return root


def settings_for(repo: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "model_dir": repo,
        "default_model": "tiny",
        "device": "cpu",
        "max_samples_per_request": 16,
        "max_inputs_per_request": 8,
        "max_images_per_request": 3,
        "max_body_bytes": 64 * 1024,
        "max_image_pixels": 64 * 64,
        "admission_window_ms": 20.0,
        "shutdown_grace_s": 2.0,
    }
    base.update(overrides)
    return Settings(_env_file=None, **base)


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def registry(self) -> Registry:
        return self.app.state.registry


@asynccontextmanager
async def serve(settings: Settings, raise_app_exceptions: bool = True) -> AsyncIterator[Api]:
    """The app with its lifespan running, and a client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            yield Api(app, client)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def api(model_repo: Path, anyio_backend: str) -> AsyncIterator[Api]:
    """One running app per test module (loading and warming the models is the slow part)."""
    async with serve(settings_for(model_repo)) as a:
        yield a


async def hang_up(app: FastAPI, path: str, body: bytes | None) -> int:
    """POST ``body`` straight to the ASGI app from a client that disconnects right after sending it
    (``None``: before sending anything); returns the status the app answered (499 when it noticed)."""
    incoming = [] if body is None else [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    length = str(len(body or b"")).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", length)],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


def png_bytes(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode a uint8 gray (H, W) array."""
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def assert_problem(r: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    """``r`` is an RFC 9457 problem with ``status`` whose detail mentions every needle."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "instance"} <= set(body)
    assert body["type"] == "about:blank" or body["type"].startswith("tag:made-service,2026:problem/"), body
    for needle in needles:
        assert needle in body["detail"], (needle, body["detail"])
    assert "Traceback" not in r.text
    return body
