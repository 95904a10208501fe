"""The K-mask ensemble is the exact mixture logsumexp_k log p_k(x) - log K."""

import math

import pytest
import torch

from .conftest import BERN, LOGI, make_model


@pytest.mark.parametrize("dist", [BERN, LOGI])
def test_ensemble_is_mixture_by_hand(dist):
    model = make_model(distribution=dist, num_masks=4, hidden=(16, 16))
    x = torch.randint(
        0, model.dist.n_bins, (10, model.data_dim), generator=torch.Generator().manual_seed(0)
    ).double()
    by_hand = []
    for row in x:
        probs = [model.log_prob(row[None], k).exp().item() for k in range(4)]
        by_hand.append(math.log(sum(probs) / 4))
    assert torch.allclose(model.log_prob(x), torch.tensor(by_hand, dtype=torch.float64), atol=1e-10)
    # and it is not the (wrong) density of averaged logits
    avg = torch.stack([model(x, k) for k in range(4)]).mean(0)
    assert not torch.allclose(model.log_prob(x), model.dist.log_prob(avg, x).sum(-1))


def test_ensemble_per_dim_conditionals_sum_to_log_prob():
    model = make_model(num_masks=3, hidden=(16,), ordering="random", ordering_seed=1)
    x = torch.randint(0, 2, (6, model.data_dim), generator=torch.Generator().manual_seed(1)).double()
    per = model.ensemble_log_prob_per_dim(x)
    assert torch.allclose(per.sum(-1), model.log_prob(x), atol=1e-10)
    assert (per <= 1e-12).all()  # each is the log of a probability (binary data)


def test_ensemble_per_dim_needs_shared_ordering():
    model = make_model(num_masks=2, vary_ordering=True, ordering="random")
    with pytest.raises(ValueError, match="shared ordering"):
        model.ensemble_log_prob_per_dim(torch.zeros(1, 8, dtype=torch.float64))
