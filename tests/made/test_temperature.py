"""Sampling temperature in the distributions and the two torch samplers (issue 15, item 4), float64:
tempered parameters as defined, the most probable value at 0, the cached sampler equal to the reference
loop at 0, 0.5 and 1 (samples and completions), and ``log_prob`` the model's own."""

from __future__ import annotations

import math

import pytest
import torch

from service.made import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    Bernoulli,
    DiscretizedLogistic,
    check_temperature,
    sample_cached,
    sample_reference,
)

from .conftest import BERN, make_model

LOGI3 = {"type": "discretized_logistic", "n_bins": 256, "n_components": 3}
CASES = {
    "bern-1mask": dict(distribution=BERN),
    "bern-3mask-direct": dict(distribution=BERN, num_masks=3, direct=True),
    "logistic3-1mask": dict(distribution=LOGI3),
    "logistic3-3mask-direct": dict(distribution=LOGI3, num_masks=3, direct=True),
}


def model_for(case: str):
    return make_model(0, data_dim=12, hidden=(20, 16), **CASES[case])  # type: ignore[arg-type]


@pytest.mark.parametrize("temperature", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("n_known", [0, 5])
def test_cached_equals_reference(case: str, temperature: float, n_known: int) -> None:
    model = model_for(case)
    d = model.data_dim
    u = torch.rand(6, d + 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    known = None
    if n_known:
        known = sample_reference(model, uniforms=u[:1]).x.repeat(6, 1)
    ref = sample_reference(model, uniforms=u, known=known, n_known=n_known, temperature=temperature)
    got = sample_cached(model, uniforms=u, known=known, n_known=n_known, temperature=temperature)
    assert torch.equal(ref.x, got.x) and torch.equal(ref.components, got.components)
    torch.testing.assert_close(ref.log_prob, got.log_prob, rtol=0, atol=1e-9)
    if n_known:
        assert torch.equal(ref.x[:, :n_known], known[:, :n_known])  # type: ignore[index]
    if model.num_masks == 1:  # log_prob is the model's own (temperature 1) log-likelihood of the draw
        full = model.log_prob(ref.x)
        prefix = model.log_prob_per_dim(ref.x, 0)[:, :n_known].sum(-1)
        torch.testing.assert_close(ref.log_prob, full - prefix, rtol=0, atol=1e-9)


@pytest.mark.parametrize("case", list(CASES))
def test_zero_is_deterministic_whatever_the_uniforms(case: str) -> None:
    model = model_for(case)
    d = model.data_dim
    gen = torch.Generator().manual_seed(1)
    a = sample_cached(model, uniforms=torch.rand(4, d + 1, generator=gen, dtype=torch.float64), temperature=0)
    b = sample_cached(model, uniforms=torch.rand(4, d + 1, generator=gen, dtype=torch.float64), temperature=0)
    assert torch.equal(a.x, b.x) and bool((a.x == a.x[0]).all())
    assert bool((a.components == 0).all())  # no prefix: every mask is as likely, the first is taken


def test_zero_takes_the_most_probable_value_each_step() -> None:
    """Greedy decoding: each drawn value is the mode of its conditional given what came before."""
    for case in ("bern-1mask", "logistic3-1mask"):
        model = model_for(case)
        x = sample_reference(model, 2, temperature=0).x
        params = model.forward_rows(x, torch.zeros(2, dtype=torch.long))  # (n, D, P) by dimension
        if isinstance(model.dist, Bernoulli):
            best = (torch.sigmoid(params[..., 0]) >= 0.5).to(x.dtype)
        else:
            best = model.dist.bin_log_probs(params).argmax(-1).to(x.dtype)
        assert torch.equal(x, best), case


def test_bernoulli_temper_and_mode() -> None:
    dist = Bernoulli()
    logits = torch.tensor([[-2.0], [0.0], [3.0]], dtype=torch.float64)
    assert dist.mode(logits).tolist() == [0.0, 1.0, 1.0]  # p = 1/2 exactly goes to 1
    torch.testing.assert_close(dist.logit(logits, 0.5), logits[:, 0] * 2)
    u = torch.full((3,), 0.3, dtype=torch.float64)
    assert dist.sample(logits, u, 0.0).tolist() == [0.0, 1.0, 1.0]
    # per-row temperatures, greedy rows included
    t = torch.tensor([4.0, 0.0, 0.25], dtype=torch.float64)
    expect = (u < torch.sigmoid(logits[:, 0] / torch.tensor([4.0, 1.0, 0.25], dtype=torch.float64))).double()
    expect[1] = 1.0
    assert torch.equal(dist.sample(logits, u, t), expect)


def test_logistic_temper_scales_and_sharpens() -> None:
    """One component: tempering is the logistic with scale s T; two: mixture weights softmax(logit / T)."""
    one = DiscretizedLogistic(n_bins=256, n_components=1)
    params = torch.tensor([[0.0, 0.1, -2.0]], dtype=torch.float64)
    scaled = torch.tensor([[0.0, 0.1, -2.0 + math.log(0.5)]], dtype=torch.float64)
    torch.testing.assert_close(one.bin_log_probs(params, 0.5), one.bin_log_probs(scaled), rtol=0, atol=1e-12)
    two = DiscretizedLogistic(n_bins=256, n_components=2)
    p2 = torch.tensor([[1.0, -1.0, -0.5, 0.5, -3.0, -3.0]], dtype=torch.float64)
    logit, mu, log_s = two.mixture(p2, 0.25)
    torch.testing.assert_close(logit, p2[:, :2] * 4)
    torch.testing.assert_close(mu, p2[:, 2:4])
    torch.testing.assert_close(log_s, p2[:, 4:] + math.log(0.25))
    # the mode: the bin of largest mass under the model (a mixture's need not be a mean's bin)
    assert int(two.mode(p2)) == int(two.bin_log_probs(p2).argmax())
    assert two.sample(p2, torch.tensor([0.99], dtype=torch.float64), 0.0).item() == two.mode(p2).item()


def test_logistic_mode_ties_go_to_the_lowest_bin() -> None:
    """Mean exactly on the edge between bins 1 and 2 of 4: both hold the same mass, bin 1 is taken."""
    dist = DiscretizedLogistic(n_bins=4, n_components=1)
    edge = 1 * (2 / 3) - 1 + 1 / 3  # x_1 + half
    params = torch.tensor([[0.0, edge, -3.0]], dtype=torch.float64)
    lp = dist.bin_log_probs(params)[0]
    assert lp[1] == lp[2] and int(dist.mode(params)) == 1


@pytest.mark.parametrize(
    "bad", [-0.1, float("nan"), float("inf"), MAX_TEMPERATURE * 2, MIN_TEMPERATURE / 2, True, "1"]
)
def test_bad_temperatures_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="temperature"):
        check_temperature(bad)  # type: ignore[arg-type]
    model = model_for("bern-1mask")
    with pytest.raises(ValueError, match="temperature"):
        sample_reference(model, 1, temperature=bad)  # type: ignore[arg-type]


def test_accepted_range() -> None:
    assert check_temperature(0) == 0.0 and check_temperature(MIN_TEMPERATURE) == MIN_TEMPERATURE
    assert check_temperature(MAX_TEMPERATURE) == MAX_TEMPERATURE and check_temperature(2) == 2.0
