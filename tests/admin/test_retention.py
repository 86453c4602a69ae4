"""Retention: the scheduled purge the dispatcher process runs."""

import time
from datetime import timedelta

import pytest
from sqlalchemy import update
from structlog.testing import capture_logs

from relay.admin.retention import Retention
from relay.config import Config, ConfigError
from relay.store import connect
from relay.store.search import get_event
from relay.store.tables import events, utcnow
from tests.admin.conftest import deliver, post


def age(engine, event_id, days):
    with engine.begin() as conn:
        conn.execute(
            update(events)
            .where(events.c.id == event_id)
            .values(received_at=utcnow() - timedelta(days=days))
        )


def test_the_schedule_purges_what_is_older_than_the_setting(client, app, engine):
    old, young = post(client, id="old"), post(client, id="young")
    deliver(app)
    age(engine, old, 31)
    age(engine, young, 29)
    retention = Retention(engine, 30, every=timedelta(milliseconds=10), first_after=timedelta(0))
    thread = retention.start()
    deadline = time.monotonic() + 5
    while get_event(engine, old) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    retention.stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert get_event(engine, old) is None and get_event(engine, young) is not None


def test_zero_days_keeps_everything_and_bad_values_are_refused(engine):
    assert Retention(engine, 0).start() is None
    assert Config.from_env({"RETENTION_DAYS": "7"}).retention_days == 7
    assert Config.from_env({}).retention_days == 30
    with pytest.raises(ConfigError, match="RETENTION_DAYS"):
        Config.from_env({"RETENTION_DAYS": "-1"})


def test_a_failing_purge_is_logged_not_raised(tmp_path):
    unmigrated = connect(f"sqlite:///{tmp_path / 'empty.db'}")
    with capture_logs() as logs:
        assert Retention(unmigrated, 30).purge_once() == 0
    unmigrated.dispose()
    assert [line["event"] for line in logs] == ["retention_failed"]
