"""GET /metrics: Prometheus text exposition."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..deps import MetricsDep
from ..metrics import CONTENT_TYPE_LATEST

router = APIRouter(tags=["observability"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}},
)
async def metrics(m: MetricsDep) -> Response:
    # rendered off the event loop: probes and requests keep being answered during a scrape
    return Response(await run_in_threadpool(m.render), media_type=CONTENT_TYPE_LATEST)
