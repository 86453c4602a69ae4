"""Which lead email a sender's customer id stands for, per route and account.

Learned from events whose rule says `remember`, or set by the operator; read by the
`lead_email` filter for events that name only the customer id (cancellations, refunds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from relay.store.db import insert_rows
from relay.store.tables import events, identities, utcnow


@dataclass(frozen=True)
class Identity:
    route: str
    account: str
    customer_id: str
    email: str
    updated_at: datetime


_CUSTOMER_ID_LENGTH = identities.c.customer_id.type.length
_EMAIL_LENGTH = identities.c.email.type.length


def fits(customer_id: str, email: str) -> bool:
    """Whether the pair fits its columns: no sender's customer id is longer, and an
    event must not fail to be stored because of what it would teach."""
    return learnable(customer_id) and 0 < len(email) <= _EMAIL_LENGTH


def learnable(customer_id: str) -> bool:
    """Whether an identity for this customer id could ever be kept."""
    return 0 < len(customer_id) <= _CUSTOMER_ID_LENGTH


def remember(
    conn: Connection | Engine, route: str, account: str, customer_id: str, email: str
) -> None:
    """Keep (or replace) the email for this customer id; a connection joins its caller's
    transaction, so an event and what it taught are committed together. A pair that
    does not `fit` is not kept."""
    pair = [(route, account, customer_id, email)]
    if isinstance(conn, Engine):
        with conn.begin() as own:
            remember_all(own, pair)
    else:
        remember_all(conn, pair)


def remember_all(conn: Connection, taught: Iterable[tuple[str, str, str, str]]) -> None:
    """`remember` each (route, account, customer_id, email) in one statement: a group of
    events teaches in one round trip. Of two pairs for one customer the later wins, as
    if remembered one after the other; pairs that do not `fit` are not kept."""
    now = utcnow()
    latest = {
        (route, account, customer_id): {
            "route": route,
            "account": account,
            "customer_id": customer_id,
            "email": email,
            "updated_at": now,
        }
        for route, account, customer_id, email in taught
        if fits(customer_id, email)
    }
    if latest:
        insert_rows(conn, identities, list(latest.values()), _REPLACE_EMAIL)


_REPLACE_EMAIL = (
    "ON CONFLICT (route, account, customer_id) "
    "DO UPDATE SET email = excluded.email, updated_at = excluded.updated_at"
)


def find(engine: Engine, route: str, account: str, customer_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(identities.c.email).where(
                identities.c.route == route,
                identities.c.account == account,
                identities.c.customer_id == customer_id,
            )
        ).scalar()


@dataclass(frozen=True)
class Awaiting:
    event_id: str
    route: str
    account: str | None
    """None for an event rejected before migration 0007 (see `unsettled`)."""
    customer_id: str


_WAITING = (
    events.c.id,
    events.c.route,
    events.c.awaiting_account,
    events.c.awaiting_customer,
    events.c.received_at,  # for the order only
)


def ready(engine: Engine, learned_since: datetime | None = None) -> list[Awaiting]:
    """Rejected events waiting for a lead identity their route has learned (since
    `learned_since`, if given), oldest first: the order they came in is the order they
    go out.

    With `learned_since` the look starts from the few identities learned since (an
    index on `updated_at`), not from every waiting event: 10,000 events waiting for ids
    never learned made PostgreSQL hash the whole identities table each time (200 ms at
    500,000). Sorted here, not in SQL: asked to sort, SQLite walks every event by
    `received_at` (40 ms at 200,000 events) instead of the partial index of the waiting
    ones (0.2 ms).
    """
    query = (
        select(*_WAITING)
        .join(
            identities,
            (identities.c.route == events.c.route)
            & (identities.c.account == events.c.awaiting_account)
            & (identities.c.customer_id == events.c.awaiting_customer),
        )
        .where(events.c.awaiting_customer.is_not(None))
    )
    if learned_since is not None:
        query = query.where(identities.c.updated_at >= learned_since)
    return _in_order(engine, query)


def unsettled(engine: Engine) -> list[Awaiting]:
    """Events waiting for a customer of an account not known yet: those rejected before
    migration 0007, whose account only the mapping can tell. Rendering one again once
    settles it (it waits for its account's identity from then on, or goes out)."""
    query = select(*_WAITING).where(
        events.c.awaiting_customer.is_not(None), events.c.awaiting_account.is_(None)
    )
    return _in_order(engine, query)


def _in_order(engine: Engine, query) -> list[Awaiting]:
    with engine.connect() as conn:
        rows = sorted(conn.execute(query), key=lambda row: (row.received_at, row.id))
    return [Awaiting(*row[:4]) for row in rows]


def all_identities(engine: Engine, route: str | None = None) -> list[Identity]:
    query = select(identities).order_by(
        identities.c.route, identities.c.account, identities.c.customer_id
    )
    if route is not None:
        query = query.where(identities.c.route == route)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [Identity(**row._mapping) for row in rows]
