"""Storing incoming events and their delivery plans, in one transaction.

Group commit: the request threads of a process that store at the same moment share one
transaction. The first to arrive while no commit is running leads: it commits every
event queued so far, its own included, and wakes the others; those that arrived during
that commit form the next group. A lone event commits at once, alone; under load one
commit (one fsync on PostgreSQL, one write lock on SQLite) serves many events. Each
caller still returns only after its event and its deliveries are committed.
A group that fails for anything but the database being unavailable is stored again one
event per transaction, so one bad event never costs the others theirs.
"""

from __future__ import annotations

import secrets
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import OperationalError

from relay.store.db import insert_rows, write_transaction
from relay.store.identities import learnable, remember_all
from relay.store.tables import deliveries, events, utcnow
from relay.store.wakeup import notify


def new_event_ids(count: int) -> list[str]:
    """`count` event ids, time-ordered and unguessable: `ev_` + milliseconds in hex + 64
    random bits each, the random bits read at once (each read of the system's random
    source is a system call, in which the GIL changes hands)."""
    millis = f"ev_{int(time.time() * 1000):011x}"
    bits = secrets.token_hex(8 * count)
    return [millis + bits[16 * i : 16 * (i + 1)] for i in range(count)]


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
    awaiting: tuple[str, str] | None = None
    """(account, customer_id) whose lead identity the rejected event waits for."""


@dataclass(frozen=True)
class Stored:
    event_id: str
    created: bool
    status: str


MAX_GROUP = 64
"""Events in one transaction at most: bounds one commit's time and its statement size."""


def store_event(engine: Engine, new: NewEvent) -> Stored:
    """Commit the event and its deliveries together, or find the event it duplicates.

    Nothing is answered to the sender before this returns: once it has, the event is
    durable and the dispatcher will see its deliveries.
    """
    return _group(engine).store(new)


class _Pending:
    __slots__ = ("new", "stored", "error", "done", "wake")

    def __init__(self, new: NewEvent):
        self.new = new
        self.stored: Stored | None = None
        self.error: BaseException | None = None
        self.done = False
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit:
    """One per engine: the queue of events waiting for a commit, and who is committing.

    A waiting caller sleeps on its own lock, released when its event is settled or when
    the leader hands it the lead (its event is first in the queue the leader leaves),
    so a commit wakes only the callers it concerns.
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._committing = False

    def store(self, new: NewEvent) -> Stored:
        mine = _Pending(new)
        with self._lock:
            self._queue.append(mine)
            leading = not self._committing
            self._committing = True
        if not leading:
            mine.wake.acquire()
        while not mine.done:
            with self._lock:
                group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            try:
                self._commit(group)
            finally:
                self._fail([p for p in group if not p.done], RuntimeError("interrupted"))
                for pending in group:
                    if pending is not mine:
                        pending.wake.release()
                with self._lock:
                    if not self._queue:
                        self._committing = False
                    elif mine.done:
                        self._queue[0].wake.release()
        if mine.error is not None:
            raise mine.error
        return mine.stored

    def _commit(self, group: list[_Pending]) -> None:
        try:
            self._settle(group, store_events(self.engine, [p.new for p in group]))
        except OperationalError as exc:
            self._fail(group, exc)
        except Exception as exc:
            if len(group) == 1:
                self._fail(group, exc)
                return
            for pending in group:
                try:
                    self._settle([pending], store_events(self.engine, [pending.new]))
                except Exception as alone:
                    self._fail([pending], alone)

    @staticmethod
    def _settle(group: list[_Pending], stored: list[Stored]) -> None:
        for pending, result in zip(group, stored, strict=True):
            pending.stored, pending.done = result, True

    @staticmethod
    def _fail(group: list[_Pending], error: BaseException) -> None:
        for pending in group:
            pending.error, pending.done = error, True


_groups: weakref.WeakKeyDictionary[Engine, GroupCommit] = weakref.WeakKeyDictionary()
_groups_lock = threading.Lock()


def _group(engine: Engine) -> GroupCommit:
    with _groups_lock:
        group = _groups.get(engine)
        if group is None:
            group = _groups[engine] = GroupCommit(engine)
        return group


def store_events(engine: Engine, news: list[NewEvent]) -> list[Stored]:
    """Store `news` in one transaction; one `Stored` each, in order. An event whose
    (route, dedupe key) is already stored, or earlier in `news`, is not stored again:
    its `Stored` names the original.

    Three statements whatever the group's size: the events (a duplicate is skipped, on
    PostgreSQL after the transaction inserting it ends, instead of failing the group),
    their deliveries, and what they taught. Which events were stored is known from the
    count of rows inserted, without RETURNING (on SQLite one step of the statement,
    not one per row); only a group with a duplicate asks which of its ids are there.
    """
    now = utcnow()
    rows = [
        _event_row(event_id, new, now)
        for event_id, new in zip(new_event_ids(len(news)), news, strict=True)
    ]
    with write_transaction(engine) as conn:
        count = insert_rows(conn, events, rows, _SKIP_DUPLICATES).rowcount
        inserted = _stored_ids(conn, rows) if count != len(rows) else None
        results, plans, taught = [], [], []
        for row, new in zip(rows, news, strict=True):
            if inserted is not None and row["id"] not in inserted:
                results.append(_original(conn, new))
                continue
            results.append(Stored(row["id"], True, new.status))
            plans += [new_delivery(row["id"], plan, now) for plan in new.plans]
            if new.identity is not None:
                taught.append((new.route, *new.identity))
        if plans:
            insert_rows(conn, deliveries, plans)
            notify(conn)
        remember_all(conn, taught)
    return results


_SKIP_DUPLICATES = "ON CONFLICT (route, dedupe_key) DO NOTHING"


def _stored_ids(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Which of the group's new ids were inserted (the others were duplicates)."""
    ids = [row["id"] for row in rows]
    return set(conn.execute(select(events.c.id).where(events.c.id.in_(ids))).scalars())


def _event_row(event_id: str, new: NewEvent, now: datetime) -> dict[str, Any]:
    return {
        "id": event_id,
        "route": new.route,
        "received_at": now,
        "dedupe_key": new.dedupe_key,
        "content_type": new.content_type,
        "headers": new.headers,
        "query": new.query,
        "body": new.body,
        "payload": new.payload,
        "status": new.status,
        "rule": new.rule,
        "reason": new.reason,
        **awaiting_columns(new.awaiting),
    }


def awaiting_columns(awaiting: tuple[str, str] | None) -> dict[str, str | None]:
    """The event's `awaiting_*` values: none for a customer id too long to be learned."""
    account, customer_id = awaiting or (None, None)
    if customer_id is None or not learnable(customer_id):
        return {"awaiting_account": None, "awaiting_customer": None}
    return {"awaiting_account": account, "awaiting_customer": customer_id}


def _original(conn: Connection, new: NewEvent) -> Stored:
    row = conn.execute(
        select(events.c.id, events.c.status).where(
            events.c.route == new.route, events.c.dedupe_key == new.dedupe_key
        )
    ).first()
    if row is None:
        raise LookupError(f"event {new.route}/{new.dedupe_key} neither stored nor found")
    return Stored(row.id, False, row.status)
