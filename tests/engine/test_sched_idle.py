"""Kernel threads under SCHED_IDLE when the config asks for it (the service's default with one worker),
at normal priority otherwise; the service maps the setting to the engine only for a single worker."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from service.api.registry import engine_config
from service.config import Settings
from service.engine import Engine
from service.engine.stream_kernel import streaming_supported

from .conftest import make_model, reference, run_engine

needs_stream = pytest.mark.skipif(
    not streaming_supported() or not hasattr(os, "SCHED_IDLE"), reason="the stream backend on Linux x86-64"
)


def _policies(prefix: str) -> dict[str, int]:
    """Scheduling policy of each live thread whose name starts with ``prefix``."""
    out = {}
    for t in threading.enumerate():
        if t.name.startswith(prefix) and t.native_id is not None:
            out[t.name] = os.sched_getscheduler(t.native_id)
    return out


@needs_stream
@pytest.mark.parametrize("idle", [True, False])
def test_kernel_threads_take_the_configured_policy_and_draw_the_same(idle: bool) -> None:
    model = make_model(3)

    async def body(engine: Engine) -> tuple[np.ndarray, dict[str, int]]:
        out = await engine.sample(3, seed=11)
        return out.x, _policies("made-stream-")

    x, policies = run_engine(model, body, backend="stream", kernel_sched_idle=idle)
    assert policies, "no kernel thread found"
    assert set(policies.values()) == {os.SCHED_IDLE if idle else os.SCHED_OTHER}
    assert np.array_equal(x, reference(model, 3, 11))


def test_the_service_turns_it_on_for_one_worker_only() -> None:
    assert engine_config(Settings(workers=1)).kernel_sched_idle is True
    assert engine_config(Settings(workers=2)).kernel_sched_idle is False
    assert engine_config(Settings(workers=1, kernel_sched_idle=False)).kernel_sched_idle is False
