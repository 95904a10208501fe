"""Turning engine outputs into responses: JSON image lists or PNG grids, with the seed in a header."""

from __future__ import annotations

import secrets

import numpy as np
from fastapi.responses import Response

from . import codecs
from .registry import ModelEntry
from .schemas import Format, SampleResponse

__all__ = ["new_seed", "sample_response"]


def new_seed() -> int:
    """A fresh seed below 2**53, so JavaScript clients can send it back unchanged."""
    return secrets.randbelow(2**53)


def _as_images(x: np.ndarray, entry: ModelEntry) -> np.ndarray:
    n = x.shape[0]
    return np.rint(x).astype(np.int64).reshape((n, *entry.shape) if entry.shape else (n, entry.data_dim))


def sample_response(
    entry: ModelEntry,
    x: np.ndarray,
    log_prob: np.ndarray,
    seed: int,
    fmt: Format,
    *,
    known: np.ndarray | None = None,
    known_rows: int | None = None,
) -> Response | SampleResponse:
    """``x`` ``(n, D)`` model values; with ``known`` (``(D,)``, a completion's input) the PNG puts the
    input first, beside its completions."""
    if fmt == "png":
        h, w = entry.grid_shape
        images = x.reshape(-1, h, w)
        columns = None
        if known is not None:
            images = np.concatenate([known.reshape(1, h, w), images])
            columns = images.shape[0]
        png = codecs.encode_grid(
            images, entry.value_range, columns=columns, gap_after_first=known is not None
        )
        headers = {"X-Seed": str(seed), "X-Model": entry.name}
        if known_rows is not None:
            headers["X-Known-Rows"] = str(known_rows)
        return Response(png, media_type="image/png", headers=headers)
    return SampleResponse(
        model=entry.name,
        seed=seed,
        images=_as_images(x, entry).tolist(),
        log_prob=np.asarray(log_prob, dtype=np.float64).tolist(),
        known_rows=known_rows,
    )
