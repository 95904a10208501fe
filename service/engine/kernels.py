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

from service.made.distributions import MODE_TIE_NATS

__all__ = [
    "ACTIVATIONS",
    "BERNOULLI",
    "LOGISTIC",
    "advance_serial",
]

BERNOULLI, LOGISTIC = 0, 1
ACTIVATIONS = {"elu": 0, "relu": 1, "tanh": 2, "gelu": 3}


@njit(cache=True, inline="always")
def _act(x: float, kind: int) -> float:
    if kind == 0:
        return x if x > 0 else math.expm1(x)
    if kind == 1:
        return x if x > 0 else 0.0 * x
    if kind == 2:
        return math.tanh(x)
    return 0.5 * x * (1.0 + math.erf(x * 0.7071067811865476))


@njit(cache=True, inline="always")
def _softplus(z: float) -> float:
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


@njit(cache=True, inline="always")
def _logsigmoid(z: float) -> float:
    return -_softplus(-z)


@njit(cache=True, inline="always")
def _bin_log_mass(v: int, nb: int, nc: int, tmp: np.ndarray) -> float:
    """Log-mass of bin ``v`` under the mixture in ``tmp`` (``log pi_c`` at ``3 nc``, ``mu_c`` at ``nc``,
    ``1 / s_c`` at ``2 nc``), computed like ``DiscretizedLogistic._log_mass``."""
    half = 1.0 / (nb - 1)
    xv = v * (2.0 * half) - 1.0
    m = -np.inf
    acc = 0.0
    for c in range(nc):
        upper = (xv + half - tmp[nc + c]) * tmp[2 * nc + c]
        lower = (xv - half - tmp[nc + c]) * tmp[2 * nc + c]
        if v == 0:
            lpc = _logsigmoid(upper)
        elif v == nb - 1:
            lpc = _logsigmoid(-lower)
        else:  # sigma(upper) - sigma(lower), reflected to the left tail as the reference does
            flip = (upper + lower) > 0
            top = -lower if flip else upper
            bot = -upper if flip else lower
            log_top = _logsigmoid(top)
            gap = min(_logsigmoid(bot) - log_top, -1e-12)
            l1m = math.log(-math.expm1(gap)) if gap > -math.log(2.0) else math.log1p(-math.exp(gap))
            lpc = log_top + l1m
        t = lpc + tmp[3 * nc + c]
        if t > m:  # streaming logsumexp over components
            acc = acc * math.exp(m - t) + 1.0
            m = t
        else:
            acc += math.exp(t - m)
    return m + math.log(acc)


@njit(cache=True, inline="always")
def _window(v: int, half: float, c: int, nc: int, tmp: np.ndarray) -> float:
    """``pi_c`` times the mass component ``c`` gives interior bin ``v`` (two sigmoids)."""
    xv = v * (2.0 * half) - 1.0
    up = (xv + half - tmp[nc + c]) * tmp[2 * nc + c]
    dn = (xv - half - tmp[nc + c]) * tmp[2 * nc + c]
    return tmp[c] * (1.0 / (1.0 + math.exp(-up)) - 1.0 / (1.0 + math.exp(-dn)))


@njit(cache=True, inline="always")
def _nearest_interior(mu: float, nb: int) -> int:
    """The interior bin (``1..nb-2``) whose centre is nearest ``mu``."""
    x = min(max((mu + 1.0) * 0.5 * (nb - 1), 1.0), nb - 2.0)  # clamped first: mu may be far outside
    return int(x + 0.5)


@njit(cache=True)
def _mode_bin(nb: int, nc: int, tmp: np.ndarray) -> tuple[float, float]:
    """The most probable bin under the model's mixture in ``tmp`` and its log-mass, as
    ``DiscretizedLogistic.mode`` defines it (the lowest bin within ``MODE_TIE_NATS`` of the largest
    log-mass), without computing every bin's log-mass.

    The largest mass ``M`` is at least that of the two tail bins and of the interior bin nearest each
    mean, which are scored first. An interior bin with mass near ``M`` has ``pi_c m_c(v) >= (M - 1e-9)
    / C`` for some component ``c``, and ``pi_c m_c(v)`` (a logistic's mass over a window of fixed
    width) only falls as the bin moves away from ``mu_c``; so walking outwards from each mean's bin
    while it stays above that floor visits every bin that can be the mode. The first visit finds the
    largest log-mass, the second the lowest bin within ``MODE_TIE_NATS`` of it."""
    half = 1.0 / (nb - 1)
    best, bv = -np.inf, nb
    floor = 0.0
    for phase in range(2):
        for v in (0, nb - 1):
            lm = _bin_log_mass(v, nb, nc, tmp)
            if phase == 0:
                best = max(best, lm)
            elif lm >= best - MODE_TIE_NATS and v < bv:
                bv = v
        if nb == 2:
            if phase == 0:
                continue
            break
        for c in range(nc):
            v = _nearest_interior(tmp[nc + c], nb)
            lm = _bin_log_mass(v, nb, nc, tmp)
            if phase == 0:
                best = max(best, lm)
            elif lm >= best - MODE_TIE_NATS and v < bv:
                bv = v
        if phase == 0:
            floor = (math.exp(best) - 1e-9) / nc
        for c in range(nc):
            start = _nearest_interior(tmp[nc + c], nb)
            for step in (1, -1):
                v = start + step
                while 1 <= v <= nb - 2 and _window(v, half, c, nc, tmp) >= floor:
                    lm = _bin_log_mass(v, nb, nc, tmp)
                    if phase == 0:
                        best = max(best, lm)
                    elif lm >= best - MODE_TIE_NATS and v < bv:
                        bv = v
                    v += step
    return float(bv), _bin_log_mass(bv, nb, nc, tmp)


@njit(cache=True)
def _logistic_draw(
    out: np.ndarray, base: int, nb: int, nc: int, u: float, temp: float, tmp: np.ndarray
) -> tuple[float, float]:
    """Draw a bin at temperature ``temp`` by bisection on the closed-form CDF
    ``F(v) = sum_c pi_c sigmoid((x_v + half - mu_c) / s_c)`` of the tempered mixture, or (``temp == 0``)
    take the bin of largest log-mass, and return it with its log-mass under the untempered mixture,
    computed like ``DiscretizedLogistic._log_mass``; float64 throughout (``tmp``: ``6 * nc`` scratch:
    ``pi_c, mu_c, 1 / s_c, log pi_c`` of the model, then ``pi_c, 1 / s_c`` at ``temp``)."""
    half = 1.0 / (nb - 1)
    mx = -np.inf
    for c in range(nc):
        mx = max(mx, np.float64(out[base + c]))
    z = 0.0
    for c in range(nc):
        z += math.exp(np.float64(out[base + c]) - mx)
    lz = mx + math.log(z)  # log-normaliser of the mixture logits
    for c in range(nc):
        tmp[3 * nc + c] = np.float64(out[base + c]) - lz  # log pi_c
        tmp[c] = math.exp(tmp[3 * nc + c])  # pi_c
        tmp[nc + c] = np.float64(out[base + nc + c])  # mu_c
        tmp[2 * nc + c] = math.exp(-min(max(np.float64(out[base + 2 * nc + c]), -7.0), 7.0))  # 1 / s_c
    if temp == 0.0:  # the most probable bin, the first of equals
        return _mode_bin(nb, nc, tmp)
    pi, inv_s = 0, 2 * nc  # offsets of the mixture weights and inverse scales the draw uses
    if temp != 1.0:  # tempered: logits / T, log-scales + log T
        log_t = math.log(temp)
        mx = -np.inf
        for c in range(nc):
            mx = max(mx, np.float64(out[base + c]) / temp)
        z = 0.0
        for c in range(nc):
            z += math.exp(np.float64(out[base + c]) / temp - mx)
        lz = mx + math.log(z)
        for c in range(nc):
            tmp[4 * nc + c] = math.exp(np.float64(out[base + c]) / temp - lz)
            tmp[5 * nc + c] = math.exp(-(min(max(np.float64(out[base + 2 * nc + c]), -7.0), 7.0) + log_t))
        pi, inv_s = 4 * nc, 5 * nc
    lo, hi = 0, nb - 1
    while lo < hi:
        mid = (lo + hi) // 2
        edge = mid * (2.0 * half) - 1.0 + half
        f = 0.0
        for c in range(nc):
            f += tmp[pi + c] / (1.0 + math.exp(-(edge - tmp[nc + c]) * tmp[inv_s + c]))
        if f > u:
            hi = mid
        else:
            lo = mid + 1
    return float(lo), _bin_log_mass(lo, nb, nc, tmp)


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
    cache). After each step the block stops early if another thread has set ``preempt[0]``."""
    d, p, n_layers, has_direct = meta[0], meta[1], meta[2], meta[3]
    dist_kind, nb, nc, act = meta[4], meta[5], meta[6], meta[7]
    nr = rows.shape[0]
    k = kk[rows[0]]
    one = cst[0]  # constants in the state's dtype: 1, 2 / (n_bins - 1)
    wk, woutk = wflat[k], wout[k]
    width = d * p
    # inner loops run over slices from 0 so numba can drop wraparound checks and vectorise
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
        row = wofs[0] + i * h0
        src = wk[row + lo : row + h0]
        for r in range(nr):
            s = rows[r]
            a = inp[s, i]
            if a != 0:  # adding 0 * w changes nothing: binary data skips most of this layer
                dst = acc[s, off + lo : off + h0]
                for j in range(h0 - lo):
                    dst[j] += a * src[j]
            for j in range(off + lo, off + hi):
                h[s, j] = _act(acc[s, j], act)
        plo, phi, poff = lo, hi, off
        for li in range(1, n_layers):
            hl = sizes[li]
            off = hoff[li]
            lo = bounds[k, li, m]
            hi = bounds[k, li, m + 1]
            for c in range(plo, phi):
                row = wofs[li] + c * hl
                src = wk[row + lo : row + hl]
                for r in range(nr):
                    s = rows[r]
                    hc = h[s, poff + c]
                    if hc != 0:
                        dst = acc[s, off + lo : off + hl]
                        for j in range(hl - lo):
                            dst[j] += hc * src[j]
            for r in range(nr):
                s = rows[r]
                for j in range(off + lo, off + hi):
                    h[s, j] = _act(acc[s, j], act)
            plo, phi, poff = lo, hi, off
        start = m * p
        for c in range(plo, phi):
            src = woutk[c, start:width]
            for r in range(nr):
                s = rows[r]
                hc = h[s, poff + c]
                if hc != 0:
                    dst = out[s, start:width]
                    for q in range(width - start):
                        dst[q] += hc * src[q]
        if has_direct:
            src = direct[k, i, start:width]
            for r in range(nr):
                s = rows[r]
                a = inp[s, i]
                if a != 0:
                    dst = out[s, start:width]
                    for q in range(width - start):
                        dst[q] += a * src[q]
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
