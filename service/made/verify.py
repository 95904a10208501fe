"""The autoregressive property, checked with autograd on the real network (every mask).

For mask ``k`` the Jacobian ``J[d, j] = d out_d / d x_j`` must vanish unless ``deg(j) < deg(d)``.
We differentiate a random positive combination of each dimension's ``P`` parameters (so a
dependence cannot cancel) through the model's one forward pass (``MADE.forward_inputs``: hidden layers,
direct connections and the local head alike) with ``torch.func.jacrev``, in chunks to bound memory.
"""

from __future__ import annotations

import torch
from torch.func import jacrev

from .network import MADE

__all__ = ["AutoregressiveViolation", "allowed_dependencies", "jacobian", "verify_autoregressive"]


class AutoregressiveViolation(Exception):
    """An output depends on an input that does not precede it in the ordering."""


def allowed_dependencies(model: MADE, k: int) -> torch.Tensor:
    """``(D, D)`` boolean: may output ``d`` depend on input ``j`` under mask ``k``?"""
    deg = model.input_degrees[k]
    return deg[None, :] < deg[:, None]


def jacobian(model: MADE, k: int, x: torch.Tensor, chunk_size: int = 256) -> torch.Tensor:
    """``(D, D)`` Jacobian of the combined per-dimension outputs w.r.t. the network inputs at ``x``.

    Rows come ``chunk_size`` output dimensions at a time, each chunk from the forward pass restricted to
    those dimensions, so the cost per row does not grow with the local head's per-pixel work.
    """
    weight = model.output_layer.weight
    g = torch.Generator().manual_seed(1234 + k)
    mix = (torch.rand(model.dist.n_params, generator=g, dtype=torch.float64) + 0.5).to(weight)
    inp = model.dist.preprocess(x.to(weight))
    rows = []
    for start in range(0, model.data_dim, chunk_size):
        dims = torch.arange(start, min(start + chunk_size, model.data_dim), device=inp.device)

        def f(v: torch.Tensor, dims: torch.Tensor = dims) -> torch.Tensor:
            return model.forward_inputs(v[None], k, dims)[0] @ mix  # the model's own forward pass

        rows.append(jacrev(f)(inp))
    return torch.cat(rows)


@torch.no_grad()
def _random_input(model: MADE, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    levels = model.dist.n_bins
    return torch.randint(0, levels, (model.data_dim,), generator=g).to(torch.float64)


def verify_autoregressive(model: MADE, n_inputs: int = 1, tol: float = 0.0) -> None:
    """Raise :class:`AutoregressiveViolation` if any mask lets an output see a later input."""
    device = model.output_layer.weight.device
    for k in range(model.num_masks):
        allowed = allowed_dependencies(model, k).to(device)
        for s in range(n_inputs):
            x = _random_input(model, seed=s).to(device)
            with torch.enable_grad():
                jac = jacobian(model, k, x)
            bad = (jac.abs() > tol) & ~allowed
            if bad.any():
                d, j = (int(i) for i in bad.nonzero()[0])
                raise AutoregressiveViolation(
                    f"mask {k}: output {d} depends on input {j}, which does not precede it in the ordering"
                )
