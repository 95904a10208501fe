"""The application factory: settings -> FastAPI app whose lifespan loads every model and runs its engine.

``uvicorn --factory service.api.app:create_app`` (or ``python -m service serve``) builds it from the
environment; tests pass their own :class:`Settings`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.config import Settings, get_settings
from service.memory import freeze_startup, thaw

from . import offload
from .access import AccessLog
from .deps import require_api_key
from .direct import DirectApp, direct_routes
from .errors import install_error_handlers
from .limits import BodyLimitMiddleware
from .metrics import ApiMetrics
from .middleware import ServingMiddleware
from .openapi import install_docs, install_openapi_fixups, operation_id
from .pacing import RefusalPacer
from .registry import Registry
from .routes import complete, health, logprob, models, sample, web
from .routes import metrics as metrics_route

__all__ = ["create_app"]

log = logging.getLogger("service.api")

DESCRIPTION = """
Exact likelihoods, samples and completions from MADE models (Germain et al. 2015).

* Values: 0/1 for binary models, integers 0..255 for 8-bit models; images are H x W nested lists
  (rows) or flat vectors in raster order. Uploads (PNG, JPEG, BMP, GIF, WebP) are converted to gray;
  for binary models a pixel is 1 where gray >= `threshold` (default MADE_BINARIZE_THRESHOLD = 128).
* Reproducible: the same model, request and `seed` give the same result; the server returns the seed
  it picked when none is sent.
* Errors are RFC 9457 `application/problem+json`; 503 carries Retry-After.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; models load when its lifespan starts and engines stop when it ends."""
    settings = settings or get_settings()
    metrics = ApiMetrics()
    access = AccessLog()
    registry = Registry(settings, metrics)
    offload.configure(settings.cpu_workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await registry.start()
        log.info("serving %d model(s): %s", len(registry.entries), ", ".join(registry.entries) or "none")
        if settings.gc_freeze:
            log.info("froze %d start-up objects out of the garbage collector", freeze_startup())
        try:
            yield
        finally:
            if settings.gc_freeze:
                thaw()
            await registry.stop()
            access.flush()  # lines of the last turn, should the loop stop before running them
            metrics.close()

    app = DirectApp(
        title="MADE inference service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,  # a redirect's Location would be built from the client's Host header
        docs_url=None,  # /docs and /redoc come from install_docs: their files served here, not from a CDN
        redoc_url=None,
        generate_unique_id_function=operation_id,  # listModels, not list_models_models_get
        telemetry=None if settings.otel_telemetry else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.pacer = RefusalPacer(settings.refusal_pacing_max_ms / 1000.0)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=[
                "X-Seed",
                "X-Model",
                "X-Known-Rows",
                "X-Temperature",
                "X-Log-Prob",
                "X-Bits-Per-Dim",
                "X-Heatmap-Max-Nats",
                "X-Request-ID",
                "Retry-After",
            ],
        )
    # outermost: request id, access log, metrics (refused requests too), last-resort 500
    app.add_middleware(ServingMiddleware, metrics=metrics, access=access)
    # Every route but the health probes (and the docs) needs the API key when one is set: the inference
    # routes check it themselves (no dependency solving on the hot path), the others as a dependency.
    inference = (logprob.router, sample.router, complete.router)
    for r in inference:
        app.include_router(r)  # their APIRoutes document them (OpenAPI) ...
    # ... and plain routes in front dispatch them, past FastAPI's per-route layers (service.api.direct)
    app.direct = [route for r in inference for route in direct_routes(r)]
    app.router.routes[:0] = app.direct
    guarded = [Depends(require_api_key)]
    for r in (models.router, metrics_route.router):
        app.include_router(r, dependencies=guarded)
    app.include_router(health.router)
    app.include_router(web.router)  # the demo page at / (and its examples, behind the API key)
    install_openapi_fixups(app)  # errors documented as problem+json, 401 where the key is required
    install_docs(app)  # /docs and /redoc, working without internet

    return app
