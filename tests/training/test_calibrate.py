"""Temperature calibration recovers a known temperature and keeps the model a normalised MADE."""

import pytest
import torch

from service.made import sample_reference, seeded_uniforms
from service.training.calibrate import calibrate, fit_temperature

from ..made.conftest import LOGI, make_model


def _overconfident_pair(t: float):
    """A model, data drawn from it, and a copy whose logits are ``t`` times too large."""
    model = make_model(seed=3, data_dim=8, hidden=(16,), direct=True)
    x = sample_reference(model, uniforms=seeded_uniforms(4000, 8, seed=0)).x
    sharp = make_model(seed=3, data_dim=8, hidden=(16,), direct=True)
    sharp.scale_outputs_(t)
    return model, sharp, x


def test_fit_recovers_the_temperature_of_an_overconfident_copy():
    _, sharp, x = _overconfident_pair(2.0)
    assert fit_temperature(sharp, x) == pytest.approx(2.0, rel=0.08)


def test_calibrate_folds_the_temperature_into_the_weights():
    _, sharp, x = _overconfident_pair(1.7)
    info = calibrate(sharp, x)
    assert info["valid_nll_after"] < info["valid_nll_before"]
    with torch.no_grad():
        assert float(-sharp.log_prob(x).mean()) == pytest.approx(info["valid_nll_after"], abs=1e-4)
    # still normalised: the 2^8 probabilities of the tempered model sum to 1
    grid = torch.tensor([[(i >> b) & 1 for b in range(8)] for i in range(256)], dtype=torch.float64)
    with torch.no_grad():
        assert float(sharp.log_prob(grid).exp().sum()) == pytest.approx(1.0, abs=1e-9)


def test_only_single_mask_bernoulli_models_are_calibrated():
    x = torch.zeros(4, 8)
    with pytest.raises(ValueError, match="Bernoulli"):
        fit_temperature(make_model(distribution=LOGI), x)
    with pytest.raises(ValueError, match="single-mask"):
        fit_temperature(make_model(num_masks=2), x)
