"""Densities sum to one: over all 2^D binary vectors, and over all bins of a pixel."""

import itertools
import math

import pytest
import torch

from service.made import DiscretizedLogistic

from .conftest import BERN, make_model


def all_binary(d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64)


@pytest.mark.parametrize(
    "kw",
    [
        dict(data_dim=10, hidden=(12,)),
        dict(data_dim=12, hidden=(20, 20), direct=True, num_masks=3),
        dict(data_dim=9, hidden=(16,), num_masks=4, vary_ordering=True, ordering="random"),
    ],
)
def test_binary_probabilities_sum_to_one(kw):
    model = make_model(distribution=BERN, **kw)
    x = all_binary(model.data_dim)
    with torch.no_grad():
        for k in range(model.num_masks):
            assert abs(torch.logsumexp(model.log_prob(x, k), 0).exp().item() - 1.0) < 1e-6
        assert abs(torch.logsumexp(model.log_prob(x), 0).exp().item() - 1.0) < 1e-6


@pytest.mark.parametrize("n_bins,n_comp", [(256, 1), (256, 5), (17, 3), (2, 1)])
def test_discretized_logistic_bins_sum_to_one(n_bins, n_comp):
    dist = DiscretizedLogistic(n_bins, n_comp)
    g = torch.Generator().manual_seed(0)
    params = torch.randn(500, dist.n_params, generator=g, dtype=torch.float64) * 3
    # extreme but legal corners: tiny and huge scales, means far outside the range
    params[:50, 2 * n_comp :] = -7.0
    params[50:100, 2 * n_comp :] = 7.0
    params[100:150, n_comp : 2 * n_comp] = 40.0
    table = dist.bin_log_probs(params)
    assert table.shape == (500, n_bins)
    assert torch.isfinite(table).all()
    assert (table.exp().sum(-1) - 1).abs().max() < 1e-6
    # log_prob of a value is the table entry
    v = torch.randint(0, n_bins, (500,), generator=g).double()
    assert torch.allclose(dist.log_prob(params, v), table.gather(1, v.long()[:, None])[:, 0])


def test_discretized_logistic_float32_is_normalised_and_differentiable():
    dist = DiscretizedLogistic(256, 2)
    params = (torch.randn(200, dist.n_params) * 4).requires_grad_()
    table = dist.bin_log_probs(params)
    assert (table.exp().sum(-1) - 1).abs().max() < 1e-4
    v = torch.randint(0, 256, (200,)).float()
    dist.log_prob(params, v).sum().backward()
    assert torch.isfinite(params.grad).all()


def test_bits_per_dim_is_nats_over_d_ln2():
    model = make_model(distribution=BERN, num_masks=2)
    x = torch.ones(3, model.data_dim, dtype=torch.float64)
    expect = -model.log_prob(x) / (model.data_dim * math.log(2))
    assert torch.allclose(model.bits_per_dim(x), expect)
    assert torch.allclose(model.bits_per_dim(x, 1), -model.log_prob(x, 1) / (model.data_dim * math.log(2)))
