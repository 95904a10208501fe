"""The ``pool`` command and pooled presets (see :mod:`service.training.pooling`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..made import CheckpointError, read_card
from .evaluate import nll_report
from .examples import add_examples_option
from .pooling import export_pool
from .presets import preset

__all__ = ["add_pool_parser", "cmd_pool", "train_pooled"]


def _weights(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--weights wants comma-separated numbers, got {text!r}") from None


def add_pool_parser(sub: Any) -> None:
    p = sub.add_parser(
        "pool", help="pool model folders into one wider MADE (logits weighted, fitted on valid)"
    )
    p.add_argument("sources", nargs="+", help="model folders: single-mask Bernoulli MADEs with one ordering")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--name", help="model name (default: the out folder's name)")
    p.add_argument("--description", default="", help="the card's description")
    p.add_argument("--data", help="data file (default: the sources' cards say)")
    p.add_argument("--weights", type=_weights, help="w1,w2,...: fixed logit weights instead of fitting them")
    p.add_argument("--storage", choices=["float32", "float16"], default="float16")
    p.add_argument("--samples", type=int, default=64)
    add_examples_option(p)
    p.add_argument("--threads", type=int)


def train_pooled(
    args: argparse.Namespace, parts: list[str], train_one: Callable[[argparse.Namespace], int]
) -> int:
    """A pooled preset: train every part preset (flags apply to each), then pool their folders.

    With ``--resume``, a part whose run already finished and was exported is pooled as it is.
    """
    spec = preset(args.preset)
    folders = []
    for part in parts:
        out = Path(preset(part)["out"])
        # each part keeps its own preset's name, description and folders; other flags apply to all
        own = {"preset": part, "out": None, "name": None, "description": None, "run_dir": None}
        sub = argparse.Namespace(**{**vars(args), **own})
        if args.resume and _finished(out):
            print(f"{part}: {out} is finished; pooling it as it is")
        elif (rc := train_one(sub)) != 0:
            return rc
        folders.append(out)
    card = export_pool(
        folders,
        args.out or spec["out"],
        name=args.name or spec["name"],
        description=args.description or spec["description"],
        data_path=args.data,
        storage=spec.get("storage", "float16"),
        samples=args.samples,
        examples=args.examples,
    )
    print(f"wrote {args.out or spec['out']}: weights {card['pooling']['weights']}")
    print(nll_report("test", card["metrics"]["test"]))
    return 0


def _finished(folder: Path) -> bool:
    """Whether the card of an exported run says its training ended (schedule done or stopped early)."""
    try:
        return bool(read_card(folder).get("training", {}).get("finished"))
    except CheckpointError:
        return False


def cmd_pool(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    card = export_pool(
        args.sources,
        args.out,
        name=args.name or Path(args.out).name,
        description=args.description,
        data_path=args.data,
        weights=args.weights,
        storage=args.storage,
        samples=args.samples,
        examples=args.examples,
    )
    print(f"wrote {args.out}: weights {card['pooling']['weights']}")
    print(nll_report("valid", card["metrics"]["valid"]))
    print(nll_report("test", card["metrics"]["test"]))
    return 0
