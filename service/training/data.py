"""Data sets for training and evaluation: binarized MNIST, Olivetti faces, scikit-learn's 8x8 digits.

Every loader takes a path (except the bundled digits), returns flat ``float32`` tensors of integer
values ``(N, H*W)`` per split, and records what a model card needs to trace a figure back to its data:
file name, sha256 and how the splits were made.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "Dataset",
    "file_sha256",
    "load_dataset",
    "load_digits",
    "load_faces",
    "load_mnist",
    "pixel_entropy",
]


@dataclass
class Dataset:
    """Train/valid/test splits of one data set, flat ``(N, D)`` float32 tensors of integer values."""

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    shape: tuple[int, int]
    value_range: tuple[int, int]
    distribution: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def data_dim(self) -> int:
        return self.shape[0] * self.shape[1]

    def split(self, name: str) -> torch.Tensor:
        """One split by name (``train``, ``valid`` or ``test``)."""
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}: use train, valid or test")
        return getattr(self, name)

    def fold_valid(self, keep: int, seed: int = 0) -> Dataset:
        """Move all but a seeded random ``keep`` validation rows into the training set.

        The test split is untouched; the ``keep`` rows left in ``valid`` still drive early stopping.
        More training rows matter when a model overfits its fixed training set (binarized MNIST).
        """
        n_valid = self.valid.shape[0]
        if not 1 <= keep <= n_valid:
            raise ValueError(f"valid_keep must be in 1..{n_valid} (the validation size), got {keep}")
        perm = np.random.default_rng(seed).permutation(n_valid)
        kept, moved = np.sort(perm[:keep]), np.sort(perm[keep:])
        source = dict(self.source)
        source["split"] = (
            f"{source.get('split', '')}; then {moved.size} validation rows (all but a seeded (seed {seed}) "
            f"random {keep}) moved into train, the {keep} kept for early stopping; test untouched"
        )
        return replace(
            self,
            train=torch.cat([self.train, self.valid[torch.from_numpy(moved)]]),
            valid=self.valid[torch.from_numpy(kept)].clone(),
            source=source,
        )

    def card(self) -> dict[str, Any]:
        """The ``data`` section of a model card."""
        return {
            "name": self.name,
            **self.source,
            "sizes": {s: int(self.split(s).shape[0]) for s in ("train", "valid", "test")},
        }


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _source(path: Path, split: str) -> dict[str, Any]:
    return {"path": path.name, "sha256": file_sha256(path), "split": split}


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def load_mnist(path: str | Path) -> Dataset:
    """The fixed binarization of MNIST (Larochelle & Murray 2011): 50k/10k/10k bit-packed 28x28 rows.

    Rows are kept in file order (the test split is grouped by digit); the training loop shuffles.
    """
    path = Path(path)
    with np.load(path) as f:
        splits = {s: np.unpackbits(f[s], axis=1, count=784) for s in ("train", "valid", "test")}
    return Dataset(
        name="binarized_mnist",
        train=_tensor(splits["train"]),
        valid=_tensor(splits["valid"]),
        test=_tensor(splits["test"]),
        shape=(28, 28),
        value_range=(0, 1),
        distribution={"type": "bernoulli"},
        source=_source(path, "standard 50000 train / 10000 valid / 10000 test"),
    )


def faces_split(
    target: np.ndarray, n_held_out: int, valid_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Indices of the faces splits: the last image of each of the first ``n_held_out`` people is held
    out (test); a seeded ``valid_fraction`` of the rest is the validation set, the remainder trains."""
    people = np.unique(target)[:n_held_out]
    test = np.array([np.flatnonzero(target == p)[-1] for p in people], dtype=np.int64)
    rest = np.setdiff1d(np.arange(target.shape[0]), test)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(rest)
    n_valid = round(valid_fraction * rest.shape[0])
    return {"train": np.sort(perm[n_valid:]), "valid": np.sort(perm[:n_valid]), "test": test}


def load_faces(path: str | Path, n_held_out: int = 20, valid_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """Olivetti faces, 64x64 raw gray levels (0..242 here) modelled as 256 levels."""
    path = Path(path)
    with np.load(path) as f:
        images = f["images"].reshape(f["images"].shape[0], -1)
        target = f["target"]
    idx = faces_split(target, n_held_out, valid_fraction, seed)
    split = (
        f"test: last image of each of the first {n_held_out} people (indices {idx['test'].tolist()}); "
        f"valid: seeded (seed {seed}) {valid_fraction:.0%} of the other {images.shape[0] - n_held_out} "
        f"({idx['valid'].shape[0]} images); train: the remaining {idx['train'].shape[0]}"
    )
    return Dataset(
        name="olivetti_faces",
        train=_tensor(images[idx["train"]]),
        valid=_tensor(images[idx["valid"]]),
        test=_tensor(images[idx["test"]]),
        shape=(64, 64),
        value_range=(0, 255),
        distribution={"type": "discretized_logistic", "n_bins": 256, "n_components": 1},
        source=_source(path, split),
    )


def load_digits(gray: bool = False, seed: int = 0, n_valid: int = 250, n_test: int = 250) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, levels 0..16): binarized at >= 8, or 17 gray levels.

    A seeded permutation gives ``n_test`` test and ``n_valid`` validation images, the rest train.
    """
    from sklearn.datasets import load_digits as sk_digits

    data = sk_digits().data.astype(np.float32)  # (1797, 64), values 0..16
    if not gray:
        data = (data >= 8).astype(np.float32)
    perm = np.random.default_rng(seed).permutation(data.shape[0])
    test, valid, train = perm[:n_test], perm[n_test : n_test + n_valid], perm[n_test + n_valid :]
    split = f"seeded (seed {seed}) permutation: {n_test} test, {n_valid} valid, {train.shape[0]} train"
    dist = (
        {"type": "discretized_logistic", "n_bins": 17, "n_components": 1} if gray else {"type": "bernoulli"}
    )
    return Dataset(
        name="sklearn_digits_gray" if gray else "sklearn_digits_binary",
        train=_tensor(data[train]),
        valid=_tensor(data[valid]),
        test=_tensor(data[test]),
        shape=(8, 8),
        value_range=(0, 16) if gray else (0, 1),
        distribution=dist,
        source={"path": "sklearn.datasets.load_digits", "sha256": None, "split": split},
    )


DATASETS = ("mnist", "faces", "digits", "digits-gray")


def pixel_entropy(x: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each dimension's empirical value distribution, ``(D,)``:
    ``H_d = -sum_v p_d(v) log p_d(v)``, zero for a pixel that never changes."""
    levels = x.round().long()
    levels = levels - levels.min()
    n_levels = int(levels.max()) + 1
    counts = torch.zeros(x.shape[1], n_levels, dtype=torch.float64)
    counts.scatter_add_(1, levels.T.contiguous(), torch.ones(levels.T.shape, dtype=torch.float64))
    p = counts / x.shape[0]
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1)


def load_dataset(
    kind: str, path: str | Path | None = None, seed: int = 0, valid_keep: int | None = None
) -> Dataset:
    """Load a data set by preset kind; ``path`` is needed for ``mnist`` and ``faces``.

    ``valid_keep``: keep only that many validation rows, the rest join train (:meth:`Dataset.fold_valid`).
    """
    data = _load(kind, path, seed)
    return data if valid_keep is None else data.fold_valid(valid_keep, seed)


def _load(kind: str, path: str | Path | None, seed: int) -> Dataset:
    if kind in ("mnist", "faces"):
        if path is None:
            raise ValueError(f"data set {kind!r} needs --data PATH")
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: data file not found")
        return load_mnist(path) if kind == "mnist" else load_faces(path, seed=seed)
    if kind == "digits":
        return load_digits(gray=False, seed=seed)
    if kind == "digits-gray":
        return load_digits(gray=True, seed=seed)
    raise ValueError(f"unknown data set {kind!r}: use one of {', '.join(DATASETS)}")
