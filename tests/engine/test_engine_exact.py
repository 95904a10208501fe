"""Concurrent engine requests give exactly the reference sampler's output for their seeds (float64)."""

import asyncio

import numpy as np
import pytest
import torch

from service.made import MADE, pool

from .conftest import BERN, LOGI, make_model, reference, run_engine

CASES = {
    "bern-1mask": dict(distribution=BERN, hidden=(24,)),
    "bern-3mask-direct": dict(distribution=BERN, hidden=(24, 20), direct=True, num_masks=3),
    "logistic-3mask-direct": dict(distribution=LOGI, hidden=(20, 20), num_masks=3, direct=True),
    "logistic-17bins": dict(distribution={"type": "discretized_logistic", "n_bins": 17, "n_components": 1}),
    "bern-3orderings": dict(
        distribution=BERN, hidden=(12,), num_masks=3, ordering="random", vary_ordering=True
    ),
    # wider layers than positions: several units finalise at each step, so the kernel adds them to the
    # outputs four, two and one at a time; ReLU units are exactly 0 about half the time
    "bern-wide-direct": dict(distribution=BERN, hidden=(90, 70), direct=True),
    "logistic-wide-relu": dict(distribution=LOGI, hidden=(75,), activation="relu", num_masks=2),
    "bern-pooled": None,  # two MADEs pooled into one: hidden units side by side, unsorted by degree
    # the local head (a 4x4 image): a window read by a tied MLP, with context outputs, under one raster
    # ordering and under three random orderings that mask parts of the window; both read a mirror window
    "logistic-local": dict(
        distribution=LOGI,
        hidden=(20,),
        direct=True,
        image_shape=(4, 4),
        local_rows=2,
        local_cols=1,
        local_hidden=(6, 5),
        local_context=3,
        local_mirror=1,
    ),
    "bern-local-3orderings": dict(
        distribution=BERN,
        hidden=(12,),
        num_masks=3,
        ordering="random",
        vary_ordering=True,
        image_shape=(4, 4),
        local_rows=1,
        local_cols=1,
        local_hidden=(5,),
        local_context=2,
        local_mirror=0,
    ),
}


def build(case: str) -> MADE:
    if CASES[case] is None:
        parts = [make_model(seed=s, hidden=(14, 10), direct=s == 0, mask_seed=s) for s in (0, 1)]
        return pool(parts, [0.7, 0.6])
    return make_model(**CASES[case])


def log_probs(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.log_prob(torch.as_tensor(x, dtype=torch.float64)).numpy()


# inline_chunk_ms 0: every chunk goes to the worker thread; 1000: every CPU chunk without a prefill
# runs on the event-loop thread
@pytest.mark.parametrize(
    ("backend", "inline_ms"), [("numba", 0.0), ("numba", 1000.0), ("torch", 0.0), ("stream", 0.0)]
)
@pytest.mark.parametrize("case", list(CASES))
def test_concurrent_requests_equal_reference_alone(backend, inline_ms, case):
    model = build(case)
    d = model.data_dim
    known = reference(model, 1, seed=999)[0]
    completions = model.shares_ordering()
    jobs = [("sample", 1 + s % 3, s, 0) for s in range(12)]
    if completions:
        jobs += [("complete", 1 + s % 2, 100 + s, n_known) for s, n_known in enumerate([1, 5, d // 2, d - 1])]

    async def body(engine):
        calls = []
        for kind, n, seed, n_known in jobs:
            if kind == "sample":
                calls.append(engine.sample(n, seed))
            else:
                calls.append(engine.complete(known, n_known, n, seed))
            await asyncio.sleep(0.0005 * (seed % 4))  # arrivals while others are mid-loop
        outs = await asyncio.gather(*calls)
        inline = engine._loop.counters.chunks_inline
        assert (inline > 0) == (inline_ms > 0 and backend == "numba"), inline
        return outs, engine.stats()

    # few active rows and short chunks: requests queue, join mid-loop and are admitted piecewise
    outs, stats = run_engine(
        model,
        body,
        backend=backend,
        max_active_rows=5,
        steps_per_chunk=3,
        chunk_budget_ms=0,
        inline_chunk_ms=inline_ms,
    )
    for (kind, n, seed, n_known), out in zip(jobs, outs, strict=True):
        expect = reference(model, n, seed, known if kind == "complete" else None, n_known)
        assert out.seed == seed and out.x.dtype == np.float32 and out.x.shape == (n, d)
        np.testing.assert_array_equal(out.x, expect, err_msg=f"{kind} seed={seed}")
        assert out.log_prob.dtype == np.float64
        np.testing.assert_allclose(out.log_prob, log_probs(model, out.x), rtol=0, atol=1e-9)
    assert stats.requests_ok == len(jobs) and stats.active_rows == 0 and stats.queued_rows == 0


@pytest.mark.parametrize("backend", ["numba", "torch", "stream"])
def test_same_seed_same_images_alone_or_beside_100_others(backend):
    model = make_model(distribution=LOGI, hidden=(20,), num_masks=2)

    async def body(engine):
        alone = await engine.sample(3, 7)
        crowd = await asyncio.gather(*(engine.sample(1 + s % 4, s) for s in range(100)), engine.sample(3, 7))
        return alone, crowd, engine.stats()

    alone, crowd, stats = run_engine(model, body, backend=backend)
    np.testing.assert_array_equal(alone.x, crowd[-1].x)
    np.testing.assert_array_equal(alone.x, reference(model, 3, 7))
    assert len({out.x.tobytes() for out in crowd[:100]}) == 100  # different seeds, different draws
    # the 101 requests were batched: far fewer chunks than one loop per request would take (the
    # stream backend counts kernel sweeps instead; its batching: tests/engine/test_stream.py)
    assert backend == "stream" or stats.chunks_run < 100


def test_blocks_of_rows_in_parallel_equal_reference():
    """Many rows at one position are cut into blocks run on several threads (the prange path)."""
    model = make_model(distribution=BERN, hidden=(24, 24), direct=True, data_dim=32)

    async def body(engine):
        engine._runner.block_rows = 3
        return await asyncio.gather(*(engine.sample(8, s) for s in range(6)))

    outs = run_engine(model, body, backend="numba")
    for s, out in enumerate(outs):
        np.testing.assert_array_equal(out.x, reference(model, 8, s))


@pytest.mark.parametrize("backend", ["numba", "torch", "stream"])
def test_complete_keeps_the_known_prefix_and_edge_cases(backend):
    model = make_model(distribution=BERN, hidden=(24,), num_masks=3)
    d = model.data_dim
    known = reference(model, 1, seed=5)[0]
    prefix = model.ordering(0)[:6].numpy()

    async def body(engine):
        return (
            await engine.complete(known, 6, 4, 1),
            await engine.complete(known, 0, 2, 3),  # nothing known: plain sampling
            await engine.complete(known, d, 2, 3),  # everything known: nothing to draw
        )

    part, none, full = run_engine(model, body, backend=backend)
    assert (part.x[:, prefix] == known[prefix]).all()
    np.testing.assert_array_equal(part.x, reference(model, 4, 1, known, 6))
    np.testing.assert_array_equal(none.x, reference(model, 2, 3))
    np.testing.assert_array_equal(full.x, np.stack([known, known]))
    np.testing.assert_allclose(full.log_prob, log_probs(model, full.x), atol=1e-12)
