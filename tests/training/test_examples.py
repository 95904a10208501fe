"""Held-out example PNGs: written from the test split by export and by the ``examples`` command, recorded
in the card, and every committed model folder ships at most 8 that decode to its own images."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.api.codecs import to_gray_levels
from service.made import read_card
from service.training.cli import main
from service.training.data import load_faces, load_mnist
from service.training.examples import MAX_EXAMPLES, write_examples

from .conftest import FACES, MNIST, ROOT

COMMITTED = sorted(p for p in (ROOT / "models").iterdir() if (p / "card.json").is_file())


def _decode(path: Path, card: dict) -> np.ndarray:
    """A PNG as the server reads an upload of it: gray levels mapped onto the model's values."""
    lo, hi = card["value_range"]
    with Image.open(path) as img:
        assert img.mode == "L"
        gray = np.asarray(img)
    return to_gray_levels(gray, (lo, hi), (lo, hi) == (0, 1), 128)


@pytest.fixture
def fake_faces(tmp_path: Path) -> Path:
    """An Olivetti-shaped file (40 people x 10 images, 64x64) of random levels: the real one is optional."""
    rng = np.random.default_rng(0)
    path = tmp_path / "olivetti_faces.npz"
    np.savez(
        path,
        images=rng.integers(0, 256, (400, 64, 64), dtype=np.uint8),
        target=np.repeat(np.arange(40), 10),
    )
    return path


def test_write_examples_takes_test_rows_and_replaces_old_files(tmp_path: Path, fake_faces: Path) -> None:
    data = load_faces(fake_faces)
    with np.load(fake_faces) as f:
        images = f["images"]
    record = write_examples(tmp_path, data, 8)
    assert record is not None and record["split"] == "test" and "AT&T" in record["credit"]
    assert record["rows"] == [0, 3, 5, 8, 11, 14, 16, 19]
    files = sorted(p.name for p in (tmp_path / "examples").iterdir())
    assert files == record["files"] == [f"test-{r:02d}.png" for r in record["rows"]]
    for row, name in zip(record["rows"], files, strict=True):
        with Image.open(tmp_path / "examples" / name) as img:
            # the test split is the last image of each of the first 20 people: file index 10 * row + 9
            assert np.array_equal(np.asarray(img), images[10 * row + 9])
    again = write_examples(tmp_path, data, 3)
    assert again is not None and sorted(p.name for p in (tmp_path / "examples").iterdir()) == again["files"]
    assert write_examples(tmp_path, data, 0) is None and not list((tmp_path / "examples").iterdir())
    with pytest.raises(ValueError, match=r"0\.\.8"):
        write_examples(tmp_path, data, MAX_EXAMPLES + 1)


def test_train_exports_examples_and_the_command_rewrites_them(tmp_path: Path, capsys) -> None:
    out = tmp_path / "model"
    argv = ["train", "--preset", "digits", "--run-dir", str(tmp_path / "run"), "--out", str(out)]
    argv += ["--threads", "1", "--no-progress", "--samples", "4", "--epochs", "1", "--examples", "3"]
    assert main(argv) == 0
    card = read_card(out)
    assert card["examples"]["rows"] == [0, 124, 249] and card["examples"]["split"] == "test"
    assert sorted(p.name for p in (out / "examples").iterdir()) == card["examples"]["files"]

    before = {k: v for k, v in card.items() if k != "examples"}
    assert main(["examples", str(out), "--examples", "5"]) == 0
    card = read_card(out)
    assert {k: v for k, v in card.items() if k != "examples"} == before  # only the record changed
    assert len(card["examples"]["files"]) == 5 == len(list((out / "examples").glob("*.png")))
    drawn = {name: (out / name).read_bytes() for name in ("samples.png", "completions.png")}
    for name in drawn:
        (out / name).unlink()
    # --pictures redraws them from the folder alone, as export drew them (the card's seed, same samples)
    assert main(["examples", str(out), "--examples", "5", "--pictures", "--samples", "4"]) == 0
    assert {name: (out / name).read_bytes() for name in drawn} == drawn
    assert main(["export", str(tmp_path / "run"), "--out", str(out), "--examples", "0"]) == 0
    assert "examples" not in read_card(out) and not list((out / "examples").glob("*.png"))
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["examples", str(out), "--examples", "9"])
    assert "0..8" in capsys.readouterr().err


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_committed_model_ships_at_most_8_examples_of_its_own_shape(folder: Path) -> None:
    card = json.loads((folder / "card.json").read_text())
    pngs = sorted(p.name for p in (folder / "examples").glob("*.png"))
    assert 1 <= len(pngs) <= MAX_EXAMPLES
    record = card["examples"]
    assert record["files"] == pngs and record["split"] == "test" and record["credit"]
    lo, hi = card["value_range"]
    for name in pngs:
        x = _decode(folder / "examples" / name, card)
        assert list(x.shape) == card["shape"] and lo <= x.min() and x.max() <= hi


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_committed_examples_are_the_recorded_test_rows(folder: Path) -> None:
    card = json.loads((folder / "card.json").read_text())
    data_file = {"binarized_mnist": MNIST, "olivetti_faces": FACES}[card["data"]["name"]]
    if not data_file.is_file():
        pytest.skip(f"{data_file} not present (shared data is optional)")
    test = (load_mnist if data_file == MNIST else load_faces)(data_file).test.numpy()
    record = card["examples"]
    for row, name in zip(record["rows"], record["files"], strict=True):
        assert np.array_equal(_decode(folder / "examples" / name, card).reshape(-1), test[row])
