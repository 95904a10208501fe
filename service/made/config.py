"""The configuration of a MADE: everything needed to rebuild one, stored in its card (nanoGPT style).

>>> MADEConfig.from_dict(MADEConfig(data_dim=4, hidden=(8,)).to_dict()).hidden
(8,)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["ACTIVATIONS", "MADEConfig"]

ACTIVATIONS = {"elu": F.elu, "relu": F.relu, "tanh": torch.tanh, "gelu": F.gelu}


@dataclass(frozen=True)
class MADEConfig:
    """Everything needed to rebuild a MADE (stored in the model card, nanoGPT style).

    ``ordering``: ``natural``, ``reversed``, ``random`` (seeded by ``ordering_seed``) or an explicit
    permutation; with ``num_masks > 1`` and ``vary_ordering`` each mask gets its own random ordering,
    otherwise all masks share one ordering and differ only in hidden degrees (connectivity-agnostic),
    which keeps every prefix of the ordering conditionable by every component.

    ``local_rows``/``local_cols`` > 0 add the local head (:mod:`service.made.local`): a window of that
    many rows above and columns either side, read by an MLP of widths ``local_hidden`` shared by every
    pixel, which also reads ``local_context`` extra MADE outputs per pixel. It needs ``image_shape``.
    ``local_mirror`` = r adds to the window the pixels within r of each pixel's mirror image (rows
    ``y-r..y``); ``None`` leaves it out.
    """

    data_dim: int
    hidden: tuple[int, ...] = (500,)
    distribution: dict[str, Any] = field(default_factory=lambda: {"type": "bernoulli"})
    activation: str = "elu"
    direct: bool = False
    num_masks: int = 1
    ordering: str | tuple[int, ...] = "natural"
    ordering_seed: int = 0
    vary_ordering: bool = False
    mask_seed: int = 0
    image_shape: tuple[int, int] | None = None
    local_rows: int = 0
    local_cols: int = 0
    local_hidden: tuple[int, ...] = ()
    local_context: int = 0
    local_mirror: int | None = None

    @property
    def has_local(self) -> bool:
        """True when the model has the local head."""
        return self.local_rows > 0 or self.local_cols > 0

    def __post_init__(self) -> None:
        if self.data_dim < 2:
            raise ValueError("data_dim must be >= 2")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError("need at least one hidden layer of width >= 1")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}")
        if self.num_masks < 1:
            raise ValueError("num_masks must be >= 1")
        if not isinstance(self.ordering, str):
            object.__setattr__(self, "ordering", tuple(int(i) for i in self.ordering))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "local_hidden", tuple(int(h) for h in self.local_hidden))
        if self.image_shape is not None:
            object.__setattr__(self, "image_shape", tuple(int(s) for s in self.image_shape))
            if len(self.image_shape) != 2 or self.image_shape[0] * self.image_shape[1] != self.data_dim:
                raise ValueError(
                    f"image_shape {self.image_shape} does not hold data_dim {self.data_dim} values"
                )
        if min(self.local_rows, self.local_cols, self.local_context) < 0:
            raise ValueError("local_rows, local_cols and local_context must be >= 0")
        if self.has_local:
            if self.image_shape is None:
                raise ValueError("a local head needs image_shape")
            if not self.local_hidden or min(self.local_hidden) < 1:
                raise ValueError("a local head needs local_hidden widths >= 1")
        elif self.local_hidden or self.local_context or self.local_mirror is not None:
            raise ValueError("local_hidden, local_context and local_mirror need local_rows or local_cols > 0")
        if self.local_mirror is not None and self.local_mirror < 0:
            raise ValueError("local_mirror must be None or >= 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        d["local_hidden"] = list(self.local_hidden)
        if self.image_shape is not None:
            d["image_shape"] = list(self.image_shape)
        if not isinstance(self.ordering, str):
            d["ordering"] = list(self.ordering)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MADEConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        d = dict(d)
        d["hidden"] = tuple(d.get("hidden", (500,)))
        d["local_hidden"] = tuple(d.get("local_hidden", ()))
        if d.get("image_shape") is not None:
            d["image_shape"] = tuple(d["image_shape"])
        if isinstance(d.get("ordering"), list):
            d["ordering"] = tuple(d["ordering"])
        return cls(**d)
