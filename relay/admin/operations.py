"""Replay: the one use case that needs both the record and the mappings.

Two ways, because the operator's fix is in one of two places:
- `mapping` (the default): the stored payload is rendered again with the mappings
  loaded now, so a corrected rule, tag name or field takes effect;
- `stored`: the plans recorded at the time are sent again as they are, for when the
  fix was in Kartra (the tag now exists, the App is active again).
Either way the event gets new deliveries and its old ones stay on record.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from relay.config import Config
from relay.mapping import Mapping
from relay.mapping.filters import IDENTITIES
from relay.store.identities import find, remember
from relay.store.maintenance import (
    REDACTED_REASON,
    EventChanged,
    Requeued,
    StoreConflict,
    current_plans,
    replace_deliveries,
)
from relay.store.queue import account_states
from relay.store.tables import attempts, deliveries, events, utcnow

MODES = ("mapping", "stored")


class ReplayError(Exception):
    """This event cannot be replayed; the message says why and what to do."""


class Overtaken(ReplayError):
    """The event changed since it was chosen: another replay got there first."""


@dataclass(frozen=True)
class ReplayResult:
    event_id: str
    ok: bool
    status: str | None
    deliveries: int
    error: str | None = None


def replay(
    engine: Engine,
    mappings: dict[str, Mapping],
    event_id: str,
    mode: str = "mapping",
    *,
    expect: dict[str, Any] | None = None,
) -> Requeued:
    """Replay one event. With `expect` (column values, e.g. `{"status": "rejected"}` for
    an event chosen by its status), only if the event still holds them when the new
    deliveries are stored, else Overtaken: a replay chosen by a filter, or by the
    resumer, never re-sends an event another replay has just sent."""
    if mode not in MODES:
        raise ReplayError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    with engine.connect() as conn:
        row = conn.execute(select(events).where(events.c.id == event_id)).first()
    if row is None:
        raise LookupError(event_id)
    if row.reason == REDACTED_REASON:
        raise ReplayError(f"{event_id}: its payload was redacted; nothing left to replay")
    try:
        if mode == "stored":
            plans = current_plans(engine, event_id)
            if not plans:
                raise ReplayError(
                    f"{event_id}: no stored plan (the event was {row.status}); "
                    "replay it with the current mappings instead"
                )
            return replace_deliveries(
                engine, event_id, plans, status="queued", rule=row.rule, reason=None, expect=expect
            )
        mapping = mappings.get(row.route)
        if mapping is None:
            raise ReplayError(f"{event_id}: no mapping for route {row.route!r} any more")
        rendered = mapping.render(
            {
                "body": row.payload,
                "headers": row.headers,
                "query": row.query,
                "route": row.route,
                IDENTITIES: functools.partial(find, engine, row.route),
            }
        )
        requeued = replace_deliveries(
            engine,
            event_id,
            rendered.plans,
            status=rendered.status,
            rule=rendered.rule,
            reason=rendered.reason,
            awaiting=rendered.awaiting,
            expect=expect,
        )
        if rendered.identity is not None:
            identity = rendered.identity
            remember(engine, row.route, identity.account, identity.customer_id, identity.email)
        return requeued
    except EventChanged as exc:
        raise Overtaken(str(exc)) from None
    except StoreConflict as exc:
        raise ReplayError(str(exc)) from None


def replay_many(
    engine: Engine,
    mappings: dict[str, Mapping],
    ids: list[str],
    mode: str = "mapping",
    *,
    status: str | None = None,
) -> list[ReplayResult]:
    """Replay each event on its own: one that cannot be replayed does not stop the rest.
    `status`: the events were chosen for it; one that has left it since is not replayed."""
    expect = {"status": status} if status else None
    results = []
    for event_id in ids:
        try:
            done = replay(engine, mappings, event_id, mode, expect=expect)
        except LookupError:
            results.append(ReplayResult(event_id, False, None, 0, "no such event"))
        except ReplayError as exc:
            results.append(ReplayResult(event_id, False, None, 0, str(exc)))
        else:
            results.append(ReplayResult(event_id, True, done.status, done.deliveries))
    return results


@dataclass(frozen=True)
class AccountOverview:
    name: str
    paused: bool
    reason: str | None
    credentials: bool
    counts: dict[str, int]
    calls_today: int


def known_account(
    engine: Engine, config: Config, name: str, mappings: dict[str, Mapping] | None = None
) -> bool:
    """Whether `name` is an account the relay deals with: configured, the default one,
    one a mapping delivers to, or one with deliveries or a pause on record. Pausing any
    other name would only make a row (and an alert) for an account that does not exist."""
    if name in config.accounts or name == "default":
        return True
    if any(name in mapping.accounts for mapping in (mappings or {}).values()):
        return True
    return name in account_states(engine)


def accounts_overview(engine: Engine, config: Config) -> list[AccountOverview]:
    """Every account configured or seen in the queue: paused or not, deliveries per
    status, and Kartra calls since midnight UTC (the App's daily budget is per day)."""
    states = account_states(engine)
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    with engine.connect() as conn:
        calls = dict(
            conn.execute(
                select(deliveries.c.account, func.count())
                .select_from(attempts.join(deliveries))
                .where(attempts.c.started_at >= midnight, attempts.c.http_status.is_not(None))
                .group_by(deliveries.c.account)
            ).all()
        )
    overview = []
    for name in sorted(set(states) | set(config.accounts)):
        state = states.get(name, {"paused": False, "reason": None, "counts": {}})
        overview.append(
            AccountOverview(
                name,
                state["paused"],
                state["reason"],
                name in config.accounts,
                state["counts"],
                calls.get(name, 0),
            )
        )
    return overview
