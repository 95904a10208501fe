import numpy as np
import pytest
import torch

from service.training.data import (
    faces_split,
    load_dataset,
    load_digits,
    load_faces,
    load_mnist,
    pixel_entropy,
)

from .conftest import FACES, MNIST


def test_digits_binary_and_gray():
    b = load_digits(gray=False)
    g = load_digits(gray=True)
    assert b.shape == (8, 8) and b.data_dim == 64
    assert [b.split(s).shape[0] for s in ("train", "valid", "test")] == [1297, 250, 250]
    assert set(torch.unique(b.train).tolist()) == {0.0, 1.0}
    assert g.train.min() == 0 and g.train.max() == 16 and torch.equal(g.train, g.train.round())
    # Same seeded permutation: binarizing the gray split at 8 gives the binary split.
    assert torch.equal((g.test >= 8).float(), b.test)
    assert g.distribution == {"type": "discretized_logistic", "n_bins": 17, "n_components": 1}
    with pytest.raises(ValueError, match="unknown split"):
        b.split("dev")


def test_faces_split_holds_out_last_image_of_first_people():
    target = np.repeat(np.arange(40), 10)
    idx = faces_split(target, n_held_out=20, valid_fraction=0.1, seed=0)
    assert idx["test"].tolist() == [10 * p + 9 for p in range(20)]
    assert len(idx["valid"]) == 38 and len(idx["train"]) == 342
    everything = np.concatenate([idx["train"], idx["valid"], idx["test"]])
    assert sorted(everything.tolist()) == list(range(400))
    again = faces_split(target, 20, 0.1, seed=0)
    assert np.array_equal(again["valid"], idx["valid"])
    assert not np.array_equal(faces_split(target, 20, 0.1, seed=1)["valid"], idx["valid"])


def test_unknown_dataset_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="needs --data"):
        load_dataset("mnist")
    with pytest.raises(FileNotFoundError):
        load_dataset("faces", tmp_path / "nope.npz")


@pytest.mark.skipif(not MNIST.is_file(), reason=f"{MNIST} not present (shared data is optional)")
def test_mnist_loader():
    d = load_mnist(MNIST)
    assert d.train.shape == (50000, 784) and d.valid.shape == (10000, 784) and d.test.shape == (10000, 784)
    assert set(torch.unique(d.test).tolist()) == {0.0, 1.0}
    assert abs(float(d.train.mean()) - 0.1306) < 1e-3 and abs(float(d.test.mean()) - 0.1325) < 1e-3
    assert d.source["path"] == "binarized_mnist.npz" and len(d.source["sha256"]) == 64


@pytest.mark.skipif(not FACES.is_file(), reason=f"{FACES} not present (shared data is optional)")
def test_faces_loader():
    d = load_faces(FACES)
    assert d.shape == (64, 64)
    assert d.train.shape == (342, 4096) and d.valid.shape == (38, 4096) and d.test.shape == (20, 4096)
    assert float(d.train.min()) >= 0 and float(d.train.max()) <= 255
    with np.load(FACES) as f:
        assert np.array_equal(d.test[0].numpy().reshape(64, 64), f["images"][9].astype(np.float32))


def test_fold_valid_moves_all_but_a_seeded_subset_into_train():
    d = load_digits()
    f = d.fold_valid(100, seed=3)
    assert [f.split(s).shape[0] for s in ("train", "valid", "test")] == [1297 + 150, 100, 250]
    assert torch.equal(f.test, d.test) and torch.equal(f.train[:1297], d.train)
    # moved + kept rows are exactly the old validation rows
    old = sorted(map(tuple, d.valid.tolist()))
    assert sorted(map(tuple, torch.cat([f.train[1297:], f.valid]).tolist())) == old
    assert torch.equal(d.fold_valid(100, seed=3).valid, f.valid)
    assert not torch.equal(d.fold_valid(100, seed=4).valid, f.valid)
    assert "100 kept for early stopping" in f.card()["split"] and f.card()["sizes"]["valid"] == 100
    assert load_dataset("digits", valid_keep=100).card()["sizes"]["train"] == 1447
    for bad in (0, 251):
        with pytest.raises(ValueError, match="valid_keep"):
            d.fold_valid(bad)


def test_pixel_entropy():
    x = torch.tensor([[0.0, 1.0, 3.0], [0.0, 0.0, 1.0], [0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    h = pixel_entropy(x)
    assert h.tolist() == pytest.approx([0.0, np.log(2), np.log(4)])
