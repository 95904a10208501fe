"""Command line: ``python -m service.training {train,export,pool,eval} ...``.

``train`` resolves a preset plus flags into settings, trains (resumable), and exports the best weights
as a model folder (a pooled preset trains each part, then pools them); ``export`` re-exports a run
directory (also while it is still training); ``pool`` pools model folders into one wider MADE with
weights fitted on validation data; ``eval`` prints held-out NLL of a model folder in nats and
bits/dim, single mask and K-mask ensemble.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..made import MADE, CheckpointError, load_model
from .cli_pool import add_pool_parser, cmd_pool, train_pooled
from .data import DATASETS, load_dataset, pixel_entropy
from .evaluate import nll_report, split_metrics
from .examples import add_examples_option, add_examples_parser, cmd_examples
from .export import device_description, export_run, read_run, write_run
from .loop import train
from .options import OPTIONS, add_option_flags, made_config, option_defaults, train_config
from .presets import PRESETS, preset

__all__ = ["main"]


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a MADE and export the best weights as a model folder")
    p.add_argument("--preset", choices=sorted(PRESETS), default="mnist")
    p.add_argument("--run-dir", help="where the resume state and run.json go (default runs/NAME)")
    add_option_flags(p)
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/train.state.pt")
    p.add_argument("--samples", type=int, default=64, help="samples drawn for samples.png")
    add_examples_option(p)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (epoch lines still print)")


def _add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="write the best weights of a run directory as a model folder")
    p.add_argument("run_dir")
    p.add_argument("--out", help="model folder (default: the run's)")
    p.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fit a logit temperature on the validation split (default: the run's setting)",
    )
    p.add_argument("--samples", type=int, default=64)
    add_examples_option(p)
    p.add_argument("--threads", type=int)


def _add_eval(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="held-out NLL of a model folder (nats and bits/dim)",
        description="The card names the data set, its file and the split the model was trained with. "
        "The file is looked for as the card records it (from the working directory, then from the "
        "repository holding the model folder), then by name in MADE_DATA_DIR and ../shared/data.",
    )
    p.add_argument("model_dir")
    p.add_argument(
        "--data", help="data file (mnist, faces); default: the file the card names, found as described above"
    )
    p.add_argument("--split", choices=["train", "valid", "test"], default="test")
    p.add_argument("--limit", type=int, help="first N examples of the split only")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Option defaults, overridden by the preset, overridden by every flag that was given."""
    settings = {**option_defaults(), **preset(args.preset)}
    for o in OPTIONS:
        value = getattr(args, o.name, None)
        if value is not None:
            settings[o.name] = value
    settings["preset"] = args.preset
    return settings


def entropy_degree_weights(model: MADE, train_x: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """Weight of hidden degree ``m`` (``1..D-1``): the entropy of the ``m``-th input in the ordering,
    the one a degree-``m`` unit is first to see, plus ``floor`` times the largest so none is zero."""
    if not model.shares_ordering():
        raise ValueError("--degrees entropy needs one ordering shared by every mask")
    h = pixel_entropy(train_x)[model.ordering(0)[:-1]]
    return h + floor * float(h.max())


def cmd_train(args: argparse.Namespace) -> int:
    parts = PRESETS[args.preset].get("pool")
    if parts:
        return train_pooled(args, parts, cmd_train)
    settings = resolve_settings(args)
    if settings["threads"]:
        torch.set_num_threads(int(settings["threads"]))
    run_dir = Path(args.run_dir or f"runs/{settings['name']}")
    data = load_dataset(settings["dataset"], settings.get("data"), valid_keep=settings["valid_keep"])
    torch.manual_seed(int(settings["seed"]))
    config = made_config(settings, data.data_dim, data.distribution, data.shape)
    if settings["calibrate"] and (config.distribution["type"] != "bernoulli" or config.num_masks != 1):
        raise ValueError("--calibrate needs binary data (Bernoulli outputs) and a single mask")
    model = MADE(config)
    if settings["degrees"] == "entropy":
        model.redraw_hidden_degrees(entropy_degree_weights(model, data.train))
    settings["parameters"] = sum(p.numel() for p in model.parameters())
    settings["device_description"] = device_description(settings["device"], settings["threads"])
    settings["changed_on_resume"] = []
    if args.resume and (run_dir / "run.json").is_file():
        old = read_run(run_dir)
        settings["device_description"] = old.get("device_description", settings["device_description"])
        # a resumed run may change settings (say, less dropout for the last epochs): keep the record
        changed = {
            k: [old[k], v]
            for k, v in settings.items()
            if k in old and old[k] != v and k not in ("device_description", "changed_on_resume")
        }
        settings["changed_on_resume"] = [*old.get("changed_on_resume", []), *([changed] if changed else [])]
    write_run(run_dir, settings)
    tcfg = train_config(settings, data.shape)
    print(
        f"training {settings['name']}: {settings['parameters']:,} parameters, {config.to_dict()}", flush=True
    )
    result = train(
        model, data.train, data.valid, tcfg, run_dir, resume=args.resume, progress=not args.no_progress
    )
    print(f"best valid NLL {result.best_valid_nll:.3f} at epoch {result.best_epoch} of {result.epochs_run}")
    seed = int(settings["seed"])
    card = export_run(run_dir, settings["out"], data, args.samples, seed, examples=args.examples)
    print(f"wrote {settings['out']}")
    print(nll_report("test", card["metrics"]["test"]))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    card = export_run(
        args.run_dir, args.out, samples=args.samples, calibrate=args.calibrate, examples=args.examples
    )
    print(nll_report("valid", card["metrics"]["valid"]))
    print(nll_report("test", card["metrics"]["test"]))
    return 0


def _kind_of(card: dict[str, Any]) -> str:
    training = card.get("training", {})
    if training.get("dataset") in DATASETS:
        return str(training["dataset"])
    name = card.get("data", {}).get("name", "")
    kinds = {
        "binarized_mnist": "mnist",
        "olivetti_faces": "faces",
        "sklearn_digits_binary": "digits",
        "sklearn_digits_gray": "digits-gray",
    }
    if name not in kinds:
        raise ValueError(
            f"the card does not say which data set the model was trained on (data.name={name!r})"
        )
    return kinds[name]


def card_data_path(card: dict[str, Any], model_dir: str | Path) -> Path | None:
    """The data file a card was trained on, if it is on this machine (None for bundled data sets).

    Looked for as the card records it (``training.data``, from the working directory, then from the
    repository holding the model folder, ``MODEL_DIR/../..``), then by file name (``data.path``) in
    ``$MADE_DATA_DIR`` and in ``../shared/data`` beside those two.
    """
    if _kind_of(card) not in ("mnist", "faces"):
        return None
    recorded = card.get("training", {}).get("data")
    name = card.get("data", {}).get("path") or (Path(recorded).name if recorded else None)
    roots = [Path.cwd(), Path(model_dir).resolve().parent.parent]
    candidates = [root / recorded for root in roots] if recorded else []
    if name:
        dirs = [Path(d) for d in [os.environ.get("MADE_DATA_DIR")] if d]
        dirs += [root / ".." / "shared" / "data" for root in roots]
        candidates += [d / name for d in dirs]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise FileNotFoundError(
            f"{model_dir}: the card's data file {name or recorded!r} is not on this machine "
            f"(looked in: {', '.join(sorted({str(c.parent) for c in candidates}))}); give --data PATH"
        )
    return found


def cmd_eval(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    model, card = load_model(args.model_dir, device=args.device)
    kind = _kind_of(card)
    path = args.data or card_data_path(card, args.model_dir)
    data = load_dataset(kind, path, valid_keep=card.get("training", {}).get("valid_keep"))
    want = card.get("data", {}).get("sha256")
    if want and data.source.get("sha256") not in (None, want):
        print(f"warning: {path} is not the file the model was trained on (sha256 differs)", file=sys.stderr)
    if data.data_dim != model.data_dim:
        raise ValueError(f"data has {data.data_dim} dimensions, the model {model.data_dim}")
    x = data.split(args.split)
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError("--limit must be >= 1")
        x = x[: args.limit]
    metrics = split_metrics(model, x, args.batch_size, shape=data.shape)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{args.model_dir}: {card.get('name', '?')} on {data.name}")
        print(nll_report(args.split, metrics))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m service.training``."""
    parser = argparse.ArgumentParser(prog="python -m service.training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_export(sub)
    add_pool_parser(sub)
    _add_eval(sub)
    add_examples_parser(sub)
    args = parser.parse_args(argv)
    commands = {"train": cmd_train, "export": cmd_export, "pool": cmd_pool, "eval": cmd_eval}
    commands["examples"] = cmd_examples
    try:
        return commands[args.command](args)
    except (FileNotFoundError, ValueError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
