"""Orderings, degrees and masks: the data that makes an autoencoder autoregressive.

Every unit carries a degree. Inputs get their 1-based position in the ordering, hidden units a
degree ``m`` in ``1..D-1``. A hidden weight is kept where ``m(unit) >= m(previous unit)``, an output
weight (and a direct input-to-output weight) where ``d > m(previous unit)``, so output ``d`` only
ever sees inputs that come before it.

>>> deg = input_degrees(natural_ordering(3))
>>> deg.tolist()
[1, 2, 3]
>>> output_mask(deg, torch.tensor([1, 2])).int().tolist()
[[0, 0], [1, 0], [1, 1]]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "draw_hidden_degrees",
    "explicit_ordering",
    "hidden_mask",
    "input_degrees",
    "make_ordering",
    "natural_ordering",
    "output_mask",
    "random_ordering",
    "reversed_ordering",
]


def natural_ordering(d: int) -> torch.Tensor:
    """Raster order: position ``i`` draws dimension ``i``."""
    return torch.arange(d, dtype=torch.long)


def reversed_ordering(d: int) -> torch.Tensor:
    """Last dimension first."""
    return torch.arange(d - 1, -1, -1, dtype=torch.long)


def random_ordering(d: int, seed: int) -> torch.Tensor:
    """A seeded uniformly random permutation."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(d, generator=g)


def explicit_ordering(perm: Sequence[int]) -> torch.Tensor:
    """A caller-given permutation, checked to contain every dimension exactly once."""
    order = torch.as_tensor(list(perm), dtype=torch.long)
    if order.ndim != 1 or not torch.equal(torch.sort(order).values, torch.arange(order.numel())):
        raise ValueError("an ordering must be a permutation of 0..D-1")
    return order


def make_ordering(kind: str | Sequence[int], d: int, seed: int = 0) -> torch.Tensor:
    """Build an ordering from its name (``natural``, ``reversed``, ``random``) or an explicit list."""
    if not isinstance(kind, str):
        order = explicit_ordering(kind)
        if order.numel() != d:
            raise ValueError(f"ordering has {order.numel()} entries, expected {d}")
        return order
    if kind == "natural":
        return natural_ordering(d)
    if kind == "reversed":
        return reversed_ordering(d)
    if kind == "random":
        return random_ordering(d, seed)
    raise ValueError(f"unknown ordering {kind!r}: use natural, reversed, random or a permutation")


def input_degrees(order: torch.Tensor) -> torch.Tensor:
    """Degree of each input dimension: 1 + its position in ``order`` (``order[i]`` is drawn i-th)."""
    deg = torch.empty_like(order)
    deg[order] = torch.arange(1, order.numel() + 1, dtype=order.dtype)
    return deg


def draw_hidden_degrees(
    d: int,
    widths: Sequence[int],
    generator: torch.Generator | None = None,
    weights: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Hidden degrees for each layer, values in ``min(previous)..D-1``.

    When a layer is at least as wide as the range, every value appears at least once (so every
    conditional gets capacity) and the rest are drawn uniformly; narrower layers take distinct
    values spread evenly over the range with a random offset.

    ``weights`` (``D-1`` non-negative numbers, one per degree ``1..D-1``) replaces "uniformly" and
    "evenly": the extra units sit at evenly spaced quantiles of the weighted distribution, so more
    units get the degrees where the data carries information (a degree-``m`` unit is the first to
    see input ``m``; a pixel that is always 0 adds nothing).

    >>> w = torch.tensor([0.0, 0.0, 1.0])  # only degree 3 (the third input) carries information
    >>> sorted(draw_hidden_degrees(4, [6], torch.Generator().manual_seed(0), w)[0].tolist())
    [1, 2, 3, 3, 3, 3]
    """
    if d < 2:
        raise ValueError("MADE needs at least two dimensions")
    if weights is not None:
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (d - 1,) or not bool((weights >= 0).all()) or float(weights.sum()) <= 0:
            raise ValueError(f"weights must be {d - 1} non-negative numbers, not all zero")
    out: list[torch.Tensor] = []
    low = 1
    for h in widths:
        values = torch.arange(low, d, dtype=torch.long)
        n = values.numel()
        if weights is None:
            if h >= n:
                extra = torch.randint(low, d, (h - n,), generator=generator, dtype=torch.long)
                deg = torch.cat([values, extra])
            else:
                offset = torch.rand((), generator=generator).item()
                idx = ((torch.arange(h, dtype=torch.float64) + offset) * n / h).long().clamp_(max=n - 1)
                deg = values[idx]
        else:
            w = weights[low - 1 :]
            if float(w.sum()) <= 0:
                w = torch.ones_like(w)
            n_spread = h - n if h >= n else h
            offset = torch.rand((), generator=generator, dtype=torch.float64)
            q = (torch.arange(n_spread, dtype=torch.float64) + offset) / max(n_spread, 1)
            cdf = torch.cumsum(w, 0) / w.sum()
            idx = torch.searchsorted(cdf, q, right=True).clamp_(max=n - 1)
            deg = torch.cat([values, values[idx]]) if h >= n else values[idx]
        deg = deg[torch.randperm(h, generator=generator)]
        out.append(deg)
        low = int(deg.min())
    return out


def hidden_mask(deg_out: torch.Tensor, deg_in: torch.Tensor) -> torch.Tensor:
    """Mask of shape ``(out, in)``: keep where ``m(out) >= m(in)``."""
    return deg_out[:, None] >= deg_in[None, :]


def output_mask(deg_out: torch.Tensor, deg_in: torch.Tensor) -> torch.Tensor:
    """Mask of shape ``(out, in)``: keep where ``d(out) > m(in)`` (strict, so no output sees itself)."""
    return deg_out[:, None] > deg_in[None, :]
