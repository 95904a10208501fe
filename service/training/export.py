"""Turn a training run directory into a served model folder: weights (safetensors), card, PNGs.

A run directory holds ``run.json`` (the resolved settings, written when training starts) and the
resume state ``train.state.pt``; exporting takes the best weights so far, so a folder can be written
while a long run is still going and again when it ends.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from ..made import MADE, MADEConfig, save_model
from .calibrate import calibrate as fit_and_apply_temperature
from .data import Dataset, load_dataset
from .evaluate import split_metrics
from .examples import MAX_EXAMPLES, write_examples
from .images import save_completions, save_samples
from .loop import STATE_FILE

__all__ = [
    "RUN_FILE",
    "device_description",
    "export_run",
    "held_out_metrics",
    "read_run",
    "round_to_storage",
    "write_pictures",
    "write_run",
]

RUN_FILE = "run.json"
FIRST_N = 1000


def write_run(run_dir: Path, settings: dict[str, Any]) -> None:
    """Record the resolved settings of a run (what ``export`` and ``--resume`` need)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).write_text(json.dumps(settings, indent=2) + "\n")


def read_run(run_dir: Path) -> dict[str, Any]:
    """Settings written by :func:`write_run`."""
    return json.loads((run_dir / RUN_FILE).read_text())


def device_description(device: str, threads: int | None) -> str:
    """Where a model was trained, e.g. ``cpu (1 thread, AMD EPYC ...)`` or ``cuda (NVIDIA H100 ...)``."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    n = threads or torch.get_num_threads()
    return f"{device} ({n} thread{'s' if n != 1 else ''}, {cpu})"


def export_run(
    run_dir: str | Path,
    out: str | Path | None = None,
    data: Dataset | None = None,
    samples: int = 64,
    seed: int = 0,
    calibrate: bool | None = None,
    examples: int = MAX_EXAMPLES,
) -> dict[str, Any]:
    """Write the best weights of ``run_dir`` as a model folder; returns the card.

    ``calibrate`` (default: the run's setting) fits a logit temperature on the validation split and
    folds it into the exported weights (see :mod:`service.training.calibrate`). ``examples`` held-out
    test images go to ``examples/`` (:mod:`service.training.examples`).
    """
    run_dir = Path(run_dir)
    settings = read_run(run_dir)
    # Our own resume file (never a served artefact): it holds optimiser and RNG state, hence pickle.
    st = torch.load(run_dir / STATE_FILE, map_location="cpu", weights_only=False)
    model = MADE(MADEConfig.from_dict(st["made_config"]))
    model.load_state_dict(st["best_state"])  # degrees included (they may have been redrawn from data)
    model.eval()
    storage = getattr(torch, settings["storage"])
    round_to_storage(model, storage)
    if data is None:
        data = load_dataset(settings["dataset"], settings.get("data"), valid_keep=settings.get("valid_keep"))
    calibration = None
    if settings.get("calibrate", False) if calibrate is None else calibrate:
        calibration = fit_and_apply_temperature(model, data.valid)
        round_to_storage(model, storage)  # the tempered weights, as they will be stored
    t0 = time.perf_counter()
    metrics = held_out_metrics(model, data)
    eval_s = time.perf_counter() - t0
    tcfg = st["train_config"]
    history = st["history"]
    card = {
        "name": settings["name"],
        "description": settings["description"],
        "data": data.card(),
        "shape": list(data.shape),
        "value_range": list(data.value_range),
        "training": {
            **{k: v for k, v in settings.items() if k not in ("name", "description", "out")},
            **tcfg,
            "epochs_run": st["epoch"],
            "best_epoch": st["best_epoch"],
            "best_valid_nll": round(st["best_nll"], 4),
            "finished": bool(st["epoch"] >= tcfg["epochs"] or st["bad_epochs"] >= tcfg["patience"]),
            "steps": st["step"],
            "history": [{k: round(v, 4) for k, v in row.items()} for row in history],
        },
        "wall_time_s": round(st["elapsed"], 1),
        "eval_time_s": round(eval_s, 1),
        "device": settings.get("device_description", tcfg["device"]),
        "metrics": metrics,
        **({"calibration": calibration} if calibration else {}),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    folder = Path(out or settings["out"])
    record = write_examples(folder, data, examples)
    if record:
        card["examples"] = record
    save_model(folder, model, card, dtype=storage)
    write_pictures(model, folder, data, samples, seed)
    return card


def round_to_storage(model: MADE, dtype: torch.dtype) -> None:
    """Round weights to the storage type and back, so metrics describe exactly what gets loaded."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(p.dtype))


def held_out_metrics(model: MADE, data: Dataset) -> dict[str, Any]:
    """The card's ``metrics``: validation, test, and the first 1,000 test rows (what a quick check scores)."""
    metrics: dict[str, Any] = {
        "valid": split_metrics(model, data.valid),
        "test": split_metrics(model, data.test, shape=data.shape),
    }
    if data.test.shape[0] > FIRST_N:
        metrics[f"test_first{FIRST_N}"] = split_metrics(model, data.test[:FIRST_N])
    return metrics


COOL_TEMPERATURE = 0.5  # the second temperature of a gray-level model's completions.png


def write_pictures(model: MADE, folder: Path, data: Dataset, samples: int, seed: int) -> None:
    """``samples.png`` (a grid of draws) and ``completions.png`` (held-out images completed from their top)."""
    value_max = float(data.value_range[1])
    save_samples(model, folder / "samples.png", data.shape, value_max, n=samples, seed=seed)
    n_truth = min(10 if data.data_dim > 1000 else 8, data.test.shape[0])
    truth = _completion_truth(data, n_truth)
    # gray levels: completions at temperature 1 beside a cooler one, whose sharper conditionals give
    # smoother faces (binary images keep temperature 1 alone)
    temperatures = (1.0, COOL_TEMPERATURE) if model.dist.n_bins > 2 else (1.0,)
    save_completions(
        model, truth, folder / "completions.png", data.shape, value_max, seed=seed, temperatures=temperatures
    )


def _completion_truth(data: Dataset, n: int) -> torch.Tensor:
    """Held-out images to complete: spread over the test split (MNIST's test split is grouped by digit)."""
    idx = torch.linspace(0, data.test.shape[0] - 1, n).round().long()
    return data.test[idx]
