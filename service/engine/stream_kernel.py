"""The streaming kernel: rows advance in a GIL-free loop that hands finished rows back without stopping.

The chunked loop (:mod:`.loop`) returns to Python after every chunk, so each chunk needs the GIL twice,
and on a busy server that GIL is held by the HTTP work it was meant to overlap with. Here a kernel
thread stays in compiled code while any row is active: it sweeps its stripe of slots, advances each
run of consecutive active slots that share a mask and a position by up to ``steps`` positions (one call
of the chunked kernel's :func:`_advance_block`, so the arithmetic, hence every draw, is the same), marks
rows that reached the end ``DONE`` and writes to an eventfd, which wakes the event loop to read them.

Each slot's ``state`` says who owns it; a side writes a slot only while it owns it:

- ``FREE`` (Python): the event loop fills the slot's arrays, then sets ``ACTIVE``.
- ``ACTIVE`` (kernel): advanced; at the end the kernel sets ``DONE``. Python may set ``DROP``
  (cancelled or expired), the one write it makes to a slot it does not own.
- ``DONE`` / ``DROPPED`` (Python): the kernel has let go; Python reads the results and frees the slot.
- ``DROP`` (kernel): the kernel sets ``DROPPED`` at its next sweep. If the row finished in the step
  that raced with the ``DROP``, the kernel's ``DONE`` overwrites it; Python treats both alike.

The eventfd write (a system call) orders the kernel's stores before Python's reads on any CPU; the
hand-over to the kernel (``FREE`` filled, then ``ACTIVE``) relies on stores becoming visible in
program order, as x86-64 guarantees, so the runner offers this mode on x86-64 only.
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .kernels import _advance_block

__all__ = ["ACTIVE", "DONE", "DROP", "DROPPED", "FREE", "stream_rows", "streaming_supported"]

FREE, ACTIVE, DONE, DROP, DROPPED = 0, 1, 2, 3, 4
_STOP, _SLOTS = 0, 1  # ctl[_STOP]: leave as soon as the current step ends; ctl[_SLOTS]: slots to scan
_SWEEPS, _ROW_STEPS = 0, 1  # counters written by the kernel (one row per thread)


def streaming_supported() -> bool:
    """True where the streaming kernel's hand-over is sound: Linux (eventfd) on x86-64 (store order)."""
    return hasattr(os, "eventfd") and os.uname().machine in ("x86_64", "AMD64")


def _libc_call(name: str) -> object:
    """An intrinsic ``name(fd, &word, 8)`` on a stack 8-byte word holding 1: ``write`` adds 1 to an
    eventfd, ``read`` waits until its count is not zero and clears it; both without the GIL. libc's
    function is linked by name, so the kernel stays in numba's on-disk cache (a ctypes pointer would
    not)."""

    @intrinsic
    def call(typingctx: object, fd: types.Integer) -> tuple[object, object]:
        def codegen(context: object, builder: ir.IRBuilder, sig: object, args: list[ir.Value]) -> ir.Value:
            i64 = ir.IntType(64)
            fnty = ir.FunctionType(i64, [ir.IntType(32), ir.IntType(8).as_pointer(), i64])
            fn = cgutils.get_or_insert_function(builder.module, fnty, name)
            word = cgutils.alloca_once_value(builder, ir.Constant(i64, 1))
            fd32 = builder.trunc(args[0], ir.IntType(32))
            return builder.call(fn, [fd32, builder.bitcast(word, fnty.args[1]), ir.Constant(i64, 8)])

        return types.int64(fd), codegen

    return call


_notify = _libc_call("write")
_wait = _libc_call("read")


@njit(cache=True, nogil=True)
def stream_rows(
    state: np.ndarray,
    ctl: np.ndarray,
    counters: np.ndarray,
    stripe: int,
    n_stripes: int,
    block_rows: int,
    steps: int,
    fd: int,
    wake_fd: int,
    *args: np.ndarray,
) -> None:
    """Advance the active slots of stripe ``stripe`` (slot blocks ``stripe``, ``stripe + n_stripes``,
    ... of ``block_rows`` slots each) until ``ctl[0]`` is set, writing to eventfd ``fd`` after a sweep
    that let go of rows, and sleeping on eventfd ``wake_fd`` (blocking) while none is active (``-1``: return
    instead). ``args`` are the chunked kernel's arrays (see :mod:`.kernels`)."""
    d = args[0][0]
    pos, kk = args[9], args[10]
    rows = np.empty(block_rows, dtype=np.int64)
    while ctl[_STOP] == 0:
        n = ctl[_SLOTS]
        busy = False
        settled = 0
        start = stripe * block_rows
        while start < n:
            end = min(start + block_rows, n)
            j = start
            while j < end:
                st = state[j]
                if st == DROP:
                    state[j] = DROPPED
                    settled += 1
                    j += 1
                    continue
                if st != ACTIVE:
                    j += 1
                    continue
                m = 0
                k0, p0 = kk[j], pos[j]
                while j < end and state[j] == ACTIVE and kk[j] == k0 and pos[j] == p0:
                    rows[m] = j
                    m += 1
                    j += 1
                _advance_block(rows[:m], steps, ctl, *args)
                counters[stripe, _ROW_STEPS] += m * (pos[rows[0]] - p0)
                busy = True
                for r in range(m):
                    if pos[rows[r]] >= d:
                        state[rows[r]] = DONE
                        settled += 1
            start += n_stripes * block_rows
        counters[stripe, _SWEEPS] += 1
        if settled:
            _notify(fd)
        if not busy:
            if wake_fd < 0:
                return
            _wait(wake_fd)  # new rows, a drop or a stop; the GIL stays free for the event loop
