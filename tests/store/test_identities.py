"""The identity memory: a sender's customer id -> lead email, per route and account."""

from relay.store import NewEvent, store_event
from relay.store.identities import all_identities, find, remember


def event(dedupe_key="e1", identity=None) -> NewEvent:
    return NewEvent(
        route="stripe",
        dedupe_key=dedupe_key,
        content_type="application/json",
        headers={},
        query={},
        body=b"{}",
        payload={},
        status="queued",
        rule="paid",
        reason=None,
        plans=[{"account": "default", "lead": {"email": "jane@example.com"}, "actions": []}],
        identity=identity,
    )


def test_remember_find_and_replace(engine):
    assert find(engine, "stripe", "default", "cus_1") is None
    remember(engine, "stripe", "default", "cus_1", "jane@example.com")
    assert find(engine, "stripe", "default", "cus_1") == "jane@example.com"
    assert find(engine, "stripe", "shop_eu", "cus_1") is None
    assert find(engine, "paddle", "default", "cus_1") is None
    remember(engine, "stripe", "default", "cus_1", "jane.doe@example.com")
    [identity] = all_identities(engine)
    assert (identity.customer_id, identity.email) == ("cus_1", "jane.doe@example.com")
    assert identity.updated_at.tzinfo is not None


def test_an_event_and_its_identity_are_stored_together(engine):
    stored = store_event(engine, event(identity=("default", "cus_1", "jane@example.com")))
    assert stored.created
    assert find(engine, "stripe", "default", "cus_1") == "jane@example.com"


def test_a_duplicate_event_teaches_nothing(engine):
    store_event(engine, event())
    duplicate = store_event(engine, event(identity=("default", "cus_2", "bob@example.com")))
    assert not duplicate.created
    assert find(engine, "stripe", "default", "cus_2") is None


def test_a_pair_too_long_to_keep_does_not_stop_the_event(engine):
    stored = store_event(engine, event(identity=("default", "c" * 201, "jane@example.com")))
    assert stored.created
    long_email = "j" * 320 + "@example.com"
    store_event(engine, event("e2", identity=("default", "cus_1", long_email)))
    assert all_identities(engine) == []
