"""``AsyncMadeClient``: the asyncio twin of :class:`~service.client.MadeClient` (same calls, awaited)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx
import numpy as np

from . import calls
from .calls import Call, FileLike, ImageLike
from .errors import MadeClientError
from .sync import DEFAULT_URL, base_url, client_headers
from .types import Examples, Heatmap, LogProb, ModelInfo, ModelList, Png, Readiness, Samples

__all__ = ["AsyncMadeClient"]

T = TypeVar("T")
log = logging.getLogger("service.client")


class AsyncMadeClient:
    """Async client: one ``httpx.AsyncClient`` shared by concurrent calls; 503 retried as
    ``Retry-After`` says (bounded), other errors raise :class:`ApiError`.

    Example (against a running server, inside a coroutine)::

        async with AsyncMadeClient("http://127.0.0.1:8000") as c:
            s = await c.sample(4, seed=1)
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        max_retry_wait_s: float = 30.0,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_retries < 0 or max_retry_wait_s < 0:
            raise ValueError("max_retries and max_retry_wait_s must be >= 0")
        self.url = base_url(url)
        self.max_retries = max_retries
        self.max_retry_wait_s = max_retry_wait_s
        self.retries = 0  # 503 answers retried so far, over the client's life
        self._http = httpx.AsyncClient(
            base_url=self.url, timeout=timeout, headers=client_headers(api_key, headers), transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncMadeClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            r = await self._http.request(
                call.method, call.path, json=call.json, params=call.params, files=call.files
            )
            if r.status_code != 503 or not call.retry or attempt >= self.max_retries:
                return calls.finish(call, r)
            wait = min(calls.retry_delay(r), self.max_retry_wait_s)
            attempt += 1
            self.retries += 1
            log.info(
                "%s %s: 503, retry %d/%d in %.2f s", call.method, call.path, attempt, self.max_retries, wait
            )
            await asyncio.sleep(wait)

    # --- health and models -----------------------------------------------------------------------
    async def live(self) -> bool:
        return await self._run(calls.live())

    async def ready(self) -> Readiness:
        return await self._run(calls.ready())

    async def model_ready(self, name: str) -> bool:
        return await self._run(calls.model_ready(name))

    async def wait_ready(self, timeout_s: float = 60.0, interval_s: float = 0.25) -> Readiness:
        """Poll readiness until it holds (connection errors count as not yet), or raise after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while True:
            try:
                state = await self.ready()
                if state.ready:
                    return state
                last = state.detail
            except httpx.TransportError as e:
                last = e
            if time.monotonic() >= deadline:
                raise MadeClientError(f"{self.url} not ready within {timeout_s:g} s (last: {last})")
            await asyncio.sleep(interval_s)

    async def models(self) -> ModelList:
        return await self._run(calls.models())

    async def model(self, name: str) -> ModelInfo:
        return await self._run(calls.model(name))

    async def examples(self, name: str) -> Examples:
        """Example images offered for a model (held-out files, or labelled samples of the model)."""
        return await self._run(calls.examples(name))

    async def example(self, name: str, index: int) -> bytes:
        """One example image's PNG bytes (pass them to :meth:`complete` or :meth:`heatmap`)."""
        return await self._run(calls.example(name, index))

    async def metrics(self) -> str:
        return await self._run(calls.metrics())

    # --- inference -------------------------------------------------------------------------------
    async def sample(
        self,
        n: int = 1,
        *,
        model: str | None = None,
        seed: int | None = None,
        temperature: float | None = None,
    ) -> Samples:
        return await self._run(calls.sample(n, model, seed, temperature))

    async def sample_png(
        self,
        n: int = 1,
        *,
        model: str | None = None,
        seed: int | None = None,
        scale: int | None = None,
        temperature: float | None = None,
    ) -> Png:
        return await self._run(calls.sample_png(n, model, seed, scale, temperature))

    async def complete(
        self,
        image: ImageLike | FileLike,
        *,
        n: int = 1,
        model: str | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        known_rows: int | None = None,
        resize: bool = False,
        threshold: int | None = None,
        invert: bool = False,
    ) -> Samples:
        return await self._run(
            calls.complete(
                image,
                n=n,
                model=model,
                seed=seed,
                temperature=temperature,
                known_rows=known_rows,
                resize=resize,
                threshold=threshold,
                invert=invert,
            )
        )

    async def complete_png(
        self,
        image: ImageLike | FileLike,
        *,
        n: int = 1,
        model: str | None = None,
        seed: int | None = None,
        temperature: float | None = None,
        known_rows: int | None = None,
        resize: bool = False,
        threshold: int | None = None,
        invert: bool = False,
        scale: int | None = None,
    ) -> Png:
        return await self._run(
            calls.complete_png(
                image,
                n=n,
                model=model,
                seed=seed,
                temperature=temperature,
                known_rows=known_rows,
                resize=resize,
                threshold=threshold,
                invert=invert,
                scale=scale,
            )
        )

    async def log_prob(
        self,
        inputs: np.ndarray | Sequence[Any],
        *,
        model: str | None = None,
        per_dim: bool = False,
        resize: bool = False,
        threshold: int | None = None,
        invert: bool = False,
    ) -> LogProb:
        return await self._run(
            calls.log_prob(
                inputs, model=model, per_dim=per_dim, resize=resize, threshold=threshold, invert=invert
            )
        )

    async def heatmap(
        self,
        image: ImageLike | FileLike,
        *,
        model: str | None = None,
        resize: bool = False,
        threshold: int | None = None,
        invert: bool = False,
        scale: int | None = None,
    ) -> Heatmap:
        return await self._run(
            calls.heatmap(image, model=model, resize=resize, threshold=threshold, invert=invert, scale=scale)
        )
