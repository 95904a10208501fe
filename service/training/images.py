"""PNG grids of samples and completions (Pillow), drawn with the cached sampler."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..made import MADE, draw_uniforms, sample_cached

__all__ = ["completion_rows", "image_grid", "save_completions", "save_samples"]


def image_grid(
    images: np.ndarray, value_max: float, ncols: int, pad: int = 2, scale: int = 1, pad_value: int = 128
) -> Image.Image:
    """Tile ``images`` ``(N, H, W)`` (values ``0..value_max``) into an 8-bit gray grid, ``ncols`` wide."""
    n, h, w = images.shape
    nrows = -(-n // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad), pad_value, dtype=np.uint8)
    pixels = np.clip(np.rint(images.astype(np.float64) * (255.0 / value_max)), 0, 255).astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + h, x : x + w] = pixels[i]
    img = Image.fromarray(grid, mode="L")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


def save_samples(
    model: MADE, path: str | Path, shape: tuple[int, int], value_max: float, n: int = 64, seed: int = 0
) -> Path:
    """Draw ``n`` samples (seeded) with :func:`sample_cached` and save them as a square-ish grid."""
    gen = torch.Generator().manual_seed(seed)
    x = sample_cached(model.eval(), n, generator=gen).x.cpu().numpy()
    ncols = int(np.ceil(np.sqrt(n)))
    scale = max(1, 128 // shape[1])
    img = image_grid(x.reshape(n, *shape), value_max, ncols, scale=scale)
    img.save(path)
    return Path(path)


def completion_rows(
    model: MADE,
    truth: torch.Tensor,
    shape: tuple[int, int],
    n_per: int = 3,
    seed: int = 0,
    temperatures: Sequence[float] = (1.0,),
) -> np.ndarray:
    """Rows of ``[truth, top half only, n_per completions per temperature]`` per image: the bottom half
    of each image is drawn given its top ``H/2`` rows (``n_known = H/2 * W`` positions of the raster
    order), at each of ``temperatures`` in turn, from the same uniforms."""
    h, w = shape
    n_known = (h // 2) * w
    known = truth.repeat_interleave(n_per, dim=0)
    u = draw_uniforms(known.shape[0], h * w, torch.Generator().manual_seed(seed))
    done = [
        sample_cached(model.eval(), uniforms=u, known=known, n_known=n_known, temperature=t).x.cpu()
        for t in temperatures
    ]
    drawn = torch.cat([x.view(truth.shape[0], n_per, -1) for x in done], dim=1)
    top = truth.clone()
    top[:, n_known:] = float("nan")
    rows = [torch.cat([truth[:, None], top[:, None], drawn], dim=1)]
    return torch.cat(rows).reshape(-1, h, w).numpy()


def save_completions(
    model: MADE,
    truth: torch.Tensor,
    path: str | Path,
    shape: tuple[int, int],
    value_max: float,
    n_per: int = 3,
    seed: int = 0,
    temperatures: Sequence[float] = (1.0,),
) -> Path:
    """Save a grid: per held-out image, the truth, its top half (bottom gray), and completions at each
    temperature side by side."""
    tiles = completion_rows(model, truth.cpu(), shape, n_per, seed, temperatures)
    tiles = np.where(np.isnan(tiles), value_max / 2, tiles)
    scale = max(1, 64 // shape[1])
    img = image_grid(tiles, value_max, ncols=2 + n_per * len(temperatures), scale=scale)
    img.save(path)
    return Path(path)
