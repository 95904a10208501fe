"""The batched torch runner (for CUDA; also runs, and is tested, on CPU).

Rows are kept in cohorts: rows that share a mask and a position. A step advances every cohort by one
position with the cached algorithm (``service.made.sampling``'s, vectorised over the cohort's rows):
draw position ``i`` from the final outputs ``out[:, i]``, then finalise the units of degree ``i + 1``
and add their contributions to every accumulator above them. Cohorts that reach the same (mask,
position) are merged, so rows admitted together step together whatever their request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from service.made import MADE, build_plan, final_params

from .prefill import Prepared, RowInit, initial_state, prepare_request

__all__ = ["TorchRunner"]


@dataclass
class _Cohort:
    k: int
    pos: int  # next position to draw
    slots: torch.Tensor  # (c,) long, CPU
    u: torch.Tensor  # (c, D + 1) float64
    temp: torch.Tensor  # (c,) temperature per row, model dtype
    inp: torch.Tensor  # (c, D) network inputs by position
    xs: torch.Tensor  # (c, D) data values by position
    acc: list[torch.Tensor]
    h: list[torch.Tensor]
    out: torch.Tensor  # (c, D, P)
    lp: torch.Tensor  # (c,) float64
    shared_t: float | None = None  # the temperature of every row when they share one (no per-row path)

    def select(self, keep: torch.Tensor) -> _Cohort:
        dev = self.out.device
        kd = keep.to(dev)
        return _Cohort(
            self.k,
            self.pos,
            self.slots[keep],
            self.u[kd],
            self.temp[kd],
            self.inp[kd],
            self.xs[kd],
            [a[kd] for a in self.acc],
            [a[kd] for a in self.h],
            self.out[kd],
            self.lp[kd],
            self.shared_t,
        )

    @staticmethod
    def cat(parts: list[_Cohort]) -> _Cohort:
        first = parts[0]
        return _Cohort(
            first.k,
            first.pos,
            torch.cat([p.slots for p in parts]),
            torch.cat([p.u for p in parts]),
            torch.cat([p.temp for p in parts]),
            torch.cat([p.inp for p in parts]),
            torch.cat([p.xs for p in parts]),
            [torch.cat([p.acc[i] for p in parts]) for i in range(len(first.acc))],
            [torch.cat([p.h[i] for p in parts]) for i in range(len(first.h))],
            torch.cat([p.out for p in parts]),
            torch.cat([p.lp for p in parts]),
            first.shared_t if all(p.shared_t == first.shared_t for p in parts) else None,
        )


class TorchRunner:
    """Per-row cached sampling state in torch tensors, advanced cohort by cohort."""

    backend = "torch"

    def __init__(self, model: MADE) -> None:
        self.model = model
        self.device = model.output_layer.weight.device
        self.dtype = model.output_layer.weight.dtype
        self.plans = [build_plan(model, k) for k in range(model.num_masks)]
        self.orders = torch.stack([p.order for p in self.plans]).cpu()
        zero = torch.zeros(model.data_dim, dtype=self.dtype, device=self.device)
        self.base = [initial_state(model, p, zero, 0) for p in self.plans]
        self.cohorts: list[_Cohort] = []
        self.preempt = np.zeros(1, dtype=np.int64)  # set from another thread to end a chunk early

    # --- requests --------------------------------------------------------------------------------
    def prepare(
        self, n: int, seed: int, known: np.ndarray | None, n_known: int, temperature: float = 1.0
    ) -> Prepared:
        return prepare_request(self.model, self.plans, self.base, n, seed, known, n_known, temperature)

    def admit(self, prep: Prepared, rows: list[int], slots: list[int]) -> None:
        """Give rows ``rows`` of a prepared request their start state in ``slots``."""
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        slots_t = torch.as_tensor(slots, dtype=torch.long)
        comps = torch.as_tensor(prep.comps)[rows_t]
        for k in torch.unique(comps).tolist():
            sel = comps == k
            c = int(sel.sum())
            init: RowInit = prep.init[k]
            u = torch.as_tensor(prep.uniforms)[rows_t[sel]].to(self.device)
            self.cohorts.append(
                _Cohort(
                    k,
                    prep.start,
                    slots_t[sel],
                    u,
                    torch.full((c,), prep.temperature, dtype=self.dtype, device=self.device),
                    init.inp.expand(c, -1).clone(),
                    init.xs.expand(c, -1).clone(),
                    [a.expand(c, -1).clone() for a in init.acc],
                    [a.expand(c, -1).clone() for a in init.h],
                    init.out.expand(c, -1, -1).clone(),
                    torch.full((c,), init.lp, dtype=torch.float64, device=self.device),
                    prep.temperature,
                )
            )

    def admit_many(self, items: Sequence[tuple[Prepared, list[int], list[int]]]) -> None:
        """Admit rows of several requests (cohorts at the same mask and position merge at the next step)."""
        for prep, rows, slots in items:
            self.admit(prep, rows, slots)

    def warmup(self) -> None:
        """Nothing to compile."""

    # --- stepping --------------------------------------------------------------------------------
    def _merge(self) -> None:
        groups: dict[tuple[int, int], list[_Cohort]] = {}
        for c in self.cohorts:
            groups.setdefault((c.k, c.pos), []).append(c)
        self.cohorts = [g[0] if len(g) == 1 else _Cohort.cat(g) for g in groups.values()]

    @torch.no_grad()
    def advance(self, slots: np.ndarray, steps: int, parallel: bool = True) -> np.ndarray:
        """Advance every row by up to ``steps`` positions (fewer if ``preempt`` is set meanwhile);
        returns the positions of ``slots`` (``parallel`` is the numba runner's hint; unused here)."""
        self._merge()
        d = self.model.data_dim
        for _ in range(steps):
            for c in self.cohorts:
                if c.pos < d:
                    self._step(c)
            if self.preempt[0]:
                break
        where = {}
        for c in self.cohorts:
            for s in c.slots.tolist():
                where[s] = c.pos
        return np.array([where[s] for s in slots.tolist()], dtype=np.int64)

    def _step(self, c: _Cohort) -> None:
        model, plan = self.model, self.plans[c.k]
        dist, act, d = model.dist, model.activation, model.data_dim
        i = c.pos
        p_i = final_params(model, plan, c.out, c.inp, i, i + 1)[:, 0]
        temp = c.temp if c.shared_t is None else c.shared_t  # tempered per row; lp stays the model's own
        v = dist.sample(p_i, c.u[:, 1 + i], temp)
        c.xs[:, i] = v
        c.lp += dist.log_prob(p_i, v).to(torch.float64)
        m = i + 1
        c.pos = m
        if m >= d:
            return
        a = dist.preprocess(v)
        c.inp[:, i] = a
        prev, lo_prev, hi_prev = c.inp, i, m
        for li, w in enumerate(plan.weights):
            bd = plan.bounds[li]
            lo, hi = bd[m], bd[m + 1]
            c.acc[li][:, lo:] += prev[:, lo_prev:hi_prev] @ w[lo:, lo_prev:hi_prev].T
            c.h[li][:, lo:hi] = act(c.acc[li][:, lo:hi])
            prev, lo_prev, hi_prev = c.h[li], lo, hi
        if hi_prev > lo_prev:
            c.out[:, m:] += torch.einsum(
                "nh,dph->ndp", prev[:, lo_prev:hi_prev], plan.out_weight[m:, :, lo_prev:hi_prev]
            )
        if plan.direct is not None:
            c.out[:, m:] += a[:, None, None] * plan.direct[m:, :, i]

    # --- results ---------------------------------------------------------------------------------
    def read(self, slots: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Raster-order data values ``(m, D)`` float32 and ``log p_k`` ``(m,)`` of finished ``slots``."""
        want = {s: j for j, s in enumerate(slots)}
        d = self.model.data_dim
        x = np.zeros((len(slots), d), dtype=np.float32)
        lp = np.zeros(len(slots), dtype=np.float64)
        for c in self.cohorts:
            idx = [(j, want[s]) for j, s in enumerate(c.slots.tolist()) if s in want]
            if not idx:
                continue
            src = torch.as_tensor([a for a, _ in idx])
            dst = np.array([b for _, b in idx])
            xs = c.xs[src.to(c.xs.device)].cpu().to(torch.float32)
            xr = torch.empty_like(xs)
            xr[:, self.orders[c.k]] = xs
            x[dst] = xr.numpy()
            lp[dst] = c.lp[src.to(c.lp.device)].cpu().numpy()
        return x, lp

    def release(self, slots: list[int]) -> None:
        """Forget the rows in ``slots``."""
        if not slots:
            return
        gone = torch.as_tensor(slots, dtype=torch.long)
        kept = []
        for c in self.cohorts:
            keep = ~torch.isin(c.slots, gone)
            if bool(keep.all()):
                kept.append(c)
            elif bool(keep.any()):
                kept.append(c.select(keep))
        self.cohorts = kept
