"""Events waiting for a lead identity, rendered again once their route learns it.

`lead_email` rejects an event whose customer id has no lead email yet, and the event
records which one (`events.awaiting_*`). Senders do not keep their events in order:
Paddle may deliver a transaction.completed before the customer.created that teaches
the email. A thread beside the dispatcher (as retention is) looks every few seconds for
waiting events whose identity is known now, learned from an event or set with
`relay identities set`, and replays each with the current mappings, as `relay replay`
would. A look starts from the identities learned since the last one (an index on
`identities.updated_at`), so it costs next to nothing however many wait; every tenth
minute one goes over all the waiting events (a partial index of them). Events rejected so
before the upgrade that added this (`identities.unsettled`: which account they wait in
is unknown) are rendered again once, at the first look, and wait in their rule's account
from then on.

Several dispatcher processes, or an operator's replay, may find one event ready at
once: each replays it only if it is still waiting for that customer when the new
deliveries are stored (`replay`'s `expect`, one statement), so one of them does. A replay
that fails (the database went away, a delivery of the event was being sent) changes
nothing: the event keeps waiting and is tried again at the next look. A set-up problem
(mappings that do not load, a route without a mapping) is logged once, and the events
keep waiting until it is fixed and the process restarted.

The worker process loads the mapping files the first time an event is ready: the
mapping engine (Jinja, marshmallow, YAML) is memory a worker otherwise never uses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine

from relay.logs import get_logger
from relay.store.identities import ready, unsettled
from relay.store.tables import utcnow

log = get_logger("relay.resume")

EVERY = 5.0
"""Seconds between two looks for ready events."""
FULL_EVERY = 600.0
"""Seconds between two looks at every waiting event; the others start from the
identities learned since the last look that settled everything it found."""
MARGIN = timedelta(minutes=5)
"""How far before the last look an identity learned since may be stamped: a group of
events is stamped before its commit, and an event waiting for it may be stored after."""


class Resume:
    def __init__(
        self,
        engine: Engine,
        mappings: Callable[[], dict],
        *,
        every: float = EVERY,
        full_every: float = FULL_EVERY,
    ):
        self.engine = engine
        self.mappings = mappings
        self.every = every
        self.full_every = full_every
        self.stop = threading.Event()
        self._told: set[tuple[str, str]] = set()
        self._settled_at: datetime | None = None  # everything learned before: handled
        self._full_at: datetime | None = None

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.once()

    def once(self) -> int:
        """Replay the events ready now; how many were replayed."""
        started = utcnow()
        full = self._full_at is None or (started - self._full_at).total_seconds() >= self.full_every
        since = None if full else self._settled_at - MARGIN
        try:
            found = unsettled(self.engine) + ready(self.engine, since)
        except Exception:
            log.exception("resume_failed")
            return 0
        replayed, left = self._replay(found)
        if not left:
            self._settled_at = started
            if full:
                self._full_at = started
        return replayed

    def _replay(self, found: list) -> tuple[int, int]:
        """(replayed, left waiting though ready)."""
        if not found:
            return 0, 0
        try:
            mappings = self.mappings()
        except Exception as exc:
            self._tell_once("the mappings cannot be loaded", str(exc))
            return 0, len(found)
        from relay.admin.operations import Overtaken, replay  # the mapping engine, when needed

        replayed = left = 0
        for awaiting in found:
            if awaiting.route not in mappings:
                self._tell_once(f"no mapping for route {awaiting.route!r}", "")
                left += 1
                continue
            expect = {
                "awaiting_account": awaiting.account,
                "awaiting_customer": awaiting.customer_id,
            }
            try:
                done = replay(self.engine, mappings, awaiting.event_id, expect=expect)
            except Overtaken:
                continue  # replayed meanwhile, by another worker or by hand
            except Exception as exc:
                log.warning(
                    "event_resume_failed",
                    event_id=awaiting.event_id,
                    route=awaiting.route,
                    error=str(getattr(exc, "orig", None) or exc),
                    detail=f"the event keeps waiting; tried again in {self.every:g} s",
                )
                left += 1
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
        return replayed, left

    def _tell_once(self, problem: str, error: str) -> None:
        """Warn about a set-up problem once per process, not every few seconds."""
        if (problem, error) in self._told:
            return
        self._told.add((problem, error))
        log.error("resume_waits", problem=problem, error=error, detail="events keep waiting")

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="resume", daemon=True)
        thread.start()
        return thread
