"""Pool trained model folders into one wider MADE with weights fitted on validation data.

Each source is a single-mask Bernoulli MADE with the same ordering; the pooled model's logit is
``sum_i w_i a_i`` (:func:`service.made.merge.pool`), with ``w`` fitted on the validation split
(:func:`service.training.calibrate.fit_pool_weights`). Models trained from different seeds make
different errors, so pooling their conditionals scores better than either, in one forward pass.

The weights are fitted on validation rows that no source trained on: every source either folded the
same ``valid_keep`` rows out of the validation split (the fold is seeded identically), or trained on
the standard training split alone. The test split is never looked at until the card's figures.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..made import load_model, save_model
from ..made.merge import pool
from .calibrate import fit_pool_weights
from .data import Dataset, load_dataset
from .examples import MAX_EXAMPLES, write_examples
from .export import held_out_metrics, round_to_storage, write_pictures

__all__ = ["export_pool", "pool_data"]


def pool_data(
    cards: Sequence[dict[str, Any]], data_path: str | None = None
) -> tuple[Dataset, dict[str, Any]]:
    """The data set the sources were trained on, with a validation split none of them trained on.

    Also returns the settings that rebuild it (``dataset``, ``data``, ``valid_keep``) for the card.
    """
    training = [c.get("training", {}) for c in cards]
    kinds = {t.get("dataset") for t in training}
    if len(kinds) != 1 or None in kinds:
        raise ValueError(
            f"the sources were trained on different or unnamed data sets: {sorted(map(str, kinds))}"
        )
    shas = {c.get("data", {}).get("sha256") for c in cards}
    if len(shas) != 1:
        raise ValueError("the sources were trained on different data files (their cards' data.sha256 differ)")
    keeps = {t.get("valid_keep") for t in training} - {None}
    if len(keeps) > 1:
        # different folds would put one source's training rows into the rows the weights are fitted on
        raise ValueError(f"the sources kept different validation folds (valid_keep {sorted(keeps)})")
    settings = {
        "dataset": kinds.pop(),
        "data": data_path or next((t["data"] for t in training if t.get("data")), None),
        "valid_keep": keeps.pop() if keeps else None,
    }
    return load_dataset(settings["dataset"], settings["data"], valid_keep=settings["valid_keep"]), settings


def export_pool(
    sources: Sequence[str | Path],
    out: str | Path,
    name: str,
    description: str,
    data_path: str | None = None,
    weights: Sequence[float] | None = None,
    storage: str = "float16",
    samples: int = 64,
    seed: int = 0,
    examples: int = MAX_EXAMPLES,
) -> dict[str, Any]:
    """Pool the model folders ``sources`` into the folder ``out``; returns its card.

    ``weights`` (default: fitted on the validation split) scale each source's logits.
    """
    loaded = [load_model(s) for s in sources]
    models = [m for m, _ in loaded]
    cards = [c for _, c in loaded]
    data, data_settings = pool_data(cards, data_path)
    if weights is None:
        fitted, record = fit_pool_weights(models, data.valid)
    else:
        fitted, record = list(weights), {"fitted_on": None}
    model = pool(models, fitted)
    dtype = getattr(torch, storage)
    round_to_storage(model, dtype)
    t0 = time.perf_counter()
    metrics = held_out_metrics(model, data)
    eval_s = time.perf_counter() - t0
    card = {
        "name": name,
        "description": description,
        "data": data.card(),
        "shape": list(data.shape),
        "value_range": list(data.value_range),
        "training": {"method": "pooled", **data_settings, "storage": storage},
        "pooling": {
            "weights": [round(w, 6) for w in fitted],
            **record,
            "sources": [
                {
                    "folder": str(src),
                    "name": c.get("name"),
                    "weights_sha256": c["weights"]["sha256"],
                    "hidden": c["config"]["hidden"],
                    "metrics": c.get("metrics"),
                    "calibration": c.get("calibration"),
                    "training": c.get("training"),
                    "wall_time_s": c.get("wall_time_s"),
                    "device": c.get("device"),
                }
                for src, c in zip(sources, cards, strict=True)
            ],
        },
        "wall_time_s": round(sum(float(c.get("wall_time_s") or 0.0) for c in cards), 1),
        "eval_time_s": round(eval_s, 1),
        "device": "; ".join(sorted({str(c.get("device")) for c in cards})),
        "metrics": metrics,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    folder = Path(out)
    record = write_examples(folder, data, examples)  # held-out test images for the demo page
    if record:
        card["examples"] = record
    save_model(folder, model, card, dtype=dtype)
    write_pictures(model, folder, data, samples, seed)
    return card
