"""The local head (service/made/local.py): a causal window read by one tied MLP, in float64.

It must keep every conditional autoregressive under any ordering (autograd Jacobian, and a leak the
check must catch), stay normalised, survive a checkpoint round trip, and sample exactly like the
reference loop in the cached sampler, also at other temperatures and for completions.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from service.made import (
    MADE,
    AutoregressiveViolation,
    MADEConfig,
    load_model,
    sample_cached,
    sample_reference,
    save_model,
    verify_autoregressive,
)
from service.made.local import causal_offsets, local_mask, mirror_index, neighbour_index, window_index

from .conftest import BERN, LOGI, make_model

LOCAL = dict(image_shape=(4, 4), local_rows=2, local_cols=1, local_hidden=(6, 5), local_context=3)
MIRROR = dict(LOCAL, local_mirror=1)


def test_window_precedes_each_pixel_in_raster_order() -> None:
    offsets = causal_offsets(2, 1)
    assert len(offsets) == 2 * 3 + 1
    index = neighbour_index((4, 4), offsets)
    d = torch.arange(16)[:, None]
    assert bool(((index < d) | (index == -1)).all())  # every neighbour comes earlier, or is outside
    assert index[0].tolist() == [-1] * 7  # the first pixel has none
    assert index[5].tolist() == [-1, -1, -1, 0, 1, 2, 4]  # pixel (1, 1)
    raster = torch.arange(1, 17)
    assert torch.equal(local_mask(index, raster), index >= 0)
    reverse = torch.arange(16, 0, -1)
    assert not local_mask(index, reverse).any()  # reversed order: every window pixel comes later


def test_mirror_window_reads_the_drawn_side_of_the_row() -> None:
    index = mirror_index((3, 4), 1)  # rows y-1..y, columns 2-x..4-x (the mirror column is 3-x)
    assert index.shape == (12, 6)
    assert index[7].tolist() == [-1, 0, 1, -1, 4, 5]  # pixel (1, 3): mirror (1, 0), its row and the one above
    raster = torch.arange(1, 13)
    kept = local_mask(index, raster)
    assert kept[7].tolist() == [False, True, True, False, True, True]
    assert kept[5].tolist() == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]  # (1, 1): itself, its mirror (1, 2) after
    both = window_index((3, 4), 1, 1, 1)
    assert torch.equal(both, torch.cat([neighbour_index((3, 4), causal_offsets(1, 1)), index], 1))
    assert torch.equal(window_index((3, 4), 1, 1, None), both[:, :4])


@pytest.mark.parametrize(
    "extra",
    [
        dict(distribution=LOGI),
        dict(distribution=LOGI, local_mirror=1),
        dict(distribution=BERN, ordering="random", local_mirror=0),
        dict(distribution=LOGI, num_masks=3, ordering="random", vary_ordering=True, direct=True),
        dict(distribution=BERN, ordering="reversed"),
    ],
)
def test_autoregressive_under_every_mask(extra: dict[str, object]) -> None:
    model = make_model(data_dim=16, hidden=(20,), **{**LOCAL, **extra})  # type: ignore[arg-type]
    verify_autoregressive(model, n_inputs=2)


def test_a_window_that_reads_ahead_is_caught() -> None:
    model = make_model(data_dim=16, hidden=(20,), distribution=LOGI, **LOCAL)  # type: ignore[arg-type]
    model.local_gather[0, 5, 0] = 9  # pixel 5 now reads pixel 9, drawn after it
    with pytest.raises(AutoregressiveViolation, match="output 5 depends on input 9"):
        verify_autoregressive(model)


def test_all_values_sum_to_one() -> None:
    dist = {"type": "discretized_logistic", "n_bins": 3, "n_components": 2}
    cfg = dict(image_shape=(2, 2), local_rows=1, local_cols=1, local_hidden=(4,), local_context=2)
    model = make_model(data_dim=4, hidden=(6,), distribution=dist, **cfg)  # type: ignore[arg-type]
    grid = torch.tensor(list(itertools.product(range(3), repeat=4)), dtype=torch.float64)
    with torch.no_grad():
        total = model.log_prob(grid).exp().sum()
    assert float(total) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("window", [LOCAL, MIRROR], ids=["causal", "mirror"])
@pytest.mark.parametrize("temperature", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("n_known", [0, 7])
def test_cached_sampler_equals_the_reference(temperature: float, n_known: int, window: dict) -> None:
    model = make_model(data_dim=16, hidden=(20, 12), distribution=LOGI, direct=True, **window)  # type: ignore[arg-type]
    u = torch.rand(5, 17, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    known = sample_reference(model, uniforms=u).x if n_known else None
    kw = dict(uniforms=u, known=known, n_known=n_known, temperature=temperature)
    ref = sample_reference(model, **kw)  # type: ignore[arg-type]
    fast = sample_cached(model, **kw)  # type: ignore[arg-type]
    assert torch.equal(ref.x, fast.x)
    assert torch.allclose(ref.log_prob, fast.log_prob, rtol=0, atol=1e-9)
    with torch.no_grad():  # the model's own log-likelihood of what was drawn, whatever the temperature
        drawn = model.log_prob_per_dim(ref.x)[:, n_known:].sum(-1)
    assert torch.allclose(drawn, ref.log_prob, rtol=0, atol=1e-9)


def test_checkpoint_round_trip_keeps_the_head(tmp_path: Path) -> None:
    model = make_model(data_dim=16, hidden=(20,), distribution=LOGI, **MIRROR)  # type: ignore[arg-type]
    save_model(tmp_path / "m", model, {"name": "local"}, dtype=torch.float64)
    loaded, card = load_model(tmp_path / "m")
    assert card["config"]["local_hidden"] == [6, 5] and card["config"]["image_shape"] == [4, 4]
    assert card["config"]["local_mirror"] == 1
    x = torch.randint(0, 256, (3, 16)).double()
    with torch.no_grad():
        assert torch.allclose(loaded.double().log_prob(x), model.log_prob(x), rtol=1e-6)  # float32 weights


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(local_rows=1, local_hidden=(4,)), "needs image_shape"),
        (dict(image_shape=(4, 4), local_rows=1), "local_hidden"),
        (dict(image_shape=(4, 4), local_hidden=(4,)), "need local_rows or local_cols"),
        (dict(image_shape=(3, 4), local_rows=1, local_hidden=(4,)), "does not hold data_dim"),
        (dict(image_shape=(4, 4), local_mirror=1), "need local_rows or local_cols"),
        (dict(image_shape=(4, 4), local_rows=1, local_hidden=(4,), local_mirror=-1), "local_mirror must be"),
    ],
)
def test_bad_local_configs_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MADEConfig(data_dim=16, hidden=(8,), **kw)  # type: ignore[arg-type]


def test_config_round_trips_through_json() -> None:
    cfg = MADEConfig(data_dim=16, hidden=(8,), **MIRROR)  # type: ignore[arg-type]
    assert MADEConfig.from_dict(cfg.to_dict()) == cfg
    assert MADE(cfg).local_head is not None


def test_head_dropout_is_separate_from_the_made_units() -> None:
    model = make_model(data_dim=16, hidden=(20,), distribution=LOGI, **LOCAL).train()  # type: ignore[arg-type]
    with torch.no_grad():  # a nonzero last layer, so the head's units matter
        model.local_head.out.weight.normal_(generator=torch.Generator().manual_seed(0))
    x = torch.randint(0, 256, (3, 16)).double()
    model.set_dropout(0.0)
    clean = model.log_prob(x)
    model.set_dropout(0.0, 0.5)  # head only
    assert not torch.equal(model.log_prob(x), clean)
    assert model.dropout.p == 0.0 and model.head_dropout.p == 0.5
    model.set_dropout(0.3)  # the head follows the MADE's rate unless told
    assert model.head_dropout.p == 0.3
    for bad in [(1.0, None), (0.1, -0.2), (-0.1, 0.0)]:
        with pytest.raises(ValueError, match="dropout rates must be in"):
            model.set_dropout(*bad)
    model.set_dropout(0.5, 0.0)  # MADE units only: the head's units are kept whatever the draw
    with torch.no_grad():
        nb, ctx = model.neighbours(model.dist.preprocess(x)), torch.ones(3, 16, 3, dtype=torch.float64)
        runs = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            runs.append(model.local_head(nb, ctx, model.activation, model.head_dropout))
    assert torch.equal(runs[0], runs[1])
