"""Training augmentations (service/training/loop.py): mirroring and shifts, checked against numpy, and a
run with a shift and a mirror window end to end."""

import numpy as np
import torch

from service.made import load_model, read_card, verify_autoregressive
from service.training.cli import main
from service.training.loop import _random_hflip, _random_shift


def _shifted(image: np.ndarray, dy: int, dx: int, limit: int) -> np.ndarray:
    """numpy reference: pad by repeating the edges, then cut the window that starts at (dy, dx)."""
    h, w = image.shape
    return np.pad(image, limit, mode="edge")[dy : dy + h, dx : dx + w]


def test_every_shifted_row_is_one_of_the_allowed_translations() -> None:
    x = torch.arange(6 * 20, dtype=torch.float32).view(6, 20)  # six 4x5 images
    out = _random_shift(x, (4, 5), 2, torch.Generator().manual_seed(0)).numpy()
    picked = set()
    for row, image in zip(out, x.numpy(), strict=True):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if np.array_equal(row.reshape(4, 5), _shifted(image.reshape(4, 5), dy, dx, 2))
        ]
        assert len(matches) == 1
        picked.add(matches[0])
    assert len(picked) > 1  # not one shift for all
    unchanged = _random_shift(x, (4, 5), 0, torch.Generator().manual_seed(0))
    assert torch.equal(unchanged, x)


def test_mirroring_flips_whole_rows_or_leaves_them() -> None:
    x = torch.arange(8 * 6, dtype=torch.float32).view(8, 6)
    out = _random_hflip(x, (2, 3), torch.Generator().manual_seed(1)).numpy()
    flips = [not np.array_equal(o, i) for o, i in zip(out, x.numpy(), strict=True)]
    for o, i, flipped in zip(out, x.numpy(), flips, strict=True):
        expect = i.reshape(2, 3)[:, ::-1].reshape(-1) if flipped else i
        assert np.array_equal(o, expect)
    assert 0 < sum(flips) < len(flips)


def test_a_run_with_shifts_and_a_mirror_window(tmp_path) -> None:
    argv = ["train", "--preset", "digits-gray", "--epochs", "1", "--hidden", "16", "--shift", "1"]
    argv += ["--local-rows", "1", "--local-cols", "1", "--local-hidden", "4", "--local-mirror", "1"]
    argv += ["--run-dir", str(tmp_path / "r"), "--out", str(tmp_path / "m"), "--threads", "1"]
    assert main([*argv, "--no-progress", "--samples", "2"]) == 0
    card = read_card(tmp_path / "m")
    assert card["training"]["shift"] == 1 and card["config"]["local_mirror"] == 1
    model, _ = load_model(tmp_path / "m")
    verify_autoregressive(model.double())


def test_a_negative_shift_is_refused(tmp_path, capsys) -> None:
    argv = ["train", "--preset", "digits-gray", "--epochs", "1", "--shift", "-1", "--no-progress"]
    assert (
        main([*argv, "--run-dir", str(tmp_path / "r"), "--out", str(tmp_path / "m"), "--threads", "1"]) == 2
    )
    assert "shift must be >= 0, got -1" in capsys.readouterr().err
