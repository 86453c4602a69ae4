import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import event, select, text

from relay.store import NewEvent, queue, store_event
from relay.store.tables import attempts, deliveries, events, leads, utcnow

LEASE = timedelta(minutes=5)


def plan(email="jane@example.com", account="default", tag="Customer"):
    return {
        "rule": "r",
        "account": account,
        "lead": {"email": email},
        "lead_mode": "upsert",
        "actions": [{"cmd": "assign_tag", "tag_name": tag}],
    }


def new_event(*plans, key=None, route="shop"):
    return NewEvent(
        route=route,
        dedupe_key=key or f"k-{id(plans)}-{utcnow().timestamp()}",
        content_type="application/json",
        headers={},
        query={},
        body=b"{}",
        payload={},
        status="queued" if plans else "ignored",
        rule="r",
        reason=None,
        plans=list(plans),
    )


def test_event_and_deliveries_are_stored_together(engine):
    stored = store_event(engine, new_event(plan(), plan("bob@example.com")))
    assert stored.created and stored.event_id.startswith("ev_")
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries)).all()
    assert [r.lead_key for r in rows] == ["email:jane@example.com", "email:bob@example.com"]
    assert {r.status for r in rows} == {"pending"}


def test_duplicate_returns_the_original_and_creates_nothing(engine):
    first = store_event(engine, new_event(plan(), key="id:evt_1"))
    again = store_event(engine, new_event(plan(), key="id:evt_1"))
    assert not again.created and again.event_id == first.event_id
    with engine.connect() as conn:
        assert len(conn.execute(select(events)).all()) == 1
        assert len(conn.execute(select(deliveries)).all()) == 1


def test_same_key_on_another_route_is_not_a_duplicate(engine):
    store_event(engine, new_event(plan(), key="id:1", route="a"))
    assert store_event(engine, new_event(plan(), key="id:1", route="b")).created


def test_claim_takes_one_delivery_per_lead_in_arrival_order(engine):
    store_event(engine, new_event(plan(tag="purchase")))
    store_event(engine, new_event(plan(tag="refund")))
    store_event(engine, new_event(plan("bob@example.com")))
    claimed = queue.claim(engine, "w1", limit=10, lease=LEASE)
    assert [c.plan["actions"][0]["tag_name"] for c in claimed] == ["purchase", "Customer"]
    # the refund waits for the purchase, even for another worker
    assert queue.claim(engine, "w2", limit=10, lease=LEASE) == []
    queue.finish(engine, claimed[0], status="delivered", records=[], done=[0], lead_id="42")
    later = queue.claim(engine, "w2", limit=10, lease=LEASE)
    assert [c.plan["actions"][0]["tag_name"] for c in later] == ["refund"]


def test_a_claim_is_a_lease_that_expires(engine):
    store_event(engine, new_event(plan()))
    assert len(queue.claim(engine, "dead-worker", limit=1, lease=LEASE)) == 1
    assert queue.claim(engine, "w2", limit=1, lease=LEASE) == []
    later = utcnow() + LEASE + timedelta(seconds=1)
    assert len(queue.claim(engine, "w2", limit=1, lease=LEASE, now=later)) == 1


def test_release_gives_claims_back(engine):
    store_event(engine, new_event(plan()))
    queue.claim(engine, "w1", limit=1, lease=LEASE)
    assert queue.release(engine, "w1") == 1
    assert len(queue.claim(engine, "w2", limit=1, lease=LEASE)) == 1


def test_rescheduled_delivery_waits_until_due(engine):
    store_event(engine, new_event(plan()))
    [d] = queue.claim(engine, "w1", limit=1, lease=LEASE)
    due = utcnow() + timedelta(minutes=1)
    queue.finish(
        engine,
        d,
        status="pending",
        records=[],
        done=[],
        lead_id=None,
        error="HTTP 503",
        next_attempt_at=due,
    )
    assert queue.claim(engine, "w1", limit=1, lease=LEASE) == []
    [again] = queue.claim(engine, "w1", limit=1, lease=LEASE, now=due)
    assert again.attempts == 1


def test_paused_account_is_not_claimed_until_resumed(engine):
    store_event(engine, new_event(plan(account="shop2")))
    queue.pause_account(engine, "shop2", "203 api_key invalid")
    assert queue.claim(engine, "w1", limit=5, lease=LEASE) == []
    assert queue.account_states(engine)["shop2"]["paused"]
    assert queue.resume_account(engine, "shop2")
    assert not queue.resume_account(engine, "shop2")
    assert len(queue.claim(engine, "w1", limit=5, lease=LEASE)) == 1


def test_finish_records_attempts_and_rolls_the_event_status_up(engine):
    stored = store_event(engine, new_event(plan(), plan("bob@example.com")))
    first, second = queue.claim(engine, "w1", limit=5, lease=LEASE)
    record = queue.AttemptRecord(utcnow(), 12.5, {"actions": []}, 200, {"status": "Success"}, "ok")
    queue.finish(engine, first, status="delivered", records=[record], done=[0], lead_id="1")
    with engine.connect() as conn:
        assert conn.execute(select(events.c.status)).scalar() == "queued"
    queue.finish(
        engine,
        second,
        status="failed",
        records=[record],
        done=[],
        lead_id=None,
        error="212 tag does not exist",
    )
    with engine.connect() as conn:
        assert (
            conn.execute(select(events.c.status).where(events.c.id == stored.event_id)).scalar()
            == "failed"
        )
        assert len(conn.execute(select(attempts)).all()) == 2


def test_deliveries_of_one_event_finishing_at_once_roll_it_up_to_their_status(engine):
    # Both finishes run at once: the roll-up that goes second must see the first one's
    # delivery, or the event stays queued with both its deliveries delivered.
    stored = store_event(engine, new_event(plan(), plan("bob@example.com")))
    first, second = queue.claim(engine, "w1", limit=5, lease=LEASE)
    if engine.dialect.name == "postgresql":
        _finish_both_while_the_event_is_held(engine, first, second)
    else:
        _finish_the_second_before_the_first_commits(engine, first, second)
    with engine.connect() as conn:
        statuses = conn.execute(select(deliveries.c.status)).scalars().all()
        event_status = conn.execute(
            select(events.c.status).where(events.c.id == stored.event_id)
        ).scalar()
    assert statuses == ["delivered", "delivered"]
    assert event_status == "delivered"


def _finish(engine, delivery):
    queue.finish(engine, delivery, status="delivered", records=[], done=[0], lead_id="1")


def _finish_both_while_the_event_is_held(engine, first, second):
    """PostgreSQL: another transaction holds the event's row while both finishes record
    their deliveries and wait for it; then it lets go."""
    finishes = [threading.Thread(target=_finish, args=(engine, d)) for d in (first, second)]
    with engine.connect() as holder:
        holder.execute(select(events.c.id).with_for_update())
        for finish in finishes:
            finish.start()
        deadline = time.monotonic() + 10
        while _waiting_for_a_lock(engine) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _waiting_for_a_lock(engine) == 2
        holder.commit()
    for finish in finishes:
        finish.join(10)


def _waiting_for_a_lock(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar()


def _finish_the_second_before_the_first_commits(engine, first, second):
    """SQLite: the second finish starts while the first one's transaction is open."""
    other = threading.Thread(target=_finish, args=(engine, second))

    def before_the_first_commit(conn):
        if not other.is_alive() and other.ident is None:
            other.start()
            time.sleep(0.5)

    event.listen(engine, "commit", before_the_first_commit)
    try:
        _finish(engine, first)
        other.join(10)
    finally:
        event.remove(engine, "commit", before_the_first_commit)


@pytest.mark.postgresql_only
def test_finish_run_again_after_it_was_applied_changes_nothing(engine, monkeypatch):
    """On PostgreSQL `finish` is one statement that a worker runs again when its
    connection died without an answer; the answer may have been lost after the commit."""
    stored = store_event(engine, new_event(plan()))
    [claimed] = queue.claim(engine, "w1", limit=5, lease=LEASE)
    now = utcnow()
    monkeypatch.setattr(queue, "utcnow", lambda: now)
    record = queue.AttemptRecord(now, 12.5, {"actions": []}, 200, {"status": "Success"}, "ok")
    for _ in range(2):
        queue.finish(
            engine,
            claimed,
            status="delivered",
            records=[record, record],
            done=[0],
            lead_id="77",
            remember_email="Jane@Example.com",
        )
    with engine.connect() as conn:
        assert conn.execute(select(attempts.c.number)).scalars().all() == [1, 1]
        assert conn.execute(select(deliveries.c.attempts)).scalar() == 1
        assert conn.execute(select(events.c.status)).scalar() == "delivered"
    assert known_lead_id(engine, "default", "jane@example.com") == "77"
    assert stored.created


def test_finish_forgets_a_lead_id_kartra_no_longer_knows(engine):
    queue.remember_lead(engine, "default", "jane@example.com", "77")
    store_event(engine, new_event(plan()))
    [claimed] = queue.claim(engine, "w1", limit=5, lease=LEASE)
    assert claimed.known_lead_id == "77"
    queue.finish(
        engine,
        claimed,
        status="failed",
        records=[],
        done=[],
        lead_id=None,
        error="lead gone",
        remember_email="jane@example.com",
    )
    assert known_lead_id(engine, "default", "jane@example.com") is None
    assert delivery_status(engine) == ("failed", "lead gone", None)


def delivery_status(engine):
    with engine.connect() as conn:
        row = conn.execute(
            select(deliveries.c.status, deliveries.c.last_error, deliveries.c.claimed_by)
        ).one()
    return tuple(row)


def known_lead_id(engine, account: str, email: str) -> str | None:
    """The Kartra lead id the relay remembers for an email, read straight from the table."""
    with engine.connect() as conn:
        return conn.execute(
            select(leads.c.kartra_id).where(leads.c.account == account, leads.c.email == email)
        ).scalar()


def test_lead_ids_are_remembered_per_account_and_email(engine):
    queue.remember_lead(engine, "default", " Jane@Example.com", "77")
    assert known_lead_id(engine, "default", "jane@example.com") == "77"
    assert known_lead_id(engine, "other", "jane@example.com") is None
    queue.remember_lead(engine, "default", "jane@example.com", None)
    assert known_lead_id(engine, "default", "jane@example.com") is None


def test_a_claim_brings_the_remembered_lead_id_of_each_lead(engine):
    queue.remember_lead(engine, "default", "jane@example.com", "77")
    store_event(engine, new_event(plan(" Jane@Example.com"), plan("joe@example.com")))
    claimed = queue.claim(engine, "w1", limit=5, lease=timedelta(seconds=30))
    assert [(c.lead_id, c.known_lead_id) for c in claimed] == [(None, "77"), (None, None)]
    queue.finish(engine, claimed[0], status="pending", records=[], done=[], lead_id="88")
    [again] = queue.claim(engine, "w1", limit=5, lease=timedelta(seconds=30))
    assert (again.lead_id, again.known_lead_id) == ("88", None)


def test_a_claim_taken_over_after_its_lease_comes_back_reclaimed(engine):
    store_event(engine, new_event(plan()))
    [first] = queue.claim(engine, "dead-worker", limit=1, lease=LEASE)
    assert not first.reclaimed
    later = utcnow() + LEASE + timedelta(seconds=1)
    [again] = queue.claim(engine, "w2", limit=1, lease=LEASE, now=later)
    assert again.reclaimed


def test_a_released_claim_is_not_reclaimed(engine):
    store_event(engine, new_event(plan()))
    queue.claim(engine, "w1", limit=1, lease=LEASE)
    queue.release(engine, "w1")
    [again] = queue.claim(engine, "w2", limit=1, lease=LEASE)
    assert not again.reclaimed


def test_expiring_claims_frees_them_now_and_marks_them_reclaimed(engine):
    store_event(engine, new_event(plan()))
    queue.claim(engine, "killed", limit=1, lease=LEASE)
    assert queue.expire_claims(engine) == 1
    [again] = queue.claim(engine, "restarted", limit=1, lease=LEASE)
    assert again.reclaimed


def test_a_living_worker_keeps_its_claims_by_beating(engine):
    store_event(engine, new_event(plan()))
    [held] = queue.claim(engine, "slow-worker", limit=1, lease=timedelta(seconds=1))
    queue.beat(engine, "slow-worker", utcnow(), timedelta(minutes=1), [held.id])
    later = utcnow() + timedelta(seconds=5)
    assert queue.claim(engine, "w2", limit=1, lease=LEASE, now=later) == []


def test_a_claim_its_worker_lost_track_of_is_not_renewed(engine):
    store_event(engine, new_event(plan()))
    queue.claim(engine, "crashed-sender", limit=1, lease=timedelta(seconds=1))
    queue.beat(engine, "crashed-sender", utcnow(), timedelta(minutes=1), [])
    later = utcnow() + timedelta(seconds=5)
    [again] = queue.claim(engine, "w2", limit=1, lease=LEASE, now=later)
    assert again.reclaimed
