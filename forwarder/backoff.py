"""Capped exponential backoff with jitter that keeps at least half of each step (acceptance case C-17).

Full jitter (0..step) spreads senders out but can retry almost at once after a failure, which
hammers a busy indexer; "equal jitter" keeps the lower half fixed: attempt n waits a random time
in [step/2, step] with step = min(cap, base × 2^(n-1)). A destination's Retry-After is a floor.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, base: float, cap: float, *, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def step(self, attempt: int) -> float:
        """The upper bound for ``attempt`` (1-based)."""
        return min(self.cap, self.base * 2.0 ** min(attempt - 1, 62))

    def delay(self, attempt: int, floor: float | None = None) -> float:
        step = self.step(attempt)
        chosen = self._rng.uniform(step / 2, step)
        return max(chosen, floor) if floor is not None else chosen
