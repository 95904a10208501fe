"""Service settings: one pydantic-settings object, every field settable as ``MADE_<NAME>`` in the environment."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: prometheus-client's switch to multiprocess mode (read once, when it is first imported); ``serve``
#: sets it for ``MADE_WORKERS`` > 1 (here, so setting it does not import the API and torch with it)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Settings(BaseSettings):
    """Runtime configuration of the service; defaults are safe for a single-host deployment."""

    model_config = SettingsConfigDict(env_prefix="MADE_", env_file=".env", extra="ignore")

    # --- serving ---------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address uvicorn binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port uvicorn binds to.")
    workers: int = Field(
        1,
        ge=1,
        description="uvicorn worker processes: each loads every model, or with MADE_ENGINE_PROCESS, "
        "HTTP front-ends sharing the one engine process.",
    )
    worker_healthcheck_s: int = Field(
        120,
        ge=1,
        description="With MADE_WORKERS > 1: seconds a worker may leave uvicorn's health check unanswered "
        "(start-up and model loading included) before it is killed and replaced.",
    )
    engine_process: bool = Field(
        False,
        description="Run the engines in a process of their own, fed by the HTTP front-end(s) over a Unix socket "
        "(request handling and sampling on different cores).",
    )
    engine_address: str | None = Field(
        None,
        description="Unix socket of a running engine process (set by `serve` for its front-ends); "
        "unset with MADE_ENGINE_PROCESS = each app starts its own.",
    )
    model_dir: Path = Field(Path("models"), description="Model repository: one folder per model.")
    default_model: str = Field("mnist", description="Model used when a request names none.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when available.")
    skip_bad_models: bool = Field(
        False, description="Skip (and log) a corrupt model folder instead of failing start-up."
    )
    verify_on_load: bool = Field(True, description="Check the autoregressive property at start-up.")
    log_level: str = Field("info", description="Python log level.")
    log_json: bool = Field(True, description="Structured JSON log lines.")

    # --- request limits --------------------------------------------------------------------------
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest request body accepted.")
    max_image_pixels: int = Field(4096 * 4096, ge=64, description="Largest decoded image (w*h).")
    max_decoded_pixels: int = Field(
        4096 * 4096, ge=64, description="Pixels decoded per upload request, summed over its files."
    )
    max_images_per_request: int = Field(64, ge=1, description="Images per /log-prob upload.")
    max_inputs_per_request: int = Field(1024, ge=1, description="Inputs per /log-prob JSON request.")
    max_samples_per_request: int = Field(64, ge=1, description="Upper bound on n for /sample, /complete.")
    max_json_depth: int = Field(
        8, ge=4, description="Deepest nesting of a JSON body (inputs use 4: body, list, image, row)."
    )
    max_json_array: int = Field(65536, ge=16, description="Most items in any one JSON array or object.")
    binarize_threshold: int = Field(
        128, ge=0, le=255, description="Gray level at or above which an upload pixel is 1 (binary models)."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="A connection must finish a request's headers within this (else closed)."
    )
    keep_alive_s: float = Field(5.0, gt=0, description="Idle keep-alive connections are closed after this.")
    max_connections: int = Field(
        1000, ge=16, description="Open connections kept; beyond it the longest-waiting idle one is closed."
    )
    api_key: str | None = Field(None, description="If set, required in the X-API-Key header.")
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins (off if empty).")

    # --- engine ----------------------------------------------------------------------------------
    max_active_rows: int = Field(1024, ge=1, description="Rows advanced together in one sampling step.")
    max_queued_rows: int = Field(4096, ge=0, description="Rows waiting for admission before 503.")
    admission_window_ms: float = Field(0.0, ge=0, description="Extra wait to gather arrivals for a step.")
    join_next_turn: bool = Field(
        True,
        description="While rows are sampling, rows that arrive join them at the event loop's next turn "
        "(a zero-delay timer), so the arrivals of one turn start together and share the kernel's weight "
        "loads (the stream backend).",
    )
    steps_per_chunk: int = Field(16, ge=1, description="Fewest sampling steps run between scheduler visits.")
    chunk_budget_ms: float = Field(
        50.0, ge=0, description="Compute a sampling chunk may grow to (arrivals and cancels preempt it)."
    )
    inline_chunk_ms: float = Field(
        1.0,
        ge=0,
        description="CPU chunks estimated below this run on the event loop (no hand-off); 0 = never.",
    )
    min_chunk_ms: float = Field(
        1.0, ge=0, description="Compute a sampling chunk runs before an arrival or cancel may preempt it."
    )
    parallel_chunk_ms: float = Field(
        2.0, ge=0, description="Sampling chunks estimated below this run on one kernel thread."
    )
    backend: Literal["auto", "stream", "numba", "torch"] = Field(
        "auto",
        description="Sampling loop: stream = numba kernel threads that stay off the GIL (Linux, x86-64), "
        "numba = numba kernels run in chunks, torch = batched torch; auto = stream on CPU where it runs "
        "(else numba), torch on CUDA.",
    )
    kernel_threads: int | None = Field(
        None,
        ge=1,
        description="Threads of the CPU sampling kernel (stream: each sweeps its stripe of rows); unset = "
        "the CPUs the process may use (affinity and cgroup quota, not the host's cores), divided among "
        "the MADE_WORKERS processes when each holds its own engines.",
    )
    cpu_workers: int = Field(
        0,
        ge=0,
        description="Threads for CPU-heavy request work (large JSON, image decoding, PNG encoding); "
        "0 = the CPUs the process may use.",
    )
    logprob_max_batch: int = Field(1024, ge=1, description="Largest micro-batch for log-prob work.")
    logprob_max_wait_ms: float = Field(
        0.0,
        ge=0,
        description="Fill window of an idle log-prob batcher (0: start at once; rows that arrive while a "
        "batch runs always form the next one).",
    )
    logprob_inline_ms: float = Field(
        1.5,
        ge=0,
        description="Log-prob batches whose forward pass took at most this long at start-up run on the "
        "event loop instead of the worker thread (0 = never).",
    )
    logprob_backend: Literal["auto", "nogil", "torch"] = Field(
        "auto",
        description="Log-prob forward pass: nogil = one numba call that holds no GIL (Bernoulli models "
        "without a local head, on CPU), torch = the model's own; auto = nogil where it serves the model.",
    )
    logprob_split: bool = Field(
        True,
        description="With the nogil forward pass, a log-prob batch takes at most half the rows in play, "
        "so the event loop answers one half while the worker computes the other.",
    )
    kernel_sched_idle: bool = Field(
        True,
        description="Sampling kernel threads under SCHED_IDLE (Linux), so that waking one never preempts the "
        "event loop; applies with one worker process only (with more, each event loop could starve the "
        "others' threads).",
    )
    request_timeout_s: float = Field(60.0, gt=0, description="Per-request deadline inside the engine.")
    retry_after_s: int = Field(
        1, ge=1, description="Retry-After of a 503 when no drain rate is known yet (a stopped engine)."
    )
    retry_after_min_s: float = Field(
        1.0, gt=0, description="Least Retry-After of a full engine's 503 (else backlog / drain rate)."
    )
    retry_after_max_s: float = Field(
        30.0, gt=0, description="Most Retry-After of a full engine's 503 (else backlog / drain rate)."
    )
    refusal_pacing_max_ms: float = Field(
        2000.0,
        ge=0,
        le=60_000,
        description="A connection refused again before its Retry-After has passed gets its 503 held "
        "until then, at most this long (0 = never held).",
    )
    shutdown_grace_s: float = Field(20.0, ge=0, description="Time to drain in-flight work on stop.")
    otel_telemetry: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry instrumentation (spans, metrics and logs through the "
        "global OpenTelemetry providers, once the process configures them). Off: the service exports "
        "Prometheus metrics and JSON logs, and FastAPI's check of the providers costs about 5 us a request.",
    )
    gc_freeze: bool = Field(
        True,
        description="Once the models are loaded and warm, freeze start-up's objects out of the garbage "
        "collector's full passes (a 160 ms pause each with the committed models; see service/memory.py).",
    )

    @model_validator(mode="after")
    def _bounds_in_order(self) -> Settings:
        if self.retry_after_min_s > self.retry_after_max_s:
            raise ValueError("MADE_RETRY_AFTER_MIN_S must not exceed MADE_RETRY_AFTER_MAX_S")
        return self


@lru_cache
def get_settings() -> Settings:
    """Settings read once from the environment (tests build their own ``Settings`` instead)."""
    return Settings()
