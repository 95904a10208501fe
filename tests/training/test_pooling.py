"""Pool weights fitted on validation data, the ``pool`` command, and pooled presets."""

import json

import pytest
import torch

from service.made import load_model, read_card, sample_reference, seeded_uniforms
from service.made.merge import pool
from service.training import cli, presets
from service.training.calibrate import fit_pool_weights
from service.training.cli import main
from service.training.pooling import pool_data

from ..made.conftest import make_model


def test_fit_recovers_the_weights_that_generated_the_data():
    a = make_model(seed=1, hidden=(16,), direct=True)
    b = make_model(seed=2, hidden=(10,), mask_seed=2)
    truth = pool([a, b], [0.8, 0.3])
    x = sample_reference(truth, uniforms=seeded_uniforms(6000, 8, seed=0)).x
    w, record = fit_pool_weights([a, b], x)
    assert w == pytest.approx([0.8, 0.3], abs=0.06)
    assert record["valid_nll_after"] <= min(record["valid_nll_sources"])
    assert record["valid_nll_after"] <= record["valid_nll_equal_weights"]
    with torch.no_grad():
        assert float(-pool([a, b], w).log_prob(x).mean()) == pytest.approx(
            record["valid_nll_after"], abs=1e-4
        )


def _train(tmp_path, name, *extra):
    argv = ["train", "--preset", "digits", "--run-dir", str(tmp_path / "runs" / name)]
    argv += ["--out", str(tmp_path / name), "--threads", "1", "--no-progress", "--samples", "4"]
    argv += ["--masks", "1", "--epochs", "3", "--lr", "3e-3", *extra]
    assert main(argv) == 0
    return tmp_path / name


@pytest.fixture(scope="module")
def two_digit_models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pool")
    return tmp, [_train(tmp, f"s{seed}", "--seed", str(seed), "--mask-seed", str(seed)) for seed in (0, 1)]


def test_pool_command_writes_a_served_folder_that_beats_its_sources_on_valid(two_digit_models, capsys):
    tmp, sources = two_digit_models
    out = tmp / "pooled"
    assert main(["pool", *map(str, sources), "--out", str(out), "--samples", "4", "--threads", "1"]) == 0
    assert "weights" in capsys.readouterr().out
    card = read_card(out)
    model, _ = load_model(out)  # verifies the autoregressive property on load
    assert model.config.hidden == tuple(2 * h for h in read_card(sources[0])["config"]["hidden"])
    pooling = card["pooling"]
    assert len(pooling["weights"]) == 2 and [s["folder"] for s in pooling["sources"]] == list(
        map(str, sources)
    )
    valid = card["metrics"]["valid"]["nll_nats"]
    assert valid <= min(pooling["valid_nll_sources"]) + 0.01  # float16 storage rounds a little
    assert valid == pytest.approx(pooling["valid_nll_after"], abs=0.01)
    assert (out / "samples.png").is_file() and (out / "completions.png").is_file()


def test_pool_command_takes_fixed_weights(two_digit_models):
    tmp, sources = two_digit_models
    out = tmp / "fixed"
    argv = ["pool", *map(str, sources), "--out", str(out), "--weights", "1,0", "--storage", "float32"]
    assert main([*argv, "--samples", "4"]) == 0
    card = read_card(out)
    src = read_card(sources[0])
    assert card["pooling"]["weights"] == [1.0, 0.0]
    assert card["metrics"]["test"]["nll_nats"] == pytest.approx(src["metrics"]["test"]["nll_nats"], abs=2e-3)


def test_the_fold_of_any_source_is_the_one_fitted_on_and_recorded(tmp_path):
    unfolded = {"training": {"dataset": "digits"}, "data": {"sha256": "x"}}
    folded = {"training": {"dataset": "digits", "valid_keep": 100}, "data": {"sha256": "x"}}
    data, settings = pool_data([unfolded, folded])
    assert settings == {"dataset": "digits", "data": None, "valid_keep": 100}
    assert data.valid.shape[0] == 100


def test_sources_with_different_validation_folds_are_refused():
    card = {"training": {"dataset": "mnist", "valid_keep": 1000}, "data": {"sha256": "x"}}
    other = {"training": {"dataset": "mnist", "valid_keep": 500}, "data": {"sha256": "x"}}
    with pytest.raises(ValueError, match="different validation folds"):
        pool_data([card, other])
    with pytest.raises(ValueError, match="different data files"):
        pool_data([card, {**card, "data": {"sha256": "y"}}])
    with pytest.raises(ValueError, match="different or unnamed data sets"):
        pool_data([card, {**card, "training": {"dataset": "faces"}}])


def test_a_pooled_preset_trains_its_parts_then_pools_them(tmp_path, monkeypatch, capsys):
    parts = {}
    for seed in (0, 1):
        spec = {**presets.PRESETS["digits"], "masks": 1, "epochs": 2, "seed": seed, "mask_seed": seed}
        parts[f"part{seed}"] = {**spec, "name": f"part{seed}", "out": str(tmp_path / f"part{seed}")}
    pooled = {"pool": list(parts), "name": "both", "description": "two parts", "out": str(tmp_path / "both")}
    monkeypatch.setattr(presets, "PRESETS", {**presets.PRESETS, **parts, "both": pooled})
    monkeypatch.setattr(cli, "PRESETS", presets.PRESETS)
    monkeypatch.chdir(tmp_path)  # parts keep their run state in runs/NAME
    argv = ["train", "--preset", "both", "--threads", "1", "--no-progress", "--samples", "4"]
    assert main(argv) == 0
    card = read_card(tmp_path / "both")
    assert card["name"] == "both" and [s["name"] for s in card["pooling"]["sources"]] == ["part0", "part1"]
    assert "training part1" in capsys.readouterr().out
    # resuming finds both parts finished and pools them again without training either
    assert main([*argv, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "training part" not in out and out.count("is finished; pooling it as it is") == 2
    assert (
        json.loads((tmp_path / "both" / "card.json").read_text())["pooling"]["sources"][0]["name"] == "part0"
    )
