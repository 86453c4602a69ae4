"""The relay's tables: the system of record and the delivery queue in one database.

- `events`: every accepted request, raw body included, with its final status.
- `deliveries`: one per delivery plan (one Kartra lead); the queue the dispatcher claims.
- `attempts`: every Kartra call made (or, in dry-run, that would have been made).
- `leads`: the Kartra lead id the relay learned for each email, per account.
- `accounts`: which Kartra accounts are paused by a configuration error.
- `rate_limits`: the next free call slot per Kartra App, shared by every worker; on
  PostgreSQL also `sent`, when the App's last calls went (migration 0004; on SQLite the
  single process keeps them in memory).
- `workers`: each dispatcher's last sign of life, for readiness checks.
- `identities`: the lead email a sender's customer id stands for, per route and account,
  for events that name only the customer id.
- `signed_out`: dashboard sessions ended by signing out, until their cookie would have
  expired anyway (the cookie itself is the rest of the session's state).

Times are stored as timezone-aware UTC on both SQLite and PostgreSQL (`UTCDateTime`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the engine stores."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

events = Table(
    "events",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("route", String(100), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("dedupe_key", String(300), nullable=False),
    Column("content_type", String(200)),
    Column("headers", JSON, nullable=False),
    Column("query", JSON, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("payload", JSON),
    Column("status", String(16), nullable=False),
    Column("rule", String(100)),
    Column("reason", Text),
    # A rejected event waits here for the lead identity of this customer id; rendered
    # again once the route learns it (relay/admin/resume.py). Migration 0007 indexes the
    # waiting events only (a partial index, which a Table can state only per dialect,
    # and naming PostgreSQL's here would load its dialect into every SQLite process).
    Column("awaiting_account", String(64)),
    Column("awaiting_customer", String(200)),
    UniqueConstraint("route", "dedupe_key"),
    Index(None, "received_at"),
    Index(None, "status"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(32), ForeignKey("events.id", ondelete="CASCADE"), nullable=False),
    Column("account", String(64), nullable=False),
    Column("lead_key", String(400)),
    Column("rule", String(100)),
    Column("plan", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("claimed_by", String(100)),
    Column("claimed_until", UTCDateTime),
    Column("reclaimed", Boolean, nullable=False, default=False, server_default=false()),
    Column("sending", Boolean, nullable=False, default=False, server_default=false()),
    Column("done", JSON, nullable=False),
    Column("lead_id", String(64)),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index(None, "status", "next_attempt_at"),
    Index(None, "account", "lead_key", "id"),
    Index(None, "event_id"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", Integer, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("request", JSON, nullable=False),
    Column("http_status", Integer),
    Column("response", JSON),
    Column("outcome", String(24), nullable=False),
    Column("error", Text),
    Column("ambiguous", Boolean, nullable=False, default=False, server_default=false()),
    Index(None, "delivery_id"),
)

leads = Table(
    "leads",
    metadata,
    Column("account", String(64), primary_key=True),
    Column("email", String(320), primary_key=True),
    Column("kartra_id", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("paused", Boolean, nullable=False, default=False),
    Column("reason", Text),
    Column("changed_at", UTCDateTime, nullable=False),
)

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("next_at", UTCDateTime, nullable=False),
)

workers = Table(
    "workers",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("seen_at", UTCDateTime, nullable=False),
)

identities = Table(
    "identities",
    metadata,
    Column("route", String(100), primary_key=True),
    Column("account", String(64), primary_key=True),
    Column("customer_id", String(200), primary_key=True),
    Column("email", String(320), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index(None, "updated_at"),  # what was learned since the resumer's last look
)

signed_out = Table(
    "signed_out",
    metadata,
    Column("session_hash", String(64), primary_key=True),  # SHA-256 of the session id
    Column("until", UTCDateTime, nullable=False),
)
