"""Local connectivity for image MADEs: a causal window of neighbours and a small head shared by all pixels.

A MADE whose hidden degrees are spread over ``1..D-1`` has almost no unit that sees a pixel's left and
upper neighbours just before that pixel is drawn, yet those predict it best. The local head adds, to
every pixel ``d``'s output parameters, a function of the pixels in a window above and to the left of it:

.. math:: \\theta_d = \\theta^{\\text{MADE}}_d + g\\big(x_{\\mathcal N(d)} \\odot m_d,\\; c_d\\big)

where ``N(d)`` lists the window's neighbours (``index``), ``m_d`` keeps those whose degree is below
``d``'s (``mask``: the same rule as every other MADE connection, so any ordering stays autoregressive),
``c_d`` are extra MADE outputs of pixel ``d`` (its global context) and ``g`` is one small MLP whose
weights are tied across pixels: 342 training faces are enough for a few thousand shared weights, not
for a separate predictor per pixel.

>>> causal_offsets(1, 1)
[(-1, -1), (-1, 0), (-1, 1), (0, -1)]
>>> neighbour_index((2, 2), causal_offsets(1, 1)).tolist()[3]  # pixel (1, 1): up-left, up, -, left
[0, 1, -1, 2]

Faces are roughly symmetric, so the window may also hold the pixels around each pixel's mirror image
``(y, W-1-x)`` (``mirror_index``): on the right half of a row the mirror pixel is already drawn. The
degree mask drops whatever is not, as for any other neighbour.

>>> mirror_index((2, 3), 0).tolist()[5]  # pixel (1, 2): its mirror (1, 0)
[3]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "LocalHead",
    "causal_offsets",
    "gather_index",
    "local_mask",
    "mirror_index",
    "neighbour_index",
    "window_index",
]


def causal_offsets(rows: int, cols: int) -> list[tuple[int, int]]:
    """Window offsets ``(dy, dx)`` that precede a pixel in raster order: ``rows`` rows above within
    ``cols`` columns either side, and ``cols`` pixels to the left on its own row."""
    above = [(dy, dx) for dy in range(-rows, 0) for dx in range(-cols, cols + 1)]
    return above + [(0, dx) for dx in range(-cols, 0)]


def neighbour_index(
    shape: Sequence[int], offsets: Sequence[tuple[int, int]], mirror: bool = False
) -> torch.Tensor:
    """``(D, N)`` raster index of each pixel's neighbour at each offset, ``-1`` outside the image; with
    ``mirror`` the offsets are taken from the pixel's mirror image ``(y, W-1-x)``."""
    h, w = int(shape[0]), int(shape[1])
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.reshape(-1, 1), (w - 1 - xs if mirror else xs).reshape(-1, 1)
    dy = torch.tensor([o[0] for o in offsets], dtype=torch.long)
    dx = torch.tensor([o[1] for o in offsets], dtype=torch.long)
    ny, nx = ys + dy, xs + dx
    inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    return torch.where(inside, ny * w + nx, torch.full_like(ny, -1))


def mirror_index(shape: Sequence[int], radius: int) -> torch.Tensor:
    """``(D, (r+1)(2r+1))`` index of the pixels around each pixel's mirror image: rows ``y-r..y``,
    columns within ``r`` of ``W-1-x``."""
    offsets = [(dy, dx) for dy in range(-radius, 1) for dx in range(-radius, radius + 1)]
    return neighbour_index(shape, offsets, mirror=True)


def window_index(shape: Sequence[int], rows: int, cols: int, mirror: int | None) -> torch.Tensor:
    """``(D, N)`` the local head's window: the causal offsets, then the mirror window when ``mirror`` is
    not ``None`` (the degree mask later drops what a pixel may not read)."""
    index = neighbour_index(shape, causal_offsets(rows, cols))
    if mirror is None:
        return index
    return torch.cat([index, mirror_index(shape, mirror)], dim=1)


def local_mask(index: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """``(D, N)``: may pixel ``d`` read neighbour ``index[d, n]``? Inside the image and of smaller degree."""
    inside = index >= 0
    deg_nb = degrees[index.clamp(min=0)]
    return inside & (deg_nb < degrees[:, None])


def gather_index(index: torch.Tensor, mask: torch.Tensor, pad: int) -> torch.Tensor:
    """``index`` with every entry the mask drops pointed at ``pad`` (a column of zeros)."""
    return torch.where(mask, index, torch.full_like(index, pad))


class LocalHead(nn.Module):
    """The tied per-pixel MLP ``g``: ``N`` masked neighbour inputs and ``C`` context outputs in, ``P``
    parameter corrections out. Its last layer starts at zero, so training starts from the plain MADE."""

    def __init__(self, n_neighbours: int, n_context: int, hidden: Sequence[int], n_params: int) -> None:
        super().__init__()
        sizes = [n_neighbours + n_context, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.out = nn.Linear(sizes[-1], n_params)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self,
        neighbours: torch.Tensor,
        context: torch.Tensor,
        activation: Callable[[torch.Tensor], torch.Tensor],
        dropout: nn.Module,
    ) -> torch.Tensor:
        """Corrections ``(..., P)`` from neighbours ``(..., N)`` and context ``(..., C)``."""
        f = torch.cat([neighbours, context], -1) if context.shape[-1] else neighbours
        for layer in self.layers:
            f = dropout(activation(layer(f)))
        return self.out(f)
