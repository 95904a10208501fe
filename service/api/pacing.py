"""Pacing of clients that retry a refused request before its ``Retry-After``.

A client that honours ``Retry-After`` is answered at once, every time. A connection that comes back
sooner and is refused again has its next 503 held until the wait it was given has passed (at most
``MADE_REFUSAL_PACING_MAX_MS``): a refusal costs the server about a millisecond of CPU on the
event loop, so a few hundred clients retrying in a tight loop would otherwise take the CPU the
engine needs (measured in ``bench/overload.py``). Holding an answer costs a timer, not CPU.

Connections are told apart by their peer address and port (``scope["client"]``); the table is
bounded, oldest entries first out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["RefusalPacer"]


class RefusalPacer:
    """Remembers, per connection, until when it was asked to wait."""

    def __init__(self, max_delay_s: float, max_entries: int = 8192) -> None:
        self.max_delay_s = max_delay_s
        self.max_entries = max_entries
        self._until: OrderedDict[Hashable, float] = OrderedDict()

    def delay(self, key: Hashable | None, now: float, retry_after_s: float) -> float:
        """Seconds to hold this refusal of ``key`` (0 for a client that waited as told); records the
        new ``Retry-After`` it is about to be given."""
        if key is None or self.max_delay_s <= 0:
            return 0.0
        until = self._until.pop(key, None)
        hold = 0.0 if until is None else min(self.max_delay_s, max(0.0, until - now))
        self._until[key] = now + hold + retry_after_s
        while len(self._until) > self.max_entries:
            self._until.popitem(last=False)
        return hold
