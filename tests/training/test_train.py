import json

import pytest
import torch
from PIL import Image

from service.made import load_model, read_card
from service.training.cli import main
from service.training.images import image_grid
from service.training.loop import STATE_FILE


def _train(tmp_path, run, out, *extra):
    argv = ["train", "--preset", "digits", "--run-dir", str(tmp_path / run), "--out", str(tmp_path / out)]
    argv += ["--threads", "1", "--no-progress", "--samples", "4", "--lr", "3e-3", *extra]
    assert main(argv) == 0
    return read_card(tmp_path / out)


def test_short_digits_run_lowers_valid_nll_and_writes_a_loadable_folder(tmp_path):
    card = _train(tmp_path, "run", "model", "--epochs", "4")
    hist = card["training"]["history"]
    assert len(hist) == 4 and hist[-1]["valid_nll"] < hist[0]["valid_nll"] - 1.0
    for key in ("name", "description", "data", "shape", "value_range", "training", "wall_time_s", "device"):
        assert key in card
    assert card["data"]["name"] == "sklearn_digits_binary" and "split" in card["data"]
    assert card["shape"] == [8, 8] and card["value_range"] == [0, 1]
    assert card["training"]["epochs_run"] == 4 and card["training"]["seed"] == 0
    assert set(card["versions"]) >= {"torch", "numpy", "python"}
    test = card["metrics"]["test"]
    assert test["bits_per_dim"] == pytest.approx(test["nll_nats"] / (64 * 0.6931471805599453), rel=1e-4)
    model, _ = load_model(tmp_path / "model")
    assert model.num_masks == 2 and model.config.direct
    with Image.open(tmp_path / "model" / "samples.png") as img:
        assert img.mode == "L" and img.width > 16
    assert (tmp_path / "model" / "completions.png").is_file()
    # The card's test figure is what the saved weights give.
    x = torch.tensor([[0.0] * 64])
    assert torch.isfinite(model.log_prob(x)).all()


def test_resume_continues_from_the_saved_epoch_and_matches_an_uninterrupted_run(tmp_path):
    _train(tmp_path, "a", "ma", "--epochs", "2")
    st = torch.load(tmp_path / "a" / STATE_FILE, weights_only=False)
    assert st["epoch"] == 2
    resumed = _train(tmp_path, "a", "ma", "--epochs", "4", "--resume")
    straight = _train(tmp_path, "b", "mb", "--epochs", "4")
    assert resumed["training"]["epochs_run"] == 4
    assert [h["valid_nll"] for h in resumed["training"]["history"]] == pytest.approx(
        [h["valid_nll"] for h in straight["training"]["history"]], abs=1e-6
    )
    assert resumed["weights"]["sha256"] == straight["weights"]["sha256"]


def test_gray_digits_float16_storage_and_eval_command(tmp_path, capsys):
    argv = ["train", "--preset", "digits-gray", "--epochs", "2", "--storage", "float16", "--hidden", "32"]
    argv += ["--run-dir", str(tmp_path / "g"), "--out", str(tmp_path / "mg"), "--threads", "1"]
    assert main([*argv, "--no-progress", "--samples", "4"]) == 0
    card = read_card(tmp_path / "mg")
    assert card["weights"]["dtype"] == "float16"
    assert card["config"]["distribution"]["n_bins"] == 17
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "mg"), "--json", "--threads", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    # Metrics in the card were computed on the float16-rounded weights that eval loads.
    assert got["nll_nats"] == pytest.approx(card["metrics"]["test"]["nll_nats"], abs=1e-3)
    assert got["ensemble_nll_nats"] == pytest.approx(card["metrics"]["test"]["ensemble_nll_nats"], abs=1e-3)


def test_bad_flags_are_reported(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "missing model card" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--preset", "digits", "--hidden", "0"])


def test_image_grid_layout():
    imgs = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4).numpy()
    img = image_grid(imgs, value_max=23.0, ncols=2, pad=1)
    assert img.size == (2 * (4 + 1) + 1, 3 + 2)
    assert img.getpixel((1, 1)) == 0 and img.getpixel((1 + 5 + 3, 1 + 2)) == 255


def test_dropout_is_part_of_the_model_and_keeps_the_autoregressive_property():
    from service.made import MADE, MADEConfig

    torch.manual_seed(0)
    model = MADE(MADEConfig(data_dim=6, hidden=(16,), num_masks=2, direct=True))
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    clean = model.eval().log_prob(x, 1)
    model.set_dropout(0.5)
    assert torch.equal(model.log_prob(x, 1), clean)  # eval mode ignores the rate
    model.train()
    torch.manual_seed(1)
    a = model.log_prob(x, 1)
    assert torch.isfinite(a).all() and not torch.allclose(a, clean)
    # With one fixed dropout pattern the 2^6 probabilities still sum to 1 (autoregressive, normalised).
    grid = torch.tensor([[(i >> b) & 1 for b in range(6)] for i in range(64)], dtype=torch.float32)
    total = 0.0
    for row in grid:
        torch.manual_seed(7)
        total += float(model.log_prob(row[None], 0).detach().exp())
    assert total == pytest.approx(1.0, abs=1e-5)


def test_ema_weights_are_what_is_validated_and_exported(tmp_path, capsys):
    from service.training.data import load_dataset
    from service.training.loop import mean_nll

    card = _train(tmp_path, "e", "me", "--epochs", "3", "--ema", "0.9", "--valid-keep", "150")
    assert card["training"]["ema"] == 0.9 and card["data"]["sizes"]["valid"] == 150
    valid = load_dataset("digits", valid_keep=150).valid
    model, _ = load_model(tmp_path / "me")
    best = card["training"]["best_valid_nll"]
    assert mean_nll(model, valid) == pytest.approx(best, abs=1e-3)
    st = torch.load(tmp_path / "e" / STATE_FILE, weights_only=False)
    assert st["ema"]["n_averaged"] == st["step"]
    raw = load_model(tmp_path / "me")[0]
    raw.load_state_dict(st["model"])  # the last raw (non-averaged) weights validate differently
    assert abs(mean_nll(raw, valid) - best) > 1e-3
    # eval reads the fold from the card, so its valid split is the one the figure was taken on
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "me"), "--split", "valid", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nll_nats"] == pytest.approx(best, abs=1e-3)
    plain = _train(tmp_path, "p", "mp", "--epochs", "3", "--valid-keep", "150")
    assert plain["training"]["history"][0]["valid_nll"] != card["training"]["history"][0]["valid_nll"]


def test_resume_with_ema_and_entropy_degrees_matches_an_uninterrupted_run(tmp_path):
    extra = ["--ema", "0.95", "--degrees", "entropy"]
    _train(tmp_path, "a", "ma", "--epochs", "2", *extra)
    resumed = _train(tmp_path, "a", "ma", "--epochs", "3", "--resume", *extra)
    straight = _train(tmp_path, "b", "mb", "--epochs", "3", *extra)
    assert resumed["weights"]["sha256"] == straight["weights"]["sha256"]
    assert straight["training"]["degrees"] == "entropy"
    model, _ = load_model(tmp_path / "mb")  # loading re-verifies the autoregressive property
    fresh = type(model)(model.config)
    assert not torch.equal(model.hidden_degrees(0), fresh.hidden_degrees(0))  # the degrees come from the file


def test_calibrated_export_records_and_applies_its_temperature(tmp_path, capsys):
    from service.training.data import load_dataset
    from service.training.loop import mean_nll

    plain = _train(tmp_path, "c", "mp", "--epochs", "2", "--valid-keep", "150", "--masks", "1")
    capsys.readouterr()
    assert (
        main(["export", str(tmp_path / "c"), "--out", str(tmp_path / "mc"), "--calibrate", "--samples", "4"])
        == 0
    )
    card = read_card(tmp_path / "mc")
    cal = card["calibration"]
    assert cal["valid_nll_after"] <= cal["valid_nll_before"] and cal["temperature"] != 1.0
    assert "calibration" not in plain
    # the folded weights are exactly the trained ones with every output parameter divided by T
    tempered, _ = load_model(tmp_path / "mc")
    base, _ = load_model(tmp_path / "mp")
    base.scale_outputs_(1.0 / cal["temperature"])
    x = load_dataset("digits", valid_keep=150).valid
    assert torch.allclose(tempered(x), base(x), atol=1e-4)
    assert card["metrics"]["valid"]["nll_nats"] == pytest.approx(mean_nll(tempered, x), abs=1e-3)
    assert card["metrics"]["valid"]["nll_nats"] <= plain["metrics"]["valid"]["nll_nats"] + 1e-3


def test_calibrate_is_refused_for_gray_levels(tmp_path, capsys):
    argv = ["train", "--preset", "digits-gray", "--run-dir", str(tmp_path / "g"), "--calibrate"]
    assert main([*argv, "--out", str(tmp_path / "mg"), "--epochs", "1", "--no-progress"]) == 2
    assert "--calibrate needs binary data" in capsys.readouterr().err


def test_settings_changed_on_resume_are_recorded(tmp_path):
    first = _train(tmp_path, "r", "mr", "--epochs", "2", "--dropout", "0.2")
    assert first["training"]["changed_on_resume"] == []
    card = _train(tmp_path, "r", "mr", "--epochs", "3", "--dropout", "0.1", "--resume")
    assert card["training"]["changed_on_resume"] == [{"epochs": [2, 3], "dropout": [0.2, 0.1]}]
    assert [h["dropout"] for h in card["training"]["history"]] == [0.2, 0.2, 0.1]
    assert card["training"]["dropout"] == 0.1


def test_resuming_a_run_that_stopped_early_continues_it(tmp_path):
    stop = ["--epochs", "60", "--patience", "1", "--lr", "3e-2"]
    first = _train(tmp_path, "s", "ms", *stop)
    ran = first["training"]["epochs_run"]
    assert ran < 60  # it stopped itself: one epoch without a better validation figure
    more = _train(tmp_path, "s", "ms", *stop, "--dropout", "0.1", "--resume")
    assert more["training"]["epochs_run"] > ran  # patience counts afresh after the stop
    assert [h["dropout"] for h in more["training"]["history"]][ran:] == [0.1] * (
        more["training"]["epochs_run"] - ran
    )


def test_dropout_until_equals_stopping_and_resuming_without_dropout(tmp_path):
    """A dropout-free tail in one run is the same training as a run resumed with ``--dropout 0``."""
    common = ["--epochs", "4", "--dropout", "0.3", "--ema", "0.9"]
    one = _train(tmp_path, "one", "m1", *common, "--dropout-until", "2")
    assert [h["dropout"] for h in one["training"]["history"]] == [0.3, 0.3, 0.0, 0.0]
    _train(tmp_path, "two", "m2", *common[:1], "2", *common[2:])
    two = _train(tmp_path, "two", "m2", *common[:3], "0", *common[4:], "--resume")
    assert [h["valid_nll"] for h in one["training"]["history"]] == pytest.approx(
        [h["valid_nll"] for h in two["training"]["history"]], abs=1e-6
    )
    assert one["weights"]["sha256"] == two["weights"]["sha256"]
