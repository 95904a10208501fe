"""Client-side pictures (Pillow): tile samples into one grid image, with the service's look (model
levels ``[lo, hi]`` mapped linearly onto gray 0..255, 2-pixel mid-gray gaps)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["save_grid", "tile"]

_PAD = 2
_PAD_LEVEL = 128


def tile(
    images: np.ndarray | Sequence[np.ndarray],
    value_range: Sequence[int],
    columns: int | None = None,
    scale: int = 1,
) -> Image.Image:
    """``(n, H, W)`` (or ``(n, D)``, drawn as one-row images) model values -> one gray grid image,
    ``columns`` wide (about square by default), each pixel drawn as a ``scale x scale`` block.

    >>> tile(np.ones((4, 2, 3)), (0, 1)).size
    (12, 10)
    >>> tile(np.ones((4, 2, 3)), (0, 1), scale=3).size
    (36, 30)
    """
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[:, None, :]
    if arr.ndim != 3 or arr.shape[0] < 1:
        raise ValueError(f"images must have shape (n, H, W) or (n, D) with n >= 1, got {arr.shape}")
    n, h, w = arr.shape
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    lo, hi = value_range
    pixels = np.clip(np.rint((arr - lo) * (255.0 / max(hi - lo, 1))), 0, 255).astype(np.uint8)
    canvas = np.full((rows * (h + _PAD) + _PAD, cols * (w + _PAD) + _PAD), _PAD_LEVEL, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = _PAD + r * (h + _PAD), _PAD + c * (w + _PAD)
        canvas[y : y + h, x : x + w] = pixels[i]
    img = Image.fromarray(canvas)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


def save_grid(
    path: str | Path,
    images: np.ndarray | Sequence[np.ndarray],
    value_range: Sequence[int],
    columns: int | None = None,
    scale: int = 1,
) -> Path:
    """Tile ``images`` and write the grid (format from the file name's suffix, PNG by default)."""
    p = Path(path)
    tile(images, value_range, columns, scale).save(p, format=None if p.suffix else "PNG")
    return p
