"""Cached sampler == reference sampler on the same uniforms, exactly (float64)."""

import math

import pytest
import torch

from service.made import build_plan, choose_components, draw_uniforms, sample_cached, sample_reference

from .conftest import BERN, LOGI, make_model

CASES = [
    dict(distribution=BERN, hidden=(16,)),
    dict(distribution=BERN, hidden=(16, 9), direct=True, num_masks=3),
    dict(distribution=BERN, hidden=(4,), ordering="random", ordering_seed=2),
    dict(distribution=LOGI, hidden=(12, 12), num_masks=2, direct=True),
    dict(distribution={"type": "discretized_logistic", "n_bins": 17, "n_components": 1}, hidden=(10,)),
]


@pytest.mark.parametrize("case", CASES)
def test_cached_equals_reference_unconditional(case):
    model = make_model(**case)
    u = draw_uniforms(64, model.data_dim, torch.Generator().manual_seed(7))
    ref = sample_reference(model, uniforms=u)
    fast = sample_cached(model, uniforms=u)
    assert torch.equal(ref.x, fast.x)
    assert torch.equal(ref.components, fast.components)
    assert torch.allclose(ref.log_prob, fast.log_prob, atol=1e-10)
    # draws are not degenerate
    assert ref.x.unique().numel() > 1


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3]])
@pytest.mark.parametrize("n_known", [1, 3, 7, 8])
def test_cached_equals_reference_with_known_prefix(case, n_known):
    model = make_model(**case)
    g = torch.Generator().manual_seed(11)
    known = sample_reference(model, 16, generator=g).x
    u = draw_uniforms(16, model.data_dim, g)
    ref = sample_reference(model, uniforms=u, known=known, n_known=n_known)
    fast = sample_cached(model, uniforms=u, known=known, n_known=n_known)
    assert torch.equal(ref.x, fast.x)
    prefix = model.ordering(0)[:n_known]
    assert torch.equal(ref.x[:, prefix], known[:, prefix])
    assert torch.allclose(ref.log_prob, fast.log_prob, atol=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_log_prob_of_draw_is_sum_of_conditionals(case):
    model = make_model(**case)
    res = sample_cached(model, 32, generator=torch.Generator().manual_seed(3))
    for k in res.components.unique().tolist():
        rows = res.components == k
        expect = model.log_prob_per_dim(res.x[rows], k).sum(-1)
        assert torch.allclose(res.log_prob[rows], expect, atol=1e-9)


def test_same_generator_same_samples_and_plans_reusable():
    model = make_model(**CASES[1])
    plans = [build_plan(model, k) for k in range(model.num_masks)]
    a = sample_cached(model, 8, generator=torch.Generator().manual_seed(1), plans=plans)
    b = sample_cached(model, 8, generator=torch.Generator().manual_seed(1), plans=plans)
    assert torch.equal(a.x, b.x)


def test_ensemble_sampling_matches_mixture_distribution():
    """Exact mixture sampling: empirical frequencies of all 2^3 vectors match exp(log_prob)."""
    model = make_model(data_dim=3, hidden=(6,), num_masks=3, vary_ordering=True, ordering="random")
    n = 20000
    res = sample_cached(model, n, generator=torch.Generator().manual_seed(0))
    codes = (res.x * torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)).sum(-1).long()
    freq = torch.bincount(codes, minlength=8).double() / n
    allx = torch.tensor([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)], dtype=torch.float64)
    p = model.log_prob(allx).exp()
    assert (freq - p).abs().max() < 4 * math.sqrt(0.25 / n)


def test_completion_components_follow_posterior():
    model = make_model(hidden=(12,), num_masks=3)
    known = torch.ones(4000, model.data_dim, dtype=torch.float64)
    u = torch.rand(4000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    comps = choose_components(model, u, known, n_known=5)
    prefix = model.ordering(0)[:5]
    w = torch.softmax(
        torch.stack([model.log_prob_per_dim(known[:1], k)[0, prefix].sum() for k in range(3)]), 0
    )
    freq = torch.bincount(comps, minlength=3).double() / 4000
    assert (freq - w).abs().max() < 0.03


def test_bad_arguments():
    model = make_model()
    with pytest.raises(ValueError, match="uniforms must have shape"):
        sample_reference(model, uniforms=torch.rand(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="known must have shape"):
        sample_cached(model, 2, n_known=2)
    with pytest.raises(ValueError, match="give n"):
        sample_cached(model)
    mixed = make_model(num_masks=2, vary_ordering=True, ordering="random")
    with pytest.raises(ValueError, match="share one ordering"):
        sample_cached(mixed, 2, known=torch.zeros(2, 8, dtype=torch.float64), n_known=2)
