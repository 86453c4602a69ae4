"""When to try a delivery again after a transient failure, persisted between attempts.

Exponential from 30 s, doubling, capped at 6 h, each delay jittered by +-25 % so a
burst of failures does not come back as a burst. With 21 attempts the schedule spans
about three days (Stripe and PayPal retry for about as long), then the delivery is dead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Backoff:
    first: float = 30.0
    factor: float = 2.0
    cap: float = 6 * 3600.0
    jitter: float = 0.25
    max_attempts: int = 21

    def delay(self, attempt: int, rand: random.Random | None = None) -> timedelta:
        """The wait after failed attempt number `attempt` (1-based)."""
        base = min(self.first * self.factor ** (attempt - 1), self.cap)
        spread = (rand or random).uniform(-self.jitter, self.jitter)
        return timedelta(seconds=base * (1 + spread))

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts

    def total(self) -> timedelta:
        """The whole schedule without jitter: how long a delivery may keep failing."""
        return sum(
            (
                timedelta(seconds=min(self.first * self.factor ** (n - 1), self.cap))
                for n in range(1, self.max_attempts)
            ),
            timedelta(),
        )
