"""FastAPI dependencies: settings, the model registry, metrics and the optional API key."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, Request

from service.config import Settings

from .errors import ProblemError
from .metrics import ApiMetrics
from .registry import Registry

__all__ = ["MetricsDep", "RegistryDep", "SettingsDep", "require_api_key"]


def get_app_settings(request: Request) -> Settings:
    """The settings the app was built with (not re-read from the environment)."""
    return request.app.state.settings


def get_registry(request: Request) -> Registry:
    return request.app.state.registry


def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]


async def require_api_key(
    settings: SettingsDep,
    x_api_key: Annotated[
        str | None, Header(description="Required when the server sets MADE_API_KEY.")
    ] = None,
) -> None:
    """401 unless ``X-API-Key`` matches ``MADE_API_KEY`` (no check when it is unset)."""
    expected = settings.api_key
    if expected is None:
        return
    if x_api_key is None or not secrets.compare_digest(x_api_key.encode(), expected.encode()):
        raise ProblemError(
            401,
            "missing or wrong X-API-Key header",
            errors=[{"field": "header.X-API-Key", "message": "missing or wrong"}],
            headers={"WWW-Authenticate": 'APIKey header="X-API-Key"'},
        )
