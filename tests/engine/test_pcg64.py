"""The compiled uniforms are NumPy's default generator, number for number, over the whole seed range."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine.pcg64 import seeded_uniforms

EDGES = [0, 1, 2, 12345, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**53 - 1, 2**63, 2**64 - 1]


@pytest.mark.parametrize("seed", EDGES)
def test_edge_seeds_match_default_rng(seed: int) -> None:
    """Seeds of one and two 32-bit words, and both ends of the range, over several rows."""
    got = seeded_uniforms(seed, 3, 785)
    assert got.dtype == np.float64 and got.shape == (3, 785)
    assert np.array_equal(got, np.random.default_rng(seed).random((3, 785)))


def test_random_seeds_match_default_rng() -> None:
    rng = np.random.default_rng(20261202)
    seeds = [int(s) for s in rng.integers(0, 2**64, 300, dtype=np.uint64)]
    seeds += [int(s) for s in rng.integers(0, 2**32, 300, dtype=np.uint64)]
    for seed in seeds:
        assert np.array_equal(seeded_uniforms(seed, 1, 40), np.random.default_rng(seed).random((1, 40))), seed


def test_shapes_without_draws_and_of_one_value() -> None:
    assert seeded_uniforms(5, 0, 785).shape == (0, 785)
    assert seeded_uniforms(5, 1, 1)[0, 0] == np.random.default_rng(5).random()


@pytest.mark.parametrize("seed", [-1, 2**64])
def test_seed_outside_the_range_is_refused(seed: int) -> None:
    with pytest.raises(ValueError, match="seed"):
        seeded_uniforms(seed, 1, 4)
