"""Turning engine outputs into responses: JSON image lists or PNG grids, with the seed in a header."""

from __future__ import annotations

import functools
import secrets
from typing import Any

import numpy as np
import orjson
from fastapi.responses import Response

from . import codecs
from .errors import invalid
from .offload import run_cpu
from .registry import ModelEntry
from .schemas import Format

__all__ = ["check_scale", "json_response", "new_seed", "sample_response"]


def new_seed() -> int:
    """A fresh seed below 2**53, so JavaScript clients can send it back unchanged."""
    return secrets.randbits(53)  # one read of the OS generator (randbelow may take several)


def check_scale(scale: int, fmt: Format, field: str) -> None:
    """422 naming ``field`` for a ``scale`` other than 1 on a JSON answer (it would be ignored); its
    bounds are the request schema's. Checked before any engine work."""
    if scale != 1 and fmt != "png":
        raise invalid(field, "enlarges PNG answers only; send format=png (or leave scale out)", scale)


def json_response(content: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """A JSON answer encoded once by orjson, numpy arrays included (no per-element Python objects, no
    second validation through the route's response model, which only documents the shape)."""
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, media_type="application/json", headers=headers)


def _as_images(x: np.ndarray, entry: ModelEntry) -> np.ndarray:
    n = x.shape[0]
    shape = (n, *entry.shape) if entry.shape else (n, entry.data_dim)
    return np.ascontiguousarray(np.rint(x).astype(np.int64).reshape(shape))


async def sample_response(
    entry: ModelEntry,
    x: np.ndarray,
    log_prob: np.ndarray,
    seed: int,
    fmt: Format,
    *,
    known: np.ndarray | None = None,
    known_rows: int | None = None,
    scale: int = 1,
    temperature: float = 1.0,
) -> Response:
    """``x`` ``(n, D)`` model values; with ``known`` (``(D,)``, a completion's input) the PNG puts the
    input first, beside its completions, each pixel drawn ``scale x scale``. The seed and temperature
    go back with the images (JSON fields, or ``X-Seed`` and ``X-Temperature``), which reproduce them."""
    if fmt == "png":
        h, w = entry.grid_shape
        images = x.reshape(-1, h, w)
        columns = None
        if known is not None:
            images = np.concatenate([known.reshape(1, h, w), images])
            columns = images.shape[0]
        png = await run_cpu(
            functools.partial(
                codecs.encode_grid,
                images,
                entry.value_range,
                columns=columns,
                gap_after_first=known is not None,
                scale=scale,
            )
        )
        headers = {"X-Seed": str(seed), "X-Model": entry.name, "X-Temperature": repr(float(temperature))}
        if known_rows is not None:
            headers["X-Known-Rows"] = str(known_rows)
        return Response(png, media_type="image/png", headers=headers)
    return json_response(
        {
            "model": entry.name,
            "seed": seed,
            "images": _as_images(x, entry),
            "log_prob": np.ascontiguousarray(log_prob, dtype=np.float64),
            "known_rows": known_rows,
            "temperature": float(temperature),
        }
    )
