"""Named training presets: data set, architecture and hyperparameters; command-line flags override them.

Paths are relative to the project root (the data lives beside the repository, in ``../shared/data``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PRESETS", "preset"]

# The 4000-unit MNIST recipe: served as models/mnist-4k and, from two seeds, pooled into models/mnist.
_MNIST_4K: dict[str, Any] = {
    "dataset": "mnist",
    "data": "../shared/data/binarized_mnist.npz",
    "out": "models/mnist-4k",
    "name": "mnist-4k",
    "description": (
        "MADE on binarized MNIST (28x28, Bernoulli outputs), 4000 hidden units trained as one network; "
        "half the sampling cost of mnist. Natural raster ordering, so any top part of an image can be "
        "conditioned on."
    ),
    "hidden": [4000],
    "activation": "elu",
    "direct": True,
    "masks": 1,
    "epochs": 60,
    "batch_size": 100,
    "lr": 1e-3,
    "lr_schedule": "cosine",
    "min_lr": 1e-5,
    # dropout 0.3 for 37 epochs (where the seed-0 run was first stopped, for time; not a tuned value:
    # 80 epochs with the tail from 48 did worse), then a dropout-free tail that early stopping ends
    "dropout": 0.3,
    "dropout_until": 37,
    "ema": 0.999,
    "valid_keep": 1000,
    "degrees": "entropy",
    "patience": 3,
    "select": "mask0",
    "storage": "float16",
    "calibrate": True,
}

PRESETS: dict[str, dict[str, Any]] = {
    "mnist": {
        # two 4000-unit MADEs from different seeds, pooled into one 8000-unit MADE whose logit is
        # w0 a0 + w1 a1 (weights fitted on the kept validation images): see service/training/pooling.py
        "pool": ["mnist-4k", "mnist-4k-s1"],
        "out": "models/mnist",
        "name": "mnist",
        "description": (
            "MADE on binarized MNIST (28x28, Bernoulli outputs), 8000 hidden units: two 4000-unit MADEs "
            "trained from different seeds, pooled into one network (logits weighted, fitted on validation "
            "data). The best likelihood here, at twice the sampling cost of mnist-4k. Natural raster "
            "ordering, so any top part of an image can be conditioned on."
        ),
        "storage": "float16",
    },
    "mnist-4k": _MNIST_4K,
    "mnist-4k-s1": {
        **_MNIST_4K,
        "seed": 1,
        "mask_seed": 1,
        "out": "runs/mnist-4k-s1/model",
        "name": "mnist-4k-s1",
        "description": "The mnist-4k recipe from seed 1 (initial weights, data order, dropout, hidden degrees).",
    },
    "mnist-fast": {
        "dataset": "mnist",
        "data": "../shared/data/binarized_mnist.npz",
        "out": "models/mnist-fast",
        "name": "mnist-fast",
        "description": (
            "MADE on binarized MNIST (28x28, Bernoulli outputs), 2000 hidden units: samples 1.5-1.8x as "
            "fast as models/mnist-4k for 1.4 nats less likelihood; natural raster ordering."
        ),
        "hidden": [2000],
        "activation": "elu",
        "direct": True,
        "masks": 1,
        "epochs": 400,
        "batch_size": 100,
        "lr": 2e-3,
        "lr_schedule": "plateau",
        "plateau_patience": 2,
        "dropout": 0.15,
        "patience": 6,
        "select": "mask0",
        "storage": "float32",
        "calibrate": True,
    },
    "mnist-ensemble": {
        "dataset": "mnist",
        "data": "../shared/data/binarized_mnist.npz",
        "out": "models/mnist-ensemble",
        "name": "mnist-ensemble",
        "description": (
            "MADE on binarized MNIST with 8 connectivity-agnostic masks that share the raster ordering: "
            "log p(x) is the exact 8-component mixture, each sample draws its mask, and a completion "
            "weighs the masks by the likelihood of the known top."
        ),
        "hidden": [1000],
        "activation": "elu",
        "direct": True,
        "masks": 8,
        "epochs": 400,
        "batch_size": 100,
        "lr": 2e-3,
        "lr_schedule": "plateau",
        "plateau_patience": 2,
        "dropout": 0.0,
        "patience": 6,
        "select": "ensemble",
        "storage": "float32",
    },
    "faces": {
        "dataset": "faces",
        "data": "../shared/data/olivetti_faces.npz",
        "out": "models/faces",
        "name": "faces",
        "description": (
            "MADE on Olivetti faces (64x64, 256 gray levels, a mixture of 4 discretized logistics per "
            "pixel) with a local head: a 3-row window above and to the left of each pixel read by one "
            "MLP shared by every pixel, plus 4 context outputs of a 64-unit MADE. Natural raster "
            "ordering: the bottom half of a face can be completed from its top half."
        ),
        "hidden": [64],
        "activation": "elu",
        "direct": False,
        "masks": 1,
        "components": 4,
        "local_rows": 3,
        "local_cols": 3,
        "local_hidden": [64, 64],
        # 4, not 8: fewer per-pixel output weights; with the decay below, valid 4.029 against 4.037
        "local_context": 4,
        # small batches: the head's few thousand tied weights see 342 x 4096 pixels an epoch, and
        # learn from more steps (in a prototype, batch 5 reached 4.29 bits/dim in 30 epochs; batch 20, 4.37 in 40)
        "epochs": 500,
        "batch_size": 5,
        "lr": 2e-3,
        "lr_schedule": "cosine",
        "min_lr": 1e-5,
        "ema": 0.999,
        # L2 through Adam (added to the gradient of the mean NLL per face): N x wd is about 1 with
        # N = 342, the scale where the output layer's weakly supported per-pixel weights are pulled in and
        # well-supported ones are not (their summed squared gradients: median 0.58, 90th percentile 77);
        # with 8 context outputs, valid 4.037 against 4.048 without it
        "weight_decay": 3e-3,
        "patience": 30,
        "select": "mask0",
        "storage": "float16",
        "hflip": True,
        # moves of up to one pixel each way: the per-pixel output weights see each face a pixel off, which
        # kept validation improving to epoch 455 (valid 3.919, test 3.958) where without it the run
        # overfitted from epoch 156 (valid 4.029, test 4.119)
        "shift": 1,
        "threads": 2,
    },
    "digits": {
        "dataset": "digits",
        "data": None,
        "out": "runs/digits/model",
        "name": "digits",
        "description": "MADE on scikit-learn's 8x8 digits binarized at 8 of 0..16 (Bernoulli outputs).",
        "hidden": [128],
        "activation": "elu",
        "direct": True,
        "masks": 2,
        "epochs": 60,
        "batch_size": 50,
        "lr": 3e-3,
        "lr_schedule": "constant",
        "patience": 10,
        "select": "mask0",
        "storage": "float32",
    },
    "digits-gray": {
        "dataset": "digits-gray",
        "data": None,
        "out": "runs/digits-gray/model",
        "name": "digits-gray",
        "description": "MADE on scikit-learn's 8x8 digits as 17 gray levels (discretized logistic outputs).",
        "hidden": [128],
        "activation": "elu",
        "direct": True,
        "masks": 2,
        "epochs": 60,
        "batch_size": 50,
        "lr": 3e-3,
        "lr_schedule": "constant",
        "patience": 10,
        "select": "mask0",
        "storage": "float32",
    },
}


def preset(name: str) -> dict[str, Any]:
    """A copy of preset ``name``; unknown names are an error listing the choices."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])
