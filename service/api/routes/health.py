"""Open Inference Protocol health: liveness, readiness and per-model readiness."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from ..deps import RegistryDep
from ..errors import problem_response
from ..schemas import HealthLive, HealthReady, ModelReady, problem_responses

router = APIRouter(prefix="/v2", tags=["health"])


@router.get("/health/live", operation_id="healthLive", summary="The process is up", response_model=HealthLive)
async def live() -> HealthLive:
    return HealthLive(live=True)


@router.get(
    "/health/ready",
    operation_id="healthReady",
    summary="Every model is loaded and its engine runs",
    response_model=HealthReady,
    responses=problem_responses(503),
)
async def ready(request: Request, registry: RegistryDep) -> HealthReady | JSONResponse:
    models = {name: registry.model_ready(name) for name in registry.entries}
    if registry.ready():
        return HealthReady(ready=True, models=models)
    if registry.is_draining():
        reason = "the server is shutting down"
    elif registry.loading:
        reason = "models are still loading"
    elif not models:
        reason = "no model is serving"
    else:
        reason = "some engines are not running"
    return problem_response(
        request,
        503,
        f"not ready: {reason}",
        title="Not Ready",
        ready=False,
        models=models,
        failed=registry.failed,
    )


@router.get(
    "/models/{name}/ready",
    operation_id="modelReady",
    summary="One model is loaded and its engine runs",
    response_model=ModelReady,
    responses=problem_responses(404, 503),
)
async def model_ready(
    name: Annotated[str, Path(examples=["mnist"], description="Model name.")],
    request: Request,
    registry: RegistryDep,
) -> ModelReady | JSONResponse:
    registry.get(name)  # 404 for unknown names
    if registry.model_ready(name):
        return ModelReady(name=name, ready=True)
    return problem_response(request, 503, f"model {name!r} is not running", title="Not Ready", ready=False)
