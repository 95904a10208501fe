"""HTTP API (FastAPI) over the engine: /log-prob, /sample, /complete, /models, health and metrics."""

from .app import create_app

__all__ = ["create_app"]
