"""Sampling temperature through the engine (issue 15, item 4), float64: every runner gives the reference
loop's draws at 0, 0.5 and 1 (and 2), for samples and completions, for Bernoulli and discretised-logistic
models with a mixture of logistics, whether a request runs alone or in a crowd of concurrent requests at
other temperatures; ``log_prob`` stays the model's own log-likelihood of what was drawn."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from service.made import MADE, sample_reference, seeded_uniforms

from .conftest import BERN, make_model, run_engine

LOGI3 = {"type": "discretized_logistic", "n_bins": 256, "n_components": 3}
CASES = {
    "bern-1mask": dict(distribution=BERN),
    "bern-3mask-direct": dict(distribution=BERN, hidden=(24, 20), num_masks=3, direct=True),
    "logistic3-1mask": dict(distribution=LOGI3, hidden=(20, 20), direct=True),
    "logistic3-2mask": dict(distribution=LOGI3, hidden=(20,), num_masks=2),
    "logistic3-local": dict(
        distribution=LOGI3,
        hidden=(20,),
        image_shape=(4, 4),
        local_rows=2,
        local_cols=2,
        local_hidden=(8,),
        local_context=2,
    ),
}
TEMPERATURES = (0.0, 0.5, 1.0, 2.0)


def reference(
    model: MADE, n: int, seed: int, temperature: float, known: np.ndarray | None = None, n_known: int = 0
) -> np.ndarray:
    """What the engine must return: the reference loop alone on the seed's uniforms at ``temperature``."""
    u = seeded_uniforms(n, model.data_dim, seed)
    kn = None if known is None else torch.as_tensor(known, dtype=torch.float64).repeat(n, 1)
    with torch.no_grad():
        out = sample_reference(model, uniforms=u, known=kn, n_known=n_known, temperature=temperature)
    return out.x.numpy().astype(np.float32)


def log_probs(model: MADE, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.log_prob(torch.as_tensor(x, dtype=torch.float64)).numpy()


@pytest.mark.parametrize("backend", ["numba", "torch", "stream"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_crowd_of_temperatures_equals_the_reference_alone(backend: str, case: str) -> None:
    model = make_model(**CASES[case])  # type: ignore[arg-type]
    d = model.data_dim
    known = reference(model, 1, 999, 1.0)[0]
    jobs = [("sample", 1 + s % 3, s, TEMPERATURES[s % 4], 0) for s in range(12)]
    jobs += [
        ("complete", 2, 100 + s, TEMPERATURES[s % 4], n_known)
        for s, n_known in enumerate([1, 5, d // 2, d - 1])
    ]
    jobs += [("complete", 2, 200 + s, TEMPERATURES[s], d // 2) for s in range(4)]

    def call(engine, kind, n, seed, t, n_known):  # type: ignore[no-untyped-def]
        if kind == "sample":
            return engine.sample(n, seed, temperature=t)
        return engine.complete(known, n_known, n, seed, temperature=t)

    async def body(engine):  # type: ignore[no-untyped-def]
        calls = []
        for job in jobs:
            calls.append(call(engine, *job))
            await asyncio.sleep(0.0005 * (job[2] % 4))  # arrivals while others are mid-loop
        crowd = await asyncio.gather(*calls)
        alone = [await call(engine, *job) for job in jobs[::3]]  # one at a time
        return crowd, alone

    crowd, alone = run_engine(
        model,
        body,
        backend=backend,
        max_active_rows=5,
        steps_per_chunk=3,
        chunk_budget_ms=0,
        inline_chunk_ms=0,
    )
    for (kind, n, seed, t, n_known), out in zip(jobs, crowd, strict=True):
        expect = reference(model, n, seed, t, known if kind == "complete" else None, n_known)
        np.testing.assert_array_equal(out.x, expect, err_msg=f"{kind} seed={seed} T={t}")
        np.testing.assert_allclose(out.log_prob, log_probs(model, out.x), rtol=0, atol=1e-9)
        if t == 0:  # the most probable values: the seed plays no part
            assert (out.x == out.x[0]).all()
    for (kind, _, seed, t, _), one, many in zip(jobs[::3], alone, crowd[::3], strict=True):
        np.testing.assert_array_equal(one.x, many.x, err_msg=f"{kind} seed={seed} T={t} alone vs crowd")
        # mixtures score their draws in a log-prob batch, whose composition moves the last bits
        np.testing.assert_allclose(one.log_prob, many.log_prob, rtol=0, atol=1e-9)


@pytest.mark.parametrize("backend", ["numba", "torch", "stream"])
def test_zero_does_not_depend_on_the_seed(backend: str) -> None:
    model = make_model(**CASES["logistic3-2mask"])  # type: ignore[arg-type]

    async def body(engine):  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(engine.sample(2, seed, temperature=0) for seed in (1, 2, 3)))

    outs = run_engine(model, body, backend=backend)
    for out in outs:
        np.testing.assert_array_equal(out.x, outs[0].x[[0, 0]])


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "0.5", None, True])
def test_bad_temperatures_are_refused(bad: object) -> None:
    model = make_model()

    async def body(engine):  # type: ignore[no-untyped-def]
        for call in (
            engine.sample(1, 0, temperature=bad),
            engine.complete(np.zeros(model.data_dim), 4, 1, 0, temperature=bad),
        ):
            with pytest.raises(ValueError, match="temperature"):
                await call
        return engine.stats()

    stats = run_engine(model, body, backend="numba")
    assert stats.queued_rows == 0 and stats.active_rows == 0
