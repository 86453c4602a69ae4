"""Storing incoming events and their delivery plans, in one transaction."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from relay.store.identities import remember
from relay.store.tables import deliveries, events, utcnow
from relay.store.wakeup import notify


def new_event_id() -> str:
    """Time-ordered and unguessable: `ev_` + milliseconds in hex + 64 random bits."""
    return f"ev_{int(time.time() * 1000):011x}{secrets.token_hex(8)}"


def lead_key(plan: dict[str, Any]) -> str | None:
    """What orders deliveries: the same Kartra lead of the same account goes out in order."""
    lead = plan.get("lead") or {}
    if lead.get("email"):
        return "email:" + str(lead["email"]).strip().lower()
    if lead.get("id"):
        return f"id:{lead['id']}"
    return None


def new_delivery(
    event_id: str,
    plan: dict[str, Any],
    now: datetime,
    *,
    done: list[int] | None = None,
    lead_id: str | None = None,
) -> dict[str, Any]:
    """A `deliveries` row for `plan`, due now; a retried delivery carries over what
    Kartra already applied (`done`) and the lead id it learned."""
    return {
        "event_id": event_id,
        "account": plan["account"],
        "lead_key": lead_key(plan),
        "rule": plan.get("rule"),
        "plan": plan,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "done": done or [],
        "lead_id": lead_id,
        "created_at": now,
        "updated_at": now,
    }


@dataclass(frozen=True)
class NewEvent:
    route: str
    dedupe_key: str
    content_type: str | None
    headers: dict[str, str]
    query: dict[str, Any]
    body: bytes
    payload: Any
    status: str
    rule: str | None
    reason: str | None
    plans: list[dict[str, Any]]
    identity: tuple[str, str, str] | None = None
    """(account, customer_id, email) to remember with the event, if its rule says so."""


@dataclass(frozen=True)
class Stored:
    event_id: str
    created: bool
    status: str


def store_event(engine: Engine, new: NewEvent) -> Stored:
    """Commit the event and its deliveries together, or find the event it duplicates.

    Nothing is answered to the sender before this returns: once it has, the event is
    durable and the dispatcher will see its deliveries.
    """
    event_id = new_event_id()
    now = utcnow()
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(events).values(
                    id=event_id,
                    route=new.route,
                    received_at=now,
                    dedupe_key=new.dedupe_key,
                    content_type=new.content_type,
                    headers=new.headers,
                    query=new.query,
                    body=new.body,
                    payload=new.payload,
                    status=new.status,
                    rule=new.rule,
                    reason=new.reason,
                )
            )
            if new.plans:
                conn.execute(
                    insert(deliveries), [new_delivery(event_id, plan, now) for plan in new.plans]
                )
                notify(conn)
            if new.identity is not None:
                remember(conn, new.route, *new.identity)
    except IntegrityError:
        original = find_duplicate(engine, new.route, new.dedupe_key)
        if original is None:
            raise
        return original
    return Stored(event_id, True, new.status)


def find_duplicate(engine: Engine, route: str, dedupe_key: str) -> Stored | None:
    with engine.connect() as conn:
        row = conn.execute(
            select(events.c.id, events.c.status).where(
                events.c.route == route, events.c.dedupe_key == dedupe_key
            )
        ).first()
    return Stored(row.id, False, row.status) if row else None
