"""Figures over time for the dashboard's charts, counted by the database.

A day of traffic at Kartra's 20 calls/s is over a million attempts, so rows are never
fetched: events and calls are grouped into fixed buckets of epoch seconds in SQL (the
expression differs between SQLite and PostgreSQL, the result does not).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, Integer, cast, extract, func, select

from relay.store.tables import attempts, events, utcnow


def _epoch(engine: Engine, column):
    if engine.dialect.name == "sqlite":
        return cast(func.strftime("%s", column), Integer)
    return cast(func.floor(extract("epoch", column)), Integer)


@dataclass(frozen=True)
class Series:
    """`buckets[i]` starts at `start + i * step`; each holds its figures by name."""

    start: datetime
    step: timedelta
    buckets: list[dict[str, float]]


def _empty(span: timedelta, step: timedelta, now: datetime | None) -> tuple[datetime, int, int]:
    now = now or utcnow()
    seconds = int(step.total_seconds())
    end = (int(now.timestamp()) // seconds + 1) * seconds
    count = int(span.total_seconds()) // seconds
    return datetime.fromtimestamp(end - count * seconds, UTC), count, seconds


def events_by_outcome(
    engine: Engine, span: timedelta, step: timedelta, *, now: datetime | None = None
) -> Series:
    """Events received per bucket, by their status now."""
    start, count, seconds = _empty(span, step, now)
    bucket = ((_epoch(engine, events.c.received_at) - int(start.timestamp())) // seconds).label(
        "bucket"
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(bucket, events.c.status, func.count())
            .where(events.c.received_at >= start)
            .group_by(bucket, events.c.status)
        ).all()
    buckets: list[dict[str, float]] = [{} for _ in range(count)]
    for index, status, number in rows:
        if 0 <= index < count:
            buckets[index][status] = number
    return Series(start, step, buckets)


def kartra_call_rate(
    engine: Engine, span: timedelta, step: timedelta, *, now: datetime | None = None
) -> Series:
    """Kartra calls per bucket: `average` and `peak` calls per second, to set against
    the App's limit (dry-run records, which send nothing, are left out)."""
    start, count, seconds = _empty(span, step, now)
    second = (_epoch(engine, attempts.c.started_at) - int(start.timestamp())).label("second")
    per_second = (
        select(second, func.count().label("calls"))
        .where(attempts.c.started_at >= start, attempts.c.http_status.is_not(None))
        .group_by(second)
        .subquery()
    )
    bucket = (per_second.c.second // seconds).label("bucket")
    with engine.connect() as conn:
        rows = conn.execute(
            select(bucket, func.sum(per_second.c.calls), func.max(per_second.c.calls)).group_by(
                bucket
            )
        ).all()
    buckets: list[dict[str, float]] = [{"average": 0.0, "peak": 0.0} for _ in range(count)]
    for index, total, peak in rows:
        if 0 <= index < count:
            buckets[index] = {"average": float(total) / seconds, "peak": float(peak)}
    return Series(start, step, buckets)
