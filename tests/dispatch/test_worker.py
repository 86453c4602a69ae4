"""The dispatcher against the fake Kartra served over HTTP on 127.0.0.1 in a thread."""

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs
from tenacity import wait_none

from relay.config import Account, Config
from relay.dispatch.backoff import Backoff
from relay.dispatch.limiter import RateLimiter
from relay.dispatch.worker import Dispatcher
from relay.kartra.fake import FakeKartra
from relay.store import NewEvent, queue, store_event
from relay.store.tables import attempts, deliveries, events, utcnow
from tests.store.test_queue import known_lead_id

KEY, PASSWORD = "key-unit-SECRET-1", "pw-unit-SECRET-2"
POINTS = [{"cmd": "give_points_to_lead", "points": 5}]


@pytest.fixture
def fake():
    return FakeKartra(
        app_id="app-1",
        accounts={KEY: PASSWORD},
        tags={"Customer", "Relay Demo"},
        lists={"Relay Demo"},
    )


@pytest.fixture
def kartra_url(fake, serve):
    return serve(fake)


def config(kartra_url, **overrides):
    values = {
        "kartra_url": kartra_url,
        "kartra_app_id": "app-1",
        "accounts": {"default": Account("default", KEY, PASSWORD)},
    }
    return Config(**{**values, **overrides})


def dispatcher(engine, config, **kwargs):
    kwargs.setdefault("retry_wait", wait_none())
    return Dispatcher(config, engine, **kwargs)


def enqueue(engine, email="jane@example.com", actions=None, account="default"):
    plan = {
        "rule": "r",
        "account": account,
        "lead": {"email": email, "first_name": "Jane"},
        "lead_mode": "upsert",
        "actions": actions or [{"cmd": "assign_tag", "tag_name": "Customer"}],
    }
    return store_event(
        engine,
        NewEvent(
            route="t",
            dedupe_key=f"k{time.monotonic_ns()}",
            content_type=None,
            headers={},
            query={},
            body=b"",
            payload={},
            status="queued",
            rule="r",
            reason=None,
            plans=[plan],
        ),
    ).event_id


def delivery(engine):
    with engine.connect() as conn:
        return conn.execute(select(deliveries).order_by(deliveries.c.id.desc())).first()


def event_status(engine, event_id):
    with engine.connect() as conn:
        return conn.execute(select(events.c.status).where(events.c.id == event_id)).scalar()


def test_delivers_and_remembers_the_lead_id(engine, fake, kartra_url):
    event_id = enqueue(engine)
    assert dispatcher(engine, config(kartra_url)).run_once() == 1
    assert event_status(engine, event_id) == "delivered"
    lead = fake.find_lead("jane@example.com")
    assert lead.tags == {"Customer"}
    assert known_lead_id(engine, "default", "jane@example.com") == lead.id
    with engine.connect() as conn:
        [attempt] = conn.execute(select(attempts)).all()
    assert attempt.outcome == "ok" and attempt.http_status == 200
    assert attempt.request["api_key"] != KEY and attempt.request["api_password"] != PASSWORD


def test_the_limiter_hears_when_each_call_was_written(engine, fake, kartra_url):
    class Counting(RateLimiter):
        written = 0

        def wrote(self):
            Counting.written += 1
            super().wrote()

    fake.latency_ms = 50
    enqueue(engine)
    enqueue(engine, email="joe@example.com")
    assert dispatcher(engine, config(kartra_url), limiter=Counting(10)).run_once() == 2
    assert Counting.written == len(fake.call_log()) == 2


def test_test_mode_second_event_updates_the_lead_by_id(engine, kartra_url, fake):
    fake.test_mode = True
    cfg = config(kartra_url, kartra_test_mode=True)
    enqueue(engine)
    dispatcher(engine, cfg).run_once()
    assert fake.find_lead("jane@kartra.com") is not None
    second = enqueue(engine, actions=[{"cmd": "assign_tag", "tag_name": "Relay Demo"}])
    dispatcher(engine, cfg).run_once()
    assert event_status(engine, second) == "delivered"
    assert fake.find_lead("jane@kartra.com").tags == {"Customer", "Relay Demo"}
    assert len(fake.call_log()) == 2


def test_transient_failure_is_retried_quickly_then_rescheduled(engine, fake, kartra_url):
    fake.down = True
    event_id = enqueue(engine)
    dispatcher(engine, config(kartra_url)).run_once()
    row = delivery(engine)
    assert row.status == "pending" and row.attempts == 1
    assert row.next_attempt_at > utcnow()
    assert "503" in row.last_error
    assert len(fake.call_log()) == 3
    assert event_status(engine, event_id) == "queued"


def test_exhausted_retries_make_the_delivery_dead(engine, fake, kartra_url):
    fake.down = True
    event_id = enqueue(engine)
    dispatcher(engine, config(kartra_url), backoff=Backoff(max_attempts=1)).run_once()
    assert delivery(engine).status == "dead"
    assert event_status(engine, event_id) == "dead"


def test_ambiguous_failure_is_not_resent_when_it_carries_points(engine, fake, kartra_url):
    fake.down = True
    enqueue(engine, actions=POINTS)
    dispatcher(engine, config(kartra_url)).run_once()
    row = delivery(engine)
    assert row.status == "failed" and "ambiguous" in row.last_error
    assert len(fake.call_log()) == 1


def test_bad_credentials_pause_the_account(engine, kartra_url, fake):
    cfg = config(kartra_url, accounts={"default": Account("default", KEY, "wrong")})
    enqueue(engine)
    dispatcher(engine, cfg).run_once()
    row = delivery(engine)
    assert row.status == "pending" and row.attempts == 0
    state = queue.account_states(engine)["default"]
    assert state["paused"] and "233" in state["reason"]
    assert dispatcher(engine, cfg).run_once() == 0
    assert PASSWORD not in state["reason"] and "wrong" not in state["reason"]


def test_missing_tag_fails_with_code_and_hint(engine, kartra_url):
    event_id = enqueue(engine, actions=[{"cmd": "assign_tag", "tag_name": "Nope"}])
    dispatcher(engine, config(kartra_url)).run_once()
    row = delivery(engine)
    assert row.status == "failed" and "212" in row.last_error and "Nope" in row.last_error
    assert event_status(engine, event_id) == "failed"


def test_dry_run_records_the_call_and_sends_nothing(engine, fake, kartra_url):
    event_id = enqueue(engine)
    dispatcher(engine, Config(kartra_url=kartra_url)).run_once()
    assert event_status(engine, event_id) == "dry_run"
    with engine.connect() as conn:
        [attempt] = conn.execute(select(attempts)).all()
    assert [a["cmd"] for a in attempt.request["actions"]] == ["create_lead", "assign_tag"]
    assert fake.call_log() == []


def test_unknown_account_fails_visibly(engine, kartra_url):
    enqueue(engine, account="shop2")
    dispatcher(engine, config(kartra_url)).run_once()
    assert "no credentials" in delivery(engine).last_error


def test_rate_limit_is_never_exceeded_by_concurrent_senders(engine, fake, kartra_url):
    fake.tags.add("Customer")
    for i in range(24):
        enqueue(engine, email=f"lead{i}@example.com")
    d = dispatcher(
        engine, config(kartra_url), limiter=RateLimiter(10), senders=8, poll_interval=0.05
    )
    thread = threading.Thread(target=d.run)
    thread.start()
    deadline = time.monotonic() + 15
    while len(fake.call_log()) < 24 and time.monotonic() < deadline:
        time.sleep(0.05)
    d.shutdown()
    thread.join(10)
    times = sorted(c["time"] for c in fake.call_log())
    assert len(times) == 24
    # The fake timestamps a call when its handler thread gets the lock, up to tens of
    # milliseconds after it was sent on a busy machine: windows of 0.9 s absorb that.
    busiest = max(sum(1 for t in times if s <= t < s + 0.9) for s in times)
    assert busiest <= 10
    assert times[-1] - times[0] >= 2.0
    assert all(c["status"] == 200 for c in fake.call_log())


def test_shutdown_stops_promptly_and_releases_claims(engine, kartra_url):
    d = dispatcher(engine, config(kartra_url), poll_interval=5)
    thread = threading.Thread(target=d.run)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    d.shutdown()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2


def test_a_database_gone_at_shutdown_is_logged_not_raised(engine, kartra_url, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OperationalError("UPDATE deliveries", {}, Exception("server closed the connection"))

    monkeypatch.setattr(queue, "release", unreachable)
    d = dispatcher(engine, config(kartra_url))
    d.shutdown()
    with capture_logs() as logs:
        d.run()
    assert [line["event"] for line in logs][-2:] == ["release_failed", "worker_stopped"]


def test_each_call_of_an_attempt_is_stored_with_its_own_start(engine, fake, kartra_url):
    fake.down = True
    enqueue(engine)
    dispatcher(engine, config(kartra_url), retry_wait=lambda retry_state: 0.3).run_once()
    with engine.connect() as conn:
        calls = conn.execute(select(attempts).order_by(attempts.c.id)).all()
    assert len(calls) == 3
    for before, after in zip(calls, calls[1:], strict=False):
        ended = before.started_at + timedelta(milliseconds=before.duration_ms)
        assert after.started_at - ended >= timedelta(seconds=0.29)


def test_a_retry_after_an_ambiguous_failure_is_marked_ambiguous(engine, fake, kartra_url):
    fake.down = True

    def recover_then_wait(retry_state):
        fake.down = False
        return 0

    enqueue(engine)
    dispatcher(engine, config(kartra_url), retry_wait=recover_then_wait).run_once()
    assert delivery(engine).status == "delivered"
    with engine.connect() as conn:
        first, second = conn.execute(select(attempts).order_by(attempts.c.id)).all()
    assert (first.outcome, first.ambiguous) == ("ambiguous", False)
    assert (second.outcome, second.ambiguous) == ("ok", True)


def test_a_later_attempt_still_knows_an_earlier_call_was_ambiguous(engine, fake, kartra_url):
    fake.down = True
    enqueue(engine)
    d = dispatcher(engine, config(kartra_url), backoff=Backoff(first=0.001, jitter=0))
    d.run_once()
    fake.down = False
    time.sleep(0.01)
    d.run_once()
    with engine.connect() as conn:
        last = conn.execute(select(attempts).order_by(attempts.c.id.desc())).first()
    assert (last.outcome, last.ambiguous) == ("ok", True)


def test_heartbeat_while_running(engine, kartra_url):
    from relay.store.tables import workers

    d = dispatcher(engine, config(kartra_url), poll_interval=0.05)
    thread = threading.Thread(target=d.run)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(select(workers.c.name)).scalars().all() == [d.name]:
                    break
            time.sleep(0.02)
        else:
            raise AssertionError("no heartbeat")
    finally:
        d.shutdown()
        thread.join(10)
    with engine.connect() as conn:
        assert conn.execute(select(workers)).all() == []


def test_a_stored_delivery_wakes_an_idle_dispatcher_through_the_database(
    postgres, fake, kartra_url
):
    """On PostgreSQL the storing transaction NOTIFYs; the poll interval here is far
    longer than the test, so only the notification can explain a quick delivery."""
    from relay.store import connect, migrate

    engine = connect(postgres.new_database())
    migrate(engine)
    d = dispatcher(engine, config(kartra_url), poll_interval=60)
    thread = threading.Thread(target=d.run)
    thread.start()
    try:
        time.sleep(0.5)
        stored_at = time.time()
        enqueue(engine)
        deadline = time.monotonic() + 10
        while not fake.call_log() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert fake.call_log(), "the dispatcher was not woken"
        assert fake.call_log()[0]["time"] - stored_at < 2
    finally:
        d.shutdown()
        thread.join(10)
        engine.dispose()


def test_a_worker_without_pre_ping_survives_its_connections_being_terminated(
    postgres, fake, kartra_url
):
    """The worker's engine does not ping before each checkout: a pooled connection that
    PostgreSQL terminated fails its next statement, which is run again on a new one.
    Every connection of the database is terminated every 0.3 s while 40 deliveries go
    out through the shared rate limiter (4 s); each is still sent once and recorded
    once."""
    from relay.store import connect, migrate

    url = postgres.new_database()
    engine = connect(url, pre_ping=False)
    migrate(engine)
    admin = connect(url)  # pings: the test's own reads outlive the terminations
    emails = [f"lead{i}@example.com" for i in range(40)]
    for email in emails:
        enqueue(engine, email=email)
    # Half the fake's 20 calls/s: a busy machine's late, bunched calls must not add
    # 429s, which this test would count as calls sent twice.
    d = dispatcher(engine, config(kartra_url, kartra_rate_limit=10), poll_interval=0.05)
    thread = threading.Thread(target=d.run)
    terminated = 0
    with capture_logs() as logs:
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while len(fake.call_log()) < len(emails) and time.monotonic() < deadline:
                time.sleep(0.3)
                with admin.connect() as conn:
                    terminated += len(
                        conn.execute(
                            text(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                " WHERE datname = current_database()"
                                " AND pid <> pg_backend_pid()"
                            )
                        ).all()
                    )
            wait_until_recorded = time.monotonic() + 10
            while _unfinished(admin) and time.monotonic() < wait_until_recorded:
                time.sleep(0.05)
        finally:
            d.shutdown()
            thread.join(10)
    try:
        assert terminated >= 5
        assert [c["status"] for c in fake.call_log()] == [200] * len(emails)
        assert all(fake.find_lead(email).tags == {"Customer"} for email in emails)
        assert _unfinished(admin) == 0
        with admin.connect() as conn:
            recorded = conn.execute(select(attempts.c.outcome, attempts.c.ambiguous)).all()
        assert sorted(recorded) == [("ok", False)] * len(emails)
        failures = [e for e in logs if e["log_level"] in ("error", "critical")]
        assert failures == []
    finally:
        engine.dispose()
        admin.dispose()


def _unfinished(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).where(deliveries.c.status != "delivered")).scalar()


def test_each_account_uses_its_own_credentials_and_pauses_alone(engine, fake, kartra_url):
    fake.accounts["key-eu"] = "pw-eu"
    cfg = config(
        kartra_url,
        accounts={
            "default": Account("default", KEY, PASSWORD),
            "shop_eu": Account("shop_eu", "key-eu", "pw-eu"),
            "shop_us": Account("shop_us", "key-us", "wrong"),
        },
    )
    enqueue(engine, email="eu@example.com", account="shop_eu")
    enqueue(engine, email="us@example.com", account="shop_us")
    enqueue(engine, email="home@example.com")
    dispatcher(engine, cfg).run_once()
    assert fake.find_lead("eu@example.com") and fake.find_lead("home@example.com")
    assert fake.find_lead("us@example.com") is None
    states = queue.account_states(engine)
    assert states["shop_us"]["paused"]
    assert not states["shop_eu"]["paused"] and not states["default"]["paused"]


def reclaimed(engine, kartra_url, actions=None, *, marked=False):
    """A delivery a killed worker claimed (and `marked` as about to send), taken over by
    a new dispatcher once its lease ran out; the attempts recorded."""
    enqueue(engine, actions=actions)
    [claimed] = queue.claim(engine, "killed-worker", limit=1, lease=timedelta(seconds=30))
    if marked:
        queue.mark_sending(engine, claimed.id)
    queue.expire_claims(engine)
    dispatcher(engine, config(kartra_url)).run_once()
    with engine.connect() as conn:
        return conn.execute(select(attempts)).all()


def test_a_reclaimed_delivery_is_sent_again_and_marked_ambiguous(engine, fake, kartra_url):
    [attempt] = reclaimed(engine, kartra_url)
    assert delivery(engine).status == "delivered"
    assert attempt.ambiguous


def test_a_reclaimed_delivery_with_points_is_not_sent_blindly(engine, fake, kartra_url):
    reclaimed(engine, kartra_url, POINTS, marked=True)  # the killed worker was about to send
    row = delivery(engine)
    assert row.status == "failed" and "ambiguous" in row.last_error
    assert fake.call_log() == []


def test_a_reclaimed_delivery_with_points_never_sent_is_sent(engine, fake, kartra_url):
    """The killed worker held the claim but had not marked it: no call went out."""
    [attempt] = reclaimed(engine, kartra_url, POINTS)
    assert delivery(engine).status == "delivered"
    assert not attempt.ambiguous
    assert len(fake.call_log()) == 1


@pytest.mark.parametrize(
    ("actions", "marked"),
    [(POINTS, True), (None, False)],
)
def test_a_call_that_must_not_repeat_is_marked_before_it_goes(engine, kartra_url, actions, marked):
    enqueue(engine, actions=actions)
    d = dispatcher(engine, config(kartra_url))
    seen, call = [], d.client.call

    def spy(*args, **kwargs):  # the request itself, after the rate limiter
        seen.append(delivery(engine).sending)
        return call(*args, **kwargs)

    d.client.call = spy
    d.run_once()
    assert seen == [marked]
    assert delivery(engine).status == "delivered" and not delivery(engine).sending


def test_a_database_away_before_the_request_is_waited_for(engine, fake, kartra_url):
    """A PostgreSQL restart as the rate limiter asks: no request was written, so the
    sender waits for the database instead of leaving its claim to lapse and come back
    reclaimed (which fails a delivery with points as ambiguous)."""
    enqueue(engine, actions=POINTS)
    d = dispatcher(engine, config(kartra_url))
    acquire, failures = d.limiter.acquire, [2]

    def restarting():
        if failures[0]:
            failures[0] -= 1
            raise OperationalError("UPDATE rate_limits", {}, Exception("the server restarts"))
        return acquire()

    d.limiter.acquire = restarting
    with capture_logs() as logs:
        d.run_once()
    assert delivery(engine).status == "delivered"
    assert len(fake.call_log()) == 1
    assert [line["event"] for line in logs].count("database_unavailable") == 2


def test_a_slow_claim_refreshes_the_statistics_at_most_every_few_seconds(
    engine, kartra_url, monkeypatch
):
    refreshed = []
    monkeypatch.setattr("relay.dispatch.worker.SLOW_CLAIM", 0.0)
    monkeypatch.setattr(queue, "refresh_statistics", refreshed.append)
    d = dispatcher(engine, config(kartra_url))
    enqueue(engine)
    d.run_once()
    d.run_once()
    assert refreshed == [engine]


@pytest.mark.postgresql_only
def test_refreshing_the_statistics_lets_the_planner_see_a_burst(engine):
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE deliveries SET (autovacuum_enabled = false)"))
    for n in range(50):
        enqueue(engine, email=f"lead{n}@example.com")
    count = text("SELECT reltuples FROM pg_class WHERE relname = 'deliveries'")
    with engine.connect() as conn:
        assert conn.execute(count).scalar() <= 0
    queue.refresh_statistics(engine)
    with engine.connect() as conn:
        assert conn.execute(count).scalar() == 50
