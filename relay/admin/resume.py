"""Events waiting for a lead identity, rendered again once their route learns it.

`lead_email` rejects an event whose customer id has no lead email yet, and the event
records which one (`events.awaiting_*`). Senders do not keep their events in order:
Paddle may deliver a transaction.completed before the customer.created that teaches
the email. A thread beside the dispatcher (as retention is) looks every few seconds for
waiting events whose identity is known now, learned from an event or set with
`relay identities set`, and replays each with the current mappings, as `relay replay`
would. The lookup goes through a partial index of the waiting events, so it costs next
to nothing while none waits.

Several dispatcher processes may find one event ready at once: each first takes it
(`identities.take`), and only the one that did replays it. A replay that fails after
that (the database went away, a delivery of the event was being sent) leaves the event
rejected, with a warning naming it, for an operator to replay.

The worker process loads the mapping files the first time an event is ready: the
mapping engine (Jinja, marshmallow, YAML) is memory a worker otherwise never uses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import Engine

from relay.logs import get_logger
from relay.store.identities import ready, take

log = get_logger("relay.resume")

EVERY = 5.0
"""Seconds between two looks for ready events."""


class Resume:
    def __init__(self, engine: Engine, mappings: Callable[[], dict], *, every: float = EVERY):
        self.engine = engine
        self.mappings = mappings
        self.every = every
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.once()

    def once(self) -> int:
        """Replay the events ready now; how many were replayed."""
        try:
            found = ready(self.engine)
            if not found:
                return 0
            mappings = self.mappings()
        except Exception:
            log.exception("resume_failed")
            return 0
        from relay.admin.operations import replay  # the mapping engine, only when needed

        replayed = 0
        for awaiting in found:
            try:
                if not take(self.engine, awaiting):
                    continue
            except Exception:
                log.exception("resume_failed")
                return replayed
            try:
                done = replay(self.engine, mappings, awaiting.event_id)
            except Exception as exc:
                log.warning(
                    "event_resume_failed",
                    event_id=awaiting.event_id,
                    route=awaiting.route,
                    error=str(getattr(exc, "orig", None) or exc),
                    detail="the event stays rejected: replay it",
                )
                continue
            replayed += 1
            log.info(
                "event_resumed",
                event_id=awaiting.event_id,
                route=awaiting.route,
                customer_id=awaiting.customer_id,
                status=done.status,
                deliveries=done.deliveries,
            )
        return replayed

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="resume", daemon=True)
        thread.start()
        return thread
