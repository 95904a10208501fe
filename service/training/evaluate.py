"""Held-out likelihoods for model cards and the ``eval`` command: nats per example and bits per dimension,
for a single mask (mask 0, one forward pass) and for the K-mask mixture ``model.log_prob(x)``.

``bits/dim = nats / (D ln 2)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..made import MADE
from .loop import mean_nll

__all__ = ["bits_per_dim", "nll_report", "split_metrics"]


def bits_per_dim(nats: float, data_dim: int) -> float:
    """Convert a per-example NLL in nats to bits per dimension."""
    return nats / (data_dim * math.log(2.0))


def split_metrics(model: MADE, x: torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """NLL of the rows of ``x`` for mask 0 and for the K-mask ensemble (same numbers when K = 1)."""
    d = model.data_dim
    single = mean_nll(model, x, 0, batch_size)
    ens = single if model.num_masks == 1 else mean_nll(model, x, None, batch_size)
    return {
        "n": int(x.shape[0]),
        "nll_nats": round(single, 4),
        "bits_per_dim": round(bits_per_dim(single, d), 5),
        "ensemble_nll_nats": round(ens, 4),
        "ensemble_bits_per_dim": round(bits_per_dim(ens, d), 5),
        "num_masks": model.num_masks,
    }


def nll_report(name: str, m: dict[str, Any]) -> str:
    """One human-readable block for the ``eval`` command."""
    return (
        f"{name} ({m['n']} examples)\n"
        f"  single mask (mask 0): {m['nll_nats']:.3f} nats  {m['bits_per_dim']:.4f} bits/dim\n"
        f"  {m['num_masks']}-mask ensemble:   {m['ensemble_nll_nats']:.3f} nats  "
        f"{m['ensemble_bits_per_dim']:.4f} bits/dim"
    )
