"""Reading the record: find events, open one with all it led to, count by status.

Everything the admin API, the dashboard and the CLI show comes from here, so the three
always agree. Pages are cut by cursor (the last event id seen): event ids are
time-ordered, so "older than the cursor" is stable while new events keep arriving,
unlike an offset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Text, cast, func, or_, select

from relay.store.db import snapshot
from relay.store.tables import attempts, deliveries, events

# Header and query parameter names that may carry a credential or a signature: stored
# and shown as `***`.
SECRET_WORDS = ("auth", "cookie", "secret", "sig", "hmac", "token", "key", "password")
REDACTED = "***"


@dataclass(frozen=True)
class EventFilter:
    """What to look for; every field left empty matches everything."""

    route: str | None = None
    status: str | None = None
    email: str | None = None
    text: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> list:
        clauses = []
        if self.route:
            clauses.append(events.c.route == self.route)
        if self.status:
            clauses.append(events.c.status == self.status)
        if self.since:
            clauses.append(events.c.received_at >= self.since)
        if self.until:
            clauses.append(events.c.received_at < self.until)
        if self.email:
            clauses.append(mentions_email(self.email))
        if self.text:
            stored = _escape_like(_as_stored(self.text))
            clauses.append(_payload_text().ilike(f"%{stored}%", escape="\\"))
        return clauses


def _payload_text():
    return cast(events.c.payload, Text)


def _as_stored(text: str) -> str:
    """`text` as the payload's stored JSON spells it: the column's serializer (json.dumps)
    writes é as \\u00e9, a quote as \\", a backslash doubled."""
    return json.dumps(text)[1:-1]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def mentions_email(email: str):
    """An event is about an email when one of its deliveries is for that lead, or when
    a value of its payload is that address (a rejected event has no delivery). The
    address must be a whole JSON string, so `jane@` never finds `mary.jane@`."""
    email = email.strip().lower()
    for_lead = select(deliveries.c.event_id).where(deliveries.c.lead_key == "email:" + email)
    return or_(
        events.c.id.in_(for_lead),
        _payload_text().ilike(f'%"{_escape_like(_as_stored(email))}"%', escape="\\"),
    )


@dataclass(frozen=True)
class EventSummary:
    id: str
    route: str
    received_at: datetime
    status: str
    rule: str | None
    reason: str | None
    email: str | None


@dataclass(frozen=True)
class Page:
    events: list[EventSummary]
    next_cursor: str | None


def search_events(
    engine: Engine, where: EventFilter, *, cursor: str | None = None, limit: int = 50
) -> Page:
    """Newest first; `next_cursor` is None on the last page."""
    query = select(
        events.c.id,
        events.c.route,
        events.c.received_at,
        events.c.status,
        events.c.rule,
        events.c.reason,
    ).where(*where.where())
    if cursor:
        query = query.where(events.c.id < cursor)
    query = query.order_by(events.c.id.desc()).limit(limit + 1)
    with snapshot(engine) as conn:
        rows = conn.execute(query).all()
        emails = _emails(conn, [r.id for r in rows[:limit]])
    found = [EventSummary(*row, email=emails.get(row.id)) for row in rows[:limit]]
    return Page(found, found[-1].id if len(rows) > limit else None)


def event_ids(engine: Engine, where: EventFilter, *, limit: int = 1000) -> tuple[list[str], int]:
    """The ids of the `limit` oldest matching events, oldest first (the order a replay
    should take), and how many more match: a caller says so, and the next run (once
    these are replayed and match no more) takes the next ones."""
    query = select(events.c.id).where(*where.where()).order_by(events.c.id).limit(limit)
    with engine.connect() as conn:
        ids = list(conn.execute(query).scalars())
        if len(ids) < limit:
            return ids, 0
        total = conn.execute(
            select(func.count()).select_from(events).where(*where.where())
        ).scalar()
    return ids, total - len(ids)


def _emails(conn, ids: list[str]) -> dict[str, str]:
    """The lead email of each event, from its first delivery."""
    if not ids:
        return {}
    rows = conn.execute(
        select(deliveries.c.event_id, deliveries.c.lead_key)
        .where(deliveries.c.event_id.in_(ids), deliveries.c.lead_key.like("email:%"))
        .order_by(deliveries.c.id)
    ).all()
    found: dict[str, str] = {}
    for event_id, key in rows:
        found.setdefault(event_id, key.removeprefix("email:"))
    return found


@dataclass(frozen=True)
class AttemptView:
    id: int
    number: int
    started_at: datetime
    duration_ms: float
    request: Any
    http_status: int | None
    response: Any
    outcome: str
    error: str | None
    ambiguous: bool
    """It may repeat an earlier call that was applied without an answer."""


@dataclass(frozen=True)
class DeliveryView:
    id: int
    account: str
    rule: str | None
    status: str
    attempts: int
    next_attempt_at: datetime
    lead_id: str | None
    last_error: str | None
    plan: dict[str, Any]
    done: list[int]
    created_at: datetime
    calls: list[AttemptView] = field(default_factory=list)


@dataclass(frozen=True)
class EventView:
    id: str
    route: str
    received_at: datetime
    status: str
    rule: str | None
    reason: str | None
    content_type: str | None
    headers: dict[str, str]
    query: dict[str, Any]
    payload: Any
    deliveries: list[DeliveryView]
    awaiting_customer: str | None = None
    """The customer id whose lead identity this rejected event waits for."""


def get_event(engine: Engine, event_id: str) -> EventView | None:
    """One event with every delivery it led to and every Kartra call made for them.

    Kartra requests were masked when recorded; header values that may be credentials
    or signatures are masked here, since the sender chose what to put in them.
    """
    with snapshot(engine) as conn:
        row = conn.execute(select(events).where(events.c.id == event_id)).first()
        if row is None:
            return None
        delivery_rows = conn.execute(
            select(deliveries).where(deliveries.c.event_id == event_id).order_by(deliveries.c.id)
        ).all()
        attempt_rows = conn.execute(
            select(attempts)
            .where(attempts.c.delivery_id.in_([d.id for d in delivery_rows]))
            .order_by(attempts.c.id)
        ).all()
    calls: dict[int, list[AttemptView]] = {}
    for a in attempt_rows:
        calls.setdefault(a.delivery_id, []).append(
            AttemptView(
                a.id,
                a.number,
                a.started_at,
                a.duration_ms,
                a.request,
                a.http_status,
                a.response,
                a.outcome,
                a.error,
                a.ambiguous,
            )
        )
    return EventView(
        id=row.id,
        route=row.route,
        received_at=row.received_at,
        status=row.status,
        rule=row.rule,
        reason=row.reason,
        content_type=row.content_type,
        headers=mask_credentials(row.headers or {}),
        query=mask_credentials(row.query or {}),  # events stored before ingest masked them
        payload=row.payload,
        deliveries=[
            DeliveryView(
                id=d.id,
                account=d.account,
                rule=d.rule,
                status=d.status,
                attempts=d.attempts,
                next_attempt_at=d.next_attempt_at,
                lead_id=d.lead_id,
                last_error=d.last_error,
                plan=d.plan,
                done=d.done,
                created_at=d.created_at,
                calls=calls.get(d.id, []),
            )
            for d in delivery_rows
        ],
        awaiting_customer=row.awaiting_customer,
    )


def mask_credentials(fields: dict[str, Any]) -> dict[str, Any]:
    """Headers or query parameters with the value of every name in SECRET_WORDS masked."""
    return {
        name: REDACTED if any(word in name.lower() for word in SECRET_WORDS) else value
        for name, value in fields.items()
    }


@dataclass(frozen=True)
class Counts:
    events: dict[str, int]
    deliveries: dict[str, int]
    routes: dict[str, dict[str, int]]


def counts(engine: Engine, *, since: datetime | None = None) -> Counts:
    """Events per status and per route and status, deliveries per status."""
    event_where = [events.c.received_at >= since] if since else []
    delivery_where = [deliveries.c.created_at >= since] if since else []
    with snapshot(engine) as conn:
        by_route = conn.execute(
            select(events.c.route, events.c.status, func.count())
            .where(*event_where)
            .group_by(events.c.route, events.c.status)
        ).all()
        by_delivery = conn.execute(
            select(deliveries.c.status, func.count())
            .where(*delivery_where)
            .group_by(deliveries.c.status)
        ).all()
    totals: dict[str, int] = {}
    routes: dict[str, dict[str, int]] = {}
    for route, status, count in by_route:
        totals[status] = totals.get(status, 0) + count
        routes.setdefault(route, {})[status] = count
    return Counts(totals, dict(by_delivery), routes)
