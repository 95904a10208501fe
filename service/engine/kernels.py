"""Numba kernels of the per-row cached sampler (nopython, fastmath off so draws match the reference).

A row lives in slot ``s`` of the state arrays and carries its own mask ``kk[s]`` and next position
``pos[s]``; rows advance independently, so a chunk may stop any block early (``preempt``) when the
scheduler wants the thread back. One step draws position ``i`` from the final outputs ``out[s, i*P:(i+1)*P]`` with uniform
``u[s, 1 + i]``, then finalises the hidden units of degree ``m = i + 1`` layer by layer
(``acc[j] += W[j, c] h[c]`` over the new units ``c`` of the layer below, for every unit ``j`` of
degree ``>= m``) and adds their contributions to the outputs of positions ``>= m``. Work per sample
is about half a forward pass. For the discretised logistic ``lp[s]`` accumulates the drawn bin's
log-mass (from the known prefix's); Bernoulli rows are scored after their last step instead, since
their outputs are then all final and numpy's vectorised ``exp``/``log`` beat a scalar ``log1p`` per
step. Rows are independent; the runner spreads blocks of rows over threads (GIL released).

Temperature, per row (``tt[s]`` float64, ``tf[s]`` the same in the state dtype), as
:mod:`service.made.distributions` defines it: a Bernoulli draw compares ``uf`` with
``sigmoid(logit / T)``, a logistic draw bisects the CDF of the mixture with logits ``/ T`` and scales
``* T``; ``T = 0`` takes the most probable value (``logit >= 0``; the bin of largest log-mass, the
first of equals) without reading ``u``. The log-mass added to ``lp`` is always the model's own.

Packed weights per mask ``k`` (units sorted by degree, inputs/outputs by position):
``wflat[k, wofs[l] + c*H_l + j]`` is the weight from unit ``c`` of layer ``l-1`` (layer ``-1`` = the
inputs) to unit ``j`` of layer ``l``; ``wout[k, c, i*P + p]``; ``direct[k, e, i*P + p]``.
``meta = [D, P, L, has_direct, dist_kind, n_bins, n_components, activation]``, where ``P`` is the
width of a position's output block (``Q``: the distribution's parameters first, then the local
head's context values).

The local head (:mod:`service.made.local`), when ``lmeta[0]`` (its hidden layers) is not zero: before
position ``i`` is drawn, its window's inputs ``inp[s, lidx[k, i, n]]`` (``-1``: masked, read as 0) and
the context ``out[s, i*P + n_params:]`` go through the tied MLP, whose output is added to the first
``n_params`` values of the block, which then hold the final parameters (Bernoulli rows are scored
from them after the last step). ``lmeta = [layers, N, C, n_params]``; layer ``l`` has ``lsizes[l + 1]``
units, weights ``lw[lofs[l] + j*lsizes[l] + c]`` (input ``c`` to unit ``j``, row-major as ``nn.Linear``)
and its biases after them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .kernel_draws import _act, _logistic_draw

__all__ = [
    "ACTIVATIONS",
    "BERNOULLI",
    "LOGISTIC",
    "advance_serial",
]

BERNOULLI, LOGISTIC = 0, 1
ACTIVATIONS = {"elu": 0, "relu": 1, "tanh": 2, "gelu": 3}


@njit(cache=True, fastmath={"contract", "reassoc"})
def _dense(x: np.ndarray, w: np.ndarray, b: np.ndarray, z: np.ndarray) -> None:
    """``z = W x + b`` for one layer of the local head, ``w`` row-major ``(len(z), len(x))``; each row a
    dot product the compiler may reorder, so it vectorises (summation order is not the reference's
    anyway, as for every accumulator here)."""
    n_in = x.shape[0]
    for j in range(z.shape[0]):
        acc = b[j]
        row = w[j * n_in : (j + 1) * n_in]
        for c in range(n_in):
            acc += row[c] * x[c]
        z[j] = acc


@njit(cache=True)
def _local_head(
    out: np.ndarray,
    base: int,
    inp: np.ndarray,
    lidx: np.ndarray,
    lmeta: np.ndarray,
    lsizes: np.ndarray,
    lofs: np.ndarray,
    lw: np.ndarray,
    scr: np.ndarray,
    act: int,
) -> None:
    """Add the local head's correction to the parameters ``out[base : base + n_params]`` of one row
    (``lidx``: the window's positions for this position; ``scr``: two buffers of the widest layer)."""
    n_layers, n_nb, n_ctx, n_par = lmeta[0], lmeta[1], lmeta[2], lmeta[3]
    width = scr.shape[0] // 2
    src, dst = 0, width
    for n in range(n_nb):
        j = lidx[n]
        scr[n] = inp[j] if j >= 0 else 0.0
    for c in range(n_ctx):
        scr[n_nb + c] = out[base + n_par + c]
    for li in range(n_layers + 1):
        n_in, n_out = lsizes[li], lsizes[li + 1]
        w0 = lofs[li]
        b0 = w0 + n_in * n_out
        z = scr[dst : dst + n_out]
        _dense(scr[src : src + n_in], lw[w0:b0], lw[b0 : b0 + n_out], z)
        if li < n_layers:
            for j in range(n_out):
                z[j] = _act(z[j], act)
        else:
            for j in range(n_out):
                out[base + j] += z[j]
        src, dst = dst, src


@njit(cache=True, fastmath={"contract"})
def _advance_block(
    rows: np.ndarray,
    steps: int,
    preempt: np.ndarray,
    meta: np.ndarray,
    cst: np.ndarray,
    sizes: np.ndarray,
    hoff: np.ndarray,
    wofs: np.ndarray,
    bounds: np.ndarray,
    wflat: np.ndarray,
    wout: np.ndarray,
    direct: np.ndarray,
    pos: np.ndarray,
    kk: np.ndarray,
    u: np.ndarray,
    uf: np.ndarray,
    tt: np.ndarray,
    tf: np.ndarray,
    inp: np.ndarray,
    xs: np.ndarray,
    acc: np.ndarray,
    h: np.ndarray,
    out: np.ndarray,
    tmp: np.ndarray,
    lp: np.ndarray,
    lmeta: np.ndarray,
    lsizes: np.ndarray,
    lofs: np.ndarray,
    lw: np.ndarray,
    lidx: np.ndarray,
    lscr: np.ndarray,
) -> None:
    """Advance a block of rows that share a mask and a position by up to ``steps`` positions; each
    weight slice is loaded once and applied to every row of the block (their accumulators stay in
    cache). After each step the block stops early if another thread has set ``preempt[0]``.

    The inner loops index the state arrays with unsigned integers and slice nothing: numba then emits
    no negative-index fix-up, which kept such loops scalar, and no reference counting, an atomic add
    per slice on a counter the kernel threads share (measured with ``hey`` on ``/sample``: 10% more
    requests per second than with slices; ``docs/engine.md``)."""
    d, p, n_layers, has_direct = meta[0], meta[1], meta[2], meta[3]
    dist_kind, nb, nc, act = meta[4], meta[5], meta[6], meta[7]
    nr = rows.shape[0]
    k = kk[rows[0]]
    one = cst[0]  # constants in the state's dtype: 1, 2 / (n_bins - 1)
    wk = wflat[k]
    width = d * p
    woutk = wout[k].reshape(-1)  # unit c's outputs from c * width
    directk = direct[k].reshape(-1)  # input i's outputs from i * width
    zero = np.uint64(0)
    for _ in range(steps):
        i = pos[rows[0]]
        if i >= d:
            return
        base = i * p
        for r in range(nr):
            s = rows[r]
            if lmeta[0] > 0:
                _local_head(out[s], base, inp[s], lidx[k, i], lmeta, lsizes, lofs, lw, lscr[s], act)
            if dist_kind == 0:  # log p is scored after the last step, vectorised (see the runner)
                if tt[s] == 1.0:
                    prob = one / (one + math.exp(-out[s, base]))
                    v = 1.0 if uf[s, 1 + i] < prob else 0.0
                elif tt[s] == 0.0:  # the most probable value: p(1) >= 1/2
                    v = 1.0 if out[s, base] >= 0 else 0.0
                else:
                    prob = one / (one + math.exp(-(out[s, base] / tf[s])))
                    v = 1.0 if uf[s, 1 + i] < prob else 0.0
                xs[s, i] = v
                inp[s, i] = xs[s, i]
            else:
                v, lpi = _logistic_draw(out[s], base, nb, nc, u[s, 1 + i], tt[s], tmp[s])
                lp[s] += lpi
                xs[s, i] = v
                inp[s, i] = xs[s, i] * cst[1] - one
            pos[s] = i + 1
        m = i + 1
        if m >= d:
            return
        # layer 0: the single new "unit" below is input position i
        h0 = sizes[0]
        off = hoff[0]
        lo = bounds[k, 0, m]
        hi = bounds[k, 0, m + 1]
        n0, d0, w0 = np.uint64(h0 - lo), np.uint64(off + lo), np.uint64(wofs[0] + i * h0 + lo)
        for r in range(nr):
            s = rows[r]
            a = inp[s, i]
            if a != 0:  # adding 0 * w changes nothing: binary data skips most of this layer
                us = np.uint64(s)
                for q in range(zero, n0):
                    acc[us, d0 + q] += a * wk[w0 + q]
            for j in range(off + lo, off + hi):
                h[s, j] = _act(acc[s, j], act)
        plo, phi, poff = lo, hi, off
        for li in range(1, n_layers):
            hl = sizes[li]
            off = hoff[li]
            lo = bounds[k, li, m]
            hi = bounds[k, li, m + 1]
            n1, d1 = np.uint64(hl - lo), np.uint64(off + lo)
            for c in range(plo, phi):
                w1 = np.uint64(wofs[li] + c * hl + lo)
                for r in range(nr):
                    s = rows[r]
                    hc = h[s, poff + c]
                    if hc != 0:
                        us = np.uint64(s)
                        for q in range(zero, n1):
                            acc[us, d1 + q] += hc * wk[w1 + q]
            for r in range(nr):
                s = rows[r]
                for j in range(off + lo, off + hi):
                    h[s, j] = _act(acc[s, j], act)
            plo, phi, poff = lo, hi, off
        start = m * p
        # outputs: a row's new units four at a time in one pass over its outputs. Each element gets the
        # same fused multiply-adds in the same order as with one pass per unit (so the same values), for
        # a quarter of the loads and stores. A unit at exactly 0 (ReLU) adds 0 * w, which changes no value.
        us0, us1 = np.uint64(start), np.uint64(width)
        uw = np.uint64(width)
        for r in range(nr):
            s = rows[r]
            us = np.uint64(s)
            c = plo
            while c + 4 <= phi:
                a0, a1, a2, a3 = h[s, poff + c], h[s, poff + c + 1], h[s, poff + c + 2], h[s, poff + c + 3]
                b0 = np.uint64(c * width)
                b1 = b0 + uw
                b2 = b1 + uw
                b3 = b2 + uw
                for q in range(us0, us1):
                    x = out[us, q]
                    x += a0 * woutk[b0 + q]
                    x += a1 * woutk[b1 + q]
                    x += a2 * woutk[b2 + q]
                    x += a3 * woutk[b3 + q]
                    out[us, q] = x
                c += 4
            if c + 2 <= phi:
                a0, a1 = h[s, poff + c], h[s, poff + c + 1]
                b0 = np.uint64(c * width)
                b1 = b0 + uw
                for q in range(us0, us1):
                    x = out[us, q]
                    x += a0 * woutk[b0 + q]
                    x += a1 * woutk[b1 + q]
                    out[us, q] = x
                c += 2
            if c < phi:
                a0 = h[s, poff + c]
                b0 = np.uint64(c * width)
                for q in range(us0, us1):
                    out[us, q] += a0 * woutk[b0 + q]
        if has_direct:
            w0 = np.uint64(i * width)
            for r in range(nr):
                s = rows[r]
                a = inp[s, i]
                if a != 0:
                    us = np.uint64(s)
                    for q in range(us0, us1):
                        out[us, q] += a * directk[w0 + q]
        if preempt[0] != 0:
            return


@njit(cache=True, nogil=True)
def advance_serial(
    slots: np.ndarray, block_starts: np.ndarray, steps: int, preempt: np.ndarray, *args: np.ndarray
) -> None:
    """Advance blocks ``slots[block_starts[b]:block_starts[b + 1]]`` by up to ``steps`` positions on the
    calling thread, without the GIL (the runner runs disjoint groups of blocks on several threads)."""
    for b in range(block_starts.shape[0] - 1):
        _advance_block(slots[block_starts[b] : block_starts[b + 1]], steps, preempt, *args)
