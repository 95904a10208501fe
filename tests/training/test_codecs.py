"""The lossless-codec baseline beside held-out bits/dim (service/training/evaluate.py)."""

from __future__ import annotations

import torch

from service.made import MADE, MADEConfig
from service.training.evaluate import codec_bits_per_pixel, nll_report, split_metrics


def test_codecs_spend_little_on_flat_images_and_about_8_bits_on_noise() -> None:
    flat = torch.full((3, 32 * 32), 128.0)
    noise = torch.randint(0, 256, (3, 32 * 32), generator=torch.Generator().manual_seed(0)).float()
    easy, hard = codec_bits_per_pixel(flat, (32, 32)), codec_bits_per_pixel(noise, (32, 32))
    for codec in ("png", "webp_lossless"):
        assert easy[codec] < 1.0
        assert 7.9 < hard[codec] < 10.0  # noise does not compress; headers add a little


def test_split_metrics_report_codecs_for_8_bit_images_only() -> None:
    logistic = {"type": "discretized_logistic", "n_bins": 256, "n_components": 1}
    model = MADE(MADEConfig(data_dim=64, hidden=(8,), distribution=logistic))
    x = torch.randint(0, 256, (4, 64)).float()
    m = split_metrics(model, x, shape=(8, 8))
    assert set(m["codecs_bits_per_pixel"]) == {"png", "webp_lossless"}
    assert "png (same images):" in nll_report("test", m)
    assert "codecs_bits_per_pixel" not in split_metrics(model, x)  # no shape, no images
    binary = MADE(MADEConfig(data_dim=64, hidden=(8,)))
    assert "codecs_bits_per_pixel" not in split_metrics(binary, (x > 128).float(), shape=(8, 8))
