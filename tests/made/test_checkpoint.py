"""Checkpoint round trip; every malformed folder is refused with a message naming the file."""

import json
import shutil

import pytest
import torch

from service.made import CheckpointError, load_model, save_model
from service.made.checkpoint import CARD_FILE, WEIGHTS_FILE

from .conftest import LOGI, make_model


def drop_checksum(folder):
    """Remove the card's checksum so the loader's later checks are reached."""
    card = json.loads((folder / CARD_FILE).read_text())
    del card["weights"]["sha256"]
    (folder / CARD_FILE).write_text(json.dumps(card))
    return card


@pytest.fixture
def saved(tmp_path):
    model = make_model(num_masks=2, direct=True, hidden=(16, 8)).float()
    folder = save_model(tmp_path / "m", model, {"name": "m", "shape": [2, 4], "value_range": [0, 1]})
    return model, folder


def test_round_trip(saved):
    model, folder = saved
    loaded, card = load_model(folder)
    assert card["name"] == "m" and card["config"]["num_masks"] == 2
    assert card["versions"]["torch"] == torch.__version__
    x = torch.randint(0, 2, (5, 8)).float()
    assert torch.equal(model.log_prob(x), loaded.log_prob(x))
    assert torch.equal(model.input_degrees, loaded.input_degrees)
    for a, b in zip(model.hidden_layers, loaded.hidden_layers, strict=True):
        assert torch.equal(a.masks, b.masks)


def test_float16_storage_round_trip(tmp_path):
    model = make_model(distribution=LOGI, data_dim=32, hidden=(128,)).float()
    folder = save_model(tmp_path / "h", model, {}, dtype=torch.float16)
    loaded, card = load_model(folder)
    assert card["weights"]["dtype"] == "float16"
    assert loaded.output_layer.weight.dtype == torch.float32
    assert (folder / WEIGHTS_FILE).stat().st_size < 0.6 * sum(p.numel() * 4 for p in model.parameters())


def test_missing_card(saved):
    _, folder = saved
    (folder / CARD_FILE).unlink()
    with pytest.raises(CheckpointError, match="missing model card"):
        load_model(folder)


def test_invalid_json(saved):
    _, folder = saved
    (folder / CARD_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=r"card\.json: not valid JSON"):
        load_model(folder)


def test_truncated_weights(saved):
    _, folder = saved
    path = folder / WEIGHTS_FILE
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="checksum does not match"):
        load_model(folder)
    drop_checksum(folder)
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_model(folder)


def test_pickle_is_never_loaded(saved, tmp_path):
    _, folder = saved
    torch.save({"x": torch.zeros(1)}, folder / WEIGHTS_FILE)  # a pickle posing as weights
    drop_checksum(folder)
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_model(folder)


def test_mismatched_architecture(saved, tmp_path):
    _, folder = saved
    other = save_model(tmp_path / "o", make_model(num_masks=2, direct=True, hidden=(16, 9)).float(), {})
    shutil.copy(other / WEIGHTS_FILE, folder / WEIGHTS_FILE)
    card = drop_checksum(folder)
    with pytest.raises(CheckpointError, match="has shape"):
        load_model(folder)
    card["config"]["direct"] = False
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="unexpected"):
        load_model(folder)


def test_invalid_config(saved):
    _, folder = saved
    card = json.loads((folder / CARD_FILE).read_text())
    card["config"]["activation"] = "sinc"
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="invalid config"):
        load_model(folder)


def test_tampered_degrees_are_refused(saved):
    from safetensors.torch import load_file, save_file

    _, folder = saved
    tensors = load_file(str(folder / WEIGHTS_FILE))
    tensors["input_degrees"][0, 0] = tensors["input_degrees"][0, 1]  # no longer a permutation
    save_file(tensors, str(folder / WEIGHTS_FILE))
    drop_checksum(folder)
    with pytest.raises(CheckpointError, match="not a permutation"):
        load_model(folder)


def test_non_finite_weights_are_refused(saved):
    from safetensors.torch import load_file, save_file

    _, folder = saved
    tensors = load_file(str(folder / WEIGHTS_FILE))
    tensors["output_layer.bias"][0] = float("nan")
    save_file(tensors, str(folder / WEIGHTS_FILE))
    drop_checksum(folder)
    with pytest.raises(CheckpointError, match="NaN"):
        load_model(folder)


def test_masked_weights_are_stored_packed(tmp_path):
    """Only the entries a mask keeps are written: about half of a MADE's weights, restored exactly."""
    from safetensors.torch import load_file

    model = make_model(data_dim=64, hidden=(256,), direct=True).float()
    packed = save_model(tmp_path / "p", model, {})
    dense = save_model(tmp_path / "d", model, {}, packed=False)
    card = json.loads((packed / CARD_FILE).read_text())
    assert card["weights"]["packed"] == [
        "direct_layer.weight",
        "hidden_layers.0.weight",
        "output_layer.weight",
    ]
    stored = load_file(str(packed / WEIGHTS_FILE))
    assert stored["hidden_layers.0.weight"].shape == (int(model.hidden_layers[0].masks[0].sum()),)
    assert (packed / WEIGHTS_FILE).stat().st_size < 0.6 * (dense / WEIGHTS_FILE).stat().st_size
    x = torch.randint(0, 2, (6, 64)).float()
    for folder in (packed, dense):  # both layouts load, to the same function
        loaded, _ = load_model(folder)
        assert torch.equal(loaded.log_prob(x), model.log_prob(x))
    loaded, _ = load_model(packed)
    for a, b in zip(loaded.hidden_layers, model.hidden_layers, strict=True):
        assert torch.equal(a.weight, b.weight * b.masks[0])  # dropped entries come back as zeros


def test_packed_ensemble_keeps_the_union_of_masks(tmp_path):
    model = make_model(num_masks=3, hidden=(16, 12), direct=True).float()
    folder = save_model(tmp_path / "k", model, {})
    loaded, _ = load_model(folder)
    x = torch.randint(0, 2, (5, 8)).float()
    for k in range(3):
        assert torch.equal(loaded.log_prob(x, k), model.log_prob(x, k))


def test_packed_tensor_of_the_wrong_length_is_refused(saved):
    from safetensors.torch import load_file, save_file

    _, folder = saved
    tensors = load_file(str(folder / WEIGHTS_FILE))
    tensors["output_layer.weight"] = tensors["output_layer.weight"][:-1].contiguous()
    save_file(tensors, str(folder / WEIGHTS_FILE))
    drop_checksum(folder)
    with pytest.raises(CheckpointError, match=r"packed tensor 'output_layer.weight' holds \(\d+,\) values"):
        load_model(folder)


def test_card_naming_a_non_masked_tensor_as_packed_is_refused(saved):
    _, folder = saved
    card = drop_checksum(folder)
    card["weights"]["packed"].append("output_layer.bias")
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="not masked weights"):
        load_model(folder)
