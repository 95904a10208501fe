"""Tiny float64 models with non-trivial random weights (fresh MADEs have zero direct weights)."""

from __future__ import annotations

import torch

from service.made import MADE, MADEConfig

BERN = {"type": "bernoulli"}
LOGI = {"type": "discretized_logistic", "n_bins": 256, "n_components": 2}


def make_model(seed: int = 0, **kw: object) -> MADE:
    """A float64 MADE whose every weight (direct ones included) is random and non-zero."""
    cfg = MADEConfig(**{"data_dim": 8, "hidden": (16,), **kw})  # type: ignore[arg-type]
    torch.manual_seed(seed)
    model = MADE(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.7)
    return model.eval()
