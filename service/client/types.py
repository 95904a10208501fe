"""What the client returns: typed views of the service's JSON bodies and of its PNG answers.

JSON bodies are pydantic models that ignore fields they do not know, so an older client keeps
working against a newer server. PNG answers carry their metadata from the response headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Examples",
    "Heatmap",
    "LogProb",
    "ModelInfo",
    "ModelList",
    "Png",
    "Readiness",
    "Samples",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ModelInfo(_Body):
    """One served model's card: shape ``[H, W]`` (or None), value range ``[lo, hi]``, ordering, metrics."""

    name: str
    description: str | None = None
    shape: list[int] | None = None
    data_dim: int
    value_range: list[int]
    binary: bool
    device: str
    ready: bool
    architecture: dict[str, Any] = Field(default_factory=dict)
    ordering: dict[str, Any] = Field(default_factory=dict)
    completion: dict[str, Any] = Field(default_factory=dict)
    data: Any = None
    metrics: Any = None
    card: dict[str, Any] = Field(default_factory=dict)

    @property
    def can_complete(self) -> bool:
        """Whether ``/complete`` works for this model (image shape and a raster-prefix ordering)."""
        return bool(self.completion.get("supported"))


class ModelList(_Body):
    default_model: str
    models: list[ModelInfo]
    failed: dict[str, str] = Field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]


class Examples(_Body):
    """``GET /models/{name}/examples``: images to try the model on. ``source`` is ``held-out`` (files the
    model ships) or ``model sample`` (drawn from the model itself: not data)."""

    model: str
    source: str
    examples: list[dict[str, str]] = Field(description="``{name, url}`` per image, in order.")


class Readiness(_Body):
    """``GET /v2/health/ready``: ready only when every model is loaded and its engine runs."""

    ready: bool
    models: dict[str, bool] = Field(default_factory=dict)
    detail: str | None = None


class Samples(_Body):
    """Samples or completions: ``n`` images (``H x W`` lists, or flat vectors) and their exact
    :math:`\\log p(x)` in nats; ``seed`` and ``temperature`` reproduce them."""

    model: str
    seed: int
    images: list[Any]
    log_prob: list[float]
    known_rows: int | None = None
    temperature: float = 1.0

    def array(self) -> np.ndarray:
        """The images as an ``(n, H, W)`` (or ``(n, D)``) int64 array."""
        return np.asarray(self.images, dtype=np.int64)


class LogProb(_Body):
    """Exact :math:`\\log p(x)` (nats) per input; ``bits_per_dim = -log p(x) / (D ln 2)``."""

    model: str
    log_prob: list[float]
    bits_per_dim: list[float]
    log_prob_per_dim: list[list[float]] | None = None


@dataclass(frozen=True)
class Png:
    """A PNG answer (sample grid, or an input beside its completions) with its header metadata."""

    content: bytes
    model: str | None
    seed: int | None
    known_rows: int | None = None
    temperature: float | None = None

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_bytes(self.content)
        return p


@dataclass(frozen=True)
class Heatmap:
    """Per-pixel surprise :math:`-\\log p(x_d \\mid x_{<d})` as a PNG: black is 0 nats, brightest is
    ``max_nats``; ``log_prob`` and ``bits_per_dim`` are the whole image's."""

    content: bytes
    model: str | None
    log_prob: float
    bits_per_dim: float
    max_nats: float

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_bytes(self.content)
        return p
