"""Retry delays: capped exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Backoff:
    """``base * 2**(attempt-1)``, capped, then "equal jitter": half fixed, half random.

    The random half spreads retries of a failed batch so that many rows (or
    replicas) do not hit a recovering provider in the same instant; the fixed
    half keeps the delay from collapsing towards zero.
    """

    base: float
    cap: float
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        exponent = max(0, attempt - 1)
        # Bound the exponent so large attempt counts cannot overflow a float.
        ceiling = min(self.cap, self.base * 2.0 ** min(exponent, 62))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)
