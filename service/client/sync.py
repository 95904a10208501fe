"""``MadeClient``: a blocking client for every endpoint of the MADE service (httpx)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TypeVar

import httpx
import numpy as np

from . import calls
from .calls import Call, FileLike, ImageLike
from .errors import MadeClientError
from .types import Examples, Heatmap, LogProb, ModelInfo, ModelList, Png, Readiness, Samples

__all__ = ["DEFAULT_URL", "MadeClient", "base_url", "client_headers"]

T = TypeVar("T")
log = logging.getLogger("service.client")

DEFAULT_URL = "http://127.0.0.1:8000"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def base_url(url: str) -> str:
    """The server's base URL: ``host:port`` (no scheme) means ``http://host:port``; no trailing slash.

    >>> base_url("localhost:8000"), base_url("https://made.example/api/")
    ('http://localhost:8000', 'https://made.example/api')
    """
    url = url.strip()
    if not url:
        raise ValueError("empty server URL: give host:port or http://host:port")
    m = _SCHEME.match(url)
    if m is None:
        url = f"http://{url}"
    elif m.group(1).lower() not in ("http", "https"):
        raise ValueError(f"{url}: the server URL must be http:// or https:// (or plain host:port)")
    return url.rstrip("/")


def client_headers(api_key: str | None, headers: dict[str, str] | None) -> dict[str, str]:
    """Request headers: ``X-API-Key`` when a key is given, plus any extra ones."""
    out = {"User-Agent": "made-client/0.1"}
    if api_key:
        out["X-API-Key"] = api_key
    out.update(headers or {})
    return out


class MadeClient:
    """Blocking client. A 503 is retried after the ``Retry-After`` it carries (at most ``max_retries``
    times, each wait capped at ``max_retry_wait_s``); other errors raise :class:`ApiError` at once.

    Example (against a running server)::

        with MadeClient("http://127.0.0.1:8000") as c:
            c.sample_png(16, model="mnist", seed=1).save("grid.png")
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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_retries < 0 or max_retry_wait_s < 0:
            raise ValueError("max_retries and max_retry_wait_s must be >= 0")
        self.url = base_url(url)
        self.max_retries = max_retries
        self.max_retry_wait_s = max_retry_wait_s
        self.retries = 0  # 503 answers retried so far, over the client's life
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout, headers=client_headers(api_key, headers), transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MadeClient:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            r = self._http.request(
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
            time.sleep(wait)

    # --- health and models -----------------------------------------------------------------------
    def live(self) -> bool:
        """The process answers (``GET /v2/health/live``)."""
        return self._run(calls.live())

    def ready(self) -> Readiness:
        """Whether every model is loaded and running (a 503 here is an answer, not an error)."""
        return self._run(calls.ready())

    def model_ready(self, name: str) -> bool:
        return self._run(calls.model_ready(name))

    def wait_ready(self, timeout_s: float = 60.0, interval_s: float = 0.25) -> Readiness:
        """Poll readiness until it holds (connection errors count as not yet), or raise after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while True:
            try:
                state = self.ready()
                if state.ready:
                    return state
                last = state.detail
            except httpx.TransportError as e:
                last = e
            if time.monotonic() >= deadline:
                raise MadeClientError(f"{self.url} not ready within {timeout_s:g} s (last: {last})")
            time.sleep(interval_s)

    def models(self) -> ModelList:
        return self._run(calls.models())

    def model(self, name: str) -> ModelInfo:
        return self._run(calls.model(name))

    def examples(self, name: str) -> Examples:
        """Example images offered for a model (held-out files, or labelled samples of the model)."""
        return self._run(calls.examples(name))

    def example(self, name: str, index: int) -> bytes:
        """One example image's PNG bytes (pass them to :meth:`complete` or :meth:`heatmap`)."""
        return self._run(calls.example(name, index))

    def metrics(self) -> str:
        """Prometheus text exposition of ``GET /metrics``."""
        return self._run(calls.metrics())

    # --- inference -------------------------------------------------------------------------------
    def sample(
        self,
        n: int = 1,
        *,
        model: str | None = None,
        seed: int | None = None,
        temperature: float | None = None,
    ) -> Samples:
        """``n`` fresh samples; the same model, ``n``, ``seed`` and ``temperature`` give the same images.
        ``temperature`` (the server's default is 1): below 1 sharper, above 1 more varied, 0 the most
        probable value of each pixel whatever the seed; ``log_prob`` is the model's own either way."""
        return self._run(calls.sample(n, model, seed, temperature))

    def sample_png(
        self,
        n: int = 1,
        *,
        model: str | None = None,
        seed: int | None = None,
        scale: int | None = None,
        temperature: float | None = None,
    ) -> Png:
        """``n`` samples tiled into one PNG grid; ``scale`` draws each pixel as a ``scale x scale``
        block (the server's default is 1); ``temperature`` as in :meth:`sample`."""
        return self._run(calls.sample_png(n, model, seed, scale, temperature))

    def complete(
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
        """``n`` completions of one image (array of model values, or an image file): its top
        ``known_rows`` rows (default: half) are kept and the rest drawn at ``temperature`` (as in
        :meth:`sample`)."""
        return self._run(
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

    def complete_png(
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
        """Like :meth:`complete`, as one PNG: the input, then its ``n`` completions."""
        return self._run(
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

    def log_prob(
        self,
        inputs: np.ndarray | Sequence[Any],
        *,
        model: str | None = None,
        per_dim: bool = False,
        resize: bool = False,
        threshold: int | None = None,
        invert: bool = False,
    ) -> LogProb:
        """Exact log-likelihoods of a batch: arrays of model values (JSON) or image files (upload)."""
        return self._run(
            calls.log_prob(
                inputs, model=model, per_dim=per_dim, resize=resize, threshold=threshold, invert=invert
            )
        )

    def heatmap(
        self,
        image: ImageLike | FileLike,
        *,
        model: str | None = None,
        resize: bool = False,
        threshold: int | None = None,
        invert: bool = False,
        scale: int | None = None,
    ) -> Heatmap:
        r"""PNG heat map of one image's per-pixel surprise :math:`-\log p(x_d \mid x_{<d})`."""
        return self._run(
            calls.heatmap(image, model=model, resize=resize, threshold=threshold, invert=invert, scale=scale)
        )
