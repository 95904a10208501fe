"""Training options are defined once (service/training/options.py): flags, defaults, model and loop
configurations all derive from the one table, and nothing in either configuration is left out."""

from __future__ import annotations

import dataclasses

import pytest

from service.made import MADEConfig
from service.training.cli import main
from service.training.loop import TrainConfig
from service.training.options import OPTIONS, made_config, option_defaults, train_config

# fields set from elsewhere: the data (dimension, distribution, shape), fixed choices, loop internals
_NOT_OPTIONS = {"data_dim", "distribution", "ordering", "ordering_seed", "image_shape", "num_masks"}
_LOOP_INTERNALS = {"plateau_factor", "eval_batch_size", "image_shape"}


def test_every_option_reaches_its_configuration() -> None:
    model_fields = {f.name for f in dataclasses.fields(MADEConfig)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for o in OPTIONS:
        if o.target == "train":
            assert o.name in train_fields, o.name
        elif o.target == "model":
            assert o.name in model_fields | {"masks", "components"}, o.name
    named = {o.name for o in OPTIONS}
    assert model_fields - named - _NOT_OPTIONS == set()
    assert train_fields - named - _LOOP_INTERNALS == set()


def test_settings_become_the_configurations() -> None:
    settings = option_defaults() | {
        "masks": 2,
        "components": 3,
        "local_rows": 1,
        "local_hidden": [4],
        "epochs": 7,
        "ema": 0.5,
    }
    logistic = {"type": "discretized_logistic", "n_bins": 256, "n_components": 1}
    cfg = made_config(settings, 16, logistic, (4, 4))
    assert cfg.num_masks == 2 and cfg.distribution["n_components"] == 3
    assert cfg.local_hidden == (4,) and cfg.image_shape == (4, 4)
    tcfg = train_config(settings, (4, 4))
    assert tcfg.epochs == 7 and tcfg.ema == 0.5 and tcfg.image_shape == (4, 4)
    assert made_config(option_defaults(), 16, logistic, (4, 4)).image_shape is None  # no head, no shape


@pytest.mark.parametrize("flag", sorted("--" + o.name.replace("_", "-") for o in OPTIONS))
def test_every_option_has_its_flag(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert flag in capsys.readouterr().out
