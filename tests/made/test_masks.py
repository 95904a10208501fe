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
