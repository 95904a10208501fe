"""Reliability tests reuse the API tests' tiny model repository, app fixture and helpers."""

from __future__ import annotations

from tests.api.conftest import anyio_backend, api, model_repo

__all__ = ["anyio_backend", "api", "model_repo"]
