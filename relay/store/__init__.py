"""The store: the system of record and the delivery queue (SQLAlchemy Core, Alembic)."""

from relay.store.db import connect, migrate, schema_is_current, wait_for_schema
from relay.store.events import NewEvent, Stored, store_event

__all__ = [
    "NewEvent",
    "Stored",
    "connect",
    "migrate",
    "schema_is_current",
    "store_event",
    "wait_for_schema",
]
