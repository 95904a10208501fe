"""An :class:`AsyncMadeClient` wired to an in-process app: no server, no socket, but the very same code
path (validation, engine, encoders) as over HTTP, so a seed gives the same images either way.

The service modules are imported only when this is used; the HTTP client itself needs none of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from .aio import AsyncMadeClient

__all__ = ["local_client"]


@asynccontextmanager
async def local_client(
    model_dir: str | Path | None = None, *, timeout: float = 600.0, **settings: Any
) -> AsyncIterator[AsyncMadeClient]:
    """Load every model under ``model_dir`` (default ``MADE_MODEL_DIR``), start their engines and
    yield a client that calls the app directly; everything stops on exit.

    ``settings`` override ``MADE_*`` fields (e.g. ``verify_on_load=False``, ``device="cpu"``).
    """
    from service.api import create_app
    from service.config import Settings

    if model_dir is not None:
        settings["model_dir"] = Path(model_dir)
    settings.setdefault("api_key", None)  # nothing crosses a network: MADE_API_KEY guards servers only
    app = create_app(Settings(**settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AsyncMadeClient("http://in-process", timeout=timeout, transport=transport) as client:
            yield client
