"""Numba kernels of the per-row cached sampler (nopython, fastmath off so draws match the reference).

A row lives in slot ``s`` of the state arrays and carries its own mask ``kk[s]`` and next position
``pos[s]``. One step draws position ``i`` from the final outputs ``out[s, i*P:(i+1)*P]`` with uniform
``u[s, 1 + i]``, then finalises the hidden units of degree ``m = i + 1`` layer by layer
(``acc[j] += W[j, c] h[c]`` over the new units ``c`` of the layer below, for every unit ``j`` of
degree ``>= m``) and adds their contributions to the outputs of positions ``>= m``. Work per sample
is about half a forward pass; rows are independent, so a chunk runs rows in parallel with ``prange``.

Packed weights per mask ``k`` (units sorted by degree, inputs/outputs by position):
``wflat[k, wofs[l] + c*H_l + j]`` is the weight from unit ``c`` of layer ``l-1`` (layer ``-1`` = the
inputs) to unit ``j`` of layer ``l``; ``wout[k, c, i*P + p]``; ``direct[k, e, i*P + p]``.
``meta = [D, P, L, has_direct, dist_kind, n_bins, n_components, activation]``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["ACTIVATIONS", "BERNOULLI", "LOGISTIC", "advance_parallel", "advance_serial"]

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
    return min(z, 0.0) - math.log1p(math.exp(-abs(z)))


@njit(cache=True)
def _logistic_draw(out: np.ndarray, base: int, nb: int, nc: int, u: float) -> tuple[float, float]:
    """Inverse CDF over the bins by bisection on the closed-form CDF
    ``F(v) = sum_c pi_c sigmoid((x_v + half - mu_c) / s_c)``, plus the drawn bin's log-mass computed
    like ``DiscretizedLogistic._log_mass``; float64 throughout."""
    half = 1.0 / (nb - 1)
    mx = -np.inf
    for c in range(nc):
        mx = max(mx, np.float64(out[base + c]))
    z = 0.0
    for c in range(nc):
        z += math.exp(np.float64(out[base + c]) - mx)
    lz = mx + math.log(z)  # log-normaliser of the mixture logits
    lo, hi = 0, nb - 1
    while lo < hi:
        mid = (lo + hi) // 2
        edge = mid * (2.0 * half) - 1.0 + half
        f = 0.0
        for c in range(nc):
            ls = min(max(np.float64(out[base + 2 * nc + c]), -7.0), 7.0)
            w = math.exp(np.float64(out[base + c]) - lz)
            f += w / (1.0 + math.exp(-(edge - np.float64(out[base + nc + c])) * math.exp(-ls)))
        if f > u:
            hi = mid
        else:
            lo = mid + 1
    v = lo
    xv = v * (2.0 * half) - 1.0
    m = -np.inf
    acc = 0.0
    for c in range(nc):
        ls = min(max(np.float64(out[base + 2 * nc + c]), -7.0), 7.0)
        inv_s = math.exp(-ls)
        mu = np.float64(out[base + nc + c])
        upper = (xv + half - mu) * inv_s
        lower = (xv - half - mu) * inv_s
        if v == 0:
            lpc = _logsigmoid(upper)
        elif v == nb - 1:
            lpc = _logsigmoid(-lower)
        else:
            flip = (upper + lower) > 0
            top = -lower if flip else upper
            bot = -upper if flip else lower
            log_top = _logsigmoid(top)
            gap = min(_logsigmoid(bot) - log_top, -1e-12)
            l1m = math.log(-math.expm1(gap)) if gap > -math.log(2.0) else math.log1p(-math.exp(gap))
            lpc = log_top + l1m
        t = lpc + np.float64(out[base + c]) - lz
        if t > m:  # streaming logsumexp over components
            acc = acc * math.exp(m - t) + 1.0
            m = t
        else:
            acc += math.exp(t - m)
    return float(v), m + math.log(acc)


@njit(cache=True)
def _advance_row(
    s: int,
    steps: int,
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
    inp: np.ndarray,
    xs: np.ndarray,
    acc: np.ndarray,
    h: np.ndarray,
    out: np.ndarray,
    lp: np.ndarray,
) -> None:
    d, p, n_layers, has_direct = meta[0], meta[1], meta[2], meta[3]
    dist_kind, nb, nc, act = meta[4], meta[5], meta[6], meta[7]
    k = kk[s]
    one = cst[0]  # constants in the state's dtype: 1, 2 / (n_bins - 1)
    for _ in range(steps):
        i = pos[s]
        if i >= d:
            return
        base = i * p
        if dist_kind == 0:
            logit = out[s, base]
            prob = one / (one + math.exp(-logit))
            v = 1.0 if uf[s, 1 + i] < prob else 0.0
            lg = np.float64(logit)
            lp[s] += -_softplus(-lg) if v == 1.0 else -_softplus(lg)
            xs[s, i] = v
            a = xs[s, i]
        else:
            v, lpi = _logistic_draw(out[s], base, nb, nc, u[s, 1 + i])
            lp[s] += lpi
            xs[s, i] = v
            a = xs[s, i] * cst[1] - one
        m = i + 1
        pos[s] = m
        if m >= d:
            return
        inp[s, i] = a
        # layer 0: the single new "unit" below is input position i
        h0 = sizes[0]
        off = hoff[0]
        lo = bounds[k, 0, m]
        hi = bounds[k, 0, m + 1]
        row = wofs[0] + i * h0
        for j in range(lo, h0):
            acc[s, off + j] += a * wflat[k, row + j]
        for j in range(lo, hi):
            h[s, off + j] = _act(acc[s, off + j], act)
        plo, phi, poff = lo, hi, off
        for li in range(1, n_layers):
            hl = sizes[li]
            off = hoff[li]
            lo = bounds[k, li, m]
            hi = bounds[k, li, m + 1]
            for c in range(plo, phi):
                hc = h[s, poff + c]
                row = wofs[li] + c * hl
                for j in range(lo, hl):
                    acc[s, off + j] += hc * wflat[k, row + j]
            for j in range(lo, hi):
                h[s, off + j] = _act(acc[s, off + j], act)
            plo, phi, poff = lo, hi, off
        start = m * p
        width = d * p
        for c in range(plo, phi):
            hc = h[s, poff + c]
            for q in range(start, width):
                out[s, q] += hc * wout[k, c, q]
        if has_direct:
            for q in range(start, width):
                out[s, q] += a * direct[k, i, q]


@njit(cache=True, parallel=True)
def advance_parallel(slots: np.ndarray, steps: int, *args: np.ndarray) -> None:
    """Advance each row in ``slots`` by up to ``steps`` positions, rows spread over threads."""
    for r in prange(slots.shape[0]):
        _advance_row(slots[r], steps, *args)


@njit(cache=True)
def advance_serial(slots: np.ndarray, steps: int, *args: np.ndarray) -> None:
    """Same as :func:`advance_parallel` on the calling thread (cheaper for a few rows)."""
    for r in range(slots.shape[0]):
        _advance_row(slots[r], steps, *args)
