"""Held-out likelihoods for model cards and the ``eval`` command: nats per example and bits per dimension,
for a single mask (mask 0, one forward pass) and for the K-mask mixture ``model.log_prob(x)``.

``bits/dim = nats / (D ln 2)``. For 8-bit images the same split is also compressed by lossless codecs
(optimised PNG, lossless WebP, with Pillow), in the same run: bits per pixel a density model has to beat
to be worth its name, since ``-log2 p(x)`` bits is what an arithmetic coder driven by it would spend.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..made import MADE
from .loop import mean_nll

__all__ = ["bits_per_dim", "codec_bits_per_pixel", "nll_report", "split_metrics"]

# Pillow's strongest lossless settings for each codec
_CODECS: dict[str, tuple[str, dict[str, Any]]] = {
    "png": ("PNG", {"optimize": True, "compress_level": 9}),
    "webp_lossless": ("WEBP", {"lossless": True, "quality": 100, "method": 6}),
}


def bits_per_dim(nats: float, data_dim: int) -> float:
    """Convert a per-example NLL in nats to bits per dimension."""
    return nats / (data_dim * math.log(2.0))


def codec_bits_per_pixel(x: torch.Tensor, shape: Sequence[int]) -> dict[str, float]:
    """Bits per pixel that lossless codecs spend on the 8-bit gray images in the rows of ``x`` (each
    image a file of its own, all bytes counted): ``8 * bytes / pixels`` over the whole split.

    >>> flat = torch.zeros(2, 64)
    >>> sorted(codec_bits_per_pixel(flat, (8, 8)))
    ['png', 'webp_lossless']
    """
    images = x.round().clamp(0, 255).to(torch.uint8).numpy().reshape(-1, int(shape[0]), int(shape[1]))
    sizes = dict.fromkeys(_CODECS, 0)
    for pixels in images:
        img = Image.fromarray(np.ascontiguousarray(pixels))
        for name, (fmt, options) in _CODECS.items():
            buf = io.BytesIO()
            img.save(buf, format=fmt, **options)
            sizes[name] += buf.tell()
    return {name: round(8 * size / images.size, 4) for name, size in sizes.items()}


def split_metrics(
    model: MADE, x: torch.Tensor, batch_size: int = 1000, shape: Sequence[int] | None = None
) -> dict[str, Any]:
    """NLL of the rows of ``x`` for mask 0 and for the K-mask ensemble (same numbers when K = 1); with the
    image ``shape`` of 256-level data, also what lossless codecs spend on the same images."""
    d = model.data_dim
    single = mean_nll(model, x, 0, batch_size)
    ens = single if model.num_masks == 1 else mean_nll(model, x, None, batch_size)
    codecs = {}
    if shape is not None and model.dist.n_bins == 256:
        codecs = {"codecs_bits_per_pixel": codec_bits_per_pixel(x, shape)}
    return {
        "n": int(x.shape[0]),
        "nll_nats": round(single, 4),
        "bits_per_dim": round(bits_per_dim(single, d), 5),
        "ensemble_nll_nats": round(ens, 4),
        "ensemble_bits_per_dim": round(bits_per_dim(ens, d), 5),
        "num_masks": model.num_masks,
        **codecs,
    }


def nll_report(name: str, m: dict[str, Any]) -> str:
    """One human-readable block for the ``eval`` command."""
    lines = [
        f"{name} ({m['n']} examples)",
        f"  single mask (mask 0): {m['nll_nats']:.3f} nats  {m['bits_per_dim']:.4f} bits/dim",
        f"  {m['num_masks']}-mask ensemble:   {m['ensemble_nll_nats']:.3f} nats  "
        f"{m['ensemble_bits_per_dim']:.4f} bits/dim",
    ]
    for codec, bits in m.get("codecs_bits_per_pixel", {}).items():
        lines.append(f"  {codec + ' (same images):':<30}{bits:.4f} bits/pixel")
    return "\n".join(lines)
