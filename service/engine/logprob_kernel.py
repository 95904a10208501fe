"""The log-prob forward pass of a Bernoulli MADE in one call that holds no GIL (numba, BLAS via SciPy).

Why: in a worker thread, each torch call of a forward pass gives up the GIL and takes it back, and
each taking-back waits behind a busy event loop (up to the 5 ms switch interval). Measured on the
2-vCPU machine for ``mnist-fast``, 31 rows in a worker beside a thread spinning in Python: a median of
69-92 ms through torch and 16 through this kernel (``python -m bench.logprob_forward``). It computes what
:meth:`service.made.MADE.log_prob_per_dim` computes, for every mask at once:

``h_0 = x``, ``h_l = act(h_{l-1} (W_l * M_l)^T + b_l)``, ``a = h_L (V * M_V)^T + c [+ x (A * M_A)^T]``,
``log p(x_d | x_<d) = x_d a_d - softplus(a_d)`` (that is ``-BCE(a_d, x_d)``), in float64 from the
model's dtype. The matrix products are BLAS calls (``np.dot``: a row at a time for small batches,
where one general product would pack the whole weight matrix, one product above ``_GEMV_ROWS``).
The weights are a copy taken when the engine is built (it serves a fixed model).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from service.made import MADE, Bernoulli

from .kernel_draws import _act, _softplus
from .kernels import ACTIVATIONS

__all__ = ["NogilLogProb", "nogil_unsupported"]

_GEMV_ROWS = 3  # up to this many rows, one matrix-vector product per row (bench.logprob_forward)


def nogil_unsupported(model: MADE) -> str | None:
    """Why :class:`NogilLogProb` cannot serve ``model``, or None if it can."""
    if not isinstance(model.dist, Bernoulli):
        return f"{type(model.dist).__name__} outputs (only Bernoulli)"
    if model.local_head is not None:
        return "a local head"
    if model.output_layer.weight.device.type != "cpu":
        return "weights off the CPU"
    if model.config.activation not in ACTIVATIONS:
        return f"activation {model.config.activation!r}"
    return None


@njit(cache=True, nogil=True)
def _linear(h: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``h w^T + b`` for ``w`` of shape ``(out, in)`` (as ``nn.Linear``)."""
    rows = h.shape[0]
    if rows <= _GEMV_ROWS:
        z = np.empty((rows, w.shape[0]), dtype=h.dtype)
        for i in range(rows):
            z[i] = np.dot(w, h[i])
    else:
        z = np.dot(h, w.T)
    if b.shape[0]:
        for i in range(rows):
            z[i] += b
    return z


@njit(cache=True, nogil=True)
def _bernoulli_per_dim(
    x: np.ndarray,
    wflat: np.ndarray,
    bflat: np.ndarray,
    sizes: np.ndarray,
    direct: np.ndarray,
    act: int,
) -> np.ndarray:
    """``(B, D)`` float64 conditionals for one mask; layer ``l`` weights ``(sizes[l+1], sizes[l])`` packed
    one after another in ``wflat`` (biases in ``bflat``), the last layer the output layer; ``direct``
    ``(D, D)`` or empty."""
    h = x
    wofs = 0
    bofs = 0
    n_layers = sizes.shape[0] - 1
    for layer in range(n_layers):
        n_in, n_out = sizes[layer], sizes[layer + 1]
        w = wflat[wofs : wofs + n_in * n_out].reshape((n_out, n_in))
        z = _linear(h, w, bflat[bofs : bofs + n_out])
        wofs += n_in * n_out
        bofs += n_out
        if layer < n_layers - 1:
            for i in range(z.shape[0]):
                for j in range(n_out):
                    z[i, j] = _act(z[i, j], act)
        h = z
    if direct.shape[0]:
        h += _linear(x, direct, bflat[:0])
    out = np.empty(h.shape, dtype=np.float64)
    for i in range(h.shape[0]):
        for d in range(h.shape[1]):
            a = float(h[i, d])
            out[i, d] = float(x[i, d]) * a - _softplus(a)
    return out


class NogilLogProb:
    """Each mask's masked weights packed for :func:`_bernoulli_per_dim`; :meth:`per_mask` runs them."""

    def __init__(self, model: MADE) -> None:
        why = nogil_unsupported(model)
        if why is not None:
            raise ValueError(f"the nogil log-prob kernel does not serve a model with {why}")
        self.act = ACTIVATIONS[model.config.activation]
        layers = [*model.hidden_layers, model.output_layer]
        self.sizes = np.array([model.data_dim] + [layer.out_features for layer in layers], dtype=np.int64)
        self.packed: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        with torch.no_grad():
            bias = np.concatenate([layer.bias.numpy() for layer in layers])
            for k in range(model.num_masks):
                wflat = np.concatenate([layer.masked_weight(k).numpy().ravel() for layer in layers])
                direct = (
                    model.direct_layer.masked_weight(k).numpy()
                    if model.direct_layer is not None
                    else np.zeros((0, 0), dtype=wflat.dtype)
                )
                self.packed.append((wflat, bias, direct))

    def warmup(self) -> None:
        """Compile (or load from numba's cache) the kernel for this model's dtype, so that no request
        waits for it (start-up may time no batch: ``MADE_LOGPROB_INLINE_MS=0``)."""
        self.per_mask(np.zeros((1, self.sizes[0])))

    def per_mask(self, x: np.ndarray) -> np.ndarray:
        """``(K, B, D)`` float64 conditionals ``log p_k(x_d | x_<d)`` of data ``x`` ``(B, D)``."""
        xs = np.ascontiguousarray(x, dtype=self.packed[0][0].dtype)
        return np.stack([_bernoulli_per_dim(xs, w, b, self.sizes, a, self.act) for w, b, a in self.packed])
