"""The per-App rate limiter: never more than `rate` calls start in any 1-second window.

A sliding log of the last calls' start times: a call may start once fewer than
`floor(rate)` calls started in the second before it (below 1 call/s: one call per
`1/rate` seconds). The window is padded by `margin` seconds because Kartra counts
calls when they arrive, and two requests can take different times to get there.
The clock and the sleep are injectable, so the limiter is tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        rate: float,
        *,
        margin: float = 0.025,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.capacity = max(1, int(rate))
        self.margin = margin
        self.window = max(1.0, 1.0 / rate) + margin
        self.clock = clock
        self.sleep = sleep
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until a call may start; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock()
                while self._starts and self._starts[0] <= now - self.window:
                    self._starts.popleft()
                if len(self._starts) < self.capacity:
                    self._starts.append(now)
                    return waited
                delay = self._starts[0] + self.window - now
            self.sleep(delay)
            waited += delay
