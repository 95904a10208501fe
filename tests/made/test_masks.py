import pytest
import torch

from service.made.masks import (
    draw_hidden_degrees,
    explicit_ordering,
    hidden_mask,
    input_degrees,
    make_ordering,
    output_mask,
)


def test_orderings():
    assert make_ordering("natural", 4).tolist() == [0, 1, 2, 3]
    assert make_ordering("reversed", 4).tolist() == [3, 2, 1, 0]
    r1, r2 = make_ordering("random", 50, seed=3), make_ordering("random", 50, seed=3)
    assert torch.equal(r1, r2) and sorted(r1.tolist()) == list(range(50))
    assert not torch.equal(r1, make_ordering("random", 50, seed=4))
    assert make_ordering([2, 0, 1], 3).tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="permutation"):
        explicit_ordering([0, 0, 1])
    with pytest.raises(ValueError, match="expected 4"):
        make_ordering([0, 1, 2], 4)
    with pytest.raises(ValueError, match="unknown ordering"):
        make_ordering("spiral", 4)


def test_input_degrees_are_positions():
    order = torch.tensor([2, 0, 1])
    assert input_degrees(order).tolist() == [2, 3, 1]


@pytest.mark.parametrize("d,widths", [(10, (9, 30)), (10, (50,)), (100, (40, 40)), (3, (1,))])
def test_hidden_degrees_range_and_coverage(d, widths):
    degs = draw_hidden_degrees(d, widths, torch.Generator().manual_seed(0))
    low = 1
    for h, deg in zip(widths, degs, strict=True):
        assert deg.shape == (h,)
        assert int(deg.min()) >= low and int(deg.max()) <= d - 1
        values = set(range(low, d))
        if h >= len(values):  # wide enough: every value is used
            assert values <= set(deg.tolist())
        else:
            assert len(set(deg.tolist())) == h  # narrow: distinct, spread over the range
        low = int(deg.min())


def test_mask_rules():
    deg_in = torch.tensor([1, 2, 3])
    deg_h = torch.tensor([1, 2])
    assert hidden_mask(deg_h, deg_in).int().tolist() == [[1, 0, 0], [1, 1, 0]]
    assert output_mask(deg_in, deg_h).int().tolist() == [[0, 0], [1, 0], [1, 1]]


@pytest.mark.parametrize("d,widths", [(10, (30,)), (10, (9, 30)), (40, (12,)), (40, (100, 100))])
def test_weighted_degrees_keep_the_range_and_follow_the_weights(d, widths):
    weights = torch.zeros(d - 1, dtype=torch.float64)
    weights[d // 2 :] = 1.0  # only the second half of the degrees carries information
    degs = draw_hidden_degrees(d, widths, torch.Generator().manual_seed(0), weights)
    low = 1
    for h, deg in zip(widths, degs, strict=True):
        assert deg.shape == (h,) and int(deg.min()) >= low and int(deg.max()) <= d - 1
        values = set(range(low, d))
        if h >= len(values):  # every degree still appears once; the extra units go where the weight is
            assert values <= set(deg.tolist())
            counts = torch.bincount(deg, minlength=d)
            assert (counts[low : d // 2 + 1] == 1).all()
        else:  # narrow: every unit on a weighted degree
            assert int(deg.min()) >= d // 2 + 1
        low = int(deg.min())


def test_weighted_degrees_are_spread_in_proportion_to_the_weights():
    d, h = 101, 100 + 4000
    weights = torch.ones(d - 1, dtype=torch.float64)
    weights[:50] = 3.0  # degrees 1..50 get three times the weight of 51..100
    (deg,) = draw_hidden_degrees(d, [h], torch.Generator().manual_seed(1), weights)
    counts = torch.bincount(deg, minlength=d)[1:] - 1  # the extras per degree
    assert counts[:50].sum() == pytest.approx(3000, abs=2) and counts[50:].sum() == pytest.approx(1000, abs=2)
    assert int(counts.max() - counts[:50].min()) <= 1  # evenly spaced quantiles, not a random draw


def test_bad_degree_weights_are_refused():
    gen = torch.Generator().manual_seed(0)
    for bad in (torch.ones(5), -torch.ones(9), torch.zeros(9)):
        with pytest.raises(ValueError, match="non-negative"):
            draw_hidden_degrees(10, [20], gen, bad)
