"""Changing the record on an operator's request: replay, retry, purge, redact.

A replay never rewrites history. The event's current deliveries are marked
`replayed` (kept, with their Kartra calls, for the record) and new deliveries are
queued on the same event; the event's status is rolled up from the new ones only.
A delivery a worker holds right now cannot be replaced: the operator is told to try
again in a moment rather than risk the same call twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, insert, or_, select, update

from relay.store.db import empty_write_ahead_log
from relay.store.events import awaiting_columns, new_delivery
from relay.store.search import mentions_email
from relay.store.tables import attempts, deliveries, events, identities, leads, utcnow
from relay.store.wakeup import notify

REPLAYED = "replayed"
REDACTED_REASON = "payload redacted on request"
PURGE_BATCH = 500


class StoreConflict(Exception):
    """The change cannot be made in the event's present state; the message says why."""


class UnknownEvents(LookupError):
    """Some of the events named do not exist; nothing was changed."""


class EventChanged(StoreConflict):
    """The event is no longer as the caller found it: another replay got there first."""


@dataclass(frozen=True)
class Requeued:
    event_id: str
    status: str
    deliveries: int


def current_plans(engine: Engine, event_id: str) -> list[dict[str, Any]]:
    """The plans of the event's current (not yet replayed) deliveries, in order."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(deliveries.c.plan)
                .where(deliveries.c.event_id == event_id, deliveries.c.status != REPLAYED)
                .order_by(deliveries.c.id)
            ).scalars()
        )


def replace_deliveries(
    engine: Engine,
    event_id: str,
    plans: list[dict[str, Any]],
    *,
    status: str,
    rule: str | None,
    reason: str | None,
    awaiting: tuple[str, str] | None = None,
    expect: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Requeued:
    """Mark the event's current deliveries `replayed` and queue `plans` in their place.

    `status`, `rule`, `reason` and `awaiting` are what the (re-)rendering said; with
    plans the event is `queued` again. Raises StoreConflict while a worker holds a
    delivery, and EventChanged when the event's columns no longer hold the `expect`ed
    values (the event chosen for a status, or as waiting for a customer, that another
    replay has changed since): the check and the change are one statement, so of two
    replays expecting the same, one changes the event.
    """
    now = now or utcnow()
    guard = [events.c[name].is_not_distinct_from(value) for name, value in (expect or {}).items()]
    claimed = (
        (deliveries.c.status == "pending")
        & deliveries.c.claimed_until.is_not(None)  # NOT of a NULL comparison is no row
        & (deliveries.c.claimed_until > now)
    )
    with engine.begin() as conn:
        # A delivery a worker claims meanwhile is left alone by this UPDATE (its claim
        # changed the row, or waits for this transaction and then finds it replayed),
        # and the count after it sees the claim: one that goes out is never replaced.
        conn.execute(
            update(deliveries)
            .where(deliveries.c.event_id == event_id, deliveries.c.status != REPLAYED, ~claimed)
            .values(status=REPLAYED, updated_at=now)
        )
        busy = conn.execute(
            select(func.count()).where(deliveries.c.event_id == event_id, claimed)
        ).scalar()
        if busy:
            raise StoreConflict(
                f"{event_id}: a delivery is being sent to Kartra right now; try again shortly"
            )
        if plans:
            conn.execute(insert(deliveries), [new_delivery(event_id, p, now) for p in plans])
            notify(conn)
        # Last, as the dispatcher's finish takes its delivery's row and then the event's:
        # the same order, so the two never deadlock. Nothing above is kept if it fails.
        changed = conn.execute(
            update(events)
            .where(events.c.id == event_id, *guard)
            .values(
                status="queued" if plans else status,
                rule=rule,
                reason=reason,
                **awaiting_columns(awaiting),
            )
        )
        if changed.rowcount != 1:
            now_status = conn.execute(
                select(events.c.status).where(events.c.id == event_id)
            ).scalar()
            if now_status is None:
                raise LookupError(event_id)
            raise EventChanged(
                f"{event_id}: changed since it was chosen (now {now_status}), so not replayed"
            )
    return Requeued(event_id, "queued" if plans else status, len(plans))


def retry_dead(
    engine: Engine, *, event_ids: list[str] | None = None, since: datetime | None = None
) -> list[Requeued]:
    """Queue every dead delivery again, carrying on where it stopped: the actions Kartra
    already applied are not sent twice, and the lead id learnt is kept."""
    now = utcnow()
    where = [deliveries.c.status == "dead"]
    if event_ids is not None:
        where.append(deliveries.c.event_id.in_(event_ids))
    if since is not None:
        where.append(deliveries.c.updated_at >= since)
    with engine.begin() as conn:
        found = conn.execute(select(deliveries).where(*where).order_by(deliveries.c.id)).all()
        # Only those still dead as they are marked: a replay meanwhile has replaced some.
        still = set(
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id.in_([d.id for d in found]), deliveries.c.status == "dead")
                .values(status=REPLAYED, updated_at=now)
                .returning(deliveries.c.id)
            ).scalars()
        )
        dead = [d for d in found if d.id in still]
        if not dead:
            return []
        conn.execute(
            insert(deliveries),
            [new_delivery(d.event_id, d.plan, now, done=d.done, lead_id=d.lead_id) for d in dead],
        )
        notify(conn)
        by_event: dict[str, int] = {}
        for d in dead:
            by_event[d.event_id] = by_event.get(d.event_id, 0) + 1
        conn.execute(update(events).where(events.c.id.in_(list(by_event))).values(status="queued"))
    return [Requeued(event_id, "queued", n) for event_id, n in by_event.items()]


def purge_older_than(engine: Engine, cutoff: datetime) -> int:
    """Delete events received before `cutoff`, with their deliveries and Kartra calls.

    An event with a delivery still waiting (a paused account) is kept: purging it
    would drop it silently. Deleted in batches so a large purge never holds a long
    write lock over the ingest path.
    """
    waiting = select(deliveries.c.event_id).where(deliveries.c.status == "pending")
    purged = 0
    while True:
        with engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(events.c.id)
                    .where(events.c.received_at < cutoff, events.c.id.not_in(waiting))
                    .limit(PURGE_BATCH)
                ).scalars()
            )
            if not ids:
                return purged
            delivery_ids = select(deliveries.c.id).where(deliveries.c.event_id.in_(ids))
            conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(delivery_ids)))
            conn.execute(delete(deliveries).where(deliveries.c.event_id.in_(ids)))
            conn.execute(delete(events).where(events.c.id.in_(ids)))
            purged += len(ids)


def redact(
    engine: Engine, *, event_ids: list[str] | None = None, email: str | None = None
) -> list[str]:
    """Erase the personal data of events (by id, or every event about an email): body,
    payload, headers, query, delivery plans and the Kartra calls' requests and answers.
    What stays is that an event came in on a route at a time and what became of it.
    By email, the remembered Kartra lead id and customer ids for that email go too.

    Refused (StoreConflict) while one of them still has a delivery waiting, since its
    plan is still needed; retry or replay it first, or wait until it is dead. Refused
    (UnknownEvents) when an id names no event: a mistyped id must not look erased.

    On SQLite the old pages are overwritten too: `secure_delete` zeroes what a change
    frees, and the write-ahead log, which still holds the pages as they were, is
    checkpointed and emptied afterwards.
    """
    if not event_ids and not email:
        raise ValueError("redact needs event ids or an email")
    now = utcnow()
    with engine.begin() as conn:
        where = [events.c.id.in_(event_ids)] if event_ids else [mentions_email(email)]
        ids = list(conn.execute(select(events.c.id).where(or_(*where))).scalars())
        unknown = sorted(set(event_ids or ()) - set(ids))
        if unknown:
            raise UnknownEvents(f"no such event: {', '.join(unknown)}")
        waiting = conn.execute(
            select(deliveries.c.event_id)
            .where(deliveries.c.event_id.in_(ids), deliveries.c.status == "pending")
            .distinct()
        ).scalars()
        waiting = sorted(waiting)
        if waiting:
            raise StoreConflict(
                f"{', '.join(waiting)}: deliveries still waiting; redact once they are "
                "finished (or dead)"
            )
        if email:
            address = email.strip().lower()
            conn.execute(delete(leads).where(leads.c.email == address))
            conn.execute(delete(identities).where(identities.c.email == address))
        if ids:
            _erase(conn, ids, now)
    empty_write_ahead_log(engine)
    return sorted(ids)


def _erase(conn, ids: list[str], now) -> None:
    """Personal data out of the events `ids`, their deliveries' plans and their calls."""
    conn.execute(
        update(events)
        .where(events.c.id.in_(ids))
        .values(
            body=b"",
            payload=None,
            headers={},
            query={},
            reason=REDACTED_REASON,
            **awaiting_columns(None),
        )
    )
    delivery_rows = conn.execute(
        select(deliveries.c.id, deliveries.c.account, deliveries.c.rule).where(
            deliveries.c.event_id.in_(ids)
        )
    ).all()
    for d in delivery_rows:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.id == d.id)
            .values(
                plan={"account": d.account, "rule": d.rule, "redacted": True},
                lead_key=None,
                last_error=None,
                updated_at=now,
            )
        )
    conn.execute(
        update(attempts)
        .where(attempts.c.delivery_id.in_([d.id for d in delivery_rows]))
        .values(request={"redacted": True}, response=None, error=None)
    )
