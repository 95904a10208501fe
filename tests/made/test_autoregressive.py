"""The autoregressive property by autograd Jacobian, on every mask of many architectures."""

import pytest
import torch

from service.made import AutoregressiveViolation, verify_autoregressive
from service.made.verify import allowed_dependencies, jacobian

from .conftest import BERN, LOGI, make_model

CASES = [
    dict(hidden=(16,)),
    dict(hidden=(5,)),  # narrower than D - 1: not every degree present
    dict(hidden=(12, 12, 12)),
    dict(hidden=(20, 7), ordering="reversed"),
    dict(hidden=(16,), ordering="random", ordering_seed=5, num_masks=3),
    dict(hidden=(16, 16), num_masks=4, vary_ordering=True, ordering="random"),
    dict(hidden=(16,), ordering=(3, 1, 7, 0, 2, 6, 5, 4), num_masks=2),
]


@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("dist", [BERN, LOGI])
@pytest.mark.parametrize("case", CASES)
def test_jacobian_respects_ordering(case, dist, direct):
    model = make_model(distribution=dist, direct=direct, **case)
    for k in range(model.num_masks):
        allowed = allowed_dependencies(model, k)
        for seed in range(2):
            x = torch.randint(
                0, model.dist.n_bins, (model.data_dim,), generator=torch.Generator().manual_seed(seed)
            )
            jac = jacobian(model, k, x.double())
            assert (jac[~allowed] == 0).all(), f"mask {k}: forbidden dependence"
            # the check is not vacuous: most allowed connections are actually used
            assert (jac[allowed] != 0).float().mean() > 0.5
    verify_autoregressive(model)


def test_verify_catches_a_broken_mask():
    model = make_model(hidden=(16,), num_masks=2)
    verify_autoregressive(model)
    order = model.ordering(1)
    first, last = int(order[0]), int(order[-1])
    # let the first dimension's output see the last input through the direct path of mask 1
    broken = make_model(hidden=(16,), num_masks=2, direct=True)
    with torch.no_grad():
        broken.direct_layer.masks[1, first, last] = True
    with pytest.raises(AutoregressiveViolation, match="mask 1"):
        verify_autoregressive(broken)


def test_large_dimension_jacobian_is_chunked():
    model = make_model(data_dim=300, hidden=(64,), distribution=LOGI)
    verify_autoregressive(model)


@pytest.mark.parametrize("hidden", [(30,), (6,), (20, 20)])
def test_redrawn_weighted_degrees_keep_the_property(hidden):
    model = make_model(hidden=hidden, num_masks=2, direct=True)
    weights = torch.zeros(model.data_dim - 1)
    weights[-3:] = 1.0
    before = model.hidden_degrees(0).clone()
    model.redraw_hidden_degrees(weights)
    assert not torch.equal(before, model.hidden_degrees(0))
    for k in range(model.num_masks):
        x = torch.rand(model.data_dim, generator=torch.Generator().manual_seed(k)).round()
        jac = jacobian(model, k, x.double())
        assert (jac[~allowed_dependencies(model, k)] == 0).all()
    verify_autoregressive(model)


def test_loading_a_state_dict_rebuilds_the_masks_from_its_degrees():
    src = make_model(hidden=(16, 16), num_masks=2, direct=True)
    src.redraw_hidden_degrees(torch.arange(1.0, src.data_dim))
    dst = make_model(hidden=(16, 16), num_masks=2, direct=True, mask_seed=7)
    assert not torch.equal(dst.hidden_layers[0].masks, src.hidden_layers[0].masks)
    dst.load_state_dict(src.state_dict())
    for a, b in zip(dst.hidden_layers, src.hidden_layers, strict=True):
        assert torch.equal(a.masks, b.masks)
    assert torch.equal(dst.output_layer.masks, src.output_layer.masks)
    x = torch.rand(3, src.data_dim, generator=torch.Generator().manual_seed(0)).round().double()
    assert torch.equal(dst.log_prob(x, 1), src.log_prob(x, 1))
    verify_autoregressive(dst)
