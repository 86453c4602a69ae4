from datetime import timedelta

from relay.store import queue, store_event
from relay.store.maintenance import purge_older_than
from relay.store.search import EventFilter, counts, get_event, search_events
from relay.store.tables import utcnow
from tests.conftest import at_statement
from tests.store.test_queue import LEASE, new_event, plan


def finishing(engine):
    (claimed,) = queue.claim(engine, "w1", limit=5, lease=LEASE)
    return lambda: queue.finish(
        engine, claimed, status="delivered", records=[], done=[0], lead_id="1"
    )


def test_an_event_is_read_as_of_one_moment_while_its_delivery_finishes(engine):
    # The delivery finishes between get_event's first read (the event) and its next
    # (the deliveries): the page must show the event and its deliveries as they were
    # together, not the event queued beside a delivered delivery.
    stored = store_event(engine, new_event(plan()))
    with at_statement(engine, "SELECT", finishing(engine), moment="after") as finished:
        during = get_event(engine, stored.event_id)
    after = get_event(engine, stored.event_id)
    assert finished
    assert (during.status, [d.status for d in during.deliveries]) == ("queued", ["pending"])
    assert (after.status, [d.status for d in after.deliveries]) == ("delivered", ["delivered"])


def test_the_counts_are_read_as_of_one_moment_while_a_delivery_finishes(engine):
    # Events are counted first, deliveries next: the dashboard must not show an event
    # queued beside no pending delivery.
    store_event(engine, new_event(plan()))
    with at_statement(engine, "SELECT", finishing(engine), moment="after") as finished:
        during = counts(engine)
    after = counts(engine)
    assert finished
    assert (during.events, during.deliveries) == ({"queued": 1}, {"pending": 1})
    assert (after.events, after.deliveries) == ({"delivered": 1}, {"delivered": 1})


def test_a_page_of_events_is_read_as_of_one_moment_while_retention_purges(engine):
    # The page's events are read first, their leads' emails next: an event purged in
    # between must not be listed without the email it had.
    store_event(engine, new_event(plan(email="old@example.com")))
    finishing(engine)()  # purged only once delivered
    purge = lambda: purge_older_than(engine, utcnow() + timedelta(days=1))  # noqa: E731
    with at_statement(engine, "SELECT", purge, moment="after") as purged:
        during = search_events(engine, EventFilter())
    assert purged
    assert [e.email for e in during.events] == ["old@example.com"]
    assert search_events(engine, EventFilter()).events == []
