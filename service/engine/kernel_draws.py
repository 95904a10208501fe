"""Per-position arithmetic of the numba kernels: activations, and the discretised logistic mixture's bin
log-masses, most probable bin and draw, computed as :mod:`service.made.distributions` computes them
(nopython, fastmath off, so the draws match the reference sampler's)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from service.made.distributions import MODE_TIE_NATS

__all__ = ["_act", "_logistic_draw", "_softplus"]


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
