"""Pooling MADEs into one wider MADE: weighted logits, still autoregressive and normalised."""

import pytest
import torch

from service.made import (
    load_model,
    sample_cached,
    sample_reference,
    save_model,
    seeded_uniforms,
    verify_autoregressive,
)
from service.made.merge import pool
from service.made.verify import allowed_dependencies, jacobian

from .conftest import LOGI, make_model

GRID = torch.tensor([[(i >> b) & 1 for b in range(8)] for i in range(256)], dtype=torch.float64)


def _sources(hidden=((16,), (11,)), direct=(True, False), **kw):
    return [
        make_model(seed=i, hidden=h, direct=d, mask_seed=i, **kw)
        for i, (h, d) in enumerate(zip(hidden, direct, strict=True))
    ]


@pytest.mark.parametrize(
    ("hidden", "direct"),
    [
        (((16,), (11,)), (True, False)),
        (((16,), (11,), (5,)), (False, False, True)),
        (((12, 9), (7, 10)), (True, True)),  # deeper layers are block diagonal
    ],
)
def test_pooled_logits_are_the_weighted_sum_of_the_sources(hidden, direct):
    models = _sources(hidden, direct, ordering="random", ordering_seed=3)
    weights = [0.7, -0.2, 1.3][: len(models)]
    pooled = pool(models, weights)
    assert pooled.config.hidden == tuple(map(sum, zip(*hidden, strict=True)))
    assert pooled.config.direct == any(direct)
    x = GRID[::7]
    with torch.no_grad():
        want = sum(w * m(x)[..., 0] for w, m in zip(weights, models, strict=True))
        assert torch.allclose(pooled(x)[..., 0], want, atol=1e-12)


def test_pooled_model_is_autoregressive_and_normalised():
    pooled = pool(_sources(((12, 9), (7, 10)), (True, True)), [0.6, 0.8])
    allowed = allowed_dependencies(pooled, 0)
    for row in (GRID[5], GRID[200]):
        jac = jacobian(pooled, 0, row)
        assert (jac[~allowed] == 0).all()
        assert (jac[allowed] != 0).float().mean() > 0.5
    verify_autoregressive(pooled)
    with torch.no_grad():
        assert float(pooled.log_prob(GRID).exp().sum()) == pytest.approx(1.0, abs=1e-9)


def test_one_source_with_weight_one_is_the_source():
    (m,) = _sources(((16,),), (True,))
    with torch.no_grad():
        assert torch.allclose(pool([m], [1.0]).log_prob(GRID), m.log_prob(GRID), atol=1e-12)


def test_pooled_checkpoint_round_trip(tmp_path):
    pooled = pool(_sources(), [0.5, 0.5])
    save_model(tmp_path / "p", pooled, {"name": "p"})
    loaded, card = load_model(tmp_path / "p")
    assert card["config"]["hidden"] == [27]
    with torch.no_grad():
        assert torch.allclose(loaded.double().log_prob(GRID), pooled.log_prob(GRID), atol=1e-4)


@pytest.mark.parametrize(
    ("other", "match"),
    [
        (dict(num_masks=2), "single-mask"),
        (dict(distribution=LOGI), "Bernoulli"),
        (dict(ordering="reversed"), "orders the dimensions"),
        (dict(activation="tanh"), "uses tanh"),
        (dict(hidden=(8, 8)), "hidden layers"),
        (dict(image_shape=(2, 4), local_rows=1, local_cols=1, local_hidden=(4,)), "local head"),
    ],
)
def test_pool_refuses_sources_it_cannot_combine(other, match):
    a = make_model(seed=0)
    b = make_model(seed=1, **{"hidden": (16,), **other})
    with pytest.raises(ValueError, match=match):
        pool([a, b], [0.5, 0.5])


def test_pool_wants_one_weight_per_model():
    with pytest.raises(ValueError, match="2 models but 1 weights"):
        pool(_sources(), [1.0])


def test_cached_sampler_draws_exactly_what_the_reference_draws_from_a_pooled_model():
    """The pooled hidden units come unsorted by degree (two sources side by side); the plan sorts them."""
    pooled = pool(_sources(((12, 9), (7, 10)), (True, True)), [0.6, 0.8])
    u = seeded_uniforms(64, 8, seed=4)
    ref = sample_reference(pooled, uniforms=u)
    fast = sample_cached(pooled, uniforms=u)
    assert torch.equal(fast.x, ref.x)
    assert torch.allclose(fast.log_prob, ref.log_prob, atol=1e-10)
    with torch.no_grad():
        assert torch.allclose(pooled.log_prob(ref.x), ref.log_prob, atol=1e-10)
