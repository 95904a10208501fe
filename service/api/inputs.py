"""Request inputs -> ``(B, D)`` float32 model values, validated against the model (shape, levels).

JSON inputs are ``H x W`` nested lists or flat ``D``-vectors of values in the model's range; uploads
are decoded to gray, thresholded (binary models) or mapped onto the model's levels. Every failure is
a 4xx naming the field, what the model expects and what came.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from typing import Any

import numpy as np

from ..config import Settings
from . import codecs
from .errors import invalid
from .offload import run_cpu
from .registry import ModelEntry

__all__ = ["from_json", "from_uploads", "known_rows_to_n_known", "may_hold_booleans"]

INLINE_PIXELS = 64 * 64 * 4  # uploads declaring at most this many pixels decode on the event loop


def _index(idx: Sequence[int]) -> str:
    return "".join(f"[{int(i)}]" for i in idx)


def _expected_values(entry: ModelEntry) -> str:
    lo, hi = entry.value_range
    return "0 or 1" if entry.binary else f"integers {lo}..{hi}"


def check_values(x: np.ndarray, entry: ModelEntry, field: str) -> None:
    """Every value must be one of the model's levels; the first bad one is named by its index."""
    if entry.binary:  # one test covers finiteness, range and integrality (NaN differs from both)
        bad = (x != 0) & (x != 1)
    else:
        lo, hi = entry.value_range
        bad = ~np.isfinite(x) | (x < lo) | (x > hi) | (x != np.rint(x))
    if bad.any():
        idx = tuple(np.argwhere(bad)[0])
        value = x[idx].item()
        raise invalid(
            f"{field}{_index(idx)}",
            f"model {entry.name!r} takes {_expected_values(entry)}, got {value!r}",
            value if np.isfinite(value) else str(value),
        )


def _size_hint(entry: ModelEntry) -> str:
    if entry.shape is None:
        return f"a flat list of {entry.data_dim} values"
    h, w = entry.shape
    return f"a {h} x {w} (rows x columns) nested list or a flat list of {entry.data_dim} values"


_INT64 = 2**63


def _leaves(values: list[Any]) -> Iterator[tuple[tuple[int, ...], Any]]:
    """``(index, value)`` of every item of inputs nested up to three deep (input, row, pixel)."""
    for i, item in enumerate(values):
        if not isinstance(item, list):
            yield (i,), item
            continue
        for j, sub in enumerate(item):
            if not isinstance(sub, list):
                yield (i, j), sub
                continue
            for k, v in enumerate(sub):
                yield (i, j, k), v


def _leaf_types(values: list[Any]) -> set[type]:
    """The types of the pixel values (at C speed: no Python-level loop over pixels)."""
    rows = chain.from_iterable(v if isinstance(v, list) else (v,) for v in values)
    return set(map(type, chain.from_iterable(r if isinstance(r, list) else (r,) for r in rows)))


def _first(values: list[Any], bad: Callable[[Any], bool]) -> tuple[tuple[int, ...], Any]:
    return next((idx, v) for idx, v in _leaves(values) if bad(v))


def _refuse_non_numbers(values: list[Any], entry: ModelEntry, field: str) -> None:
    """JSON ``true``/``false`` are not pixel values (``"n": true`` is refused too)."""
    types = _leaf_types(values)
    if bool in types:
        idx, v = _first(values, lambda x: isinstance(x, bool))
        raise invalid(
            f"{field}{_index(idx)}",
            f"model {entry.name!r} takes {_expected_values(entry)} as numbers, got the boolean {str(v).lower()}",
            v,
        )


def _refuse_huge_ints(values: list[Any], entry: ModelEntry, field: str) -> None:
    """Name the first integer beyond int64. Called only when numpy could not hold the inputs as int64
    (an object or uint64 array), so well-formed inputs never pay a Python-level pass over pixels."""
    huge = ((idx, v) for idx, v in _leaves(values) if type(v) is int and not -_INT64 <= v < _INT64)
    found = next(huge, None)
    if found is not None:
        idx, v = found
        digits = int((v.bit_length() - 1) * math.log10(2)) + 1  # exact but for one carry (no str())
        digits += abs(v) >= 10**digits
        raise invalid(
            f"{field}{_index(idx)}",
            f"model {entry.name!r} takes {_expected_values(entry)}, got an integer of {digits} "
            "digits (beyond the signed 64-bit range)",
        )


def may_hold_booleans(body: bytes) -> bool:
    """False when the JSON text ``body`` cannot hold a boolean: JSON writes them only as the literals
    ``true`` and ``false``, and the body has neither (in a string they are a false alarm, which costs
    :func:`from_json` its scan). Two byte searches: 2 us against 26 us for the scan of one 28 x 28
    image (timeit)."""
    return b"true" in body or b"false" in body


def from_json(
    values: list[Any], entry: ModelEntry, field: str, resize: bool = False, booleans: bool = True
) -> np.ndarray:
    """Validate a JSON list of inputs; returns ``(B, D)`` float32 in raster order. ``booleans=False``
    (:func:`may_hold_booleans` said no) skips the scan for ``true``/``false`` among the values."""
    if booleans:
        _refuse_non_numbers(values, entry, field)
    try:
        arr = np.array(values)
    except (ValueError, TypeError, OverflowError):
        _refuse_huge_ints(values, entry, field)
        raise invalid(
            field, f"every input must be {_size_hint(entry)}, all of the same size (got ragged lists)"
        ) from None
    if arr.dtype.kind in "uO" or (arr.dtype.kind == "f" and arr.size and np.abs(arr).max() >= 2.0**63):
        _refuse_huge_ints(values, entry, field)  # numpy could not hold them as int64
    if arr.dtype.kind not in "iuf":
        raise invalid(
            field, f"inputs must hold numbers only ({_expected_values(entry)}); got non-numeric values"
        )
    arr = arr.astype(np.float64)
    b = arr.shape[0]
    if arr.ndim == 2 and arr.shape[1] == entry.data_dim:
        check_values(arr, entry, field)
        return arr.astype(np.float32)
    if arr.ndim == 3 and entry.shape is not None:
        h, w = entry.shape
        if arr.shape[1:] != (h, w):
            if not resize:
                raise invalid(
                    field,
                    f"model {entry.name!r} expects {h} x {w} images (rows x columns), got "
                    f"{arr.shape[1]} x {arr.shape[2]}; send resize=true to fit them",
                )
            if min(arr.shape[1:]) < 1:
                raise invalid(field, "images must have at least one row and one column")
            check_values(arr, entry, field)
            arr = np.stack([codecs.resize_values(a, (h, w), entry.value_range, entry.binary) for a in arr])
        check_values(arr, entry, field)
        return arr.reshape(b, entry.data_dim).astype(np.float32)
    got = " x ".join(str(s) for s in arr.shape[1:]) or "scalars"
    raise invalid(field, f"model {entry.name!r} expects each input to be {_size_hint(entry)}; got {got}")


async def decode_uploads(
    files: Sequence[tuple[str, bytes]],
    entry: ModelEntry,
    settings: Settings,
    *,
    threshold: int | None,
    invert: bool,
    resize: bool,
) -> np.ndarray:
    """:func:`from_uploads` with the settings' pixel limit and default threshold: off the event loop,
    unless every file is a PNG whose header declares a small image (a thread hand-off would cost more
    than decoding it)."""
    work = functools.partial(
        from_uploads,
        files,
        entry,
        max_pixels=settings.max_image_pixels,
        max_decoded_pixels=settings.max_decoded_pixels,
        threshold=settings.binarize_threshold if threshold is None else threshold,
        invert=invert,
        resize=resize,
    )
    declared = [codecs.png_pixels(data) for _, data in files]
    if all(p is not None for p in declared) and sum(declared) <= INLINE_PIXELS:  # type: ignore[misc]
        return work()
    return await run_cpu(work)


def from_uploads(
    files: Sequence[tuple[str, bytes]],
    entry: ModelEntry,
    *,
    max_pixels: int,
    threshold: int,
    invert: bool = False,
    resize: bool = False,
    max_decoded_pixels: int | None = None,
) -> np.ndarray:
    """Decode ``(field, bytes)`` uploads; returns ``(B, D)`` float32 model values in raster order.

    Synchronous and thread-safe (run it in a worker thread). The files of one request share one
    budget of decoded pixels (``max_decoded_pixels``, default ``max_pixels``); with ``resize`` a
    JPEG is decoded reduced towards the model's size."""
    h, w = entry.grid_shape
    budget = codecs.PixelBudget(max_pixels if max_decoded_pixels is None else max_decoded_pixels)
    out = []
    for field, data in files:
        gray = codecs.decode_gray(data, max_pixels, field, fit=(h, w) if resize else None, budget=budget)
        if gray.shape != (h, w):
            if not resize:
                raise invalid(
                    field,
                    f"image is {gray.shape[1]}x{gray.shape[0]} (width x height); model {entry.name!r} expects "
                    f"{w}x{h}; send resize=true to fit it",
                )
            gray = codecs.resize_gray(gray, (h, w))
        if invert:
            gray = 255 - gray
        out.append(codecs.to_gray_levels(gray, entry.value_range, entry.binary, threshold).reshape(-1))
    return np.stack(out)


def known_rows_to_n_known(entry: ModelEntry, known_rows: int | None, field: str) -> tuple[int, int]:
    """``(known_rows, n_known)`` for a completion: the top ``known_rows`` rows (default: half) must be
    exactly the first positions of the model's ordering, so they can be conditioned on exactly."""
    if entry.shape is None:
        raise invalid("model", f"model {entry.name!r} has no image shape, so it cannot complete images")
    if not entry.shared_ordering:
        raise invalid(
            "model", f"the masks of model {entry.name!r} order pixels differently; it cannot complete"
        )
    h, w = entry.shape
    rows = h // 2 if known_rows is None else known_rows
    if not 1 <= rows <= h - 1:
        raise invalid(field, f"must be between 1 and {h - 1} for {h}-row images", rows)
    if not entry.known_rows_prefix_ok(rows):
        kind = entry.ordering_info()["kind"]
        raise invalid(
            field,
            f"model {entry.name!r} draws pixels in a {kind!r} order whose first {rows * w} positions are not "
            f"the top {rows} rows, so it cannot condition on them",
            rows,
        )
    return rows, rows * w
