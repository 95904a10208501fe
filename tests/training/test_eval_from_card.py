"""``eval`` takes the data set, its file and its split from the model card (``--data`` overrides), for every
committed model, from any working directory; ``make eval MODEL=...`` passes no data file of its own."""

import json
import shutil
import subprocess

import pytest

from service.training.cli import card_data_path, main
from service.training.data import load_mnist

from .conftest import FACES, MNIST, ROOT

COMMITTED = sorted(p.parent.name for p in (ROOT / "models").glob("*/card.json"))


def needs(name: str) -> str:
    card = json.loads((ROOT / "models" / name / "card.json").read_text())
    return card["training"]["dataset"]


@pytest.mark.parametrize("name", COMMITTED)
def test_every_committed_model_evaluates_from_its_card(name, tmp_path, monkeypatch, capsys):
    data = {"mnist": MNIST, "faces": FACES}.get(needs(name))
    if data is not None and not data.is_file():
        pytest.skip(f"{data} not present (shared data is optional)")
    monkeypatch.chdir(tmp_path)  # the card's relative path is found from the repository, not the cwd
    folder = ROOT / "models" / name
    assert main(["eval", str(folder), "--limit", "20", "--json", "--threads", "1"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["n"] == 20 and got["nll_nats"] > 0
    if name == "faces":  # the 20 held-out faces are the whole test split: the card's own figure
        card = json.loads((folder / "card.json").read_text())
        assert got["bits_per_dim"] == pytest.approx(card["metrics"]["test"]["bits_per_dim"], abs=1e-3)


@pytest.mark.skipif(not MNIST.is_file(), reason=f"{MNIST} not present (shared data is optional)")
def test_the_split_comes_from_the_card(capsys):
    """models/mnist kept 1,000 validation images (valid_keep): eval's valid split is exactly those."""
    assert main(["eval", str(ROOT / "models/mnist"), "--split", "valid", "--limit", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 5
    card = json.loads((ROOT / "models/mnist/card.json").read_text())
    assert card["training"]["valid_keep"] == 1000 and card["data"]["sizes"]["valid"] == 1000


def test_data_file_is_found_by_name_or_reported(tmp_path, monkeypatch):
    card = {
        "training": {"dataset": "mnist", "data": "elsewhere/binarized_mnist.npz"},
        "data": {"name": "binarized_mnist", "path": "binarized_mnist.npz"},
    }
    folder = tmp_path / "repo" / "models" / "m"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MADE_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match=r"binarized_mnist\.npz.*give --data PATH"):
        card_data_path(card, folder)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "binarized_mnist.npz").write_bytes(b"")
    monkeypatch.setenv("MADE_DATA_DIR", str(tmp_path / "d"))
    assert card_data_path(card, folder) == tmp_path / "d" / "binarized_mnist.npz"
    # the path the card records wins, relative to the repository that holds the model folder
    (tmp_path / "repo" / "elsewhere").mkdir()
    (tmp_path / "repo" / "elsewhere" / "binarized_mnist.npz").write_bytes(b"")
    assert card_data_path(card, folder).resolve() == (tmp_path / "repo/elsewhere/binarized_mnist.npz")
    assert card_data_path({"training": {"dataset": "digits"}}, folder) is None


@pytest.mark.skipif(not MNIST.is_file(), reason=f"{MNIST} not present (shared data is optional)")
def test_data_flag_overrides_the_card(tmp_path, capsys):
    copy = tmp_path / "copy.npz"
    shutil.copy(MNIST, copy)
    assert load_mnist(copy).data_dim == 784
    argv = ["eval", str(ROOT / "models/mnist-fast"), "--data", str(copy), "--limit", "3", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 3
    assert main([*argv[:2], "--data", str(tmp_path / "none.npz")]) == 2
    assert "data file not found" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_eval_passes_the_model_only():
    out = subprocess.run(
        ["make", "-n", "eval", "MODEL=models/faces"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    (line,) = [ln for ln in out.splitlines() if "service.training eval" in ln]
    assert line.split("service.training eval", 1)[1].split() == ["models/faces"]
