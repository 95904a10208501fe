"""Engine data types: configuration, typed errors, outputs, statistics and the metrics hook protocol.

Nothing here touches a model; the API layer maps these onto HTTP (503 + Retry-After, 504, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = [
    "EngineConfig",
    "EngineError",
    "EngineFull",
    "EngineMetrics",
    "EngineStats",
    "EngineStopped",
    "EngineTimeout",
    "LogProbOutput",
    "NullMetrics",
    "SampleOutput",
]


@dataclass(frozen=True)
class EngineConfig:
    """Engine limits and pacing; the API maps ``Settings`` fields of the same names onto it.

    ``steps_per_chunk`` is the fewest sampling steps run between scheduler visits; a chunk otherwise
    runs until its first row finishes (so that request returns at once), within about
    ``chunk_budget_ms`` of estimated compute (hand-offs to the worker thread are then rare). A new
    submission or a cancellation preempts it after the current step once it has run ``min_chunk_ms``,
    so admission, cancellation and deadlines still act within about that long, and a stream of
    arrivals cannot cut every chunk to one step. A CPU chunk estimated below ``inline_chunk_ms`` (a lone
    small request) runs on the event-loop thread instead, saving two thread hand-offs; 0 turns that off.
    Likewise a log-prob batch of at most as many rows as took ``logprob_inline_ms`` at start-up.
    """

    max_active_rows: int = 1024
    max_queued_rows: int = 4096
    admission_window_ms: float = 0.0
    join_next_turn: bool = True  # stream backend: arrivals join running rows at the loop's next turn
    steps_per_chunk: int = 16
    logprob_max_batch: int = 1024
    logprob_max_wait_ms: float = 0.0
    logprob_inline_ms: float = 1.5
    logprob_backend: str = "auto"  # "auto" | "nogil" | "torch"  (auto: see Engine)
    logprob_split: bool = True
    kernel_sched_idle: bool = False  # the service turns it on (MADE_KERNEL_SCHED_IDLE, one worker)
    request_timeout_s: float = 60.0
    backend: str = "auto"  # "auto" | "stream" | "numba" | "torch"  (auto: see Engine)
    chunk_budget_ms: float = 50.0
    inline_chunk_ms: float = 1.0
    min_chunk_ms: float = 1.0
    parallel_chunk_ms: float = 2.0
    retry_after_min_s: float = 1.0
    retry_after_max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_active_rows < 1:
            raise ValueError("max_active_rows must be >= 1")
        if self.max_queued_rows < 0:
            raise ValueError("max_queued_rows must be >= 0")
        if self.steps_per_chunk < 1:
            raise ValueError("steps_per_chunk must be >= 1")
        if self.logprob_max_batch < 1:
            raise ValueError("logprob_max_batch must be >= 1")
        if self.logprob_backend not in ("auto", "nogil", "torch"):
            raise ValueError(f"logprob_backend must be auto, nogil or torch, got {self.logprob_backend!r}")
        if (
            min(
                self.admission_window_ms,
                self.logprob_max_wait_ms,
                self.logprob_inline_ms,
                self.chunk_budget_ms,
                self.inline_chunk_ms,
                self.min_chunk_ms,
                self.parallel_chunk_ms,
            )
            < 0
        ):
            raise ValueError("waits and budgets must be >= 0")
        if not 0 < self.retry_after_min_s <= self.retry_after_max_s:
            raise ValueError("need 0 < retry_after_min_s <= retry_after_max_s")
        if self.request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be > 0")
        if self.backend not in ("auto", "stream", "numba", "torch"):
            raise ValueError("backend must be 'auto', 'stream', 'numba' or 'torch'")


class EngineError(Exception):
    """Base of every error the engine raises on behalf of a request."""


class EngineFull(EngineError):
    """Admitting the request would exceed the queue limit; retry after ``retry_after_s`` (HTTP 503)."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EngineTimeout(EngineError):
    """The request passed its deadline before it finished (HTTP 504)."""


class EngineStopped(EngineError):
    """The engine is not running or is draining (HTTP 503)."""


@dataclass
class SampleOutput:
    """``x`` ``(n, D)`` float32 data values in raster order; ``log_prob`` ``(n,)`` float64 exact mixture
    ``log p(x)`` of each full vector; ``seed`` the request's seed."""

    x: np.ndarray
    log_prob: np.ndarray
    seed: int


@dataclass
class LogProbOutput:
    """``log_prob`` ``(B,)`` float64 nats (K-mask mixture); ``per_dim`` ``(B, D)`` float64 mixture
    conditionals ``log p(x_d | x_<d)`` in raster order (they sum to ``log_prob``) when asked for."""

    log_prob: np.ndarray
    per_dim: np.ndarray | None


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine for health checks and dashboards."""

    name: str
    backend: str
    running: bool
    queued_rows: int
    active_rows: int
    active_requests: int
    logprob_queued_rows: int
    steps_run: int
    chunks_run: int
    rows_sampled: int
    requests_ok: int
    requests_failed: int


class EngineMetrics(Protocol):
    """Observability hooks (the API implements them with prometheus-client).

    ``step`` is called once per chunk with the mean latency of one step and the rows it advanced;
    ``logprob_batch`` once per log-prob forward pass with its rows.
    """

    def step(self, latency_s: float, rows: int) -> None: ...

    def logprob_batch(self, rows: int) -> None: ...

    def request_done(self, kind: str, queue_s: float, total_s: float, outcome: str) -> None: ...

    def gauges(self, queued_rows: int, active_rows: int) -> None: ...


class NullMetrics:
    """Metrics hooks that record nothing (the default)."""

    def step(self, latency_s: float, rows: int) -> None:
        pass

    def logprob_batch(self, rows: int) -> None:
        pass

    def request_done(self, kind: str, queue_s: float, total_s: float, outcome: str) -> None:
        pass

    def gauges(self, queued_rows: int, active_rows: int) -> None:
        pass
