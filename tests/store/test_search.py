from sqlalchemy import event

from relay.store import queue, store_event
from relay.store.search import get_event
from tests.store.test_queue import LEASE, new_event, plan


def test_an_event_is_read_as_of_one_moment_while_its_delivery_finishes(engine):
    # The delivery finishes between get_event's first read (the event) and its next
    # (the deliveries): the page must show the event and its deliveries as they were
    # together, not the event queued beside a delivered delivery.
    stored = store_event(engine, new_event(plan()))
    (claimed,) = queue.claim(engine, "w1", limit=5, lease=LEASE)
    finished = []

    def finish_after_the_first_read(conn, cursor, statement, *_):
        if not finished and statement.lstrip().startswith("SELECT"):
            finished.append(True)
            queue.finish(engine, claimed, status="delivered", records=[], done=[0], lead_id="1")

    event.listen(engine, "after_cursor_execute", finish_after_the_first_read)
    try:
        during = get_event(engine, stored.event_id)
    finally:
        event.remove(engine, "after_cursor_execute", finish_after_the_first_read)
    after = get_event(engine, stored.event_id)
    assert finished
    assert (during.status, [d.status for d in during.deliveries]) == ("queued", ["pending"])
    assert (after.status, [d.status for d in after.deliveries]) == ("delivered", ["delivered"])
