"""The delivery queue: claim due deliveries, record what happened, release claims.

A claim is a lease: `claimed_until` in the future means a worker owns the delivery;
a worker that dies simply lets the lease run out and another one picks it up. A
delivery is claimable only when no earlier delivery for the same account and lead
is still unfinished, so a refund never overtakes its purchase.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Engine,
    Integer,
    String,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    union_all,
    update,
)

from relay.store.db import upsert
from relay.store.disconnects import retried_on_disconnect
from relay.store.tables import accounts, attempts, deliveries, events, leads, utcnow, workers

UNFINISHED = ("pending",)
FINAL_DELIVERY_STATUSES = ("delivered", "failed", "dead", "dry_run")


@dataclass(frozen=True)
class Claimed:
    id: int
    event_id: str
    account: str
    rule: str | None
    plan: dict[str, Any]
    attempts: int
    done: list[int]
    lead_id: str | None
    reclaimed: bool = False
    """Its previous claimer's lease ran out: that worker may have sent it already."""
    sending: bool = False
    """Its previous claimer had marked it (`mark_sending`) before a call that must not
    repeat: with `reclaimed`, that call may have gone out."""
    known_lead_id: str | None = None
    """The Kartra lead id remembered for its lead's email, when it has none of its own."""


@dataclass(frozen=True)
class AttemptRecord:
    started_at: datetime
    duration_ms: float
    request: dict[str, Any]
    http_status: int | None
    response: Any
    outcome: str
    error: str | None = None
    ambiguous: bool = False


_earlier = deliveries.alias()  # Core's alias: sqlalchemy.orm costs the worker 6 MB
_now = bindparam("now", type_=deliveries.c.next_attempt_at.type)
_due = (
    select(deliveries.c.id)
    .where(
        deliveries.c.status == "pending",
        deliveries.c.next_attempt_at <= _now,
        or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until < _now),
        ~deliveries.c.account.in_(select(accounts.c.name).where(accounts.c.paused)),
        ~exists().where(
            _earlier.c.account == deliveries.c.account,
            _earlier.c.lead_key == deliveries.c.lead_key,
            _earlier.c.id < deliveries.c.id,
            _earlier.c.status.in_(UNFINISHED),
        ),
    )
    .order_by(deliveries.c.id)
    .limit(bindparam("limit", type_=Integer))
    .with_for_update(skip_locked=True)
)
# The Kartra lead id remembered for a claimed delivery's lead: its lead_key is "email:" +
# the email as `leads` stores it (trimmed, lower case). SQLite's RETURNING clause is
# rendered without table names, where `account` would name the leads column on both
# sides: the claimed row's columns are spelled out.
_claimed = {name: literal_column(f"deliveries.{name}") for name in ("account", "lead_key")}
_remembered_lead_id = (
    select(leads.c.kartra_id)
    .where(
        _claimed["lead_key"].startswith("email:"),
        leads.c.account == _claimed["account"],
        leads.c.email == func.substr(_claimed["lead_key"], 7),
    )
    .scalar_subquery()
)
# Built once: building it took most of a claim's CPU time (one claim per finished call).
_CLAIM = (
    update(deliveries)
    .where(deliveries.c.id.in_(_due.scalar_subquery()))
    .values(
        reclaimed=deliveries.c.claimed_by.is_not(None),
        claimed_by=bindparam("worker"),
        claimed_until=bindparam("until", type_=deliveries.c.claimed_until.type),
        updated_at=_now,
    )
    .returning(
        deliveries.c.id,
        deliveries.c.event_id,
        deliveries.c.account,
        deliveries.c.rule,
        deliveries.c.plan,
        deliveries.c.attempts,
        deliveries.c.done,
        deliveries.c.lead_id,
        deliveries.c.reclaimed,
        deliveries.c.sending,
        _remembered_lead_id,
    )
)


@retried_on_disconnect
def claim(
    engine: Engine, worker: str, *, limit: int, lease: timedelta, now: datetime | None = None
) -> list[Claimed]:
    """Take up to `limit` due deliveries for `worker`, oldest first, one per lead.

    A finished or released claim names no claimer; one that still does when taken
    again outlived its lease (a crashed or lost worker) and comes back `reclaimed`.
    SET expressions read the row as it was, so `reclaimed` sees the old claimer.

    One statement, so it runs as its own transaction (autocommit): an explicit one
    would cost two more round trips, BEGIN and COMMIT, on every claim. Run again after
    a lost connection, it claims other deliveries; any the lost run claimed wait for
    their lease to run out, as they would without the second run."""
    now = now or utcnow()
    values = {"now": now, "until": now + lease, "worker": worker, "limit": limit}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        rows = conn.execute(_CLAIM, values).all()
    return sorted(
        (Claimed(*row[:-1], known_lead_id=None if row.lead_id else row[-1]) for row in rows),
        key=lambda c: c.id,
    )


@retried_on_disconnect
def refresh_statistics(engine: Engine) -> None:
    """Have PostgreSQL's planner statistics for `deliveries` describe the table as it is.

    A burst queued into a table last analyzed while (nearly) empty is planned as if it
    were still empty: each claim then sorts every pending delivery (30-150 ms at
    10,000) until autovacuum's ANALYZE, up to a minute later; after it a claim takes
    0.07 ms. ANALYZE samples at most 30,000 rows, so it stays cheap at any size."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        conn.execute(text("ANALYZE deliveries"))


_FINISH = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery_id"))
    .values(
        status=bindparam("new_status"),
        attempts=bindparam("new_attempts"),
        done=bindparam("new_done", type_=deliveries.c.done.type),
        lead_id=bindparam("new_lead_id"),
        last_error=bindparam("new_error"),
        next_attempt_at=bindparam("new_next_attempt_at", type_=deliveries.c.next_attempt_at.type),
        claimed_by=None,
        claimed_until=None,
        sending=False,
        updated_at=_now,
    )
)


@retried_on_disconnect
def mark_sending(engine: Engine, delivery_id: int) -> None:
    """Say, committed, that a call which must not repeat is about to go out for this
    delivery: if the worker dies before recording it, the next claim knows the call
    may have been applied (`Claimed.sending`). Setting it twice changes nothing."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(_MARK_SENDING, {"delivery_id": delivery_id})


_MARK_SENDING = (
    update(deliveries).where(deliveries.c.id == bindparam("delivery_id")).values(sending=True)
)


def finish(
    engine: Engine,
    delivery: Claimed,
    *,
    status: str,
    records: list[AttemptRecord],
    done: list[int],
    lead_id: str | None,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
    count_attempt: bool = True,
    remember_email: str | None = None,
) -> None:
    """Record the calls made for a claimed delivery and its new state, then roll the
    event's status up, all in one transaction; with `remember_email`, the transaction
    also remembers `lead_id` as that email's Kartra lead id (or forgets it, when None).

    On PostgreSQL it is one statement in autocommit (`_finish_statement`), so it may be
    run again when its connection died without an answer: done already, it does nothing."""
    now = utcnow()
    number = delivery.attempts + 1 if count_attempt else delivery.attempts
    values = {
        "delivery_id": delivery.id,
        "of_event": delivery.event_id,
        "new_status": status,
        "new_attempts": number,
        "new_done": done,
        "new_lead_id": lead_id,
        "new_error": error,
        "new_next_attempt_at": next_attempt_at or now,
        "now": now,
    }
    rows = [
        {
            "delivery_id": delivery.id,
            "number": number,
            "started_at": r.started_at,
            "duration_ms": r.duration_ms,
            "request": r.request,
            "http_status": r.http_status,
            "response": r.response,
            "outcome": r.outcome,
            "error": r.error,
            "ambiguous": r.ambiguous,
        }
        for r in records
    ]
    if engine.dialect.name == "postgresql":
        lead = None
        if remember_email:
            lead = {
                "account": delivery.account,
                "email": remember_email.strip().lower(),
                "kartra_id": str(lead_id) if lead_id else None,
            }
        _finish_in_one_statement(engine, values, rows, lead)
        return
    with engine.begin() as conn:
        conn.execute(_FINISH, values)
        if rows:
            conn.execute(insert(attempts), rows)
        if remember_email:
            _remember_lead(conn, delivery.account, remember_email, lead_id)
        conn.execute(_ROLL_UP, values)


@retried_on_disconnect
def _finish_in_one_statement(
    engine: Engine, values: dict, rows: list[dict], lead: dict | None
) -> None:
    learned = None if lead is None else "remember" if lead["kartra_id"] else "forget"
    params = {
        **values,
        **{f"{key}_{i}": value for i, row in enumerate(rows) for key, value in row.items()},
        **{f"lead_{key}": value for key, value in (lead or {}).items()},
    }
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(_finish_statement(len(rows), learned), params)


# From the least finished to the most: an event's status is the least finished of its
# deliveries' statuses (pending shows as `queued`).
_ROLL_UP_ORDER = {
    "pending": "queued",
    "dead": "dead",
    "failed": "failed",
    "dry_run": "dry_run",
    "delivered": "delivered",
}
_least_finished = (
    select(
        func.min(
            case(
                {status: rank for rank, status in enumerate(_ROLL_UP_ORDER)},
                value=deliveries.c.status,
            )
        )
    )
    .where(deliveries.c.event_id == bindparam("of_event"))
    .scalar_subquery()
)
# SQLite's roll-up: a transaction there writes alone, so it reads every finish
# committed before it. PostgreSQL's is `relay_roll_up`, below.
_ROLL_UP = (
    update(events)
    .where(events.c.id == bindparam("of_event"))
    .values(
        status=case(
            {rank: shown for rank, shown in enumerate(_ROLL_UP_ORDER.values())},
            value=_least_finished,
            else_=events.c.status,
        )
    )
)


def _rolled_up():
    """Deliveries of one event finishing at the same moment: on PostgreSQL each roll-up
    would read the others' deliveries as they were before either committed, and the
    last to write would leave the event `queued` for good. `relay_roll_up` (migration
    0005) takes the event's row first, so the second waits for the first to commit,
    then reads the deliveries afresh (each query of a volatile function takes a new
    snapshot): its roll-up sees both. The lock order is unchanged: the delivery first,
    the event last."""
    from sqlalchemy.dialects.postgresql import ARRAY  # a process on SQLite never loads it

    statuses = ARRAY(String)
    return func.relay_roll_up(
        bindparam("of_event"),
        bindparam("delivery_id"),
        bindparam("new_status"),
        bindparam("ranked", list(_ROLL_UP_ORDER), type_=statuses),
        bindparam("shown", list(_ROLL_UP_ORDER.values()), type_=statuses),
    )


@functools.cache
def _finish_statement(records: int, learned: str | None):
    """`finish` on PostgreSQL: the delivery's UPDATE, the attempts' INSERT, the lead's
    upsert (`learned="remember"`) or DELETE (`"forget"`) and the event's roll-up as
    data-modifying CTEs of one statement: one round trip, and all or nothing.

    The parts read the snapshot from before the statement; `relay_roll_up` takes this
    delivery's status from the new values rather than from its row. Every part also
    depends on the delivery's UPDATE, which skips a row whose `updated_at` is already
    this finish's `now`: run again after it was applied (an answer lost with the
    connection), the statement changes nothing. Applied and claimed again in between
    cannot happen: a finish leaves a delivery claimable only in the future (a retry's
    backoff) or in a paused account. Built once per shape, on PostgreSQL only: a
    process on SQLite never loads the PostgreSQL dialect."""
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert

    finished = (
        _FINISH.where(deliveries.c.updated_at != _now)
        .returning(deliveries.c.id, deliveries.c.event_id)
        .cte("finished")
    )
    parts = []
    if records:
        columns = [c.name for c in attempts.c if c.name != "id"]
        rows = union_all(
            *(
                select(
                    *(
                        finished.c.id
                        if name == "delivery_id"
                        else bindparam(f"{name}_{i}", type_=attempts.c[name].type)
                        for name in columns
                    )
                )
                for i in range(records)
            )
        )
        parts.append(
            insert(attempts).from_select(columns, rows).returning(attempts.c.id).cte("recorded")
        )
    if learned:
        lead = (
            leads.c.account == bindparam("lead_account"),
            leads.c.email == bindparam("lead_email"),
        )
        if learned == "forget":
            change = delete(leads).where(*lead, exists(select(finished.c.id)))
        else:
            upsert_lead = postgresql_insert(leads).from_select(
                ["account", "email", "kartra_id", "updated_at"],
                select(
                    bindparam("lead_account"),
                    bindparam("lead_email"),
                    bindparam("lead_kartra_id"),
                    _now,
                ).where(exists(select(finished.c.id))),
            )
            change = upsert_lead.on_conflict_do_update(
                index_elements=["account", "email"],
                set_={"kartra_id": upsert_lead.excluded.kartra_id, "updated_at": _now},
            )
        parts.append(change.returning(literal_column("1")).cte("remembered"))
    return select(_rolled_up()).select_from(finished).add_cte(*parts)


@retried_on_disconnect
def release(engine: Engine, worker: str) -> int:
    """Give back every claim `worker` holds (on shutdown), so others need not wait for
    the lease to run out. Once given back, there is nothing to give back again."""
    with engine.begin() as conn:
        return conn.execute(
            update(deliveries)
            .where(deliveries.c.claimed_by == worker, deliveries.c.status == "pending")
            .values(claimed_by=None, claimed_until=None)
        ).rowcount


def expire_claims(engine: Engine) -> int:
    """End every lease at once, keeping the claimer's name so the next claim knows the
    delivery is `reclaimed`. Only for SQLite, where one dispatcher serves a database and
    any claim found at its start was left by a process that died."""
    with engine.begin() as conn:
        return conn.execute(
            update(deliveries)
            .where(deliveries.c.status == "pending", deliveries.c.claimed_by.is_not(None))
            .values(claimed_until=None)
        ).rowcount


@retried_on_disconnect
def last_call_ambiguous(engine: Engine, delivery_id: int) -> bool:
    """Whether an earlier call for this delivery may have been applied without an answer:
    then every later call may repeat it."""
    with engine.connect() as conn:
        return conn.execute(
            select(
                exists().where(
                    attempts.c.delivery_id == delivery_id, attempts.c.outcome == "ambiguous"
                )
            )
        ).scalar()


def remember_lead(engine: Engine, account: str, email: str, kartra_id: str | None) -> None:
    """Remember (or forget, with `kartra_id=None`) the Kartra lead id of an email."""
    with engine.begin() as conn:
        _remember_lead(conn, account, email, kartra_id)


def _remember_lead(conn, account: str, email: str, kartra_id: str | None) -> None:
    email = email.strip().lower()
    if kartra_id:
        upsert(
            conn,
            leads,
            {
                "account": account,
                "email": email,
                "kartra_id": str(kartra_id),
                "updated_at": utcnow(),
            },
        )
    else:
        conn.execute(leads.delete().where(leads.c.account == account, leads.c.email == email))


@retried_on_disconnect
def pause_account(engine: Engine, name: str, reason: str) -> None:
    _set_paused(engine, name, True, reason)


def resume_account(engine: Engine, name: str) -> bool:
    """Resume a paused account; False when it was not paused."""
    with engine.connect() as conn:
        paused = conn.execute(select(accounts.c.paused).where(accounts.c.name == name)).scalar()
    if not paused:
        return False
    _set_paused(engine, name, False, None)
    return True


def _set_paused(engine: Engine, name: str, paused: bool, reason: str | None) -> None:
    with engine.begin() as conn:
        upsert(
            conn,
            accounts,
            {"name": name, "paused": paused, "reason": reason, "changed_at": utcnow()},
        )


@retried_on_disconnect
def beat(
    engine: Engine, worker: str, started_at: datetime, lease: timedelta, holding: list[int]
) -> None:
    """Say this dispatcher is alive (readiness checks read `workers.seen_at`) and extend
    the leases of the deliveries it is working on (`holding`): a claim outlives a slow
    Kartra call as long as its worker lives, and lapses soon after the worker dies, or
    after the worker lost track of it (a crash while recording). Both may be done
    twice."""
    now = utcnow()
    with engine.begin() as conn:
        upsert(conn, workers, {"name": worker, "started_at": started_at, "seen_at": now})
        if holding:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(holding), deliveries.c.claimed_by == worker)
                .values(claimed_until=now + lease)
            )


@retried_on_disconnect
def forget_worker(engine: Engine, worker: str) -> None:
    with engine.begin() as conn:
        conn.execute(workers.delete().where(workers.c.name == worker))


def account_states(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every account that has deliveries or a pause record, with its queue counts."""
    with engine.connect() as conn:
        counts = conn.execute(
            select(deliveries.c.account, deliveries.c.status, func.count()).group_by(
                deliveries.c.account, deliveries.c.status
            )
        ).all()
        pauses = conn.execute(select(accounts)).all()
    states: dict[str, dict[str, Any]] = {}
    for account, status, count in counts:
        states.setdefault(account, {"paused": False, "reason": None, "counts": {}})
        states[account]["counts"][status] = count
    for row in pauses:
        state = states.setdefault(row.name, {"paused": False, "reason": None, "counts": {}})
        state.update(paused=row.paused, reason=row.reason)
    return states
