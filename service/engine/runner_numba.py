"""The CPU runner: per-row cached-sampler state in numpy slot arrays, advanced by numba kernels.

The model's masked weights are packed once per mask (see :mod:`service.engine.kernels`), in the model's
dtype (float32 when serving, float64 in exactness tests). Slot arrays grow on demand up to the highest
slot the scheduler hands out, so an idle engine for a large model holds little memory.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

from service.made import MADE, build_plan

from .kernels import ACTIVATIONS, BERNOULLI, LOGISTIC, advance_serial
from .prefill import Prepared, initial_state, prepare_request

__all__ = ["NumbaRunner"]

_BLOCK_ROWS = 16  # rows sharing each weight load; 16 rows of a 2x500 MADE stay in L2


def _default_threads() -> int:
    """Kernel threads: ``MADE_KERNEL_THREADS``, else numba's thread count (``NUMBA_NUM_THREADS``)."""
    return max(1, int(os.environ.get("MADE_KERNEL_THREADS", numba.config.NUMBA_NUM_THREADS)))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


class NumbaRunner:
    """Slot-indexed row state and packed weights for the numba kernels."""

    backend = "numba"

    def __init__(self, model: MADE, block_rows: int = _BLOCK_ROWS) -> None:
        if model.output_layer.weight.device.type != "cpu":
            raise ValueError("the numba runner needs a CPU model")
        self.model = model
        self.block_rows = block_rows
        # Blocks are spread over plain threads running the GIL-free serial kernel: steadier than numba's
        # threading layers next to torch's OpenMP pool (measured: 11-12 ms vs 11-22 ms for 256 rows).
        self.threads = _default_threads()
        self._pool: ThreadPoolExecutor | None = None  # made on first use, closed by close()
        self.preempt = np.zeros(1, dtype=np.int64)  # set from another thread to end a chunk early
        self.plans = [build_plan(model, k) for k in range(model.num_masks)]
        zero = torch.zeros(model.data_dim, dtype=model.output_layer.weight.dtype)
        self.base = [initial_state(model, p, zero, 0) for p in self.plans]
        self._pack()
        self._cap = 0
        self._alloc(8)

    # --- weights -----------------------------------------------------------------------------------
    def _pack(self) -> None:
        model, plans = self.model, self.plans
        d, p = model.data_dim, model.dist.n_params
        dtype = _np(plans[0].out_bias).dtype
        sizes = [w.shape[0] for w in plans[0].weights]
        n_layers = len(sizes)
        self.dtype = dtype
        self.d, self.p = d, p
        self.sizes = np.array(sizes, dtype=np.int64)
        self.hoff = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        prev = [d, *sizes[:-1]]
        block = [a * b for a, b in zip(prev, sizes, strict=True)]
        self.wofs = np.concatenate([[0], np.cumsum(block)[:-1]]).astype(np.int64)
        self.wflat = np.stack(
            [np.concatenate([_np(w.T).reshape(-1) for w in plan.weights]) for plan in plans]
        ).astype(dtype)
        self.bounds = np.array(
            [[plan.bounds[li][: d + 2] for li in range(n_layers)] for plan in plans], dtype=np.int64
        )
        self.wout = np.stack([_np(plan.out_weight).reshape(d * p, -1).T.copy() for plan in plans]).astype(
            dtype
        )
        has_direct = plans[0].direct is not None
        if has_direct:
            self.direct = np.stack([_np(plan.direct).reshape(d * p, d).T.copy() for plan in plans]).astype(
                dtype
            )  # type: ignore[union-attr]
        else:
            self.direct = np.zeros((1, 1, 1), dtype=dtype)
        dist = model.dist
        kind = BERNOULLI if dist.n_params == 1 and dist.n_bins == 2 else LOGISTIC
        n_comp = getattr(dist, "n_components", 0)
        self.meta = np.array(
            [
                d,
                p,
                n_layers,
                int(has_direct),
                kind,
                dist.n_bins,
                n_comp,
                ACTIVATIONS[model.config.activation],
            ],
            dtype=np.int64,
        )
        self.cst = np.array([1.0, 2.0 / (dist.n_bins - 1)], dtype=dtype)
        self.orders = np.stack([_np(plan.order) for plan in plans]).astype(np.int64)
        self.sum_h = int(sum(sizes))

    # --- slot arrays -------------------------------------------------------------------------------
    def _alloc(self, cap: int) -> None:
        d, p, sh, dt = self.d, self.p, self.sum_h, self.dtype
        old = self._cap
        new = {
            "pos": np.zeros(cap, dtype=np.int64),
            "kk": np.zeros(cap, dtype=np.int64),
            "u": np.zeros((cap, d + 1), dtype=np.float64),
            "uf": np.zeros((cap, d + 1), dtype=dt),
            "inp": np.zeros((cap, d), dtype=dt),
            "xs": np.zeros((cap, d), dtype=dt),
            "acc": np.zeros((cap, sh), dtype=dt),
            "h": np.zeros((cap, sh), dtype=dt),
            "out": np.zeros((cap, d * p), dtype=dt),
            "tmp": np.zeros((cap, 4 * max(1, int(self.meta[6]))), dtype=np.float64),
            "lp": np.zeros(cap, dtype=np.float64),
        }
        if old:
            for name, arr in new.items():
                arr[:old] = getattr(self, name)
        for name, arr in new.items():
            setattr(self, name, arr)
        self._cap = cap

    def _ensure(self, max_slot: int) -> None:
        if max_slot >= self._cap:
            cap = self._cap
            while cap <= max_slot:
                cap *= 2
            self._alloc(cap)

    # --- requests ----------------------------------------------------------------------------------
    def prepare(self, n: int, seed: int, known: np.ndarray | None, n_known: int) -> Prepared:
        return prepare_request(self.model, self.plans, self.base, n, seed, known, n_known)

    def admit(self, prep: Prepared, rows: list[int], slots: list[int]) -> None:
        """Give rows ``rows`` of a prepared request their start state in ``slots``."""
        self._ensure(max(slots))
        s = np.asarray(slots, dtype=np.int64)
        r = np.asarray(rows, dtype=np.int64)
        comps = prep.comps[r]
        self.pos[s] = prep.start
        self.kk[s] = comps
        self.u[s] = prep.uniforms[r]
        self.uf[s] = prep.uniforms[r].astype(self.dtype)
        for k in np.unique(comps).tolist():
            sk = s[comps == k]
            init = prep.init[k]
            self.inp[sk] = _np(init.inp)
            self.xs[sk] = _np(init.xs)
            self.acc[sk] = np.concatenate([_np(a) for a in init.acc])
            self.h[sk] = np.concatenate([_np(a) for a in init.h])
            self.out[sk] = _np(init.out).reshape(-1)
            self.lp[sk] = init.lp

    def _args(self) -> tuple[np.ndarray, ...]:
        return (
            self.meta,
            self.cst,
            self.sizes,
            self.hoff,
            self.wofs,
            self.bounds,
            self.wflat,
            self.wout,
            self.direct,
            self.pos,
            self.kk,
            self.u,
            self.uf,
            self.inp,
            self.xs,
            self.acc,
            self.h,
            self.out,
            self.tmp,
            self.lp,
        )

    def blocks(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Order ``slots`` by (mask, position) and cut runs of equal keys into blocks of at most
        ``block_rows`` (fewer when there are few rows, so every thread gets some); returns the ordered
        slots and the block boundaries."""
        kk, pos = self.kk[slots], self.pos[slots]
        order = np.lexsort((slots, pos, kk))
        ordered = slots[order]
        key = kk[order] * (self.d + 1) + pos[order]
        n = len(ordered)
        new_run = np.ones(n, dtype=bool)
        new_run[1:] = key[1:] != key[:-1]
        run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))
        # at most block_rows per block, and small batches still spread over every thread
        size = max(1, min(self.block_rows, -(-n // self.threads)))
        cut = (np.arange(n) - run_start) % size == 0
        return ordered, np.append(np.flatnonzero(cut), n).astype(np.int64)

    def advance(self, slots: np.ndarray, steps: int) -> np.ndarray:
        """Advance the rows in ``slots`` by up to ``steps`` positions (at least one unless finished;
        fewer if ``preempt`` is set meanwhile); returns their new positions."""
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        ordered, cuts = self.blocks(slots)
        args = self._args()
        n_blocks = len(cuts) - 1
        if self.threads < 2 or n_blocks < 2:
            advance_serial(ordered, cuts, int(steps), self.preempt, *args)
        else:  # contiguous groups of blocks with about equal rows, one per thread
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, "made-kernel")
            k = min(self.threads, n_blocks)
            edges = np.searchsorted(cuts, np.linspace(0, len(ordered), k + 1)[1:-1])
            bounds = [0, *sorted(set(edges.tolist()) - {0, n_blocks}), n_blocks]
            futs = [
                self._pool.submit(advance_serial, ordered, cuts[a : b + 1], int(steps), self.preempt, *args)
                for a, b in itertools.pairwise(bounds)
            ]
            for f in futs:
                f.result()
        return self.pos[slots].copy()

    def close(self) -> None:
        """Stop the kernel threads (a later :meth:`advance` starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def warmup(self) -> None:
        """Compile (or load from numba's cache) both kernels on a scratch row."""
        prep = self.prepare(1, 0, None, 0)
        self.admit(prep, [0], [0])
        self.advance(np.array([0]), 2)
        self.release([0])

    # --- results -------------------------------------------------------------------------------------
    def read(self, slots: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Raster-order data values ``(m, D)`` float32 and ``log p_k(x)`` ``(m,)`` of finished ``slots``."""
        s = np.asarray(slots, dtype=np.int64)
        x = np.empty((len(s), self.d), dtype=np.float32)
        np.put_along_axis(x, self.orders[self.kk[s]], self.xs[s].astype(np.float32), axis=1)
        if self.meta[4] == LOGISTIC:
            return x, self.lp[s].copy()
        # Bernoulli: log p = -sum softplus(-(2x - 1) l) over every position (outputs are final once a
        # row is done), as log(1 + exp(-|z|)): its error is below one ulp of 1 per term
        z = self.out[s] * (1 - 2 * self.xs[s])
        terms = np.maximum(z, 0) + np.log(1 + np.exp(-np.abs(z)))
        return x, -terms.sum(axis=1, dtype=np.float64)

    def release(self, slots: list[int]) -> None:
        """Rows in freed slots need no clean-up: admission overwrites every field."""
