"""The CPU runner: per-row cached-sampler state in numpy slot arrays, advanced by numba kernels.

The model's masked weights are packed once per mask (see :mod:`service.engine.kernels`), in the model's
dtype (float32 when serving, float64 in exactness tests). Slot arrays grow on demand up to the highest
slot the scheduler hands out, so an idle engine for a large model holds little memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from service.made import MADE, build_plan

from .kernels import ACTIVATIONS, BERNOULLI, LOGISTIC, advance_serial
from .prefill import Prepared, RowInit, initial_state, prepare_request

__all__ = ["NumbaRunner"]

_BLOCK_ROWS = 16  # rows sharing each weight load; 16 rows of a 2x500 MADE stay in L2


def _default_threads() -> int:
    """Kernel threads: the ``kernel_threads`` setting (``MADE_KERNEL_THREADS``), else this process's
    share of the CPUs it may use (affinity and cgroup quota: a container's share, not the host's cores):
    all of them, or with ``MADE_WORKERS`` processes each holding its own engines, a ``1/workers`` share
    (at least one), so the processes' kernel threads do not outnumber the cores."""
    from service.config import Settings
    from service.cpu import available_cpus

    settings = Settings()
    return settings.kernel_threads or kernel_share(
        available_cpus(), settings.workers, settings.engine_process
    )


def kernel_share(cpus: int, workers: int, engine_process: bool) -> int:
    """Default kernel threads of one engine-holding process.

    >>> kernel_share(2, 1, False), kernel_share(2, 2, False), kernel_share(8, 3, False), kernel_share(2, 2, True)
    (2, 1, 2, 2)
    """
    return cpus if engine_process else max(1, cpus // workers)


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
        d, p = model.data_dim, model.n_outputs  # p: the width of a position's output block
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
        self.raster = (self.orders == np.arange(d)).all(axis=1)  # per mask: ordering is the identity
        self.sum_h = int(sum(sizes))
        self._pack_local(dtype)

    def _pack_local(self, dtype: np.dtype) -> None:
        """The local head's layers flattened (weights row-major, then biases) and each mask's window
        positions, ``-1`` where masked (see :mod:`service.engine.kernels`)."""
        head = self.model.local_head
        if head is None:
            self.lmeta = np.zeros(4, dtype=np.int64)
            self.lsizes = np.zeros(1, dtype=np.int64)
            self.lofs = np.zeros(1, dtype=np.int64)
            self.lw = np.zeros(1, dtype=dtype)
            self.lidx = np.zeros((1, 1, 1), dtype=np.int64)
            self.lwidth = 1
            return
        linears = [*head.layers, head.out]
        sizes = [linears[0].in_features, *[lin.out_features for lin in linears]]
        parts = [np.concatenate([_np(lin.weight).reshape(-1), _np(lin.bias)]) for lin in linears]
        n_nb = int(self.plans[0].local.shape[1])  # type: ignore[union-attr]
        n_ctx = self.model.config.local_context
        self.lmeta = np.array([len(head.layers), n_nb, n_ctx, self.model.dist.n_params], dtype=np.int64)
        self.lsizes = np.array(sizes, dtype=np.int64)
        self.lofs = np.concatenate([[0], np.cumsum([len(a) for a in parts])[:-1]]).astype(np.int64)
        self.lw = np.concatenate(parts).astype(dtype)
        local = np.stack([_np(plan.local) for plan in self.plans]).astype(np.int64)  # type: ignore[arg-type]
        self.lidx = np.where(local == self.d, -1, local)
        self.lwidth = max(sizes)

    # --- slot arrays -------------------------------------------------------------------------------
    def _alloc(self, cap: int) -> None:
        d, p, sh, dt = self.d, self.p, self.sum_h, self.dtype
        old = self._cap
        new = {
            "pos": np.zeros(cap, dtype=np.int64),
            "state": np.zeros(cap, dtype=np.int64),  # who owns the slot, in the streaming mode
            "kk": np.zeros(cap, dtype=np.int64),
            "u": np.zeros((cap, d + 1), dtype=np.float64),
            "uf": np.zeros((cap, d + 1), dtype=dt),
            "tt": np.ones(cap, dtype=np.float64),  # temperature per row
            "tf": np.ones(cap, dtype=dt),  # the same in the state dtype (Bernoulli logits / T)
            "inp": np.zeros((cap, d), dtype=dt),
            "xs": np.zeros((cap, d), dtype=dt),
            "acc": np.zeros((cap, sh), dtype=dt),
            "h": np.zeros((cap, sh), dtype=dt),
            "out": np.zeros((cap, d * p), dtype=dt),
            "tmp": np.zeros((cap, 6 * max(1, int(self.meta[6]))), dtype=np.float64),
            "lp": np.zeros(cap, dtype=np.float64),
            "lscr": np.zeros((cap, 2 * self.lwidth), dtype=dt),  # the local head's two layer buffers
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
    def prepare(
        self, n: int, seed: int, known: np.ndarray | None, n_known: int, temperature: float = 1.0
    ) -> Prepared:
        return prepare_request(self.model, self.plans, self.base, n, seed, known, n_known, temperature)

    def admit(self, prep: Prepared, rows: list[int], slots: list[int]) -> None:
        """Give rows ``rows`` of a prepared request their start state in ``slots``."""
        self.admit_many([(prep, rows, slots)])

    def admit_many(self, items: Sequence[tuple[Prepared, list[int], list[int]]]) -> None:
        """Admit rows of several requests at once: one copy per field for all of them, and one per
        start state (every unconditional row of mask ``k`` starts from the same state)."""
        parts = [(p, np.asarray(r, dtype=np.int64), np.asarray(sl, dtype=np.int64)) for p, r, sl in items]
        s = np.concatenate([sl for _, _, sl in parts])
        self._ensure(int(s.max()))
        comps = [p.comps[r] for p, r, _ in parts]
        u = np.concatenate([p.uniforms[r] for p, r, _ in parts])
        self.pos[s] = np.concatenate([np.full(len(r), p.start, dtype=np.int64) for p, r, _ in parts])
        self.kk[s] = np.concatenate(comps)
        self.u[s] = u
        self.uf[s] = u  # cast to the state dtype on assignment
        temps = np.concatenate([np.full(len(r), p.temperature, dtype=np.float64) for p, r, _ in parts])
        self.tt[s] = temps
        self.tf[s] = temps
        groups: dict[int, tuple[RowInit, list[np.ndarray]]] = {}
        for (p, _, sl), c in zip(parts, comps, strict=True):
            for k in p.init:
                sk = sl if len(p.init) == 1 else sl[c == k]
                if len(sk):
                    groups.setdefault(id(p.init[k]), (p.init[k], []))[1].append(sk)
        for init, chunks in groups.values():
            sk = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
            inp, xs, acc, h, out = self._flat(init)
            self.inp[sk] = inp
            self.xs[sk] = xs
            self.acc[sk] = acc
            self.h[sk] = h
            self.out[sk] = out
            self.lp[sk] = init.lp

    def _flat(self, init: RowInit) -> tuple[np.ndarray, ...]:
        """A start state as flat numpy rows in the slot arrays' layout (cached on the state)."""
        if init.flat is None:
            init.flat = (
                _np(init.inp),
                _np(init.xs),
                np.concatenate([_np(a) for a in init.acc]),
                np.concatenate([_np(a) for a in init.h]),
                _np(init.out).reshape(-1),
            )
        return init.flat

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
            self.tt,
            self.tf,
            self.inp,
            self.xs,
            self.acc,
            self.h,
            self.out,
            self.tmp,
            self.lp,
            self.lmeta,
            self.lsizes,
            self.lofs,
            self.lw,
            self.lidx,
            self.lscr,
        )

    def blocks(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Order ``slots`` by (mask, position) and cut runs of equal keys into blocks of at most
        ``block_rows`` (fewer when there are few rows, so every thread gets some); returns the ordered
        slots and the block boundaries."""
        if len(slots) == 1:
            return slots, np.array([0, 1], dtype=np.int64)
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

    def advance(self, slots: np.ndarray, steps: int, parallel: bool = True) -> np.ndarray:
        """Advance the rows in ``slots`` by up to ``steps`` positions (at least one unless finished;
        fewer if ``preempt`` is set meanwhile); returns their new positions. ``parallel=False`` keeps
        the chunk on the calling thread: for small chunks, waking the kernel threads costs more than
        it saves (measured on 2 cores: 1.26x requests/s with 32 staggered one-sample requests)."""
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        ordered, cuts = self.blocks(slots)
        args = self._args()
        n_blocks = len(cuts) - 1
        if self.threads < 2 or n_blocks < 2 or not parallel:
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
        kk = self.kk[s]
        xs = self.xs[s]
        if self.raster[kk].all():  # positions are raster indices: no reordering
            x = xs.astype(np.float32, copy=False)
        else:
            x = np.empty((len(s), self.d), dtype=np.float32)
            np.put_along_axis(x, self.orders[kk], xs.astype(np.float32, copy=False), axis=1)
        if self.meta[4] == LOGISTIC:
            return x, self.lp[s].copy()
        # Bernoulli: log p = -sum softplus(-(2x - 1) l) over every position (outputs are final once a
        # row is done), as max(z, 0) + log(1 + exp(-|z|)), in place (numpy's log is vectorised, its
        # log1p is not; the difference is below one ulp of 1 per term)
        z = self.out[s] if self.p == 1 else np.ascontiguousarray(self.out[s][:, :: self.p])
        z *= 1 - 2 * xs
        t = np.abs(z)
        np.negative(t, out=t)
        np.exp(t, out=t)
        t += 1
        np.log(t, out=t)
        np.maximum(z, 0, out=z)
        z += t
        return x, -z.sum(axis=1, dtype=np.float64)

    def release(self, slots: list[int]) -> None:
        """Rows in freed slots need no clean-up: admission overwrites every field."""
