"""Bucketed figures for the charts, counted in SQL on both engines."""

from datetime import timedelta

from sqlalchemy import update

from relay.store.tables import attempts, events, utcnow
from relay.store.timeline import events_by_outcome, kartra_call_rate
from tests.admin.conftest import deliver, post


def test_events_per_minute_by_outcome(client, app, engine):
    post(client, id="a")
    post(client, id="b", type="refund")
    deliver(app)
    with engine.begin() as conn:
        conn.execute(
            update(events)
            .where(events.c.status == "ignored")
            .values(received_at=utcnow() - timedelta(minutes=10))
        )
    series = events_by_outcome(engine, timedelta(hours=1), timedelta(minutes=1))
    assert len(series.buckets) == 60 and series.step == timedelta(minutes=1)
    assert series.buckets[-1] == {"failed": 1}
    assert {"ignored": 1} in series.buckets[-12:-9]
    assert sum(sum(b.values()) for b in series.buckets) == 2


def test_kartra_calls_per_second_average_and_peak(client, app, engine):
    for i in range(3):
        post(client, f"p{i}@example.com", f"o{i}")
    deliver(app)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(update(attempts).values(started_at=now.replace(microsecond=0)))
    series = kartra_call_rate(engine, timedelta(hours=1), timedelta(minutes=1), now=now)
    assert series.buckets[-1] == {"average": 3 / 60, "peak": 3.0}
    assert all(b == {"average": 0.0, "peak": 0.0} for b in series.buckets[:-1])
    day = kartra_call_rate(engine, timedelta(days=1), timedelta(minutes=20), now=now)
    assert len(day.buckets) == 72 and day.buckets[-1]["peak"] == 3.0
