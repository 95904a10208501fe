"""Shared fixtures: where the (optional) data files and committed models live."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT.parent / "shared" / "data"
MNIST = DATA_DIR / "binarized_mnist.npz"
FACES = DATA_DIR / "olivetti_faces.npz"


@pytest.fixture(autouse=True)
def _one_thread():
    """Keep torch on one thread: the suite shares two cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
