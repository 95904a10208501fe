"""The nogil log-prob kernel against the model's own forward pass (float64: equal to rounding), the
mixture over masks it feeds, and how the engine chooses it (``logprob_backend``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.engine import Engine, EngineConfig
from service.engine.logprob import NOGIL_MAX_ROWS, log_prob_batch, torch_per_mask
from service.engine.logprob_kernel import _GEMV_ROWS, NogilLogProb, _bernoulli_per_dim, nogil_unsupported

from .conftest import BERN, LOGI, make_model, run_engine

CONFIGS = [
    {"hidden": (24,), "direct": True},
    {"hidden": (24, 12), "activation": "tanh"},
    {"hidden": (16, 16, 8), "activation": "relu", "direct": True},
    {"hidden": (20,), "activation": "gelu", "num_masks": 3},
    {"hidden": (20,), "direct": True, "num_masks": 2, "vary_ordering": True},
]
ROWS = (1, _GEMV_ROWS, _GEMV_ROWS + 1, 37)  # both sides of the matrix-vector / matrix-matrix switch


def _data(model: torch.nn.Module, b: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, (b, model.data_dim)).astype(np.float64)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_every_masks_conditionals_equal_the_forward_pass_in_float64(cfg: dict[str, object]) -> None:
    model = make_model(3, distribution=BERN, **cfg)
    kernel = NogilLogProb(model)
    for b in ROWS:
        x = _data(model, b, b)
        got = kernel.per_mask(x)
        assert got.shape == (model.num_masks, b, model.data_dim) and got.dtype == np.float64
        np.testing.assert_allclose(got, torch_per_mask(model, x), rtol=0, atol=1e-12)


def test_float32_models_agree_to_float32_rounding() -> None:
    model = make_model(4, distribution=BERN, hidden=(64,), direct=True).float()
    x = _data(model, 12, 0)
    got, ref = NogilLogProb(model).per_mask(x), torch_per_mask(model, x)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    assert np.abs(got - ref).max() > 0  # computed apart: not the same numbers by construction


@pytest.mark.parametrize("per_dim", [False, True])
def test_the_mixture_is_the_same_through_either_forward_pass(per_dim: bool) -> None:
    model = make_model(5, distribution=BERN, hidden=(24,), num_masks=3, direct=True)
    x = _data(model, 10, 1)
    lp, pd = log_prob_batch(model, x, per_dim, NogilLogProb(model))
    ref_lp, ref_pd = log_prob_batch(model, x, per_dim)
    np.testing.assert_allclose(lp, ref_lp, rtol=0, atol=1e-12)
    with torch.no_grad():  # and the model's own mixture
        np.testing.assert_allclose(lp, model.log_prob(torch.as_tensor(x)).numpy(), rtol=0, atol=1e-12)
    if per_dim:
        assert pd is not None and ref_pd is not None
        np.testing.assert_allclose(pd, ref_pd, rtol=0, atol=1e-12)
        np.testing.assert_allclose(pd.sum(-1), lp, rtol=0, atol=1e-12)
    else:
        assert pd is None and ref_pd is None


def test_the_kernel_is_compiled_to_hold_no_gil() -> None:
    assert _bernoulli_per_dim.targetoptions["nogil"] is True


def test_models_it_cannot_serve_are_named() -> None:
    assert nogil_unsupported(make_model(distribution=BERN)) is None
    assert "DiscretizedLogistic" in str(nogil_unsupported(make_model(distribution=LOGI)))
    local = make_model(
        distribution=BERN, data_dim=16, image_shape=(4, 4), local_rows=1, local_cols=1, local_hidden=(4,)
    )
    assert nogil_unsupported(local) == "a local head"
    with pytest.raises(ValueError, match="does not serve a model with a local head"):
        NogilLogProb(local)


def test_the_engine_uses_it_where_it_serves_the_model_unless_told_torch() -> None:
    bern, logi = make_model(distribution=BERN), make_model(distribution=LOGI)

    async def kind(engine: Engine) -> str:
        assert engine._batcher is not None
        out = await engine.log_prob(_data(engine.model, 3, 0))
        np.testing.assert_allclose(
            out.log_prob, log_prob_batch(engine.model, _data(engine.model, 3, 0), False)[0]
        )
        return type(engine._batcher.kernel).__name__

    assert run_engine(bern, kind) == "NogilLogProb"
    assert run_engine(bern, kind, logprob_backend="torch") == "NoneType"
    assert run_engine(logi, kind) == "NoneType"  # auto: torch where the kernel does not serve


def test_asking_for_the_kernel_where_it_cannot_serve_fails_when_the_engine_is_built() -> None:
    with pytest.raises(
        ValueError, match="logprob_backend nogil does not serve a model with DiscretizedLogistic"
    ):
        Engine(make_model(distribution=LOGI), EngineConfig(logprob_backend="nogil"))
    with pytest.raises(ValueError, match="logprob_backend must be auto, nogil or torch"):
        EngineConfig(logprob_backend="fast")


def test_batches_over_the_limit_go_to_torch() -> None:
    model = make_model(6, distribution=BERN, hidden=(16,))
    kernel = NogilLogProb(model)
    calls: list[int] = []
    per_mask = kernel.per_mask
    kernel.per_mask = lambda x: calls.append(len(x)) or per_mask(x)  # type: ignore[method-assign]
    for b in (NOGIL_MAX_ROWS, NOGIL_MAX_ROWS + 1):
        x = _data(model, b, b)
        np.testing.assert_allclose(
            log_prob_batch(model, x, False, kernel)[0], log_prob_batch(model, x, False)[0]
        )
    assert calls == [NOGIL_MAX_ROWS]


def test_the_engine_warms_the_kernel_at_start_even_when_it_times_no_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, ...]] = []
    real = NogilLogProb.per_mask
    monkeypatch.setattr(NogilLogProb, "per_mask", lambda self, x: calls.append(x.shape) or real(self, x))

    async def before_any_request(engine: Engine) -> list[tuple[int, ...]]:
        return list(calls)

    model = make_model(7, distribution=BERN)
    assert run_engine(model, before_any_request, logprob_inline_ms=0.0) == [(1, model.data_dim)]
