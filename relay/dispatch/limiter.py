"""The per-App rate limit: calls are paced one `interval` apart, never faster.

Kartra allows 20 calls per second per App and counts them when they arrive. Pacing
(one call every 1/20 s, padded by `margin`) keeps any 1-second window at or under the
limit, and unlike letting 20 calls go in a burst it leaves room for requests that take
different times to get there. Each caller reserves the next free slot and sleeps until
it; waiting here never spends a delivery's retries.

- `RateLimiter` keeps the slot in process memory: the single-process default.
- `SharedRateLimiter` keeps it in a PostgreSQL row, reserved with one UPDATE whose row
  lock orders concurrent callers, and times slots by the database server's clock, so
  every worker process on every machine shares the App's one budget.

Clocks and sleep are injectable, so the pacing is tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine, text


def pacing_interval(rate: float, margin: float) -> float:
    if rate <= 0:
        raise ValueError("rate must be positive")
    return (1.0 + margin) / rate


class RateLimiter:
    def __init__(
        self,
        rate: float,
        *,
        margin: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.interval = pacing_interval(rate, margin)
        self.clock = clock
        self.sleep = sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until this caller's slot; returns the seconds waited."""
        with self._lock:
            now = self.clock()
            slot = max(self._next, now)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            self.sleep(wait)
        return wait


_RESERVE = text(
    """
    WITH now AS (SELECT clock_timestamp() AS t)
    UPDATE rate_limits
    SET next_at = GREATEST(rate_limits.next_at, now.t) + make_interval(secs => :interval)
    FROM now
    WHERE rate_limits.key = :key
    RETURNING EXTRACT(EPOCH FROM rate_limits.next_at) - :interval AS slot,
              EXTRACT(EPOCH FROM (rate_limits.next_at - now.t)) - :interval AS wait
    """
)
# Clocks of the database and of this machine that agree this closely are the same
# clock (or NTP-synchronised ones): then the slot's own time is the better target.
CLOCKS_AGREE = 0.25


class SharedRateLimiter:
    def __init__(
        self,
        engine: Engine,
        key: str,
        rate: float,
        *,
        margin: float = 0.05,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.engine = engine
        self.key = key
        self.interval = pacing_interval(rate, margin)
        self.clock = clock
        self.sleep = sleep

    def acquire(self) -> float:
        """Reserve the App's next slot in the database and sleep until it.

        The wait is aimed at the slot's time on this machine's clock, measured after the
        commit, so how long the reservation took does not shift the call; a clock that
        disagrees with the database's falls back to the wait the database computed."""
        with self.engine.begin() as conn:
            row = conn.execute(_RESERVE, {"interval": self.interval, "key": self.key}).first()
            if row is None:
                conn.execute(
                    text(
                        "INSERT INTO rate_limits (key, next_at) VALUES (:key, "
                        "clock_timestamp()) ON CONFLICT (key) DO NOTHING"
                    ),
                    {"key": self.key},
                )
                row = conn.execute(_RESERVE, {"interval": self.interval, "key": self.key}).first()
        wait = float(row.wait)
        aimed = float(row.slot) - self.clock()
        if abs(aimed - wait) < CLOCKS_AGREE:
            wait = aimed
        if wait > 0:
            self.sleep(wait)
        return max(wait, 0.0)


def rate_limiter_for(engine: Engine, app_id: str | None, rate: float):
    """Shared through the database on PostgreSQL; in process memory on SQLite, where
    the relay runs as one process."""
    if engine.dialect.name == "postgresql":
        return SharedRateLimiter(engine, f"kartra-app:{app_id or 'dry-run'}", rate)
    return RateLimiter(rate)
