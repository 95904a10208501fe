"""FastAPI dependencies: settings, the model registry, metrics and the optional API key."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, Request

from service.config import Settings

from .errors import ProblemError
from .metrics import ApiMetrics
from .registry import Registry

__all__ = [
    "API_KEY_PARAMETER",
    "MetricsDep",
    "RegistryDep",
    "SettingsDep",
    "check_api_key",
    "require_api_key",
]


# The providers are ``async def`` although they never await: FastAPI runs a plain ``def`` dependency in
# its thread pool, two thread hand-offs per request for an attribute read (measured in bench/http.py).


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with (not re-read from the environment)."""
    return request.app.state.settings


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry


async def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]


def check_api_key(request: Request) -> None:
    """401 unless ``X-API-Key`` matches ``MADE_API_KEY`` (no check when it is unset). The inference
    routes call it directly (no dependency solving per request); the others through
    :func:`require_api_key`."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    given = request.headers.get("x-api-key")
    if given is None or not secrets.compare_digest(given.encode(), expected.encode()):
        raise ProblemError(
            401,
            "missing or wrong X-API-Key header",
            errors=[{"field": "header.X-API-Key", "message": "missing or wrong"}],
            headers={"WWW-Authenticate": 'APIKey header="X-API-Key"'},
        )


API_KEY_PARAMETER = {
    "name": "x-api-key",
    "in": "header",
    "required": False,
    "description": "Required when the server sets MADE_API_KEY.",
    "schema": {"type": "string"},
}


async def require_api_key(
    request: Request,
    x_api_key: Annotated[
        str | None, Header(description="Required when the server sets MADE_API_KEY.")
    ] = None,
) -> None:
    """The dependency form of :func:`check_api_key` (documents the header in OpenAPI)."""
    check_api_key(request)
