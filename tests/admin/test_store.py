"""Search, replay, retry, purge and redact on a real SQLite record, events posted
through the ingest endpoint and delivered to the fake Kartra."""

import functools
import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from relay.admin.operations import ReplayError, replay, replay_many
from relay.store import connect
from relay.store.identities import all_identities, remember
from relay.store.maintenance import (
    REPLAYED,
    StoreConflict,
    UnknownEvents,
    purge_older_than,
    redact,
    retry_dead,
)
from relay.store.search import EventFilter, counts, event_ids, get_event, search_events
from relay.store.tables import attempts, deliveries, events, identities, leads, utcnow
from tests.admin.conftest import KEY, PASSWORD, deliver, deliver_or_die, fix_mapping, post
from tests.conftest import at_statement


def relay_of(app):
    return app.extensions["relay"]


def test_search_by_email_status_route_and_text(client, app, engine):
    jane = post(client, "jane@example.com", "o1", coupon="SPRING", note="x")
    bob = post(client, "bob@example.com", "o2")
    other = post(client, "carl@example.com", "o3", type="refund")
    deliver(app)

    def ids(**where):
        return [e.id for e in search_events(engine, EventFilter(**where)).events]

    assert ids(email="JANE@example.com") == [jane]
    assert ids(status="failed") == [bob, jane]
    assert ids(status="ignored") == [other]
    assert ids(text="spring") == [jane]
    assert ids(text="%") == []
    assert ids(route="nope") == []
    assert ids(since=utcnow() + timedelta(minutes=1)) == []
    page = search_events(engine, EventFilter(), limit=2)
    assert [e.id for e in page.events] == [other, bob]
    assert page.events[1].email == "bob@example.com"
    rest = search_events(engine, EventFilter(), cursor=page.next_cursor, limit=2)
    assert [e.id for e in rest.events] == [jane] and rest.next_cursor is None
    assert event_ids(engine, EventFilter(status="failed")) == ([jane, bob], 0)
    assert event_ids(engine, EventFilter(), limit=2) == ([jane, bob], 1)  # the oldest two


def test_text_and_email_searches_find_what_the_stored_json_escapes(client, app, engine):
    """The payload column's JSON writes é as \\u00e9 and a quote as \\": a search for
    "José" found nothing, nor did redaction by an address with a non-ASCII letter."""
    jose = post(client, "jose@example.com", "o1", note='José "Zürich" \\ 日本語')
    zoe = post(client, "zoë4@example.com", "o2")
    post(client, "ann@example.com", "o3", note="Jose")

    def ids(**where):
        return [e.id for e in search_events(engine, EventFilter(**where)).events]

    for text in ("José", "Zürich", '"Zürich"', "\\", "日本語"):
        assert ids(text=text) == [jose], text
    assert ids(email="ZOË4@example.com") == [zoe]
    rejected = post(client, "not an address", "o4", billing="zoë5@example.com")
    assert ids(email="zoë5@example.com") == [rejected]  # no delivery: the payload only
    assert ids(text="\\u00e9") == []


def test_one_event_shows_payload_rule_plan_and_every_kartra_call(client, app, engine):
    event_id = post(client)
    deliver(app)
    view = get_event(engine, event_id)
    assert view.payload["email"] == "jane@example.com" and view.rule == "purchase"
    (delivery,) = view.deliveries
    assert delivery.status == "failed" and "Custmer" in delivery.last_error
    assert delivery.plan["actions"] == [{"cmd": "assign_tag", "tag_name": "Custmer"}]
    (call,) = delivery.calls
    assert call.http_status == 200 and call.response
    assert KEY not in str(call.request) and PASSWORD not in str(call.request)
    assert get_event(engine, "ev_missing") is None


def test_secret_looking_headers_are_masked(client, engine):
    answer = client.post(
        "/hooks/shop",
        json={"id": "h1", "type": "purchase", "email": "a@example.com"},
        headers={"Stripe-Signature": "t=1,v1=abc", "X-Webhook-Token": "tok", "X-Trace": "7"},
    )
    view = get_event(engine, answer.get_json()["event_id"])
    assert view.headers["stripe-signature"] == "***"
    assert view.headers["x-webhook-token"] == "***"
    assert view.headers["x-trace"] == "7"


def test_replay_with_the_fixed_mapping_delivers_and_keeps_history(client, app, engine):
    event_id = post(client)
    deliver(app)
    fix_mapping(app)
    done = replay(engine, relay_of(app).mappings, event_id)
    assert done.status == "queued" and done.deliveries == 1
    deliver(app)
    view = get_event(engine, event_id)
    assert view.status == "delivered"
    assert [d.status for d in view.deliveries] == [REPLAYED, "delivered"]
    assert view.deliveries[1].plan["actions"][0]["tag_name"] == "Customer"
    assert len(view.deliveries[0].calls) == 1


def test_replay_stored_resends_the_recorded_plan(client, app, engine, fake):
    event_id = post(client)
    deliver(app)
    fake.tags.add("Custmer")  # the fix was made in Kartra, not in the mapping
    replay(engine, relay_of(app).mappings, event_id, mode="stored")
    deliver(app)
    view = get_event(engine, event_id)
    assert view.status == "delivered"
    assert view.deliveries[1].plan == view.deliveries[0].plan


def test_replay_refusals_name_the_reason(client, app, engine):
    mappings = relay_of(app).mappings
    ignored = post(client, type="refund")
    with pytest.raises(ReplayError, match="no stored plan"):
        replay(engine, mappings, ignored, mode="stored")
    with pytest.raises(ReplayError, match="mode must be"):
        replay(engine, mappings, ignored, mode="again")
    with pytest.raises(LookupError):
        replay(engine, mappings, "ev_missing")
    busy = post(client, id="o9")
    with engine.begin() as conn:
        conn.execute(update(deliveries).values(claimed_until=utcnow() + timedelta(minutes=5)))
    with pytest.raises(ReplayError, match="being sent"):
        replay(engine, mappings, busy)
    results = replay_many(engine, mappings, [busy, "ev_missing", ignored])
    assert [(r.event_id, r.ok) for r in results] == [
        (busy, False),
        ("ev_missing", False),
        (ignored, True),
    ]
    assert results[2].status == "ignored" and results[1].error == "no such event"


def test_retry_dead_carries_on_where_it_stopped(client, app, engine, fake):
    event_id = post(client)
    fix_mapping(app)
    replay(engine, relay_of(app).mappings, event_id)
    fake.down = True
    deliver_or_die(app)
    assert get_event(engine, event_id).status == "dead"
    fake.down = False
    (requeued,) = retry_dead(engine)
    assert requeued.event_id == event_id and get_event(engine, event_id).status == "queued"
    deliver(app)
    view = get_event(engine, event_id)
    assert view.status == "delivered"
    assert [d.status for d in view.deliveries] == [REPLAYED, REPLAYED, "delivered"]
    assert retry_dead(engine) == []


def test_a_replay_never_replaces_a_delivery_a_worker_claims_meanwhile(client, app, engine):
    event_id = post(client)
    other = connect(str(engine.url))

    def claim():
        with other.begin() as conn:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.event_id == event_id)
                .values(claimed_by="worker-2", claimed_until=utcnow() + timedelta(minutes=1))
            )

    with (
        at_statement(engine, "UPDATE deliveries SET status", claim) as fired,
        pytest.raises(ReplayError, match="being sent to Kartra right now"),
    ):
        replay(engine, relay_of(app).mappings, event_id)
    other.dispose()
    assert fired
    [delivery] = get_event(engine, event_id).deliveries
    assert delivery.status == "pending"


def test_retry_leaves_out_dead_deliveries_a_replay_replaced_meanwhile(client, app, engine, fake):
    event_id = post(client)
    fix_mapping(app)
    fake.down = True
    deliver_or_die(app)
    other = connect(str(engine.url))
    meanwhile = functools.partial(replay, other, relay_of(app).mappings, event_id)
    with at_statement(engine, "UPDATE deliveries SET status", meanwhile):
        assert retry_dead(engine) == []
    other.dispose()
    statuses = [d.status for d in get_event(engine, event_id).deliveries]
    assert statuses == [REPLAYED, "pending"]


def test_counts_per_status_and_route(client, app, engine):
    post(client, id="a")
    post(client, id="b", type="refund")
    deliver(app)
    found = counts(engine)
    assert found.events == {"failed": 1, "ignored": 1}
    assert found.routes == {"shop": {"failed": 1, "ignored": 1}}
    assert found.deliveries == {"failed": 1}
    assert counts(engine, since=utcnow() + timedelta(seconds=5)).events == {}


def test_purge_removes_old_finished_events_with_their_calls(client, app, engine, fake):
    old = post(client, id="old")
    waiting = post(client, id="waiting", email="bob@example.com")
    deliver(app)
    replay(engine, relay_of(app).mappings, waiting)
    with engine.begin() as conn:
        conn.execute(update(events).values(received_at=utcnow() - timedelta(days=40)))
    recent = post(client, id="recent")
    assert purge_older_than(engine, utcnow() - timedelta(days=30)) == 1
    with engine.connect() as conn:
        left = set(conn.execute(select(events.c.id)).scalars())
        calls = conn.execute(select(attempts)).all()
    assert left == {waiting, recent}
    assert old not in left and len(calls) == 1  # bob's failed call stays with his event


def test_redact_by_email_erases_personal_data_everywhere(client, app, engine):
    event_id = post(client, "jane@example.com", "r1")
    fix_mapping(app)
    replay(engine, relay_of(app).mappings, event_id)
    deliver(app)
    other = post(client, "bob@example.com", "r2", note="cc mary.jane@example.com")
    namesake = post(client, "mary.jane@example.com", "r3")
    deliver(app)
    remember(engine, "shop", "default", "cus_1", "jane@example.com")
    assert redact(engine, email="Jane@Example.com") == [event_id]
    with engine.connect() as conn:
        rows = [
            str(conn.execute(select(t)).all())
            for t in (events, deliveries, attempts, leads, identities)
        ]
    assert not any(re.search(r"(?<![\w.])jane@example\.com", text) for text in rows)
    assert any("mary.jane@example.com" in text for text in rows)
    view = get_event(engine, event_id)
    assert view.payload is None and view.status == "delivered"
    with pytest.raises(ReplayError, match="redacted"):
        replay(engine, relay_of(app).mappings, event_id)
    assert get_event(engine, other).payload["email"] == "bob@example.com"
    assert get_event(engine, namesake).payload["email"] == "mary.jane@example.com"


def test_redact_by_email_forgets_the_email_even_without_events(engine):
    remember(engine, "shop", "default", "cus_1", "jane@example.com")
    remember(engine, "shop", "default", "cus_2", "bob@example.com")
    assert redact(engine, email="jane@example.com") == []
    assert [i.customer_id for i in all_identities(engine)] == ["cus_2"]


def test_redact_of_an_unknown_id_changes_nothing_and_says_so(client, app, engine):
    """A mistyped id in an erasure request must not look done."""
    event_id = post(client)
    deliver(app)
    with pytest.raises(UnknownEvents, match="no such event: ev_nope"):
        redact(engine, event_ids=[event_id, "ev_nope"])
    assert get_event(engine, event_id).payload["email"] == "jane@example.com"


@pytest.mark.sqlite_only
def test_redacted_data_is_gone_from_the_sqlite_files_not_only_the_rows(client, app, engine):
    """The write-ahead log keeps pages as they were until a checkpoint, and a freed page
    keeps its bytes unless zeroed: the erased text must be in neither file."""
    marker = "zq9marker"
    post(client, email=f"{marker}@example.com", name=marker)
    deliver(app)
    redact(engine, email=f"{marker}@example.com")
    path = Path(engine.url.database)
    files = [path, path.with_name(path.name + "-wal")]
    assert not any(marker.encode() in f.read_bytes() for f in files if f.exists())


def test_redact_refuses_while_a_delivery_waits(client, engine):
    event_id = post(client)
    with pytest.raises(StoreConflict, match="still waiting"):
        redact(engine, event_ids=[event_id])
    with pytest.raises(ValueError):
        redact(engine)
