"""Every training option, defined once: its flag, default and help, and where it goes.

``train``'s command line, the defaults under each preset, the model's :class:`~service.made.MADEConfig`
and the loop's :class:`~service.training.loop.TrainConfig` are all derived from :data:`OPTIONS`, so a
new option is one entry here (plus the field it sets). A setting named ``key`` is the flag
``--key-with-dashes``; ``target`` says whether it is a model field (``model``), a loop field
(``train``, same name) or belongs to the run itself (``run``: data, export, bookkeeping).

>>> sorted(o.name for o in OPTIONS if o.target == "model")[:3]
['activation', 'components', 'direct']
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..made import MADEConfig
from .data import DATASETS
from .loop import TrainConfig

__all__ = ["OPTIONS", "Option", "add_option_flags", "made_config", "option_defaults", "train_config"]


def widths(text: str) -> list[int]:
    """``"1000,1000"`` -> ``[1000, 1000]``: positive layer widths."""
    try:
        out = [int(h) for h in text.split(",") if h.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"want comma-separated widths, got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError("need at least one positive width")
    return out


@dataclass(frozen=True)
class Option:
    """One training option: settings key (and flag), default, help and destination."""

    name: str
    default: Any
    help: str
    target: Literal["model", "train", "run"]
    type: Callable[[str], Any] | None = None
    choices: Sequence[str] | None = None

    @property
    def is_switch(self) -> bool:
        return isinstance(self.default, bool)


_SCHEDULES = ["constant", "cosine", "plateau"]
OPTIONS: tuple[Option, ...] = (
    # the run: data, output, export
    Option("dataset", "mnist", "data set kind (the preset's by default)", "run", choices=DATASETS),
    Option("data", None, "path of the data file (mnist, faces)", "run"),
    Option("out", None, "model folder to write", "run"),
    Option("name", None, "model name", "run"),
    Option("description", None, "model description for the card", "run"),
    Option("storage", "float32", "dtype of the saved weights", "run", choices=["float32", "float16"]),
    Option("valid_keep", None, "keep this many (seeded) validation images; the rest join train", "run", int),
    Option(
        "degrees",
        "uniform",
        "extra hidden degrees drawn uniformly, or where the training pixels have entropy",
        "run",
        choices=["uniform", "entropy"],
    ),
    Option(
        "calibrate", False, "fit a logit temperature on validation data when exporting (Bernoulli)", "run"
    ),
    # the model (MADEConfig)
    Option("hidden", [500], "hidden widths, e.g. 1000,1000", "model", widths),
    Option("activation", "elu", "hidden activation", "model", choices=["elu", "relu", "tanh", "gelu"]),
    Option("direct", False, "direct input-to-output connections", "model"),
    Option("masks", 1, "K masks cycled per minibatch (k = step %% K)", "model", int),
    Option("vary_ordering", False, "a random ordering per mask (mask 0 keeps the natural one)", "model"),
    Option("mask_seed", 0, "seed of the hidden degrees", "model", int),
    Option("components", 1, "logistic mixture components (gray-level data)", "model", int),
    Option("local_rows", 0, "local head: window rows above each pixel (0 = no head)", "model", int),
    Option("local_cols", 0, "local head: window columns either side of each pixel", "model", int),
    Option("local_hidden", [], "local head: MLP widths shared by every pixel", "model", widths),
    Option("local_context", 0, "local head: extra MADE outputs per pixel it reads", "model", int),
    Option(
        "local_mirror",
        None,
        "local head: also read the pixels within this of each pixel's mirror",
        "model",
        int,
    ),
    # the loop (TrainConfig)
    Option("epochs", 100, "epochs at most", "train", int),
    Option("batch_size", 100, "minibatch rows", "train", int),
    Option("lr", 1e-3, "Adam learning rate", "train", float),
    Option("weight_decay", 0.0, "Adam weight decay", "train", float),
    Option("lr_schedule", "constant", "learning-rate schedule", "train", choices=_SCHEDULES),
    Option("min_lr", 1e-5, "floor of the cosine and plateau schedules", "train", float),
    Option("plateau_patience", 3, "epochs without improvement before the LR halves", "train", int),
    Option("patience", 10, "epochs without validation improvement before stopping", "train", int),
    Option(
        "select", "mask0", "validation NLL used for early stopping", "train", choices=["mask0", "ensemble"]
    ),
    Option("seed", 0, "seed of weights, data order and dropout", "train", int),
    Option("device", "cpu", "cpu, cuda or cuda:N", "train"),
    Option("threads", None, "torch.set_num_threads", "train", int),
    Option("grad_clip", None, "clip the gradient norm to this", "train", float),
    Option("hflip", False, "random left-right mirroring", "train"),
    Option("shift", 0, "random shifts of up to this many pixels each way (edges repeated)", "train", int),
    Option("dropout", 0.0, "dropout rate on hidden units while training", "train", float),
    Option(
        "head_dropout", None, "dropout rate on the local head's units (default: --dropout)", "train", float
    ),
    Option(
        "dropout_until", None, "train without dropout after this epoch (a dropout-free tail)", "train", int
    ),
    Option(
        "ema",
        0.0,
        "decay of a moving average of the weights (validated and exported); 0 = off",
        "train",
        float,
    ),
)
_BY_NAME = {o.name: o for o in OPTIONS}


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option; an absent flag is ``None`` (take the preset's value)."""
    for o in OPTIONS:
        flag = "--" + o.name.replace("_", "-")
        if o.is_switch:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=o.help)
        else:
            parser.add_argument(flag, type=o.type, choices=o.choices, help=o.help)


def option_defaults() -> dict[str, Any]:
    """Every option's default (copies, so callers may change lists)."""
    return {o.name: list(o.default) if isinstance(o.default, list) else o.default for o in OPTIONS}


def made_config(
    settings: dict[str, Any], data_dim: int, distribution: dict[str, Any], shape: tuple[int, int] | None
) -> MADEConfig:
    """The model's configuration from resolved settings (raster ordering; the image shape is recorded
    when the local head needs it)."""
    dist = dict(distribution)
    if dist["type"] == "discretized_logistic":
        dist["n_components"] = int(settings["components"])
    fields = {o.name: settings[o.name] for o in OPTIONS if o.target == "model"}
    fields["num_masks"] = fields.pop("masks")
    fields.pop("components")
    local = bool(fields["local_rows"] or fields["local_cols"])
    return MADEConfig(
        data_dim=data_dim,
        distribution=dist,
        ordering="natural",
        image_shape=shape if local else None,
        **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()},
    )


def train_config(settings: dict[str, Any], shape: tuple[int, int] | None) -> TrainConfig:
    """The loop's configuration from resolved settings."""
    return TrainConfig(
        **{o.name: settings[o.name] for o in OPTIONS if o.target == "train"}, image_shape=shape
    )
