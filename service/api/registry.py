"""The model repository at run time: one loaded MADE, its card and its running engine per folder.

This is the only part of the API that touches torch: it loads checkpoints, picks the device and
reads a model's ordering once, so routes work with plain metadata and numpy arrays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from service.config import Settings
from service.engine import Engine, EngineConfig
from service.engine.client import EngineClient, EngineConnection
from service.engine.process import EngineProcess, EngineProcessSpec
from service.logging import log_config
from service.made import MADE, CheckpointError, load_model

from . import lifecycle
from .errors import ProblemError
from .metrics import ApiMetrics

__all__ = [
    "ModelEntry",
    "Registry",
    "engine_config",
    "engine_process_spec",
    "model_folders",
    "pick_device",
    "public_reason",
]

log = logging.getLogger("service.api")


def pick_device(setting: str) -> str:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a start-up error."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("MADE_DEVICE=cuda but no CUDA device is available")
    return setting


def engine_config(settings: Settings) -> EngineConfig:
    """The engine's config from the same-named Settings fields (the rest keep engine defaults)."""
    names = {f.name for f in dataclasses.fields(EngineConfig)}
    values = {k: v for k, v in settings.model_dump().items() if k in names}
    # with several workers, one process's busy event loop could starve another's idle-policy threads
    values["kernel_sched_idle"] = settings.kernel_sched_idle and settings.workers == 1
    return EngineConfig(**values)


def model_folders(settings: Settings) -> list[Path]:
    """Model folders: direct sub-folders of ``model_dir`` holding a ``card.json``, by name."""
    root = Path(settings.model_dir)
    if not root.is_dir():
        raise RuntimeError(f"model repository {root} does not exist (set MADE_MODEL_DIR)")
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "card.json").is_file())


def engine_process_spec(settings: Settings, folders: list[Path]) -> EngineProcessSpec:
    """What the engine process serves (MADE_ENGINE_PROCESS): these folders, with the engines' settings."""
    return EngineProcessSpec(
        address="",
        folders=tuple(str(f) for f in folders),
        device=pick_device(settings.device),
        verify=settings.verify_on_load,
        config=engine_config(settings),
        grace_s=settings.shutdown_grace_s,
        gc_freeze=settings.gc_freeze,
        log_config=log_config(settings.log_level, settings.log_json),
    )


def _value_range(card: dict[str, Any], n_bins: int, name: str) -> tuple[int, int]:
    """The integer levels the model scores: ``0..n_bins-1`` (the card's ``value_range`` should agree)."""
    levels = (0, n_bins - 1)
    vr = card.get("value_range")
    if vr is not None and list(vr) != list(levels):
        log.warning(
            "model %s: card value_range %s disagrees with the model's levels %s; using the model's",
            name,
            vr,
            list(levels),
        )
    return levels


def _shape(card: dict[str, Any], d: int) -> tuple[int, int] | None:
    shape = card.get("shape")
    if (
        isinstance(shape, list | tuple)
        and len(shape) == 2
        and all(isinstance(s, int) and s > 0 for s in shape)
    ):
        if shape[0] * shape[1] == d:
            return int(shape[0]), int(shape[1])
        log.warning("card shape %s does not match data_dim %d; serving as flat vectors", shape, d)
    return None


def public_reason(exc: BaseException, folder: Path) -> str:
    """Why a model folder failed, with the server's paths cut down to ``<folder name>/<file>`` (the
    reason is shown by ``/models`` and the readiness probe; the log keeps the full path).

    >>> public_reason(ValueError("/srv/models/m1/model.safetensors: bad"), Path("/srv/models/m1"))
    'm1/model.safetensors: bad'
    """
    text = str(exc)
    for root in {str(folder.parent), str(folder.parent.resolve())}:
        if root not in ("", "."):
            text = text.replace(root.rstrip("/") + "/", "")
    return text


@dataclass
class ModelEntry:
    """A served model: metadata the routes need, the engine that runs it and the loaded network (none
    in a front-end of the engine process: the network lives there)."""

    name: str
    folder: Path
    card: dict[str, Any]
    model: MADE | None
    engine: Engine | EngineClient
    device: str
    data_dim: int
    shape: tuple[int, int] | None
    value_range: tuple[int, int]
    binary: bool
    ordering: np.ndarray  # position -> dimension (shared ordering, or mask 0's)
    shared_ordering: bool
    num_masks: int
    load_seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(H, W)`` for images; flat models render as one row of ``D`` pixels."""
        return self.shape or (1, self.data_dim)

    @property
    def raster(self) -> bool:
        """Whether pixels are drawn in raster order (natural ordering)."""
        return bool(np.array_equal(self.ordering, np.arange(self.data_dim)))

    @property
    def per_dim_available(self) -> bool:
        """Mixture conditionals per dimension exist only when every mask shares the ordering."""
        return self.num_masks == 1 or self.shared_ordering

    def ordering_info(self) -> dict[str, Any]:
        """What a client needs to know about the ordering (for cards and /complete)."""
        kind = self.card.get("config", {}).get("ordering", "natural")
        return {
            "kind": kind if isinstance(kind, str) else "explicit",
            "raster": self.raster,
            "shared": self.shared_ordering,
            "num_masks": self.num_masks,
            "first": self.ordering[:8].tolist(),
        }

    def known_rows_prefix_ok(self, known_rows: int) -> bool:
        """True when the ordering's first ``known_rows * W`` positions are exactly those rows' pixels."""
        if self.shape is None:
            return False
        n_known = known_rows * self.shape[1]
        return bool(np.array_equal(np.sort(self.ordering[:n_known]), np.arange(n_known)))


class Registry:
    """Loads every model folder under ``settings.model_dir`` and owns their engines."""

    def __init__(self, settings: Settings, metrics: ApiMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.entries: dict[str, ModelEntry] = {}
        self.failed: dict[str, str] = {}
        self.loading = True
        self.draining = False  # set when the engines start to stop: readiness is off from then on
        self.connection: EngineConnection | None = None  # MADE_ENGINE_PROCESS: the link to the engines
        self.engine_process: EngineProcess | None = None  # ... and the process, when this app started it

    # --- lifecycle ------------------------------------------------------------------------------
    def folders(self) -> list[Path]:
        """Model folders: direct sub-folders holding a ``card.json``, by name."""
        return model_folders(self.settings)

    async def start(self) -> None:
        """Load, verify, start and warm every model; a bad folder fails start-up unless
        ``skip_bad_models`` is set."""
        self.draining = False  # a lifespan may run again on the same app (test clients do)
        if self.settings.engine_process:
            try:
                await self._start_remote()
            except BaseException:
                await self.stop()
                raise
            finally:
                self.loading = False
            return
        device = pick_device(self.settings.device)
        config = engine_config(self.settings)
        try:
            for folder in self.folders():
                try:
                    entry = await self._load(folder, device, config)
                except Exception as e:  # anything wrong with one folder: fail start-up, or skip it
                    if not isinstance(e, CheckpointError | ValueError | RuntimeError):
                        e = CheckpointError(f"{folder}: cannot be loaded ({type(e).__name__}: {e})")
                    if not self.settings.skip_bad_models:
                        raise RuntimeError(f"cannot serve model {folder.name!r}: {e}") from e
                    log.error("skipping model %s: %s", folder.name, e)
                    self.failed[folder.name] = public_reason(e, folder)
                    continue
                self.entries[entry.name] = entry
                self.metrics.models_ready.labels(entry.name).set(1)
        except BaseException:
            await self.stop()
            raise
        finally:
            self.loading = False
        if not self.entries:
            log.warning(
                "no models found under %s; the service will not report ready", self.settings.model_dir
            )

    async def _load(self, folder: Path, device: str, config: EngineConfig) -> ModelEntry:
        t0 = time.perf_counter()
        model, card = await asyncio.to_thread(load_model, folder, device, self.settings.verify_on_load)
        name = folder.name
        d = model.data_dim
        engine = Engine(model, config, name, self.metrics.engine(name))
        await engine.start()
        try:  # a folder that fails past this point must not leave its engine running
            entry = ModelEntry(
                name=name,
                folder=folder,
                card=card,
                model=model,
                engine=engine,
                device=device,
                data_dim=d,
                shape=_shape(card, d),
                value_range=_value_range(card, model.dist.n_bins, name),
                binary=model.dist.n_bins == 2,
                ordering=model.ordering(0).cpu().numpy(),
                shared_ordering=model.shares_ordering(),
                num_masks=model.num_masks,
            )
            await self._warm(entry)
        except BaseException:
            await engine.stop(0.0)
            raise
        entry.load_seconds = time.perf_counter() - t0
        log.info(
            "model %s ready on %s in %.2f s (D=%d, K=%d)",
            name,
            device,
            entry.load_seconds,
            d,
            model.num_masks,
        )
        return entry

    async def _warm(self, entry: ModelEntry) -> None:
        """One tiny request of each kind, so the first client does not pay for compilation."""
        x = np.full((1, entry.data_dim), entry.value_range[0], dtype=np.float32)
        await entry.engine.log_prob(x, per_dim=entry.per_dim_available)
        await entry.engine.sample(1, 0)

    async def _start_remote(self) -> None:
        """MADE_ENGINE_PROCESS: connect to the engine process (``engine_address``, started by ``serve``
        for all its front-ends) or start one for this app, and serve its models through
        :class:`EngineClient`."""
        s = self.settings
        address = s.engine_address
        if address is None:
            self.engine_process = EngineProcess(engine_process_spec(s, self.folders()))
            await asyncio.to_thread(self.engine_process.start)
            address = self.engine_process.address
        self.connection = conn = EngineConnection(address)
        welcome = await conn.connect()
        for name, why in welcome["failed"].items():
            if not s.skip_bad_models:
                raise RuntimeError(f"cannot serve model {name!r}: {why['message']}")
            log.error("skipping model %s: %s", name, why["message"])
            self.failed[name] = public_reason(RuntimeError(why["message"]), Path(s.model_dir) / name)
        config = engine_config(s)
        for m in welcome["models"]:
            name, d = m["name"], m["data_dim"]
            client = EngineClient(conn, name, config, m["backend"], self.metrics.engine(name))
            self.entries[name] = ModelEntry(
                name=name,
                folder=Path(m["folder"]),
                card=m["card"],
                model=None,
                engine=client,
                device=m["device"],
                data_dim=d,
                shape=_shape(m["card"], d),
                value_range=_value_range(m["card"], m["n_bins"], name),
                binary=m["n_bins"] == 2,
                ordering=np.asarray(m["ordering"], dtype=np.int64),
                shared_ordering=m["shared_ordering"],
                num_masks=m["num_masks"],
                load_seconds=m["load_seconds"],
            )
            self.metrics.models_ready.labels(name).set(1)
        log.info("front-end connected to the engine process at %s", address)

    async def stop(self) -> None:
        """Drain and stop every engine (``shutdown_grace_s`` each, concurrently); in a front-end of the
        engine process, its own calls, then the process when this app started it."""
        self.draining = True
        entries = list(self.entries.values())
        for e in entries:
            self.metrics.models_ready.labels(e.name).set(0)
        await asyncio.gather(
            *(e.engine.stop(self.settings.shutdown_grace_s) for e in entries), return_exceptions=True
        )
        if self.connection is not None:
            await self.connection.close()
            self.connection = None
        if self.engine_process is not None:
            await asyncio.to_thread(self.engine_process.stop, self.settings.shutdown_grace_s)
            self.engine_process = None

    # --- lookup ---------------------------------------------------------------------------------
    def get(self, name: str | None) -> ModelEntry:
        """The named model (default: ``settings.default_model``), or a 404 naming what exists."""
        key = name or self.settings.default_model
        entry = self.entries.get(key)
        if entry is None:
            known = ", ".join(sorted(self.entries)) or "none"
            raise ProblemError(
                404,
                f"model {key!r} is not loaded; available: {known}",
                title="Model Not Found",
                errors=[{"field": "model", "message": f"unknown model; available: {known}", "input": key}],
            )
        return entry

    def max_rows(self) -> int:
        """Most rows one sampling request may ask for: the request limit, capped by what an engine can
        ever hold (active plus queued rows)."""
        s = self.settings
        return min(s.max_samples_per_request, s.max_active_rows + s.max_queued_rows)

    def model_ready(self, name: str) -> bool:
        entry = self.entries.get(name)
        return entry is not None and bool(entry.engine.running)

    def is_draining(self) -> bool:
        """The server has begun a graceful shutdown (uvicorn's drain) or the engines are stopping."""
        return self.draining or lifecycle.draining()

    def ready(self) -> bool:
        """Every model loaded and its engine running, and no drain begun. An empty repository is not
        ready; folders skipped under ``skip_bad_models`` are reported by the probe but do not hold the
        others back."""
        return (
            not self.loading
            and not self.is_draining()
            and bool(self.entries)
            and all(e.engine.running for e in self.entries.values())
        )
