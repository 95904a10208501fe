"""Tiny float64 models with random non-zero weights, and a helper to run an engine in a fresh loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import numpy as np
import pytest
import torch

from service.engine import Engine, EngineConfig
from service.made import MADE, sample_reference, seeded_uniforms
from tests.made.conftest import BERN, LOGI
from tests.made.conftest import make_model as _make_model

T = TypeVar("T")

__all__ = ["BERN", "LOGI", "make_model", "reference", "run_engine"]


def make_model(seed: int = 0, **kw: object) -> MADE:
    """:func:`tests.made.conftest.make_model` with D=16 and 24 hidden units unless told."""
    return _make_model(seed, **{"data_dim": 16, "hidden": (24,), **kw})


def reference(
    model: MADE, n: int, seed: int, known: np.ndarray | None = None, n_known: int = 0
) -> np.ndarray:
    """What the engine must return for ``seed``: the reference loop on the seed's uniforms."""
    u = seeded_uniforms(n, model.data_dim, seed)
    kn = None if known is None else torch.as_tensor(known, dtype=torch.float64).repeat(n, 1)
    with torch.no_grad():
        return sample_reference(model, uniforms=u, known=kn, n_known=n_known).x.numpy().astype(np.float32)


def run_engine(model: MADE, body: Callable[[Engine], Awaitable[T]], **cfg: object) -> T:
    """Start an engine, run ``body(engine)``, stop the engine; all in a fresh event loop."""

    async def main() -> T:
        engine = Engine(model, EngineConfig(**cfg))  # type: ignore[arg-type]
        await engine.start()
        try:
            return await body(engine)
        finally:
            await engine.stop(1.0)

    return asyncio.run(main())


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add hand-off waits on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
