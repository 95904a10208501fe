"""Prometheus metrics: HTTP requests and latency per route, and the engines' scheduler figures.

Each app owns a :class:`CollectorRegistry`, so several apps (tests) never clash in the global one.
Engines report through :class:`EngineMetricsAdapter`, which implements the engine's
``EngineMetrics`` protocol with a ``model`` label.

With several front-end processes (``MADE_WORKERS``), a scrape reaches one of them at random: alone,
each would answer its own counts, and a counter would seem to jump back and forth between scrapes.
So ``serve`` then points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder (prometheus-client's
multiprocess mode: every process writes its values to files there) and :meth:`ApiMetrics.render`
answers the sum over all of them: counters and histograms add up, the row gauges too (over live
processes), and ``made_model_ready`` is the least over live processes (1 only if every one serves).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

__all__ = ["CONTENT_TYPE_LATEST", "ApiMetrics", "EngineMetricsAdapter"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STEP_BUCKETS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class ApiMetrics:
    """Every metric the service exports, registered in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "made_http_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "made_http_request_duration_seconds",
            "Time from request start to the last response byte.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queued_rows = Gauge(
            "made_engine_queued_rows",
            "Rows waiting for admission.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.active_rows = Gauge(
            "made_engine_active_rows",
            "Rows being advanced by the engine.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.step_seconds = Histogram(
            "made_engine_step_seconds",
            "Latency of one engine step.",
            ["model"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.rows_per_step = Histogram(
            "made_engine_rows_per_step",
            "Rows advanced together in one engine step.",
            ["model"],
            buckets=_ROW_BUCKETS,
            registry=r,
        )
        self.logprob_batch_rows = Histogram(
            "made_engine_logprob_batch_rows",
            "Rows of one log-prob forward pass (requests batched together).",
            ["model"],
            buckets=_ROW_BUCKETS,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "made_engine_queue_seconds",
            "Time a request waited before the engine admitted it.",
            ["model", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.engine_seconds = Histogram(
            "made_engine_request_seconds",
            "Time a request spent in the engine, queue included.",
            ["model", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.engine_requests = Counter(
            "made_engine_requests",
            "Engine requests by kind and outcome.",
            ["model", "kind", "outcome"],
            registry=r,
        )
        self._http: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.models_ready = Gauge(
            "made_model_ready",
            "1 when the model's engine is serving.",
            ["model"],
            registry=r,
            multiprocess_mode="livemin",
        )

    def observe_http(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency. ``route`` and ``method`` come from bounded sets
        (route templates, known methods): the label children are cached per combination."""
        key = (route, method, status)
        children = self._http.get(key)
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route, method))
            self._http[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def engine(self, model: str) -> EngineMetricsAdapter:
        """The sink one engine reports to."""
        return EngineMetricsAdapter(self, model)

    def render(self) -> bytes:
        """Prometheus text exposition of the registry, or in multiprocess mode of every process's."""
        if not multiprocess_mode():
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)
        return generate_latest(combined)

    def close(self) -> None:
        """This process stops serving: in multiprocess mode its live gauges leave the sums (its counts
        stay in them, as a counter never falls)."""
        if multiprocess_mode():
            multiprocess.mark_process_dead(os.getpid())


def multiprocess_mode() -> bool:
    """Whether prometheus-client keeps values in ``PROMETHEUS_MULTIPROC_DIR``'s files (decided when it was
    imported, from the environment then)."""
    return values.ValueClass is not values.MutexValue


class EngineMetricsAdapter:
    """The engine's ``EngineMetrics`` protocol, bound to one model's labels."""

    def __init__(self, metrics: ApiMetrics, model: str) -> None:
        self._m = metrics
        self._model = model
        self._step = metrics.step_seconds.labels(model)
        self._rows = metrics.rows_per_step.labels(model)
        self._lp_rows = metrics.logprob_batch_rows.labels(model)
        self._queued = metrics.queued_rows.labels(model)
        self._active = metrics.active_rows.labels(model)
        self._done: dict[tuple[str, str], tuple[Any, Any, Any]] = {}  # label children per (kind, outcome)

    def step(self, latency_s: float, rows: int) -> None:
        self._step.observe(latency_s)
        self._rows.observe(rows)

    def logprob_batch(self, rows: int) -> None:
        self._lp_rows.observe(rows)

    def request_done(self, kind: str, queue_s: float, total_s: float, outcome: str) -> None:
        """One finished engine request. ``kind`` and ``outcome`` come from the engine's fixed sets, so
        the label children are looked up once per pair (``labels()`` costs about a microsecond each)."""
        children = self._done.get((kind, outcome))
        if children is None:
            m = self._m
            children = (
                m.queue_seconds.labels(self._model, kind),
                m.engine_seconds.labels(self._model, kind),
                m.engine_requests.labels(self._model, kind, outcome),
            )
            self._done[(kind, outcome)] = children
        children[0].observe(queue_s)
        children[1].observe(total_s)
        children[2].inc()

    def gauges(self, queued_rows: int, active_rows: int) -> None:
        self._queued.set(queued_rows)
        self._active.set(active_rows)
