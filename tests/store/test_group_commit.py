"""Group commit: events stored at the same moment share a transaction, and each caller
still gets its own answer: stored, duplicate, or its own error."""

import threading
import time

import pytest
from sqlalchemy import func, select

from relay.store import events as store_events_module
from relay.store import store_event
from relay.store.events import GroupCommit, store_events
from relay.store.tables import deliveries, events, identities
from tests.store.test_queue import new_event, plan


def count(engine, table):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def test_one_transaction_stores_many_events_and_finds_duplicates_within_it(engine):
    first = store_event(engine, new_event(plan(), key="id:old"))
    stored = store_events(
        engine,
        [
            new_event(plan("a@example.com"), key="id:1"),
            new_event(plan("b@example.com"), key="id:old"),
            new_event(plan("c@example.com"), plan("d@example.com"), key="id:2"),
            new_event(plan("e@example.com"), key="id:1"),
            new_event(key="id:3"),
        ],
    )
    assert [s.created for s in stored] == [True, False, True, False, True]
    assert stored[1].event_id == first.event_id
    assert stored[3].event_id == stored[0].event_id
    assert count(engine, events) == 4
    assert count(engine, deliveries) == 4


def test_a_group_teaches_identities_in_arrival_order(engine):
    def taught(email, key):
        event = new_event(plan(email), key=key)
        return event.__class__(**{**event.__dict__, "identity": ("default", "cus_1", email)})

    store_events(engine, [taught("old@example.com", "id:1"), taught("new@example.com", "id:2")])
    with engine.connect() as conn:
        assert conn.execute(select(identities.c.email)).scalars().all() == ["new@example.com"]


def held_group_commit(monkeypatch, engine, waiting: int):
    """A GroupCommit whose first commit waits until `waiting` more events are queued,
    so the next group is known to hold them all; returns it and the group sizes seen."""
    group = GroupCommit(engine)
    sizes = []
    real = store_events_module.store_events

    def recording(engine, news):
        if not sizes:
            deadline = time.monotonic() + 10
            while len(group._queue) < waiting and time.monotonic() < deadline:
                time.sleep(0.01)
        sizes.append(len(news))
        return real(engine, news)

    monkeypatch.setattr(store_events_module, "store_events", recording)
    return group, sizes


def run_threads(targets):
    threads = [threading.Thread(target=t) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def test_events_arriving_during_a_commit_share_the_next_one(engine, monkeypatch):
    group, sizes = held_group_commit(monkeypatch, engine, waiting=7)
    results = {}

    def post(n, key):
        results[n] = group.store(new_event(plan(f"lead{n}@example.com"), key=key))

    run_threads(
        [lambda: post(0, "id:0")] + [lambda n=n: post(n, f"id:{n % 5 + 1}") for n in range(1, 8)]
    )
    assert sizes == [1, 7]
    created = [r for r in results.values() if r.created]
    assert len(created) == 6
    assert {r.event_id for r in results.values()} == {r.event_id for r in created}
    assert count(engine, events) == 6


def test_a_bad_event_fails_alone_and_its_group_is_stored(engine, monkeypatch):
    group, sizes = held_group_commit(monkeypatch, engine, waiting=4)
    results, errors = {}, {}

    def post(n, payload):
        event = new_event(plan(f"lead{n}@example.com"), key=f"id:{n}")
        try:
            results[n] = group.store(event.__class__(**{**event.__dict__, "payload": payload}))
        except Exception as exc:
            errors[n] = exc

    run_threads(
        [lambda: post(0, {})]
        + [lambda n=n: post(n, {"bad": object()} if n == 2 else {}) for n in range(1, 5)]
    )
    assert sizes[:2] == [1, 4]
    assert sorted(results) == [0, 1, 3, 4] and list(errors) == [2]
    assert count(engine, events) == 4


def test_an_unavailable_database_fails_the_whole_group(engine, monkeypatch):
    from sqlalchemy.exc import OperationalError

    def down(engine, news):
        raise OperationalError("INSERT", {}, Exception("database is down"))

    monkeypatch.setattr(store_events_module, "store_events", down)
    with pytest.raises(OperationalError):
        GroupCommit(engine).store(new_event(plan()))


def test_the_ids_of_a_group_are_distinct_and_time_ordered():
    before = store_events_module.new_event_ids(1)[0]
    ids = store_events_module.new_event_ids(64)
    assert len(set(ids)) == 64
    assert all(len(i) == 30 and i.startswith("ev_") for i in ids)
    assert all(i[:14] >= before[:14] for i in ids)
