"""The numba kernel's most probable bin (temperature 0) is the reference's ``argmax`` over every bin's
log-mass, for sharp, flat and multi-modal mixtures, means outside the range and on bin edges (it scores
only the bins that can hold the largest mass; see ``kernel_draws._mode_bin``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.engine.kernel_draws import _logistic_draw
from service.made import DiscretizedLogistic


def params_for(rng: np.random.Generator, n: int, nc: int, nb: int) -> np.ndarray:
    logits = rng.normal(0, 2, (n, nc))
    mu = rng.uniform(-1.3, 1.3, (n, nc))
    edges = rng.random((n, nc)) < 0.2  # some means exactly on an edge between two bins
    k = rng.integers(0, nb - 1, (n, nc))
    mu[edges] = (k * (2.0 / (nb - 1)) - 1.0 + 1.0 / (nb - 1))[edges]
    log_s = rng.uniform(-8, 8, (n, nc))  # beyond the clamp on both sides: sharp and flat
    return np.concatenate([logits, mu, log_s], axis=1)


@pytest.mark.parametrize("nb", [2, 3, 17, 256])
@pytest.mark.parametrize("nc", [1, 2, 3, 5])
def test_kernel_mode_is_the_reference_argmax(nb: int, nc: int) -> None:
    rng = np.random.default_rng(nb * 10 + nc)
    params = params_for(rng, 400, nc, nb)
    dist = DiscretizedLogistic(n_bins=nb, n_components=nc)
    p = torch.from_numpy(params)
    want = dist.mode(p).numpy()
    want_lp = dist.log_prob(p, dist.mode(p)).numpy()
    tmp = np.zeros(6 * nc)
    for i in range(len(params)):
        v, lp = _logistic_draw(params[i], 0, nb, nc, 0.5, 0.0, tmp)
        assert v == want[i], (i, params[i])
        assert abs(lp - want_lp[i]) < 1e-9
