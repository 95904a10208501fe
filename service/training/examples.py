"""Held-out example images shipped with a model folder: ``examples/*.png``, up to :data:`MAX_EXAMPLES`.

The demo page, the README and ``GET /models/{name}/examples`` complete and score these, so people try a
model on real digits and faces rather than on the model's own samples. They come from the **test**
split recorded in the model's card (never the training data), spread evenly over it (MNIST's test
split is grouped by digit), and are written as 8-bit gray PNGs that decode back to the exact model
values (binary pixels as 0/255, 0..255 gray levels as themselves). The card records which rows they
are and whom to credit for the data (:data:`CREDITS`).

``export`` (and ``train``, ``pool``) write them with the folder; ``python -m service.training examples
MODEL_DIR`` rewrites them for a folder that already exists, and ``--pictures`` also redraws
``samples.png`` and ``completions.png`` from the folder's weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..made import load_model, read_card
from ..made.checkpoint import CARD_FILE
from .data import Dataset, load_dataset

__all__ = [
    "CREDITS",
    "EXAMPLES_DIR",
    "MAX_EXAMPLES",
    "add_examples_option",
    "add_examples_parser",
    "cmd_examples",
    "example_rows",
    "record_examples",
    "to_gray",
    "write_examples",
]

EXAMPLES_DIR = "examples"
MAX_EXAMPLES = 8  # the data's terms allow a handful of held-out images per model folder, not the data set
CREDITS = {
    "binarized_mnist": "MNIST by Y. LeCun and C. Cortes (CC BY-SA 3.0); fixed binarization of "
    "Larochelle & Murray (2011)",
    "olivetti_faces": "Olivetti faces, AT&T Laboratories Cambridge",
    "sklearn_digits_binary": "scikit-learn's bundled copy of the UCI optical recognition of handwritten "
    "digits data set (binarized)",
    "sklearn_digits_gray": "scikit-learn's bundled copy of the UCI optical recognition of handwritten "
    "digits data set",
}


def example_rows(n_test: int, n: int) -> list[int]:
    """``n`` test-split rows spread evenly from the first to the last (distinct, ascending).

    >>> example_rows(20, 8), example_rows(3, 8)
    ([0, 3, 5, 8, 11, 14, 16, 19], [0, 1, 2])
    """
    n = min(n, n_test)
    if n <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, n_test - 1, n).round()})


def to_gray(x: np.ndarray, value_range: tuple[int, int]) -> np.ndarray:
    """Model values ``lo..hi`` -> 8-bit gray, the inverse of the server's upload decoding (a binary
    pixel is 0 or 255, a 0..255 level is itself).

    >>> to_gray(np.array([0.0, 1.0]), (0, 1)).tolist(), to_gray(np.array([7.0, 242.0]), (0, 255)).tolist()
    ([0, 255], [7, 242])
    """
    lo, hi = value_range
    return np.clip(np.rint((x.astype(np.float64) - lo) * (255.0 / max(hi - lo, 1))), 0, 255).astype(np.uint8)


def write_examples(folder: str | Path, data: Dataset, n: int = MAX_EXAMPLES) -> dict[str, Any] | None:
    """Write ``n`` test-split images as ``folder/examples/test-ROW.png``; returns the card's record
    (None when ``n`` is 0). PNGs already there are removed first, so the folder holds exactly these."""
    if not 0 <= n <= MAX_EXAMPLES:
        raise ValueError(f"--examples must be in 0..{MAX_EXAMPLES} (held-out images per model), got {n}")
    out = Path(folder) / EXAMPLES_DIR
    for old in out.glob("*.png"):
        old.unlink()
    rows = example_rows(int(data.test.shape[0]), n)
    if not rows:
        return None
    out.mkdir(parents=True, exist_ok=True)
    width = len(str(int(data.test.shape[0]) - 1))
    files = []
    for row in rows:
        gray = to_gray(data.test[row].cpu().numpy().reshape(data.shape), data.value_range)
        name = f"test-{row:0{width}d}.png"
        Image.fromarray(gray).save(out / name, optimize=True)  # uint8 (H, W): 8-bit gray ("L")
        files.append(name)
    return {
        "folder": EXAMPLES_DIR,
        "split": "test",
        "rows": rows,
        "files": files,
        "encoding": "8-bit gray PNG: model value lo..hi mapped linearly onto 0..255 (binary: 0/255)",
        "credit": CREDITS.get(data.name, data.source.get("path") or data.name),
    }


def record_examples(folder: str | Path, record: dict[str, Any] | None) -> None:
    """Set (or, for None, drop) the card's ``examples`` field, leaving every other field as it is."""
    path = Path(folder) / CARD_FILE
    card = json.loads(path.read_text())
    if record is None:
        card.pop("examples", None)
    else:
        card["examples"] = record
    path.write_text(json.dumps(card, indent=2) + "\n")


def _count(text: str) -> int:
    """``--examples`` is checked when parsed, not after a training run has finished."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= MAX_EXAMPLES:
        raise argparse.ArgumentTypeError(f"wants a whole number 0..{MAX_EXAMPLES}, got {text!r}")
    return n


def add_examples_option(p: argparse.ArgumentParser) -> None:
    """``--examples N`` on the commands that write a model folder (train, export, pool)."""
    p.add_argument(
        "--examples",
        type=_count,
        default=MAX_EXAMPLES,
        help=f"held-out test images written to examples/ (0..{MAX_EXAMPLES}; default {MAX_EXAMPLES})",
    )


def add_examples_parser(sub: Any) -> None:
    p = sub.add_parser(
        "examples",
        help="write a model folder's held-out example PNGs (and with --pictures its sample pictures)",
        description="Rewrite MODEL_DIR/examples/ from the test split the card records (the data file is "
        "found as for eval) and record them in the card. --pictures also redraws samples.png and "
        "completions.png from the folder's weights.",
    )
    p.add_argument("model_dir")
    p.add_argument("--data", help="data file (mnist, faces); default: the file the card names")
    add_examples_option(p)
    p.add_argument("--pictures", action="store_true", help="also redraw samples.png and completions.png")
    p.add_argument("--samples", type=int, default=64, help="samples drawn for samples.png (--pictures)")
    p.add_argument("--seed", type=int, help="seed of the pictures (default: the card's training seed)")
    p.add_argument("--threads", type=int)


def cmd_examples(args: argparse.Namespace) -> int:
    """``python -m service.training examples MODEL_DIR``: see :func:`add_examples_parser`."""
    from .cli import _kind_of, card_data_path  # here: cli imports this module for its parser
    from .export import write_pictures

    if args.threads:
        torch.set_num_threads(args.threads)
    card = read_card(args.model_dir)
    path = args.data or card_data_path(card, args.model_dir)
    data = load_dataset(_kind_of(card), path, valid_keep=card.get("training", {}).get("valid_keep"))
    want = card.get("data", {}).get("sha256")
    if want and data.source.get("sha256") not in (None, want):
        raise ValueError(f"{path} is not the file the model was trained on (sha256 differs)")
    if list(data.shape) != list(card.get("shape", data.shape)):
        raise ValueError(f"data images are {list(data.shape)}, the model's {card['shape']}")
    record = write_examples(args.model_dir, data, args.examples)
    record_examples(args.model_dir, record)
    print(f"{args.model_dir}: {len(record['files']) if record else 0} held-out examples from the test split")
    if args.pictures:
        model, _ = load_model(args.model_dir)
        seed = card.get("training", {}).get("seed", 0) if args.seed is None else args.seed
        write_pictures(model, Path(args.model_dir), data, args.samples, int(seed))
        print(f"{args.model_dir}: samples.png and completions.png redrawn (seed {seed})")
    return 0
