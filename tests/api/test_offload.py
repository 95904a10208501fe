"""CPU-heavy request work: small inputs inline, large ones on the bounded worker pool; the depth of
small JSON bodies from brackets alone agrees with the full vectorised scan."""

from __future__ import annotations

import json
import random
import threading

import anyio
import pytest

from service.api import offload
from service.api.bodies import check_json_limits
from service.api.errors import ProblemError
from service.api.limits import bracket_depth, json_structure


def _where() -> int:
    return threading.get_ident()


def test_small_work_runs_inline_and_large_work_on_the_pool() -> None:
    async def main() -> tuple[int, int, int]:
        here = threading.get_ident()
        small = await offload.run_cpu(_where, size=offload.INLINE_BYTES)
        large = await offload.run_cpu(_where, size=offload.INLINE_BYTES + 1)
        return here, small, large

    here, small, large = anyio.run(main)
    assert small == here and large != here


def test_the_pool_is_bounded_by_its_setting() -> None:
    offload.configure(2)
    running, peak, lock = 0, 0, threading.Lock()
    gate = threading.Event()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait(5)
        with lock:
            running -= 1

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(offload.run_cpu, work)
            with anyio.fail_after(30):
                while running < 2:  # two on the pool; the other four wait for the limiter
                    await anyio.sleep(0.01)
            await anyio.sleep(0.05)  # a third, were the pool unbounded, would start meanwhile
            gate.set()

    try:
        anyio.run(main)
    finally:
        offload.configure(0)
    assert peak == 2


def _random_json(rng: random.Random, depth: int) -> object:
    if depth == 0 or rng.random() < 0.3:
        return rng.choice([0, 1, "a[b]{c", 'q"\\"[', -2.5, None, True])
    if rng.random() < 0.5:
        return [_random_json(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return {f"k{i}[": _random_json(rng, depth - 1) for i in range(rng.randint(0, 3))}


def test_bracket_depth_agrees_with_the_full_scan() -> None:
    rng = random.Random(0)
    for _ in range(500):
        body = json.dumps(_random_json(rng, rng.randint(0, 9))).encode()
        assert bracket_depth(body) == json_structure(body, depth_limit=64)[0], body


def test_small_and_large_bodies_get_the_same_verdicts() -> None:
    deep = b'{"inputs": [[[[[[[[[1]]]]]]]]]}'
    with pytest.raises(ProblemError, match="nested 10 levels"):
        check_json_limits(deep, max_depth=8, max_array=100)
    wide = json.dumps({"inputs": list(range(40))}).encode()
    with pytest.raises(ProblemError, match="40 items"):
        check_json_limits(wide, max_depth=8, max_array=20)  # more commas than the limit: full scan
    check_json_limits(wide, max_depth=8, max_array=40)
