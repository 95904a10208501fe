"""``python -m service serve``: run the HTTP service with uvicorn (settings from ``MADE_*``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.config import Settings
    from service.engine.process import EngineProcess

# torch's OpenMP workers spin after each parallel op and then steal the core the sampling kernel threads
# need; sleeping workers cost a wake-up per op instead (must be set before torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Likewise SciPy's OpenBLAS (the nogil log-prob kernel's matrix products): its threads spin after each
# call. One thread, beside the event loop: 1.21 cores for the same req/s as 1.8 with two (docs/serving.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__all__ = ["SettingsError", "load_settings", "main"]


class SettingsError(ValueError):
    """A setting the service cannot start with; the message is one line naming it."""


def load_settings() -> Settings:
    """``Settings`` from the environment, checked for what start-up needs (a GPU for ``MADE_DEVICE=cuda``).

    Raises :class:`SettingsError` with one line per bad setting instead of pydantic's traceback.
    """
    from pydantic import ValidationError

    from service.config import Settings

    try:
        settings = Settings()
    except ValidationError as e:
        bad = []
        for err in e.errors():
            name = "MADE_" + "_".join(str(p) for p in err["loc"][:1]).upper()
            value = os.environ.get(name, err.get("input"))
            bad.append(f"{name}={value!r}: {err['msg']}")
        raise SettingsError("bad setting " + "; ".join(bad)) from None
    except ValueError as e:  # pydantic-settings: a list or dict setting that is not JSON
        raise SettingsError(f"bad setting: {str(e).splitlines()[0]}") from None
    if settings.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SettingsError("MADE_DEVICE=cuda but no CUDA device is available (use auto or cpu)")
    return settings


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside uvicorn's own handler: before serving starts, or re-raised by uvicorn once its
    graceful drain is done. Exit 0 then, so an orchestrator does not log a clean stop as a failure."""
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line; ``serve`` starts uvicorn on the app factory."""
    parser = argparse.ArgumentParser(prog="python -m service", description="MADE inference service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service (every MADE_* setting applies)")
    serve.add_argument("--host", help="bind address (MADE_HOST)")
    serve.add_argument("--port", type=int, help="port (MADE_PORT)")
    serve.add_argument("--model-dir", help="model repository (MADE_MODEL_DIR)")
    serve.add_argument("--device", choices=["auto", "cpu", "cuda"], help="MADE_DEVICE")
    serve.add_argument("--workers", type=int, help="uvicorn worker processes (MADE_WORKERS)")
    args = parser.parse_args(argv)

    # Command-line values become MADE_* variables, so every worker process builds the same Settings.
    for name in ("host", "port", "model_dir", "device", "workers"):
        value = getattr(args, name)
        if value is not None:
            os.environ[f"MADE_{name.upper()}"] = str(value)

    from service.extras import MissingExtraError, require

    try:
        require("server", "python -m service serve")
    except MissingExtraError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
    except SettingsError as e:  # one clear line, no traceback: MADE_PORT=abc, MADE_DEVICE=cuda without a GPU
        print(f"error: {e}", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _exit_cleanly)
    with _shared_metrics(settings.workers):
        return _serve(settings)


def _serve(settings: Settings) -> int:
    engine = None
    try:
        if settings.engine_process and settings.engine_address is None:
            engine = _start_engine_process(settings)
            if engine is None:
                return 1
        _run_uvicorn(settings)
    finally:
        if engine is not None:  # after the front-ends have drained: the engine drains what is left
            engine.stop(settings.shutdown_grace_s)
    return 0


@contextlib.contextmanager
def _shared_metrics(workers: int) -> Iterator[None]:
    """Several front-ends: one Prometheus multiprocess folder for all of them, fresh for this run and
    removed after it, so any front-end's ``/metrics`` answers the whole service's figures (see
    :mod:`service.api.metrics`). A ``PROMETHEUS_MULTIPROC_DIR`` already set is used as it is."""
    from service.config import MULTIPROC_ENV

    if workers < 2 or os.environ.get(MULTIPROC_ENV):
        yield
        return
    folder = tempfile.mkdtemp(prefix="made-metrics-")
    os.environ[MULTIPROC_ENV] = folder  # read by each front-end's prometheus-client when it starts
    try:
        yield
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(folder, ignore_errors=True)


def _start_engine_process(settings: Settings) -> EngineProcess | None:
    """MADE_ENGINE_PROCESS: one engine process for every front-end (``MADE_WORKERS`` of them), which
    find it through MADE_ENGINE_ADDRESS; None (reported) if it cannot start."""
    from service.api.registry import engine_process_spec, model_folders
    from service.config import get_settings
    from service.engine.process import EngineProcess

    try:
        engine = EngineProcess(engine_process_spec(settings, model_folders(settings)))
        engine.start()
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    os.environ["MADE_ENGINE_ADDRESS"] = engine.address  # the front-ends' settings, in this process or spawned
    get_settings.cache_clear()
    return engine


def _run_uvicorn(settings: Settings) -> None:
    import uvicorn

    from service.api.connections import GuardedHttpToolsProtocol
    from service.api.logs import log_config

    uvicorn.run(
        "service.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=log_config(settings.log_level, settings.log_json),
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 1,
        loop="uvloop",
        http=GuardedHttpToolsProtocol,  # httptools, plus a header deadline and a bound on connections
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]  # a float works with call_later
        access_log=False,  # the app writes its own access line (request id, duration, status)
        # uvicorn's 5 s default kills a worker still importing torch and loading models, over and over
        timeout_worker_healthcheck=settings.worker_healthcheck_s,
    )


if __name__ == "__main__":
    sys.exit(main())
