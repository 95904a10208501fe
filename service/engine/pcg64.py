"""A request's uniforms in compiled code: exactly ``np.random.default_rng(seed).random((n, d))``.

Every sampling request draws its uniforms from NumPy's default generator (PCG64 seeded through a
``SeedSequence``), which makes a seed reproduce the same images on any runner. Built on the event loop,
that generator cost 7 us per request before the first draw (``default_rng``: a SeedSequence, a
bit-generator object, a Generator object) and showed as 6-10% of the event loop's time on
``POST /sample`` (py-spy). :func:`seeded_uniforms` computes the same numbers in one compiled call
of about 2 us for a 28x28 row:

- the seed's 32-bit words go through ``SeedSequence``'s hash mixing (pool of 4 words, no spawn key) and
  come out as 4 64-bit words ``w``;
- PCG64 is seeded as NumPy's ``pcg64_set_seed`` does: ``initstate = w0:w1``, ``initseq = w2:w3``,
  ``inc = 2 initseq + 1``, ``s = 0``, step, ``s += initstate``, step;
- each draw steps the 128-bit LCG ``s <- s M + inc (mod 2^128)`` and outputs
  ``rotr(hi(s) ^ lo(s), hi(s) >> 58)`` (XSL-RR), and a double is ``(out >> 11) 2^-53``.

Identity with NumPy is tested on fixed and random seeds over the whole seed range
(``tests/engine/test_pcg64.py``). The 128-bit arithmetic runs on 64-bit halves.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["seeded_uniforms"]

_U = np.uint64
_M32 = _U(0xFFFFFFFF)
_INIT_A, _MULT_A = _U(0x43B0D7E5), _U(0x931E8875)  # SeedSequence: entropy hashing
_INIT_B, _MULT_B = _U(0x8B51F9DD), _U(0x58F38DED)  # SeedSequence: state generation
_MIX_L, _MIX_R = _U(0xCA01F9DD), _U(0x4973F715)
_MUL_HI, _MUL_LO = _U(0x2360ED051FC65DA4), _U(0x4385DF649FCCF645)  # PCG's default 128-bit multiplier
_S11, _S16, _S32, _S58, _S63 = _U(11), _U(16), _U(32), _U(58), _U(63)
_ZERO, _ONE = _U(0), _U(1)
_TWO_M53 = 1.0 / 9007199254740992.0


@njit(cache=True, nogil=True)
def _hashmix(v: np.uint64, hc: np.uint64) -> tuple[np.uint64, np.uint64]:
    """SeedSequence's ``hashmix`` on 32-bit words held in uint64: the mixed word and the next constant."""
    v = (v ^ hc) & _M32
    hc = (hc * _MULT_A) & _M32
    v = (v * hc) & _M32
    return v ^ (v >> _S16), hc


@njit(cache=True, nogil=True)
def _seed_words(seed: np.uint64) -> np.ndarray:
    """``SeedSequence(seed).generate_state(4, np.uint64)`` for a seed below 2**64."""
    lo_word, hi_word = seed & _M32, seed >> _S32
    pool = np.zeros(4, np.uint64)
    hc = _INIT_A
    for i in range(4):  # the entropy is one word (two from 2**32 on), padded by hashing zeros
        v = _ZERO
        if i == 0:
            v = lo_word
        elif i == 1:
            v = hi_word  # zero when the seed has one word, which is what the padding hashes
        pool[i], hc = _hashmix(v, hc)
    for src in range(4):  # every word mixed into every other
        for dst in range(4):
            if src != dst:
                v, hc = _hashmix(pool[src], hc)
                r = (_MIX_L * pool[dst] - _MIX_R * v) & _M32
                pool[dst] = r ^ (r >> _S16)
    out = np.zeros(4, np.uint64)
    hb = _INIT_B
    for i in range(8):  # 8 32-bit words, paired little-end first into 4 64-bit words
        v = (pool[i % 4] ^ hb) & _M32
        hb = (hb * _MULT_B) & _M32
        v = (v * hb) & _M32
        v ^= v >> _S16
        if i % 2 == 0:
            out[i // 2] = v
        else:
            out[i // 2] |= v << _S32
    return out


@njit(cache=True, nogil=True)
def _mulhi(a: np.uint64, b: np.uint64) -> np.uint64:
    """The high 64 bits of the 128-bit product ``a b``."""
    a0, a1 = a & _M32, a >> _S32
    b0, b1 = b & _M32, b >> _S32
    p00, p01, p10 = a0 * b0, a0 * b1, a1 * b0
    mid = (p00 >> _S32) + (p01 & _M32) + (p10 & _M32)
    return a1 * b1 + (p01 >> _S32) + (p10 >> _S32) + (mid >> _S32)


@njit(cache=True, nogil=True)
def _step(hi: np.uint64, lo: np.uint64, inc_hi: np.uint64, inc_lo: np.uint64) -> tuple[np.uint64, np.uint64]:
    """``s M + inc (mod 2^128)`` on the halves of ``s``."""
    lo_m = lo * _MUL_LO
    hi_m = _mulhi(lo, _MUL_LO) + lo * _MUL_HI + hi * _MUL_LO
    lo_s = lo_m + inc_lo
    carry = _ONE if lo_s < lo_m else _ZERO
    return hi_m + inc_hi + carry, lo_s


@njit(cache=True, nogil=True)
def _draw(seed: np.uint64, out: np.ndarray) -> None:
    w = _seed_words(seed)
    inc_hi = (w[2] << _ONE) | (w[3] >> _S63)
    inc_lo = (w[3] << _ONE) | _ONE
    hi, lo = _step(_ZERO, _ZERO, inc_hi, inc_lo)
    lo_s = lo + w[1]
    carry = _ONE if lo_s < lo else _ZERO
    hi, lo = _step(hi + w[0] + carry, lo_s, inc_hi, inc_lo)
    for j in range(out.shape[0]):
        hi, lo = _step(hi, lo, inc_hi, inc_lo)
        x = hi ^ lo
        rot = hi >> _S58
        r = (x >> rot) | (x << ((_U(64) - rot) & _S63))
        out[j] = np.float64(r >> _S11) * _TWO_M53


def seeded_uniforms(seed: int, n: int, d: int) -> np.ndarray:
    """``(n, d)`` float64 uniforms in [0, 1), equal to ``np.random.default_rng(seed).random((n, d))``
    for a seed in ``0..2**64-1``.

    >>> import numpy as np
    >>> bool((seeded_uniforms(7, 2, 5) == np.random.default_rng(7).random((2, 5))).all())
    True
    """
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in 0..2**64-1, got {seed}")
    out = np.empty((n, d), dtype=np.float64)
    _draw(_U(seed), out.reshape(-1))
    return out
