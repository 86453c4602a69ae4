"""The dispatcher's Prometheus figures: Kartra call latency and error codes, rate-limiter
waits, deliveries finished. `relay.admin.metrics` serves them on `/metrics` (see its
docstring for how processes add up); this module imports neither Flask nor the
database, so that `python -m relay worker` can count without loading them.

The Kartra client and the rate limiter are instrumented by wrapping them
(`instrument`), which keeps the dispatcher free of metrics code.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram

from relay.kartra import KartraError

KARTRA_CALL_SECONDS = Histogram(
    "relay_kartra_call_seconds",
    "Duration of each Kartra API call, by outcome",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8),
)
KARTRA_ERRORS = Counter(
    "relay_kartra_errors", "Kartra error answers, by Kartra type code or HTTP status", ["code"]
)
RATE_LIMIT_WAIT_SECONDS = Histogram(
    "relay_rate_limit_wait_seconds",
    "Time a call waited for the App's rate limiter",
    buckets=(0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DELIVERY_ATTEMPTS = Counter(
    "relay_delivery_attempts", "Delivery attempts finished, by how they ended", ["result"]
)


class _TimedLimiter:
    def __init__(self, limiter):
        self._limiter = limiter

    def acquire(self) -> Any:
        started = time.monotonic()
        try:
            return self._limiter.acquire()
        finally:
            RATE_LIMIT_WAIT_SECONDS.observe(time.monotonic() - started)

    def __getattr__(self, name):
        return getattr(self._limiter, name)


class _CountedClient:
    def __init__(self, client):
        self._client = client

    def deliver(self, *args, **kwargs):
        try:
            outcome = self._client.deliver(*args, **kwargs)
        except KartraError as exc:
            _observe(exc.outcome)
            DELIVERY_ATTEMPTS.labels(type(exc).__name__).inc()
            raise
        _observe(outcome)
        DELIVERY_ATTEMPTS.labels("delivered").inc()
        return outcome

    def __getattr__(self, name):
        return getattr(self._client, name)


def _observe(outcome) -> None:
    for call in getattr(outcome, "calls", None) or []:
        kinds = [r.kind for r in call.results if r.kind != "ok"]
        kind = call.kind or (kinds[0] if kinds else "ok")
        KARTRA_CALL_SECONDS.labels(kind).observe(call.duration_ms / 1000)
        if call.code is not None:
            KARTRA_ERRORS.labels(str(call.code)).inc()
        for result in call.results:
            if result.kind != "ok":
                KARTRA_ERRORS.labels(str(result.type)).inc()


def instrument(dispatcher) -> None:
    """Count the dispatcher's Kartra calls and rate-limiter waits, without touching it."""
    dispatcher.client = _CountedClient(dispatcher.client)
    dispatcher.limiter = _TimedLimiter(dispatcher.limiter)
