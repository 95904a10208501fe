"""Checkpoint I/O: a model folder holds ``model.safetensors`` (weights and degrees) and ``card.json``.

Loading never unpickles: weights come from safetensors, the architecture from the card's ``config``
(used to rebuild the model, nanoGPT style). Masked weight matrices are stored *packed*: only the
entries some mask keeps, in row-major order (a MADE mask keeps about half of each matrix, so this
halves the file); the masks follow from the stored degrees, so nothing else is needed to unpack.
A malformed, truncated or mismatched folder raises :class:`CheckpointError` naming the file and what is wrong, and a loaded model is checked for the
autoregressive property before it is returned.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import MADEConfig
from .network import MADE, MaskedLinear
from .verify import AutoregressiveViolation, verify_autoregressive

__all__ = [
    "CARD_FILE",
    "WEIGHTS_FILE",
    "CheckpointError",
    "inside_folder",
    "library_versions",
    "load_model",
    "save_model",
]

CARD_FILE = "card.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "made-service/1"


class CheckpointError(Exception):
    """A model folder cannot be served: the message names the file and the problem."""


def library_versions() -> dict[str, str]:
    """Versions recorded in every card, so a figure can be traced to the code that produced it."""
    import safetensors

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _masked_weights(model: MADE) -> dict[str, torch.Tensor]:
    """State-dict name of every masked weight matrix -> the entries any of its K masks keeps."""
    return {
        f"{name}.weight": module.masks.any(0)
        for name, module in model.named_modules()
        if isinstance(module, MaskedLinear)
    }


def save_model(
    folder: str | Path,
    model: MADE,
    card: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
    packed: bool = True,
) -> Path:
    """Write weights and card; ``card`` holds the descriptive fields (name, data, metrics, ...).

    ``dtype`` is the storage type of floating weights (``float16`` halves the file; loading upcasts).
    ``packed`` stores each masked matrix as the 1-D vector ``W[mask]`` of the entries a mask keeps.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
    }
    keep = _masked_weights(model) if packed else {}
    for name, mask in keep.items():
        tensors[name] = tensors[name][mask.cpu()].contiguous()
    weights = folder / WEIGHTS_FILE
    tmp = weights.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT})
    tmp.replace(weights)
    full = dict(card or {})
    full["format"] = FORMAT
    full["config"] = model.config.to_dict()
    full.setdefault("versions", library_versions())
    full["weights"] = {
        "file": WEIGHTS_FILE,
        "sha256": _sha256(weights),
        "dtype": str(dtype).removeprefix("torch."),
        "packed": sorted(keep),
    }
    order = model.ordering(0).tolist()
    full["ordering"] = {
        "kind": model.config.ordering if isinstance(model.config.ordering, str) else "explicit",
        "shared": model.shares_ordering(),
        "first": order[:8],
        "last": order[-8:],
    }
    (folder / CARD_FILE).write_text(json.dumps(full, indent=2) + "\n")
    return folder


def read_card(folder: str | Path) -> dict[str, Any]:
    """Parse ``card.json``; a missing or malformed card is a :class:`CheckpointError`."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing model card")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(card, dict) or card.get("format") != FORMAT or not isinstance(card.get("config"), dict):
        raise CheckpointError(f"{path}: not a {FORMAT} model card (needs 'format' and 'config')")
    return card


def _check_degrees(model: MADE, where: str) -> None:
    d = model.data_dim
    ref = torch.arange(1, d + 1)
    for k in range(model.num_masks):
        if not torch.equal(torch.sort(model.input_degrees[k]).values, ref):
            raise CheckpointError(f"{where}: input degrees of mask {k} are not a permutation of 1..{d}")
        for li in range(len(model.config.hidden)):
            deg = model.hidden_degrees(li)[k]
            if int(deg.min()) < 1 or int(deg.max()) > d - 1:
                raise CheckpointError(f"{where}: hidden degrees of mask {k}, layer {li} leave 1..{d - 1}")


def _packed_names(card: dict[str, Any], weights: Path) -> list[str]:
    names = card.get("weights", {}).get("packed", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{weights}: the card's weights.packed must be a list of tensor names")
    return names


def _check_shapes(tensors: dict[str, torch.Tensor], own: dict[str, torch.Tensor], where: str) -> None:
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(own[name].shape):
            raise CheckpointError(
                f"{where}: tensor {name!r} has shape {tuple(t.shape)}, the card's architecture needs "
                f"{tuple(own[name].shape)}"
            )


def _unpack(
    model: MADE, tensors: dict[str, torch.Tensor], packed: list[str], where: str
) -> dict[str, torch.Tensor]:
    """Dense matrices from packed ones: the stored degrees give the masks, zeros fill what they drop."""
    if not packed:
        return tensors
    degrees = {k: v for k, v in tensors.items() if k == "input_degrees" or k.startswith("hidden_degrees_")}
    _check_shapes(degrees, model.state_dict(), where)
    model.load_state_dict(degrees, strict=False)  # the post-load hook rebuilds the masks
    _check_degrees(model, where)
    keep = _masked_weights(model)
    unknown = sorted(set(packed) - set(keep))
    if unknown:
        raise CheckpointError(f"{where}: the card lists {unknown} as packed, but they are not masked weights")
    out = dict(tensors)
    for name in packed:
        t, mask = tensors[name], keep[name]
        if t.dim() != 1 or t.numel() != int(mask.sum()):
            raise CheckpointError(
                f"{where}: packed tensor {name!r} holds {tuple(t.shape)} values, the card's architecture "
                f"and the stored degrees keep {int(mask.sum())}"
            )
        dense = torch.zeros(mask.shape, dtype=t.dtype)
        dense[mask] = t
        out[name] = dense
    return out


def inside_folder(folder: Path, name: object, key: str) -> Path:
    """The file a card names under ``key``, refused unless it is a relative path that stays inside the
    model's folder once resolved (no ``..``, absolute path or symbolic link leading out of it), so a
    card cannot make the server read files elsewhere."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise CheckpointError(f"{folder / CARD_FILE}: {key} must be a file name inside the model folder")
    root = folder.resolve()
    path = (folder / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(root) or path == root:
        raise CheckpointError(
            f"{folder / CARD_FILE}: {key} {name!r} points outside the model folder; cards may name only "
            "files inside it"
        )
    return folder / name


def load_model(
    folder: str | Path, device: str | torch.device = "cpu", verify: bool = True
) -> tuple[MADE, dict[str, Any]]:
    """Rebuild a model from its folder; returns ``(model in eval mode, card)``."""
    folder = Path(folder)
    card = read_card(folder)
    card_path = folder / CARD_FILE
    try:
        config = MADEConfig.from_dict(card["config"])
        model = MADE(config)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{card_path}: invalid config ({e})") from e
    weights = inside_folder(folder, card.get("weights", {}).get("file", WEIGHTS_FILE), "weights.file")
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing weights file")
    expected_sha = card.get("weights", {}).get("sha256")
    if expected_sha and _sha256(weights) != expected_sha:
        raise CheckpointError(f"{weights}: checksum does not match the card (truncated or replaced file?)")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({e})") from e
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        raise CheckpointError(
            f"{weights}: does not match the card's architecture (missing {missing}, unexpected {extra})"
        )
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{weights}: tensor {name!r} holds NaN or infinite values")
        if t.is_floating_point() != own[name].is_floating_point():
            raise CheckpointError(
                f"{weights}: tensor {name!r} has dtype {t.dtype}, expected {own[name].dtype}"
            )
    tensors = _unpack(model, tensors, _packed_names(card, weights), str(weights))
    _check_shapes(tensors, own, str(weights))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})  # masks follow
    _check_degrees(model, str(weights))
    model.to(device).eval()
    if verify:
        try:
            verify_autoregressive(model)
        except AutoregressiveViolation as e:
            raise CheckpointError(f"{weights}: {e}") from e
    return model, card
